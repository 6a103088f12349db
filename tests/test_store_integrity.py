"""Sharded stores (teacher-target cache, clip store) under what users and machines do to them:
a removed manifest, flipped, truncated or garbled shards, full and read-only disks (two
builders, signals and kill -9 leftovers: test_store_builders.py); each one line,
nothing lost, never a silently wrong result (`distinit.data.stores.shards`,
`distinit.data.stores.check`)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from store_case import ENV, cache_args, files_of, hold_lock, make_videos, one_error
from toy import can_mount_tmpfs

from distinit import cli
from distinit.data.stores import check as check_store
from distinit.data.stores import shards
from distinit.data.stores.clip_store import build_clip_store, store_folder
from distinit.data.video.frames import StoredFrames
from distinit.engine import dist
from distinit.errors import UserError
from distinit.targets import cache


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    return make_videos(tmp_path_factory)


@pytest.fixture
def new_process(monkeypatch):
    """Forget which shard files this process has verified, as a new run's process would."""
    monkeypatch.setattr(check_store, "_verified", {})


def _damage(file: Path, how: str) -> None:
    data = bytearray(file.read_bytes())
    if how == "flip":  # one byte of the last array (pixels or logits)
        data[-3] ^= 0x10
    elif how == "truncate":
        del data[len(data) // 2:]
    else:  # "garble": the header's first bytes, same size
        data[8:24] = b"#" * 16
    file.write_bytes(bytes(data))


# ---- damaged shards ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["flip", "truncate", "garble"])
def test_a_damaged_clip_store_shard_is_one_line_then_rebuilt_alone(videos, tmp_path, capsys,
                                                                    new_process, how):
    folder = build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    before = files_of(folder)
    shard = folder / shards.shard_name(1)
    _damage(shard, how)
    check_store._verified.clear()  # the next run is a new process
    with pytest.raises(UserError) as info:
        StoredFrames(folder, videos)
    message = str(info.value)
    assert "\n" not in message and f"at {folder}: shard-00001.safetensors is " in message
    assert "run `distinit store-clips CONFIG.yaml` again to rebuild only that shard" in message
    assert ("checksum differs" if how != "truncate" else "truncated") in message
    capsys.readouterr()
    build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)  # the builder run again
    out = capsys.readouterr().out
    assert f"clip store at {folder}: shard-00001.safetensors is " in out
    assert out.count("rebuilding it") == 1
    assert files_of(folder) == before  # the very bytes it had: the other shards untouched
    assert StoredFrames(folder, videos).frames(videos[2], [0, 5]).shape == (2, 36, 48, 3)


def test_a_flipped_logit_fails_distill_in_one_line_and_cache_targets_rebuilds_it(
        world, teacher_file, tmp_path, capsys, new_process):
    folder = tmp_path / "cache"
    args = cache_args(world, teacher_file, folder, "distill.cache_shard_size=8")
    assert cli.main(["cache-targets", *args]) == 0
    before = files_of(folder)
    _damage(folder / "shard-00001.safetensors", "flip")
    check_store._verified.clear()
    capsys.readouterr()
    run = ["distill", "model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]",
           "data.num_workers=0", "optim.batch_size=4", "optim.epochs=1", "distill.holdout=4",
           *args, f"out_dir={tmp_path / 'run'}"]
    assert cli.main(run) == 2
    assert one_error(capsys, "distill") == (
        f"distinit distill: error: the teacher-target cache at {folder}: shard-00001.safetensors "
        "is damaged (its checksum differs from the one recorded when it was written); run "
        "`distinit cache-targets CONFIG.yaml` again to rebuild only that shard")
    assert not (tmp_path / "run" / "last.pt").exists()
    assert cli.main(["cache-targets", *args]) == 0
    assert "shard-00001.safetensors is damaged" in capsys.readouterr().out
    assert files_of(folder) == before


# ---- the manifest and the shard size ----------------------------------------------------------

