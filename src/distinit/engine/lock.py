"""One writer per folder: a run folder or a store is locked before anything is written to it.

The lock is an `fcntl.flock` on the file `.distinit.lock` in the folder. The operating system
releases it when the process that holds it exits, however it exits (kill -9 included), so a
crash never strands a folder; the file itself stays, and says who held it last. It is never
opened through a symlink, and a lock path that is not a regular file is refused, so a planted
link cannot make a run overwrite another file. A second process gets one line naming the holder
(pid, host, command, since when). Under torchrun rank 0 holds the lock for the whole job: the
other ranks write nothing a second job could collide with.

The lock is re-entrant within a process (`hold` nested on one folder, e.g. a job that locks its
run folder and the training loop inside it), because two `flock`s on the same file from two
open descriptors of one process would block each other.

Shared file systems do not always honour `flock` between machines. flock(2), "NFS details":
up to Linux 2.6.11 flock did not lock over NFS (its scope was the local machine); since 2.6.12
NFS clients emulate it with fcntl byte-range locks on the whole file (NLM on NFSv3, the server's
locks on NFSv4), and since 2.6.37 the mount option `local_lock=flock` (or `all`) makes them
local again; nfs(5): NFSv3's `nolock` excludes only processes of the same client, and without a
lock daemon flock fails (ENOLCK). mount.lustre(8): `-o flock` is coherent across all clients,
`localflock` local to one client, `noflock` makes flock fail. So the record is also a lease:
the holder rewrites its time (`beat`) every `DISTINIT_LOCK_HEARTBEAT` seconds (30) from a
daemon thread and marks it released when it lets go, and a process that got the flock (or whose
file system has none) checks it: a record of another live process (another host's, or a live
pid here) whose heartbeat is younger than `STALE_BEATS` heartbeats holds the folder all the same
(the same one line); one that stopped beating (its holder died without letting go) is taken
over with a note. A requeued Slurm job takes over from its own earlier run (same
`SLURM_JOB_ID`, lower `SLURM_RESTART_COUNT`), which Slurm ended before requeueing it. What
remains: two jobs starting within the same instant on two hosts of such a file system may both
see a free record; the hosts' clocks must agree to well within a heartbeat (NTP does).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distinit.errors import UserError

LOCK_FILE = ".distinit.lock"
HEARTBEAT_S = 30.0  # how often a holder rewrites its record; DISTINIT_LOCK_HEARTBEAT overrides
STALE_BEATS = 3  # a record not rewritten for this many heartbeats is a dead holder's
# What flock fails with where the file system has no locks (Lustre `noflock`, NFSv3 without a
# lock daemon): there the record's heartbeat alone holds the folder.
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


class FolderInUse(UserError):
    """Another live process holds the folder's lock."""


def holder(folder: str | Path) -> dict:
    """Who holds (or last held) the lock of `folder`: {"pid", "host", "command", "since", and
    "beat", "every", "released" from the heartbeat}; {} when nobody ever did or the record is
    unreadable."""
    for attempt in range(3):
        try:
            info = json.loads((Path(folder) / LOCK_FILE).read_text() or "{}")
            return info if isinstance(info, dict) else {}
        except OSError:
            return {}
        except ValueError:  # read while another host rewrote it: read it again
            time.sleep(0.05 * (attempt + 1))
    return {}


def describe(info: dict) -> str:
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    command = " ".join(info.get("command", []))
    if len(command) > 80:
        command = command[:77] + "..."
    return f"pid {info.get('pid')} on {info.get('host')} (`{command}`, since {since})"


def heartbeat_s() -> float:
    return float(os.environ.get("DISTINIT_LOCK_HEARTBEAT", HEARTBEAT_S))


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:  # 0 and -1 would name process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _earlier_run_of_this_job(info: dict) -> bool:
    job = os.environ.get("SLURM_JOB_ID")
    return (job is not None and info.get("slurm_job") == job
            and info.get("slurm_restart", 0) < int(os.environ.get("SLURM_RESTART_COUNT", 0)))


def _state(info: dict) -> str:
    """What the record of a lock this process got by `flock` says: "free" (released, never
    beating, a dead pid of this host, this process, an earlier run of this Slurm job), "live"
    (another process holds it: flock did not exclude it) or "stale" (its holder stopped beating:
    it died on another host, or hangs)."""
    try:
        if info.get("released") or "beat" not in info or _earlier_run_of_this_job(info):
            return "free"
        here = info.get("host") == socket.gethostname()
        if here and (info.get("pid") == os.getpid() or not _alive(info.get("pid"))):
            return "free"  # a killed holder on this host: taken at once, as flock alone does
        age = time.time() - float(info["beat"])
        return "live" if age < STALE_BEATS * float(info.get("every", HEARTBEAT_S)) else "stale"
    except (TypeError, ValueError):  # a record edited by hand: flock has the last word
        return "free"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _not_a_lock(path: Path, what: str) -> UserError:
    return UserError(f"{path} is {what}, not a lock file, so distinit writes nothing through "
                     "it: remove it and run the same command again")


