"""Read the archives datasets ship as: ZIP, tar (plain, gz, bz2, xz) and RAR.

HMDB-51 is a RAR of per-class RARs, UCF-101 a RAR plus a ZIP of split files. The kind is told by
the first bytes, not the name. ZIP and tar are read by the standard library, RAR by the best
reader this machine has (`rar_reader`): unar, rarfile with unrar, else bsdtar (libarchive, which
refuses solid RAR 3 archives). RAR encryption is read from the headers, as readers misreport it.

`extract` is all-or-nothing and safe: members are checked before anything is written (no
absolute path, `..`, link or device), extracted into a hidden `dest/.partial-<name>-<pid>`, and
moved into place once all are complete. A failure removes that folder, as does a rerun after a
crash.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from distinit.errors import UserError, first_line

KINDS = "ZIP, RAR, tar, tar.gz, tar.bz2 or tar.xz"
INSTALL = "apt-get install libarchive-tools (bsdtar) or unar, or pip install rarfile with unrar"
Entry = tuple[str, str]  # (name, "file" | "dir" | "link" | "special")


class ArchiveError(UserError):
    """An archive that cannot be read or extracted; the message says what to do."""


class _Corrupt(Exception):
    """A reader's complaint about the archive's data (not about the disk)."""


DATA_ERRORS = (_Corrupt, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error,
               lzma.LZMAError, ValueError, NotImplementedError)


def archive_kind(path: Path) -> str | None:
    """"rar", "zip" or "tar" (any compression tarfile reads), by magic bytes; None otherwise."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    openers = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
    compressed = next((o for magic, o in openers.items() if head.startswith(magic)), None)
    try:
        with (compressed or open)(path, "rb") as f:
            tarfile.TarInfo.frombuf(f.read(512), "utf-8", "surrogateescape")  # its checksum
        return "tar"
    except (EOFError, OSError, lzma.LZMAError, zlib.error):  # a compressed stream cut short
        return "tar" if compressed else None
    except tarfile.HeaderError:
        return None


def rar_reader() -> str:
    """"unar", "rarfile" or "bsdtar": the RAR reader this machine has that reads the most."""
    if shutil.which("unar") and shutil.which("lsar"):
        return "unar"
    try:  # rarfile with a tool that the others are not: unrar or 7z
        import rarfile
        rarfile.tool_setup(unar=False, bsdtar=False, force=True)
        return "rarfile"
    except Exception:  # not installed, or no tool for it
        if shutil.which("bsdtar"):
            return "bsdtar"
    raise ArchiveError(f"no RAR reader on this machine: {INSTALL}")


def _vint(f: BinaryIO) -> int:
    value = shift = 0
    while byte := f.read(1):
        value, shift = value | (byte[0] & 0x7F) << shift, shift + 7
        if byte[0] < 0x80:
            return value
    raise EOFError


def _rar_encrypted(path: Path) -> bool:
    """Whether a RAR's headers or any file's data are encrypted, from its block headers."""
    with open(path, "rb") as f:
        try:
            if f.read(8) == b"Rar!\x1a\x07\x01\x00":  # RAR 5: vint fields after a CRC32
                while f.read(4) and (size := _vint(f)):
                    start = f.tell()
                    htype, flags = _vint(f), _vint(f)
                    extra, data = (_vint(f) if flags & bit else 0 for bit in (1, 2))
                    if htype in (4, 5):  # encryption header (headers encrypted); end of archive
                        return htype == 4
                    f.seek(start + size - extra)  # a header's extra records end it
                    while htype == 2 and f.tell() < start + size:
                        record, at = _vint(f), f.tell()
                        if _vint(f) == 1:  # a file encryption record
                            return True
                        f.seek(at + record)
                    f.seek(start + size + data)
                return False
            f.seek(7)  # RAR 1.5-4: crc, type, flags, size; long blocks add a data size
            while len(block := f.read(36)) >= 7:
                htype, flags, size, data = struct.unpack_from("<BHHI", block.ljust(11), 2)
                if (htype == 0x73 and flags & 0x80) or (htype == 0x74 and flags & 0x04):
                    return True  # main header: headers encrypted; file header: data encrypted
                if htype in (0x74, 0x7A) and flags & 0x100 and len(block) == 36:
                    data += struct.unpack_from("<I", block, 32)[0] << 32  # HIGH_PACK_SIZE
                if size < 7:
                    break
                f.seek(f.tell() - len(block) + size + (data if flags & 0x8000 else 0))
        except EOFError:  # cut short: the reader says so
            pass
    return False


