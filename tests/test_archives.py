"""`distinit.data.labels.archives`: ZIP, tar and real RAR archives, extracted whole or not at all."""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from distinit.data.labels import archives
from distinit.data.labels.archives import (
    ArchiveError,
    archive_kind,
    extract,
    list_members,
    rar_reader,
)

RAR_DATA = Path(__file__).parent / "data" / "rar"
FILES = {"top.txt": b"line one\r\nline two\r\n",  # CRLF kept as is
         "a/b/c/deep.txt": b"deep\r\n",
         "a/noise.bin": random.Random(0).randbytes(4096),  # incompressible
         "a/b/empty.txt": b""}
# name -> (size, CRC32) of the files in rarfile's test archives, from rarfile's .exp files
RAR3_SUBDIRS = {"sub/dir1/file1.txt": (6, 0xE229F704), "sub/dir2/file2.txt": (6, 0xC904A4C7),
                "sub/with space/long fn.txt": (8, 0x71B7247D),
                "sub/üȵĩöḋè/file.txt": (5, 0x2FEC89C1)}
RAR5_CRC = {"stest1.txt": (2048, 0xC5B7E6A2), "stest2.txt": (2048, 0xC5B7E6A2)}


def make_zip(path: Path, files: dict[str, bytes] = FILES) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, mode: str = "w:gz", files: dict[str, bytes] = FILES,
             symlink: str | None = None) -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("link")
            info.type, info.linkname = tarfile.SYMTYPE, symlink
            tf.addfile(info)
    return path


def truncated(path: Path) -> Path:
    cut = path.with_name(f"cut-{path.name}")
    cut.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return cut


def tree(folder: Path) -> dict[str, bytes | None]:
    """Everything under `folder`, hidden entries included: {relative path: bytes or None}."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in folder.rglob("*")}


def assert_refused(archive: Path, dest: Path, *wording: str, named: bool = True) -> ArchiveError:
    """extract(archive) fails with a one-line message holding `wording`, and changes nothing:
    an existing `dest` keeps exactly what it held, a missing one is not created."""
    before = tree(dest) if dest.exists() else None
    with pytest.raises(ArchiveError) as info:
        extract(archive, dest)
    message = str(info.value)
    assert "\n" not in message and (str(archive) in message or not named)
    for words in wording:
        assert words in message
    assert (tree(dest) if dest.exists() else None) == before
    return info.value


@pytest.mark.parametrize("suffix,mode", [(".zip", None), (".tar", "w"), (".tar.gz", "w:gz"),
                                         (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz")])
def test_zip_and_tar_extract_the_same_bytes(tmp_path, suffix, mode):
    archive = tmp_path / f"data{suffix}"
    make_zip(archive) if mode is None else make_tar(archive, mode)
    assert archive_kind(archive) == ("zip" if mode is None else "tar")
    assert sorted(list_members(archive)) == sorted(FILES)
    dest = tmp_path / "out"
    files = extract(archive, dest)
    assert files == sorted(dest / name for name in FILES)
    assert tree(dest) == {**FILES, "a": None, "a/b": None, "a/b/c": None}  # no .partial left
    assert extract(archive, dest) == files and tree(dest)["top.txt"] == FILES["top.txt"]  # again


def test_archive_kind_reads_magic_bytes_not_names(tmp_path):
    assert archive_kind(make_zip(tmp_path / "zip-named.rar")) == "zip"
    assert archive_kind(make_tar(tmp_path / "tgz-named.zip")) == "tar"
    assert archive_kind(make_tar(tmp_path / "plain-tar-named.txt", "w")) == "tar"
    assert archive_kind(truncated(make_tar(tmp_path / "cut.tar.gz"))) == "tar"  # a tar gone bad
    shutil.copy(RAR_DATA / "rar5-crc.rar", tmp_path / "rar-named.zip")
    assert archive_kind(tmp_path / "rar-named.zip") == "rar"
    assert archive_kind(RAR_DATA / "rar3-subdirs.rar") == "rar"
    (tmp_path / "notes.zip").write_text("not an archive\n" * 100)
    assert archive_kind(tmp_path / "notes.zip") is None
    (tmp_path / "table.csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n" * 200))
    assert archive_kind(tmp_path / "table.csv.gz") is None  # gzip, but no tar inside
    (tmp_path / "empty.tar").write_bytes(b"")
    assert archive_kind(tmp_path / "empty.tar") is None


def encrypted_zip(path: Path) -> Path:
    """A zip marked encrypted (stdlib cannot encrypt): bit 0 of the general-purpose flags set
    in the local header and in the central-directory entry."""
    data = bytearray(make_zip(path, {"secret.txt": b"hidden"}).read_bytes())
    central = data.find(b"PK\x01\x02")
    assert data[:4] == b"PK\x03\x04" and central > 0
    data[6] |= 0x1
    data[central + 8] |= 0x1
    path.write_bytes(bytes(data))
    return path


BAD = {
    "truncated zip": (lambda d: truncated(make_zip(d / "a.zip")), ["is truncated or corrupt (",
                                                                    "download it again"]),
    "truncated tar.gz": (lambda d: truncated(make_tar(d / "a.tar.gz")), ["truncated or corrupt"]),
    "zip ../ member": (lambda d: make_zip(d / "a.zip", {"ok.txt": b"x", "../evil.txt": b"x"}),
                       ["'../evil.txt'", "outside the folder"]),
    "zip absolute member": (lambda d: make_zip(d / "a.zip", {"/tmp/evil.txt": b"x"}),
                            ["'/tmp/evil.txt'", "outside the folder"]),
    "tar nested ..": (lambda d: make_tar(d / "a.tar", "w", {"a/../../evil.txt": b"x"}),
                      ["outside the folder"]),
    "tar absolute member": (lambda d: make_tar(d / "a.tar", "w", {"/evil.txt": b"x"}),
                            ["'/evil.txt'", "outside the folder"]),
    "tar symlink": (lambda d: make_tar(d / "a.tar.gz", symlink="/etc/passwd"),
                    ["'link'", "a link"]),
    "encrypted zip": (lambda d: encrypted_zip(d / "a.zip"), ["is password-protected",
                                                             "not the official file"]),
    "not an archive": (lambda d: (d / "a.rar").write_bytes(b"<html>404</html>\n") and d / "a.rar",
                       ["not an archive", "ZIP, RAR, tar"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_archive_is_refused_and_nothing_is_written(tmp_path, case):
    make, wording = BAD[case]
    (src := tmp_path / "src").mkdir()
    archive = make(src)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "kept.txt").write_bytes(b"was here")
    assert_refused(archive, dest, *wording)
    assert_refused(archive, tmp_path / "new" / "dest", *wording)  # not created either
    assert not (tmp_path / "new" / "dest").exists()
    with pytest.raises(ArchiveError):
        list_members(archive)


def test_failure_while_extracting_removes_the_partial_folder(tmp_path):
    """A member whose stored bytes are damaged passes the listing and fails on its CRC."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("good.txt", b"good")
        zf.writestr("bad.txt", b"will be damaged")
    data = archive.read_bytes()
    archive.write_bytes(data.replace(b"will be damaged", b"WILL be damaged"))
    assert list_members(archive) == ["good.txt", "bad.txt"]
    dest = tmp_path / "dest"
    dest.mkdir()
    assert_refused(archive, dest, "truncated or corrupt", "Bad CRC-32")
    assert list(dest.iterdir()) == []