def _open(folder: Path, unwritable: str) -> int:
    """The lock file's descriptor. Never through a symlink (whatever it points to would be
    truncated and overwritten with the holder's record) nor onto a folder, a FIFO or a device:
    such a path is refused in one line. O_NONBLOCK: opening a FIFO must not wait for a peer (on
    the regular file kept it changes nothing, flock included)."""
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     0o644)
    except OSError as e:
        if e.errno == errno.ELOOP and path.is_symlink():
            raise _not_a_lock(path, f"a symbolic link (to {os.readlink(path)})") from None
        if e.errno == errno.EISDIR:
            raise _not_a_lock(path, "a folder") from None
        raise UserError(unwritable.format(folder=folder, reason=e.strerror or e)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_a_lock(path, _kind(mode))
    return fd


def _write(fd: int, record: dict) -> None:
    """Write the record in place, and through to the file server (an NFS client keeps writes
    until fdatasync or close). It is padded to the file's length, not written after a truncate,
    so a reader on another host sees a whole record, never an empty one (JSON allows trailing
    spaces)."""
    data = json.dumps(record).encode()
    try:
        os.pwrite(fd, data.ljust(os.fstat(fd).st_size, b" "), 0)
        os.fdatasync(fd)
    except OSError:
        pass  # a full disk: the flock holds all the same, only the record of who holds it is lost


class _Held:
    """A lock this process holds: its descriptor, how many `acquire`s it counts, its record and
    the thread that keeps the record's heartbeat fresh."""

    def __init__(self, fd: int, record: dict):
        self.fd, self.depth, self.record = fd, 1, record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="distinit-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.record["every"]):
            self.record["beat"] = time.time()
            _write(self.fd, self.record)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.record["released"] = time.time()
        _write(self.fd, self.record)
        with contextlib.suppress(OSError):  # a file system without locks (NO_LOCKS)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


_held: dict[str, _Held] = {}  # resolved folder -> this process's lock on it


def _in_use(folder: Path, info: dict, what: str, elsewhere: str) -> FolderInUse:
    return FolderInUse(f"{folder} is in use: {describe(info)} is writing its {what}; wait for "
                       f"it to finish or stop it, or {elsewhere}")


def _check_record(folder: Path, fd: int, what: str, elsewhere: str, wait: bool) -> None:
    """With the flock got, check the record: refuse (or with `wait`, wait for) another live
    holder that flock did not exclude; take a stale one over with a note."""
    info = holder(folder)
    state = _state(info)
    if state == "live" and not wait:
        os.close(fd)
        raise _in_use(folder, info, what, elsewhere)
    if state == "live":
        print(f"waiting for {describe(info)} to finish writing the {what} in {folder}",
              file=sys.stderr, flush=True)
        while state == "live":
            time.sleep(min(float(info.get("every", HEARTBEAT_S)), 5.0))
            info = holder(folder)
            state = _state(info)
    if state == "stale":
        age = time.time() - float(info["beat"])
        print(f"note: {folder} was held by {describe(info)}, whose heartbeat stopped "
              f"{age:.0f} s ago without letting go (its process died or hangs, or its machine "
              "is gone); taking it over", file=sys.stderr, flush=True)


def _flock(folder: Path, fd: int, what: str, elsewhere: str, wait: bool,
           unwritable: str) -> None:
    """flock the lock file: held by another process, wait for it or refuse in one line."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in NO_LOCKS:
            return
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise UserError(unwritable.format(folder=folder, reason=e.strerror or e)) from None
        info = holder(folder)
        if not wait:
            os.close(fd)
            raise _in_use(folder, info, what, elsewhere) from None
        print(f"waiting for {describe(info)} to finish writing the {what} in {folder}",
              file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)


def acquire(folder: str | Path, what: str, elsewhere: str, wait: bool = False,
            unwritable: str = "cannot write to {folder}: {reason}") -> bool:
    """Take the lock of `folder` for this process (a no-op on ranks other than 0; nested calls
    count). Held by a live process: with `wait`, block until it is free (saying so once), else
    raise `FolderInUse` naming the holder; `what` is what the folder holds ("run", "clip
    store") and `elsewhere` what the user can do instead. Returns whether this call locked."""
    from distinit.engine import dist  # here: `distinit flow` takes a lock without loading torch

    if dist.launch_rank() != 0:
        return False
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:
        _held[key].depth += 1
        return True
    fd = _open(folder, unwritable)
    _flock(folder, fd, what, elsewhere, wait, unwritable)
    _check_record(folder, fd, what, elsewhere, wait)
    now = time.time()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
              "since": now, "beat": now, "every": heartbeat_s()}
    if "SLURM_JOB_ID" in os.environ:
        record.update(slurm_job=os.environ["SLURM_JOB_ID"],
                      slurm_restart=int(os.environ.get("SLURM_RESTART_COUNT", 0)))
    _write(fd, record)
    _held[key] = _Held(fd, record)
    return True


def release(folder: str | Path) -> None:
    """Undo one `acquire` of `folder` by this process; the last one unlocks it."""
    key = str(Path(folder).resolve())
    if key not in _held:
        return
    _held[key].depth -= 1
    if _held[key].depth == 0:
        _held.pop(key).close()


@contextmanager
def hold(folder: str | Path, what: str, elsewhere: str, wait: bool = False,
         unwritable: str = "cannot write to {folder}: {reason}") -> Iterator[None]:
    """`acquire` for the duration of a `with` block."""
    locked = acquire(folder, what, elsewhere, wait, unwritable)
    try:
        yield
    finally:
        if locked:
            release(folder)


def held(folder: str | Path) -> bool:
    """Whether this process holds the lock of `folder`."""
    return str(Path(folder).resolve()) in _held