def _run(command: list[str]) -> str:
    """A reader's stdout; its first line of complaint as _Corrupt."""
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, env=env)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).decode(errors="replace")
                 .splitlines() if line.strip() and "Error exit delayed" not in line]
        raise _Corrupt(lines[0] if lines else f"{command[0]} exit status {done.returncode}")
    return done.stdout.decode(errors="surrogateescape")


def _unescape(name: str) -> str:
    """A name as bsdtar prints it (odd bytes as \\ooo, a backslash as \\\\) back to the name."""
    raw = re.sub(rb"\\([0-7]{3}|\\)", lambda m: bytes([int(m[1], 8) if len(m[1]) == 3 else 92]),
                 name.encode(errors="surrogateescape"))
    return raw.decode(errors="surrogateescape")


def _rar(reader: str, path: Path, tmp: Path | None = None) -> list[Entry]:
    """List (or with `tmp`, extract into it) a RAR with `reader`."""
    if reader == "bsdtar" and tmp:
        _run(["bsdtar", "-xf", str(path), "-C", str(tmp)])
    elif reader == "bsdtar":  # verbose: mode links owner group size month day time|year name
        names = _run(["bsdtar", "-tf", str(path)]).splitlines()
        lines = _run(["bsdtar", "-tvf", str(path)]).splitlines()
        return [(_unescape(name), {"-": "file", "d": "dir"}.get(line[:1], "special")
                 if line.split(None, 8)[8:] == [name] else "link")
                for name, line in zip(names, lines, strict=True)]
    elif reader == "unar" and tmp:
        _run(["unar", "-q", "-o", str(tmp), "-D", str(path)])
    elif reader == "unar":
        return [(e["XADFileName"], "dir" if e.get("XADIsDirectory") else "link"
                 if e.get("XADIsLink") or e.get("XADIsHardLink") else "special" if any(
                     e.get(f"XADIs{k}") for k in ("CharacterDevice", "BlockDevice", "FIFO"))
                 else "file") for e in json.loads(_run(["lsar", "-j", str(path)]))
                .get("lsarContents", [])]
    else:
        import rarfile
        try:
            with rarfile.RarFile(path) as rf:
                if tmp:
                    rf.extractall(tmp)
                return [(i.filename, "dir" if i.is_dir() else "link" if i.is_symlink()
                         or getattr(i, "file_redir", None) else "file") for i in rf.infolist()]
        except rarfile.Error as e:
            raise _Corrupt(first_line(e)) from None
    return []


def _corrupt(path: Path, error: Exception, dest: Path | None = None) -> ArchiveError:
    """The one-line ArchiveError for `error`, raised reading (with `dest`, extracting) `path`."""
    if isinstance(error, OSError) and error.errno is not None:  # the disk, not the data
        action = f"extract {path} into {dest}" if dest else f"read {path}"
        return ArchiveError(f"could not {action}: {first_line(error)}")
    complaint = str(error) if isinstance(error, _Corrupt) else first_line(error)
    if re.search(r"encrypt|passphrase|password", complaint, re.I):
        return _password(path)
    if re.search(r"unsupported|not supported|support unavailable", complaint, re.I):
        return ArchiveError(f"{path} uses a feature the reader here lacks ({complaint}); for "
                            "a RAR: apt-get install unar, or pip install rarfile with unrar")
    return ArchiveError(f"{path} is truncated or corrupt ({complaint}); download it again")


def _password(path: Path) -> ArchiveError:
    return ArchiveError(f"{path} is password-protected; the official dataset archives are not, "
                        "so this is not the official file: download it again")


