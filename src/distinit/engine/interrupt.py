"""Stop cleanly on SIGTERM (what cluster schedulers send before a kill) and Ctrl-C.

The handler only records the signal; the training loop finishes the optimizer step it is in,
writes a checkpoint and raises `Interrupted`, so `--resume` continues exactly. A second Ctrl-C
aborts at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from distinit.errors import UserError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# What a signal that killed a process usually means, for the line that reports it.
MEANING = {
    signal.SIGKILL: "most often the kernel's out-of-memory killer (`dmesg` says so) or a "
                    "scheduler's hard kill: lower optim.batch_size or data.num_workers, or run "
                    "fewer stages side by side (jobs=)",
    signal.SIGSEGV: "a crash in native code (a decoder or a torch kernel)",
    signal.SIGBUS: "often a full /dev/shm (DataLoader workers share batches there): lower "
                   "data.num_workers or enlarge /dev/shm",
    signal.SIGABRT: "an abort in native code",
    signal.SIGTERM: "a scheduler's or a user's stop request",
}


def killed_by(signum: int) -> str:
    """`SIGKILL (signal 9): most often ...`: a signal that killed a process, in words."""
    meaning = MEANING.get(signum)
    return f"{signal_name(signum)} (signal {signum})" + (f", {meaning}" if meaning else "")


class Interrupted(UserError):
    """The run stopped on a signal after writing a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 130 for Ctrl-C


class StopRequest:
    """Context manager: `signum` becomes non-zero once SIGTERM or SIGINT arrives.

    DataLoader workers forked inside the context inherit the handler, so a Ctrl-C sent to the
    whole process group does not kill them mid-epoch either; the main process shuts them down.
    """

    def __init__(self, announce: bool = True):
        self.signum = 0
        self.announce = announce
        self._pid = os.getpid()
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        first = self.signum == 0
        self.signum = signum
        if signum == signal.SIGINT:  # the next Ctrl-C raises KeyboardInterrupt as usual
            signal.signal(signal.SIGINT, self._previous.get(signum, signal.default_int_handler))
        if first and self.announce and os.getpid() == self._pid:  # not from workers
            print(f"\n{signal_name(signum)} received: stopping after this step and "
                  "writing a checkpoint", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


class Stop(BaseException):
    """SIGTERM or SIGINT arrived (a BaseException: code that catches Exception around one item's
    work must not take it for a bad item)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Stop` in the main thread at once, wherever it is (working
    itself or waiting for workers); any further one is ignored while it stops."""
    if threading.current_thread() is not threading.main_thread():  # signals need the main thread
        yield
        return

    def stop(signum: int, frame) -> None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Stop(signum)

    previous = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