def test_stale_partial_folder_of_a_crashed_run_is_removed(tmp_path):
    archive = make_zip(tmp_path / "a.zip")
    dest = tmp_path / "dest"
    stale = dest / ".partial-a.zip-999999999"  # above any pid: that run is gone
    (stale / "a").mkdir(parents=True)
    (stale / "a" / "half.bin").write_bytes(b"half")
    other = dest / ".partial-other.zip-999999999"  # another archive's: not ours to judge
    other.mkdir()
    extract(archive, dest)
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in dest.iterdir()) == [".partial-other.zip-999999999", "a",
                                                      "top.txt"]


def test_a_folder_in_the_way_stops_the_move_before_any_file_moves(tmp_path):
    archive = make_zip(tmp_path / "a.zip")
    dest = tmp_path / "dest"
    (dest / "top.txt").mkdir(parents=True)  # where a member file goes
    assert_refused(archive, dest, "in the way")
    assert not (dest / "a").exists()


# RAR: real archives from rarfile's test suite, read by whatever reader this machine has.

@pytest.fixture
def reader() -> str:
    try:
        return rar_reader()
    except ArchiveError:
        pytest.skip("no RAR reader: install libarchive-tools (bsdtar), unar, or rarfile with "
                    "unrar")


def assert_files(files: list[Path], dest: Path, expected: dict[str, tuple[int, int]]) -> None:
    assert files == sorted(dest / name for name in expected)
    for name, (size, crc) in expected.items():
        data = (dest / name).read_bytes()
        assert (len(data), zlib.crc32(data)) == (size, crc), name


