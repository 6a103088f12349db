from dataclasses import dataclass

import pytest

from distinit.config import ConfigError, checked, load_config


def test_defaults_yaml_overrides_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 0.5\n  epochs: 3\nmodel:\n  arch: r3d_18\n"
                 "distill:\n  teachers:\n    - {spec: 'ckpt:t.pt', weight: 2}\n")
    cfg = load_config(f, ["optim.lr=0.1", "data.crop=64", "model.layers=[1,1,1,1]",
                          "distill.teachers.0.weights=w.pt"])
    assert cfg.optim.lr == 0.1 and cfg.optim.epochs == 3.0 and cfg.optim.momentum == 0.9
    assert cfg.model.arch == "r3d_18" and cfg.model.layers == [1, 1, 1, 1]
    assert cfg.data.crop == 64
    t = cfg.distill.teachers[0]
    assert (t.spec, t.weight, t.weights, t.arch) == ("ckpt:t.pt", 2.0, "w.pt", "")


@pytest.mark.parametrize("override, words", [
    (["optim.lrr=0.1"], ["optim.lrr", "optim.lr"]),
    (["nope=1"], ["nope", "valid keys"]),
    (["optim.epochs=ten"], ["optim.epochs", "float"]),
    (["data.crop=1.5"], ["data.crop", "int"]),
    (["data.flip=3"], ["data.flip", "bool"]),
    (["model.layers=3"], ["model.layers", "list"]),
    (["justakey"], ["key=value"]),
])
def test_bad_overrides_are_errors_naming_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    for w in words:
        assert w in str(e.value)


def test_bad_yaml_keys_and_missing_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(f)
    f.write_text("distill:\n  teachers:\n    - {spec: x, wieght: 2}\n")
    with pytest.raises(ConfigError, match="wieght"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_defaults_pass_their_own_rules():
    load_config(None)


@pytest.mark.parametrize("override, words", [
    ("optim.batch_size=0", "optim.batch_size must be >= 1, got 0"),
    ("optim.accum_steps=0", "optim.accum_steps must be >= 1"),
    ("optim.epochs=0", "optim.epochs must be > 0, got 0.0"),
    ("optim.lr=0", "optim.lr must be > 0"),
    ("optim.lr=-1e-3", "optim.lr must be > 0, got -0.001"),
    ("optim.step_epochs=0", "optim.step_epochs must be > 0"),
    ("optim.epoch_size=-1", "optim.epoch_size must be >= 0"),
    ("optim.momentum=1", "optim.momentum must be < 1"),
    ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs must be >= 0"),
    ("optim.optimizer=adam", "optim.optimizer must be one of sgd, adamw; got 'adam'"),
    ("optim.schedule=poly", "optim.schedule must be one of step, cosine"),
    ("optim.lr=.inf", "optim.lr: expected a finite number"),
    ("optim.lr=1e999", "optim.lr: expected a finite number"),
    ("optim.lr=abc", "optim.lr: expected float, got 'abc'"),
    ("data.clip_len=0", "data.clip_len must be >= 1, got 0"),
    ("data.stride=0", "data.stride must be >= 1"),
    ("data.crop=0", "data.crop must be >= 1"),
    ("data.resize=-1", "data.resize must be >= 0"),
    ("data.num_test_clips=0", "data.num_test_clips must be >= 1"),
    ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
    ("data.format=kinetics", "data.format must be one of hmdb51, ucf101, csv"),
    ("data.cache=ram", "data.cache must be one of none, memory, disk"),
    ("data.mean=[0.5,0.5]", "data.mean must have 0 or 3 values, got 2"),
    ("data.std=[0.2,0,0.2]", "data.std[1] must be > 0, got 0.0"),
    ("model.layers=[2,0,2,2]", "model.layers[1] must be >= 1, got 0"),
    ("model.stem_kernel=[3]", "model.stem_kernel must have 0 or 2 values"),
    ("model.width=0", "model.width must be >= 1"),
    ("model.init=imagenet", "model.init must be one of scratch, checkpoint, inflate"),
    ("distill.frames=all", "distill.frames must be one of center, random, multi"),
    ("distill.loss=kl", "distill.loss must be one of ce, mse"),
    ("distill.temperature=0", "distill.temperature must be > 0"),
    ("distill.num_frames=0", "distill.num_frames must be >= 1"),
    ("distill.max_entropy=-1", "distill.max_entropy must be >= 0"),
    ("precision=fp16", "precision must be one of auto, bf16, fp32; got 'fp16'"),
    ("channels_last=yes", "channels_last must be one of auto, on, off"),
    ("log_every=0", "log_every must be >= 1, got 0"),
    ("ckpt_every=0", "ckpt_every must be >= 1"),
    ("stop_after=-1", "stop_after must be >= 0"),
    ("threads=-1", "threads must be >= 0"),
])
def test_out_of_range_values_are_one_line_errors(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_rules_apply_in_yaml_files_and_list_items(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  clip_len: 0\n")
    with pytest.raises(ConfigError, match=r"data.clip_len must be >= 1, got 0"):
        load_config(f)
    f.write_text("distill:\n  teachers:\n    - {spec: x, std: [0.2, 0.2, -1]}\n")
    with pytest.raises(ConfigError, match=r"distill.teachers\[0\].std\[2\] must be > 0"):
        load_config(f)


def test_zero_means_off_keys_accept_zero():
    cfg = load_config(None, ["stop_after=0", "eval_every=0", "threads=0", "optim.clip_grad=0",
                             "optim.warmup_epochs=0", "optim.epoch_size=0", "data.resize=0",
                             "distill.max_entropy=0", "data.mean=[]", "data.std=[]"])
    assert cfg.optim.epoch_size == 0 and cfg.data.mean == [] and cfg.data.std == []


def test_scientific_notation_is_a_float(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  weight_decay: 5e-3\n  epochs: 1e1\n"
                 "data:\n  mean: [0.5, 5E-1, .5]\n  std: [2.5e-1, 0.25, 0.25]\n")
    cfg = load_config(f, ["optim.lr=1e-4"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == 5e-3 and isinstance(cfg.optim.weight_decay, float)
    assert cfg.optim.epochs == 10.0 and cfg.data.mean == [0.5] * 3 and cfg.data.std == [0.25] * 3


def test_rules_reach_other_config_classes():  # e.g. the demo's own config
    @dataclass
    class Stage:
        epochs: float = checked(3.0, gt=0)

    assert load_config(None, ["epochs=2e0"], cls=Stage).epochs == 2.0
    with pytest.raises(ConfigError, match="epochs must be > 0"):
        load_config(None, ["epochs=0"], cls=Stage)


def test_yaml_with_a_byte_order_mark_is_read_in_any_unicode_encoding(tmp_path):
    for encoding in ("utf-8-sig", "utf-16", "utf-16-be"):
        f = tmp_path / f"{encoding}.yaml"
        mark = "\ufeff" if encoding == "utf-16-be" else ""  # the others write their own
        f.write_bytes((mark + "optim:\n  lr: 0.5\n").encode(encoding))
        assert load_config(f).optim.lr == 0.5