def test_a_removed_manifest_is_never_guessed_from_the_config_shard_size(
        world, teacher_file, tmp_path, capsys, new_process):
    folder = tmp_path / "cache"
    assert cli.main(["cache-targets", *cache_args(world, teacher_file, folder,
                                                   "distill.cache_shard_size=8")]) == 0
    (folder / "manifest.json").unlink()
    with pytest.raises(UserError) as info:  # a reader: one line, no guess
        shards.Store(folder, cache.WHAT, command=cache.COMMAND)
    assert "has 2 shards but no manifest.json (removed, or never copied)" in str(info.value)
    assert "run `distinit cache-targets CONFIG.yaml` again" in str(info.value)
    # The builder with another shard size (what a distill run's preparation step calls):
    # the old shards were made for another layout, so both are rebuilt, never reused.
    capsys.readouterr()
    args = cache_args(world, teacher_file, folder, "distill.cache_shard_size=4")
    assert cli.main(["cache-targets", *args]) == 0
    out = capsys.readouterr().out
    assert "has 2 shards but no manifest.json: writing it" in out
    assert out.count("was made for another store") == 2
    fresh = tmp_path / "fresh"
    assert cli.main(["cache-targets", *cache_args(world, teacher_file, fresh,
                                                   "distill.cache_shard_size=4")]) == 0
    assert files_of(folder) == files_of(fresh)  # every video's own logits, as a fresh build
    # A config whose shard size differs from a store's manifest finishes it with its own.
    (fresh / "shard-00001.safetensors").unlink()
    capsys.readouterr()
    assert cli.main(["cache-targets", *cache_args(world, teacher_file, fresh,
                                                   "distill.cache_shard_size=5")]) == 0
    assert "finishing it with its own shard size 4" in capsys.readouterr().out
    assert files_of(fresh) == files_of(folder)


def test_a_store_without_checksums_is_read_with_one_warning_and_rebuilt_with_them(
        videos, tmp_path, capsys, new_process):
    folder = build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    before = files_of(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    old = {k: v for k, v in manifest.items() if k not in ("checksum", "command")}
    (folder / "manifest.json").write_text(json.dumps(old, indent=1))  # as the old code wrote
    for f in folder.glob("*.sum"):
        f.unlink()
    assert shards.complete(folder)
    capsys.readouterr()
    for _ in range(2):
        StoredFrames(folder, videos).frames(videos[0], [0, 1])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no checksums (written by an older distinit)" in err[0]
    assert cli.main(["check-store", str(folder)]) == 1
    assert capsys.readouterr().out.startswith("unverified: ")
    build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    out = capsys.readouterr().out
    assert "written without checksums (by an older distinit): rebuilding its 3 shards" in out
    assert "rebuilding it\n" not in out  # one line, not one per shard
    assert files_of(folder) == before


MANIFESTS = {  # how a manifest is edited -> the problem its one line names
    "num_shards -1": (lambda m: {**m, "num_shards": -1},
                      "num_shards is -1, but its 5 videos in shards of 2 make 3"),
    "num_shards 0": (lambda m: {**m, "num_shards": 0},
                     "num_shards is 0, but its 5 videos in shards of 2 make 3"),
    "too few": (lambda m: {**m, "num_shards": 2},
                "num_shards is 2, but its 5 videos in shards of 2 make 3"),
    "a list": (lambda m: list(m.items()), "a JSON list, not an object"),
    "no num_shards": (lambda m: {k: v for k, v in m.items() if k != "num_shards"},
                      "no num_shards"),
}


@pytest.mark.parametrize("edit", list(MANIFESTS))
def test_a_manifest_that_miscounts_its_shards_is_refused_before_any_shard_is_trusted(
        videos, tmp_path, capsys, new_process, edit):
    cache_dir = tmp_path / "cache"
    folder = build_clip_store(videos, cache_dir, 36, "pyav", shard_size=2)
    _damage(folder / shards.shard_name(2), "flip")  # the last shard: uncounted by "too few"
    file = folder / "manifest.json"
    change, problem = MANIFESTS[edit]
    file.write_text(json.dumps(change(json.loads(file.read_text()))))
    before = files_of(folder)
    line = (f"{file} is damaged ({problem}): remove it and run `distinit store-clips "
            "CONFIG.yaml` again to rebuild the store (shards whose checksum records match are "
            "kept)")
    capsys.readouterr()
    assert cli.main(["check-store", str(folder)]) == 1
    said = line if edit != "a list" else line.replace(  # a list names no command to run
        "`distinit store-clips CONFIG.yaml`",
        "the command that built it (distinit store-clips or cache-targets)")
    assert capsys.readouterr().out == f"damaged: {said}\n"
    with pytest.raises(UserError) as info:  # a reader (a dataset with data.cache=store)
        StoredFrames(folder, videos)
    assert str(info.value) == line
    assert not shards.complete(folder)
    # A run with data.cache=store: one line, nothing trained, the store as it was.
    run = ["pretrain", "vspp", "configs/demo/vspp.yaml", "model.width=8", "optim.epochs=1",
           "optim.batch_size=2", f"data.videos={videos[0].parent}", "data.cache=store",
           f"data.cache_dir={cache_dir}", f"out_dir={tmp_path / 'run'}"]
    assert cli.main(run) == 2
    assert one_error(capsys, "pretrain") == f"distinit pretrain: error: {line}"
    assert not (tmp_path / "run" / "last.pt").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert files_of(folder) == before


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["022", "002"])
def test_store_files_follow_the_umask_as_any_file_does(videos, tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in folder.iterdir()
             if f.name != ".distinit.lock"}
    assert len(modes) == 7  # the manifest, 3 shards and their 3 records
    assert set(modes.values()) == {0o666 & ~umask}  # 0644 under umask 022: a shared cache_dir


