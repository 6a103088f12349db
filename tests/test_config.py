import pytest

from distinit.config import ConfigError, load_config


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
