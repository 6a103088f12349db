"""Which ranks of a torchrun job are still alive, so that a lost node is named, not guessed.

When a node dies, the ranks left see a collective fail: at once, with "Connection closed by
peer" when the dead side's sockets were closed, or after the process group's timeout
(`dist_timeout`) when the node vanished without a word. Neither message says which rank was lost.
So every rank beats: a daemon thread bumps a counter under `distinit/alive/<rank>` in the job's
store (torchrun's rendezvous store) every `interval` seconds, with its host and pid. After a
failed collective, `lost()` reads every counter twice, a few beats apart: a rank whose counter did
not move is gone. Counters, not clocks, so nodes whose clocks differ agree.

The store lives with the rendezvous host's agent. When that node is the one that died, the
store cannot be read either, and the message says so.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import timedelta

import torch.distributed as td

from distinit.errors import UserError

KEY = "distinit/alive/{}"
INTERVAL = 1.0  # seconds between beats


class RankLost(UserError):
    """Another rank of the job stopped answering: its node died or its process was killed."""

    exit_code = 3


def _store():
    try:
        return td.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError, AttributeError):
        return None


class Heartbeat:
    """Beats while a job's ranks train (a context manager; nothing at world size 1)."""

    def __init__(self, interval: float = INTERVAL, then: str = ""):
        self.interval, self.then = interval, then
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        store = _store() if td.is_initialized() and td.get_world_size() > 1 else None
        if store is None:
            return self
        key, who = KEY.format(td.get_rank()), f"{socket.gethostname()} pid {os.getpid()}"

        def beat() -> None:
            count = 0
            while not self._stop.is_set():
                count += 1
                try:
                    store.set(key, f"{count} {who}")
                except Exception:  # the store's host is gone: `lost` says so
                    return
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=beat, name="distinit-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        """A collective that failed because a rank is gone becomes one `RankLost` line naming
        it (and `then`, what to do next); any other error passes as it is."""
        try:
            if isinstance(error, RuntimeError) and not isinstance(error, UserError):
                lost = self.lost()
                if lost is not None:
                    raise RankLost(f"{lost}; {self.then}" if self.then else str(lost)) from None
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=2 * self.interval + 1)

    def lost(self, beats: int = 3) -> RankLost | None:
        """The error naming the ranks that stopped beating (None: every rank still beats, so the
        failure was something else). Takes about `beats` intervals."""
        if self._thread is None:
            return None
        store, world, me = _store(), td.get_world_size(), td.get_rank()
        try:
            store.set_timeout(timedelta(seconds=max(2.0, 2 * self.interval)))
            first = {r: _read(store, r) for r in range(world) if r != me}
            time.sleep(beats * self.interval)
            then = {r: _read(store, r) for r in range(world) if r != me}
        except Exception:
            return RankLost(f"rank {me} lost the job's rendezvous store, which the rendezvous "
                            "host's node keeps: that node (or its agent) died")
        gone = [r for r in first if first[r] == then[r]]
        if not gone:
            return None
        names = ", ".join(f"rank {r} ({then[r].split(' ', 1)[1] if ' ' in then[r] else '?'})"
                          for r in gone)
        return RankLost(f"lost {names}: no heartbeat for {beats * self.interval:.0f} s, so its "
                        "node died or its process was killed")


def _read(store, rank: int) -> str:
    return store.get(KEY.format(rank)).decode()