# ---- full and read-only disks -----------------------------------------------------------------

def test_a_full_disk_is_one_line_no_temporary_file_and_the_written_shards_kept(
        videos, tmp_path, capsys, monkeypatch):
    calls, real = [], os.fsync

    def fsync(fd):  # the 4th file written: the manifest, shard 0's record and data, 1's record
        calls.append(fd)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")  # as a full disk says it
        return real(fd)

    monkeypatch.setattr(shards.os, "fsync", fsync)
    with pytest.raises(UserError) as info:
        build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)
    folder = store_folder(tmp_path, videos)
    assert str(info.value) == (
        f"cannot write shard-00001.safetensors of the clip store at {folder}: No space left "
        "on device; the 1 of 3 shards already written are kept: free some space and run the "
        "same command again to finish it")
    assert sorted(p.name for p in folder.iterdir()) == [
        ".distinit.lock", "manifest.json", "shard-00000.safetensors",
        "shard-00000.safetensors.sum"]
    kept = (folder / "shard-00000.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(shards.os, "fsync", real)
    build_clip_store(videos, tmp_path, 36, "pyav", shard_size=2)  # the same command again
    assert (folder / "shard-00000.safetensors").stat().st_mtime_ns == kept
    assert shards.complete(folder) and not list(folder.glob("*.tmp"))
    # store-clips into a new folder whose manifest does not fit: exit 2, one line, nothing left.
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards.os, "fsync", full)
    capsys.readouterr()
    other = tmp_path / "other"
    assert cli.main(["store-clips", f"data.videos={videos[0].parent}", f"data.cache_dir={other}",
                     "data.resize=36"]) == 2
    folder = store_folder(other, videos)
    assert one_error(capsys, "store-clips") == (
        f"distinit store-clips: error: cannot write {folder}/manifest.json: No space left on "
        "device; nothing was changed: free some space and run the same command again")
    assert [p.name for p in folder.iterdir()] == [".distinit.lock"]


@pytest.mark.skipif(not can_mount_tmpfs(), reason="this machine does not let a process mount a "
                    "tmpfs in its own namespace (unshare --user --map-root-user --mount)")