@pytest.mark.parametrize("name,expected", [("rar3-subdirs.rar", RAR3_SUBDIRS),
                                           ("rar5-crc.rar", RAR5_CRC)])
def test_rar_extracts_names_and_bytes(tmp_path, reader, name, expected):
    archive = RAR_DATA / name
    assert sorted(list_members(archive)) == sorted(expected)
    dest = tmp_path / "dest"
    assert_files(extract(archive, dest), dest, expected)
    if name == "rar3-subdirs.rar":
        assert (dest / "sub" / "empty").is_dir()  # an empty folder is kept
    assert not [p for p in dest.rglob(".*")]


def test_rar_encryption_is_read_from_the_headers():
    """No reader needed: RAR 3 and RAR 5, data or headers encrypted."""
    for name in ["rar3-comment-psw.rar", "rar5-psw.rar", "rar5-hpsw.rar"]:
        assert archives._rar_encrypted(RAR_DATA / name), name
    for name in ["rar3-subdirs.rar", "rar5-crc.rar", "rar3-solid.rar", "rar3-symlink-unix.rar"]:
        assert not archives._rar_encrypted(RAR_DATA / name), name


@pytest.mark.parametrize("name", ["rar3-comment-psw.rar", "rar5-psw.rar", "rar5-hpsw.rar"])
def test_encrypted_rar_is_refused(tmp_path, reader, name):
    assert_refused(RAR_DATA / name, tmp_path / "dest", "is password-protected",
                   "not the official file")


@pytest.mark.parametrize("name", ["rar3-subdirs.rar", "rar5-crc.rar"])
def test_truncated_rar_is_refused(tmp_path, reader, name):
    cut = tmp_path / name
    cut.write_bytes((RAR_DATA / name).read_bytes()[:(RAR_DATA / name).stat().st_size // 2])
    (dest := tmp_path / "dest").mkdir()
    assert_refused(cut, dest, "is truncated or corrupt (", "); download it again")


def test_rar_with_symlinks_is_refused(tmp_path, reader):
    assert_refused(RAR_DATA / "rar3-symlink-unix.rar", tmp_path / "dest", "a link",
                   "refusing to extract it")


def test_solid_rar3_extracts_or_says_the_reader_lacks_it(tmp_path, reader):
    archive, dest = RAR_DATA / "rar3-solid.rar", tmp_path / "dest"
    if reader == "bsdtar":  # libarchive refuses solid RAR 3 archives
        assert_refused(archive, dest, "uses a feature the reader here lacks", "install unar")
    else:
        assert_files(extract(archive, dest), dest, RAR5_CRC)  # the same two files


def test_no_rar_reader_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "rarfile", None)  # import rarfile fails
    with pytest.raises(ArchiveError) as info:
        rar_reader()
    assert str(info.value) == ("no RAR reader on this machine: apt-get install libarchive-tools "
                               "(bsdtar) or unar, or pip install rarfile with unrar")
    assert_refused(RAR_DATA / "rar5-crc.rar", tmp_path / "dest", "apt-get install", named=False)
    assert archive_kind(RAR_DATA / "rar5-crc.rar") == "rar"  # still told apart


def test_unar_listing_is_read_from_lsar_json(monkeypatch):
    """lsar -j's listing, as unar's reader sees it (unar itself is not installed here)."""
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    contents = [{"XADFileName": "sub/a.avi"}, {"XADFileName": "sub", "XADIsDirectory": 1}]
    monkeypatch.setattr(archives, "_run", lambda command: json.dumps(
        {"lsarContents": contents}))
    assert rar_reader() == "unar"
    assert list_members(RAR_DATA / "rar5-crc.rar") == ["sub/a.avi"]
    contents.append({"XADFileName": "up", "XADIsLink": 1, "XADLinkDestination": ".."})
    with pytest.raises(ArchiveError, match="'up', a link"):
        list_members(RAR_DATA / "rar5-crc.rar")


def test_rarfile_reader(tmp_path, monkeypatch):
    """The rarfile package's path (run when it is installed), with whatever tool it finds."""
    rarfile = pytest.importorskip("rarfile")
    try:
        rarfile.tool_setup(force=True)
    except rarfile.RarCannotExec:
        pytest.skip("rarfile finds no unrar, unar, 7z or bsdtar to run")
    monkeypatch.setattr(archives, "rar_reader", lambda: "rarfile")
    dest = tmp_path / "dest"
    assert_files(extract(RAR_DATA / "rar3-subdirs.rar", dest), dest, RAR3_SUBDIRS)
    assert_refused(RAR_DATA / "rar3-symlink-unix.rar", tmp_path / "d2", "a link")
