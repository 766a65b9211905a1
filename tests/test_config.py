"""Config precedence and errors: defaults < YAML < flags < key=value, every error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlab import config
from tlab.errors import TlabError

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_defaults_yaml_flags_overrides(tmp_path):
    # Each key is set by a different set of layers; the highest layer that sets it must win.
    yaml = tmp_path / "run.yaml"
    yaml.write_text("train:\n  lr: 0.01\n  batch_size: 8\n  epochs: 2\n  seed: 3\ndata:\n  block_size: 64\n")
    cfg = config.load(
        str(yaml),
        flags={"train.batch_size": 4, "train.seed": 5, "train.epochs": None, "train.grad_accum": 2},
        overrides=["train.lr=3e-5", "train.seed=9"],
        defaults={"train.lr": 1.0, "train.warmup": 0.2, "data.block_size": 32},
    )
    assert cfg.train.warmup == 0.2  # command default only: beats the dataclass default
    assert cfg.data.block_size == 64  # YAML beats command default
    assert cfg.train.batch_size == 4  # flag beats YAML
    assert cfg.train.grad_accum == 2  # flag only
    assert cfg.train.seed == 9  # key=value beats flag and YAML
    assert cfg.train.lr == 3e-5  # key=value beats YAML and command default
    assert cfg.train.epochs == 2  # a flag not given (None) leaves the YAML value
    assert cfg.train.max_steps == config.TrainConfig().max_steps  # set nowhere: the dataclass default
    assert cfg.data == config.DataConfig(block_size=64)


def test_unknown_keys_name_the_whole_key(tmp_path):
    with pytest.raises(TlabError, match="unknown config key 'no.such.key'"):
        config.load(overrides=["no.such.key=1"])
    with pytest.raises(TlabError, match="unknown config key 'train.lrr'"):
        config.load(overrides=["train.lrr=1"])
    with pytest.raises(TlabError, match="unknown config key 'data.tokenizer.name'"):
        config.load(overrides=["data.tokenizer.name=x"])
    with pytest.raises(TlabError, match="unknown config key 'train.lrr'"):
        config.load(flags={"train.lrr": 1})
    yaml = tmp_path / "bad.yaml"
    yaml.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(TlabError, match="unknown config key 'train.learning_rate'"):
        config.load(str(yaml))


def test_wrong_types_and_values_name_the_key(tmp_path):
    with pytest.raises(TlabError, match="invalid value for train.batch_size"):
        config.load(overrides=["train.batch_size=many"])
    with pytest.raises(TlabError, match="invalid value for model.vocab_size"):
        config.load(flags={"model.vocab_size": 1.5})
    with pytest.raises(TlabError, match="train.precision"):
        config.load(overrides=["train.precision=fp8"])
    with pytest.raises(TlabError, match="model.freeze"):
        config.load(overrides=["model.freeze=half"])
    with pytest.raises(TlabError, match="key=value"):
        config.load(overrides=["train.lr"])
    yaml = tmp_path / "types.yaml"
    yaml.write_text("data:\n  block_size: lots\n")
    with pytest.raises(TlabError, match="invalid value for data.block_size"):
        config.load(str(yaml))
    yaml.write_text("train: 3\n")  # a whole section given a plain value
    with pytest.raises(TlabError, match="invalid value for train:"):
        config.load(str(yaml))


def test_free_form_model_overrides_and_derived_values():
    cfg = config.load(overrides=["model.overrides.num_hidden_layers=3", "train.batch_size=8", "train.grad_accum=4"])
    assert cfg.model.overrides == {"num_hidden_layers": 3}
    assert cfg.global_batch(world_size=2) == 64
    assert cfg.train.eval_batch() == 16


def test_config_is_frozen_and_round_trips_through_yaml(tmp_path):
    cfg = config.load(overrides=["train.lr=0.5", "data.train_files=[a.txt,b.txt]"])
    with pytest.raises(Exception):
        cfg.train.lr = 1.0  # type: ignore[misc]
    saved = tmp_path / "config.yaml"
    saved.write_text(config.to_yaml(cfg))
    assert config.load(str(saved)) == cfg


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(TlabError, match="not found"):
        config.load(str(tmp_path / "nope.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(TlabError):
        config.load(str(broken))


# configs/accelerate/ holds accelerate's own format; tests/test_distributed.py loads those.
SHIPPED = sorted((ROOT / "configs").glob("pretrain/*.yaml")) + sorted((ROOT / "configs").glob("finetune/*.yaml"))


def test_configs_are_shipped():
    assert len(SHIPPED) >= 11


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_yaml_loads(path):
    text = path.read_text()
    assert text.startswith("#") and "tlab " in text.split("\n\n")[0], "YAML must open with the command that uses it"
    cfg = config.load(str(path))
    assert cfg.task