def _checked(path: Path) -> tuple[str, list[Entry]]:
    """The archive's kind and (normalized name, kind) members, every one safe to extract."""
    if not path.is_file():
        raise ArchiveError(f"{path} does not exist or is not a file")
    if (kind := archive_kind(path)) is None:
        raise ArchiveError(f"{path} is not an archive this reads ({KINDS}, told by their first "
                           "bytes); check the file or download it again")
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                if any(i.flag_bits & 0x1 for i in zf.infolist()):
                    raise _password(path)
                # A ZIP starts with its first member; a directory naming no member at offset 0
                # is another one's: a stored ZIP inside a truncated outer one.
                if zf.infolist() and min(i.header_offset for i in zf.infolist()) != 0:
                    raise _Corrupt("its central directory is missing")
                types = {0: "file", stat.S_IFREG: "file", stat.S_IFLNK: "link"}
                entries = [(i.filename, "dir" if i.is_dir() else types.get(
                    stat.S_IFMT(i.external_attr >> 16), "special")) for i in zf.infolist()]
        elif kind == "tar":
            with tarfile.open(path) as tf:
                entries = [(m.name, "file" if m.isreg() else "dir" if m.isdir() else "link"
                            if m.issym() or m.islnk() else "special") for m in tf.getmembers()]
        elif _rar_encrypted(path):
            raise _password(path)
        else:
            entries = _rar(rar_reader(), path)
    except (*DATA_ERRORS, OSError) as e:
        raise _corrupt(path, e) from None
    for name, what in entries:
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:|(.*[/\\])?\.\.([/\\]|$)", name):
            raise ArchiveError(f"{path} holds {name!r}, a path outside the folder it is "
                               "extracted to; refusing to extract it")
        if what not in ("file", "dir"):
            raise ArchiveError(f"{path} holds {name!r}, a {what} (not a plain file or folder); "
                               "refusing to extract it")
    return kind, [(PurePosixPath(name).as_posix(), what) for name, what in entries]


def list_members(path: Path) -> list[str]:
    """The archive's member files (posix paths, relative), folders left out."""
    return [name for name, what in _checked(Path(path))[1] if what == "file"]


def _remove_stale(dest: Path, name: str) -> None:
    """Remove the temporary folders of `extract` runs that crashed (their process is gone)."""
    for stale in dest.glob(f".partial-{glob.escape(name)}-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)  # running (maybe as another user)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass


def extract(path: Path, dest: Path) -> list[Path]:
    """Extract every member of `path` under `dest`, all or nothing; returns the files written."""
    path, dest = Path(path), Path(dest)
    kind, entries = _checked(path)
    created, done = not dest.exists(), False
    dest.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest, path.name)
    tmp = dest / f".partial-{path.name}-{os.getpid()}"
    try:
        tmp.mkdir()
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp)
        elif kind == "tar":
            with tarfile.open(path) as tf:
                tf.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                      else {}))
        else:
            _rar(rar_reader(), path, tmp)
        files = []
        for folder, dirs, names in os.walk(tmp):  # what was written, checked again
            for st in (os.lstat(os.path.join(folder, name)) for name in dirs + names):
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
                    raise _Corrupt("a member came out as a link or special file")
            files += [Path(folder, name).relative_to(tmp) for name in names]
        if in_way := [f for f in files if (dest / f).is_dir() or any(
                (dest / p).is_file() for p in f.parents[:-1])]:
            raise ArchiveError(f"{dest / in_way[0]} or a folder above it is in the way of a "
                               f"member of {path}; move it away and run again")
        for relative in files:
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / relative, dest / relative)
        for name in (name for name, what in entries if what == "dir"):
            (dest / name).mkdir(parents=True, exist_ok=True)
        done = True
        return sorted(dest / relative for relative in files)
    except (*DATA_ERRORS, OSError) as e:
        raise _corrupt(path, e, dest) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not done and not any(dest.iterdir()):
            dest.rmdir()
