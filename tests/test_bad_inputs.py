"""Every bad input is one line on stderr and exit code 2, never a traceback.

The next bad input is one row of CASES: (name, command line, fragment of the message).
`{world}`, `{teacher}`, `{tmp}` and `{labeled}` are filled in per test.
"""

import pytest

from distinit.cli import main

SMALL = ["model.arch=r3d_18", "model.width=8", "model.layers=[1,1,1,1]", "data.resize=36",
         "data.crop=32", "data.num_workers=0", "data.num_test_clips=2", "optim.batch_size=4",
         "optim.epochs=1", "log_every=1"]
DISTILL = ["distill", *SMALL, 'distill.teachers=[{{spec: "ckpt:{teacher}"}}]',
           "data.videos={world.corpus_dir}", "out_dir={tmp}/d"]
FINETUNE = ["finetune", *SMALL, "{labeled}", "out_dir={tmp}/f"]

CASES = [
    ("batch size 0", [*FINETUNE, "optim.batch_size=0"], "optim.batch_size must be >= 1, got 0"),
    ("clip_len 0", [*FINETUNE, "data.clip_len=0"], "data.clip_len must be >= 1"),
    ("stride 0", [*FINETUNE, "data.stride=0"], "data.stride must be >= 1"),
    ("ckpt_every 0", [*FINETUNE, "ckpt_every=0"], "ckpt_every must be >= 1"),
    ("no test clips", [*FINETUNE, "data.num_test_clips=0"], "data.num_test_clips must be >= 1"),
    ("negative workers", [*FINETUNE, "data.num_workers=-1"], "data.num_workers must be >= 0"),
    ("crop 0", [*FINETUNE, "data.crop=0"], "data.crop must be >= 1"),
    ("epochs 0", [*FINETUNE, "optim.epochs=0"], "optim.epochs must be > 0"),
    ("unknown key", [*FINETUNE, "optim.lrr=1"], "unknown config key optim.lrr"),
    ("cuda without cuda", [*FINETUNE, "device=cuda"], "sees no CUDA GPU"),
    ("unwritable out_dir", [*FINETUNE, "out_dir={tmp}/a_file/run"], "cannot write to out_dir"),
    ("width mismatch", [*FINETUNE, "model.init=checkpoint", "model.weights={tmp}/w8.pt",
                        "model.width=16"], "wrong shape"),
    ("eval width mismatch", ["eval", *SMALL, "{labeled}", "model.weights={tmp}/ft8.pt",
                             "model.width=16", "out_dir={tmp}/e"], "wrong shape"),
    ("one video, batch of 4", [*DISTILL[:-2], "data.videos={one}",
                               "out_dir={tmp}/d"], "less than one step"),
    ("empty folder", [*DISTILL[:-2], "data.videos={tmp}/empty", "out_dir={tmp}/d"],
     "data.extensions"),
    ("binary list file", [*DISTILL[:-2], "data.videos={tmp}/list.bin", "out_dir={tmp}/d"],
     "not a text list of videos"),
    ("list naming a missing non-UTF-8 file", [*DISTILL[:-2], "data.videos={tmp}/list.txt",
                                              "out_dir={tmp}/d"], "does not exist"),
    ("all videos bad, in workers", [*DISTILL[:-2], "data.videos={tmp}/bad",
                                    "data.num_workers=2", "optim.batch_size=2", "out_dir={tmp}/d"],
     "none of the 2 videos could be decoded"),
    ("crop larger than the frames, in workers", [*FINETUNE, "data.resize=0", "data.crop=64",
                                                  "data.num_workers=2"], "data.crop"),
    ("resume and overwrite", [*FINETUNE, "--resume", "--overwrite"], "exclude each other"),
    ("run already there", [*FINETUNE[:-1], "out_dir={tmp}/ft8"], "already holds a run"),
    ("scale jitter out of range", [*FINETUNE, "data.scale=[0.5, 1.5]"], "data.scale"),
    ("train-image with a video model", ["train-image", "model.arch=r3d_18",
                                        "data.images={world.objects_train}", "out_dir={tmp}/i"],
     "needs an image model"),
    ("train-image test classes differ", ["train-image", "model.arch=resnet18", "model.width=8",
                                         "model.layers=[1,1,1,1]", "optim.epochs=1",
                                         "optim.batch_size=4", "data.resize=36", "data.crop=32",
                                         "data.images={world.objects_train}",
                                         "data.images_test={world.scenes_test}",
                                         "out_dir={tmp}/i"], "need the same class folders"),
    ("broken YAML", ["finetune", "{tmp}/broken.yaml", *FINETUNE[1:]],
     "broken.yaml is not valid YAML at line 3, column 1: expected ',' or ']'"),
    ("YAML in UTF-16 without a byte-order mark", ["finetune", "{tmp}/utf16.yaml", *FINETUNE[1:]],
     "utf16.yaml is not valid YAML: unacceptable character #x0000"),
    ("a section given a number", ["finetune", "{tmp}/optim3.yaml", *FINETUNE[1:]],
     "optim3.yaml: optim must be a section of keys (e.g. optimizer, lr, momentum), got 3"),
    ("features to a name numpy would change", ["extract-features", *SMALL,
                                               "data.videos={world.corpus_dir}", "--out",
                                               "{tmp}/feats.pt"], "give a name ending in .npz"),
    ("demo recipe folder without recipes", ["demo", "size=tiny", "out_dir={tmp}/demo",
                                            "world_dir={world.root}", "recipes={tmp}/empty"],
     "recipe"),
]