def test_cache_targets_on_a_real_full_then_read_only_tmpfs(world, teacher_file, tmp_path):
    mnt, saved = tmp_path / "mnt", tmp_path / "saved"
    mnt.mkdir()
    # --no-room-check: the point is what a real full disk does mid-build, not the refusal
    # before it (tests/test_plan.py tests that).
    run = shlex.join([sys.executable, "-m", "distinit.cli", "cache-targets", "--no-room-check",
                      *cache_args(world, teacher_file, mnt / "cache",
                                   "distill.cache_shard_size=2", "distill.cache_crops=8")])
    # 6 shards of ~9 KB (3 pages) and their records (1 page each): 48 KB hold about two.
    script = (f"mount -t tmpfs -o size=48k tmpfs {mnt} && {run} >/dev/null 2>{tmp_path}/e1; "
              f"echo $? >{tmp_path}/rc1; cp -a {mnt}/. {saved}1/; "
              f"mount -o remount,size=1m {mnt} && {run} >/dev/null 2>{tmp_path}/e2; "
              f"echo $? >{tmp_path}/rc2; cp -a {mnt}/. {saved}2/; "
              f"rm {mnt}/cache/shard-00005.safetensors; mount -o remount,ro {mnt} && "
              f"{run} >/dev/null 2>{tmp_path}/e3; echo $? >{tmp_path}/rc3; cp -a {mnt}/. {saved}3/")
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                   env=ENV, check=True, timeout=300)
    rc = [int((tmp_path / f"rc{i}").read_text()) for i in (1, 2, 3)]
    err = [(tmp_path / f"e{i}").read_text() for i in (1, 2, 3)]
    full = err[0].strip().splitlines()[-1]
    assert rc[0] == 2 and "Traceback" not in err[0], err[0]
    kept = sorted(p.name for p in (Path(f"{saved}1") / "cache").glob("shard-*.safetensors"))
    assert 1 <= len(kept) < 6
    assert full.startswith("distinit cache-targets: error: cannot write shard-")
    assert (f"No space left on device; the {len(kept)} of 6 shards already written are kept: "
            "free some space and run the same command again to finish it") in full
    left = sorted(p.name for p in (Path(f"{saved}1") / "cache").iterdir())
    assert left == sorted([".distinit.lock", "manifest.json", *kept, *[k + ".sum" for k in kept]])
    # Room again: the same command finishes, the shards kept are not rewritten.
    assert rc[1] == 0, err[1]
    first, again = Path(f"{saved}1") / "cache", Path(f"{saved}2") / "cache"
    assert all((first / k).read_bytes() == (again / k).read_bytes() for k in kept)
    assert len(list(again.glob("shard-*.safetensors"))) == 6
    # A read-only folder: one line, nothing changed.
    assert rc[2] == 2 and err[2].strip().splitlines()[-1] == (
        f"distinit cache-targets: error: cannot write the teacher-target cache at {mnt / 'cache'}"
        ": Read-only file system; make it writable or choose another folder, then run the same "
        "command again"), err[2]
    assert sorted(p.name for p in (Path(f"{saved}3") / "cache").iterdir()) == sorted(
        p.name for p in again.iterdir() if p.name != "shard-00005.safetensors")


# ---- check-store, ranks ------------------------------------------------------------------------

def test_check_store_names_each_bad_shard_and_the_command_that_rebuilds_it(
        videos, tmp_path, capsys):
    one = build_clip_store(videos[:3], tmp_path, 36, "pyav", shard_size=2)
    two = build_clip_store(videos[3:], tmp_path, 36, "pyav", shard_size=1)
    assert cli.main(["check-store", str(tmp_path)]) == 0  # a cache_dir: each of its stores
    lines = sorted(capsys.readouterr().out.splitlines())
    assert len(lines) == 2 and all(line.endswith(" MiB, every checksum matches") for line in lines)
    assert {line.split(": 2 shards, ")[0] for line in lines} == {
        f"ok: the clip store at {one}", f"ok: the clip store at {two}"}
    _damage(one / "shard-00001.safetensors", "flip")
    (two / "shard-00000.safetensors").unlink()
    assert cli.main(["check-store", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (f"damaged: the clip store at {one}: 1 of 2 shards bad: shard-00001.safetensors is "
            "damaged (its checksum differs from the one recorded when it was written); run "
            "`distinit store-clips CONFIG.yaml` again to rebuild only that shard") in out
    assert f"damaged: the clip store at {two}: 1 of 2 shards bad: shard-00000.safetensors is " \
           "missing" in out
    holder = hold_lock(one, 60)  # a builder at work: not called damaged
    try:
        assert cli.main(["check-store", str(one)]) == 1
        out = capsys.readouterr().out
        assert out.startswith(f"busy: the clip store at {one} is being written by pid "
                              f"{holder.pid} on ") and out.count("\n") == 1
        assert out.endswith("; check it once that finishes\n")
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(["check-store", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in one_error(capsys, "check-store")
    (tmp_path / "empty").mkdir()
    assert cli.main(["check-store", str(tmp_path / "empty")]) == 2
    assert "no store in" in one_error(capsys, "check-store")


def test_each_rank_records_the_shards_it_writes(videos, tmp_path, monkeypatch, new_process):
    monkeypatch.setattr(dist, "barrier", lambda: None)
    monkeypatch.setattr(dist, "broadcast_object", lambda obj: obj)
    for rank in (0, 1):
        monkeypatch.setattr(dist, "rank_world", lambda r=rank: (r, 2))
        folder = build_clip_store(videos, tmp_path, 36, "pyav", shard_size=1)
    assert sorted(p.name for p in folder.glob("*.sum")) == [
        shards.shard_name(i) + ".sum" for i in range(5)]
    assert check_store.check_store(folder)[0]
    StoredFrames(folder, videos)  # every shard checked, whichever rank wrote it
