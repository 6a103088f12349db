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
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distinit.errors import UserError

LOCK_FILE = ".distinit.lock"

_held: dict[str, list[int]] = {}  # resolved folder -> [fd, depth], this process's locks


class FolderInUse(UserError):
    """Another live process holds the folder's lock."""


def holder(folder: str | Path) -> dict:
    """Who holds (or last held) the lock of `folder`: {"pid", "host", "command", "since"};
    {} when nobody ever did or the record is unreadable."""
    try:
        return json.loads((Path(folder) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    command = " ".join(info.get("command", []))
    if len(command) > 80:
        command = command[:77] + "..."
    return f"pid {info.get('pid')} on {info.get('host')} (`{command}`, since {since})"


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
        _held[key][1] += 1
        return True
    fd = _open(folder, unwritable)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise UserError(unwritable.format(folder=folder, reason=e.strerror or e)) from None
        who = describe(holder(folder))
        if not wait:
            os.close(fd)
            raise FolderInUse(f"{folder} is in use: {who} is writing its {what}; wait for it to "
                              f"finish or stop it, or {elsewhere}") from None
        print(f"waiting for {who} to finish writing the {what} in {folder}", file=sys.stderr,
              flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
              "since": time.time()}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the record of who holds it is lost
    _held[key] = [fd, 1]
    return True


def release(folder: str | Path) -> None:
    """Undo one `acquire` of `folder` by this process; the last one unlocks it."""
    key = str(Path(folder).resolve())
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] == 0:
        fd, _ = _held.pop(key)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


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