@pytest.fixture(scope="module")
def prepared(world, tmp_path_factory):
    """Files the cases point at: a width-8 checkpoint, a fine-tuned run, bad data."""
    import torch

    from distinit.build import make_student
    from distinit.config import load_config
    from distinit.data.video.io import list_videos

    tmp = tmp_path_factory.mktemp("bad")
    labeled = ["data.format=hmdb51", f"data.video_root={world.actions_videos}",
               f"data.split_dir={world.actions_splits}"]
    student = make_student(load_config(None, SMALL).model, num_classes=len(world.action_classes))
    torch.save({"model": student.state_dict()}, tmp / "w8.pt")
    assert main(["finetune", *SMALL, *labeled, f"out_dir={tmp / 'ft8'}"]) == 0
    (tmp / "ft8.pt").write_bytes((tmp / "ft8" / "last.pt").read_bytes())
    (tmp / "a_file").write_text("")
    (tmp / "broken.yaml").write_text("optim:\n  lr: [0.1\n")
    (tmp / "utf16.yaml").write_bytes("optim:\n  lr: 0.1\n".encode("utf-16-le"))
    (tmp / "optim3.yaml").write_text("optim: 3\n")  # blamed on the file, not on optim.lr=...
    (tmp / "empty").mkdir()
    (tmp / "list.bin").write_bytes(b"\x00\x01\x02binary")
    (tmp / "list.txt").write_bytes(b"caf\xe9.mp4\n")
    (tmp / "bad").mkdir()
    (tmp / "bad" / "a.mp4").write_bytes(b"not a video")
    (tmp / "bad" / "b.mp4").write_bytes(b"")
    one = list_videos(world.corpus_dir)[0]
    return tmp, labeled, one


@pytest.mark.parametrize("name,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(name, argv, fragment, prepared, world, teacher_file, capsys):
    tmp, labeled, one = prepared
    args = []
    for a in argv:
        if a == "{labeled}":
            args += labeled
        else:
            args.append(a.format(world=world, teacher=teacher_file, tmp=tmp, one=one))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("warning: skipping video")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


class _RunsCode:
    """A pickle that calls a function when unpickled: here one that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("how", ["model.weights", "eval", "extract-features", "--resume"])
def test_a_checkpoint_that_runs_code_is_refused_and_no_code_runs(how, prepared, world, tmp_path,
                                                                 capsys):
    import torch

    tmp, labeled, _ = prepared
    marker = tmp_path / "code-ran"
    good = torch.load(tmp / "ft8.pt", weights_only=True)
    evil = tmp_path / "run" / "last.pt"
    evil.parent.mkdir()
    torch.save({**good, "extra": _RunsCode(marker)}, evil)
    before = evil.read_bytes()
    argv = {"model.weights": ["finetune", *SMALL, *labeled, "model.init=checkpoint",
                              f"model.weights={evil}", f"out_dir={tmp_path / 'f'}"],
            "eval": ["eval", *SMALL, *labeled, f"model.weights={evil}",
                     f"out_dir={tmp_path / 'e'}"],
            "extract-features": ["extract-features", *SMALL, f"data.videos={world.corpus_dir}",
                                 f"model.weights={evil}", "--out", str(tmp_path / "f.npz")],
            "--resume": ["finetune", *SMALL, *labeled, f"out_dir={evil.parent}", "--resume"]}[how]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()] and "Traceback" not in err
    assert f"refusing to load {evil}: it holds " in err and "pathlib." in err
    assert "can run code from the file" in err and ".safetensors" in err
    assert not marker.exists()
    assert evil.read_bytes() == before


def test_an_exported_safetensors_evaluates_like_its_checkpoint(prepared, tmp_path, capsys):
    import json

    tmp, labeled, _ = prepared
    out = tmp_path / "ft8.safetensors"
    assert main(["export", str(tmp / "ft8.pt"), str(out)]) == 0
    results = []
    for i, weights in enumerate([tmp / "ft8.pt", out]):
        assert main(["eval", *SMALL, *labeled, f"model.weights={weights}",
                     f"out_dir={tmp_path / str(i)}"]) == 0
        results.append(json.loads((tmp_path / str(i) / "results.json").read_text()))
    assert results[0] == results[1] and results[0]["videos"] == 8
    capsys.readouterr()
    assert main(["export", str(tmp / "ft8.pt"), str(tmp_path / "x.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
