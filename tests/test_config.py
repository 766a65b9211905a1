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
    with pytest.raises(Exception):  # noqa: B017 (dataclasses.FrozenInstanceError, or OmegaConf's own)
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


# -- the seq2seq options that were translation.* ----------------------------------------------------------------
OLD_STYLE_RUN = """task: wmt14-en-de
output_dir: runs/old
translation:
  source_lang: en
  target_lang: de
  detokenize: auto
  source_prefix: null
  max_source_length: 64
  max_target_length: 64
  label_smoothing: 0.1
  max_tokens: 0
  num_beams: 2
  length_penalty: 1.0
  max_new_tokens: 32
  max_length_a: 1.5
  max_length_b: 10
  average_checkpoints: 0
  warm_start: false
"""


def test_old_style_translation_keys_load_into_seq2seq(tmp_path):
    # a run directory written before the seq2seq section existed: every moved key is read from translation.*
    old = tmp_path / "config.yaml"
    old.write_text(OLD_STYLE_RUN)
    for cfg in (config.load(run_config=str(old)), config.load(str(old))):
        assert cfg.seq2seq.num_beams == 2 and cfg.seq2seq.max_source_length == 64 and cfg.seq2seq.max_new_tokens == 32
        assert cfg.translation.source_lang == "en" and cfg.translation.target_lang == "de"
        assert cfg.translation == config.TranslationConfig(source_lang="en", target_lang="de")
    # what is written now has the new section, and reads back the same
    text = config.to_yaml(config.load(run_config=str(old)))
    assert "seq2seq:" in text and "num_beams" not in text.split("translation:")[1]
    (tmp_path / "new.yaml").write_text(text)
    assert config.load(str(tmp_path / "new.yaml")) == config.load(run_config=str(old))


def test_old_style_overrides_flags_and_defaults_set_seq2seq(tmp_path):
    cfg = config.load(overrides=["translation.max_tokens=512", "translation.source_lang=fr"])
    assert cfg.seq2seq.max_tokens == 512 and cfg.translation.source_lang == "fr"
    cfg = config.load(flags={"translation.num_beams": 3}, defaults={"translation.average_checkpoints": 4})
    assert cfg.seq2seq.num_beams == 3 and cfg.seq2seq.average_checkpoints == 4
    assert config.load(overrides=["seq2seq.num_beams=5"]).seq2seq.num_beams == 5
    # layers keep their precedence whichever name they use; within one layer the new name wins
    yaml = tmp_path / "run.yaml"
    yaml.write_text("translation:\n  num_beams: 6\n  label_smoothing: 0.2\n")
    cfg = config.load(str(yaml), overrides=["seq2seq.label_smoothing=0.3"])
    assert cfg.seq2seq.num_beams == 6 and cfg.seq2seq.label_smoothing == 0.3
    assert config.load(overrides=["translation.num_beams=7", "seq2seq.num_beams=8"]).seq2seq.num_beams == 8
    # values are checked under the new name
    with pytest.raises(TlabError, match="seq2seq.num_beams and max_new_tokens must be >= 1"):
        config.load(overrides=["translation.num_beams=0"])
    with pytest.raises(TlabError, match="seq2seq.max_tokens"):
        config.load(overrides=["translation.max_tokens=many"])


def test_unknown_translation_and_seq2seq_keys_still_error(tmp_path):
    for key in ("translation.no_such_key", "seq2seq.no_such_key", "seq2seq.source_lang", "translation.num_beamz"):
        with pytest.raises(TlabError, match=f"unknown config key '{key}'"):
            config.load(overrides=[f"{key}=1"])
    yaml = tmp_path / "run.yaml"
    yaml.write_text("translation:\n  num_beams: 2\n  no_such_key: 1\n")
    with pytest.raises(TlabError, match="unknown config key 'translation.no_such_key'"):
        config.load(str(yaml))
    with pytest.raises(TlabError, match="expected a mapping of seq2seq"):
        config.load(overrides=["seq2seq=1", "translation.num_beams=2"])


def test_best_metric_picks_the_metric_and_its_direction():
    from tlab import tasks
    from tlab.sweep import settings, study

    def cfg(task, *overrides):
        return config.load(flags={"task": task}, overrides=list(overrides))

    assert tasks.selection(tasks.info("cola"), cfg("cola")) == ("matthews_correlation", True)
    assert tasks.selection(tasks.info("cola"), cfg("cola", "train.best_metric=loss")) == ("loss", False)
    assert tasks.selection(tasks.info("wmt14-en-de"), cfg("wmt14-en-de", "train.best_metric=chrf")) == ("chrf", True)
    assert tasks.selection(tasks.info("mlm"), cfg("mlm", "train.best_metric=perplexity")) == ("perplexity", False)
    # classification reports its loss beside its metrics; translation scores generations only
    assert "loss" in tasks.selectable_metrics(tasks.info("cola"), cfg("cola"))
    assert "loss" not in tasks.selectable_metrics(tasks.info("wmt14-en-de"), cfg("wmt14-en-de"))
    multi = cfg("classification", "classification.multi_label=true")
    assert tasks.selectable_metrics(tasks.info("classification"), multi)[:3] == ("micro_f1", "macro_f1", "subset_accuracy")
    tasks.check_options(tasks.info("classification"), config.load(flags={"task": "classification"}, overrides=[
        "classification.multi_label=true", "train.best_metric=macro_f1"]))
    with pytest.raises(TlabError, match="train.best_metric 'rouge1' is not a metric of wmt14-en-de: pick one of bleu, chrf"):
        tasks.check_options(tasks.info("wmt14-en-de"), cfg("wmt14-en-de", "train.best_metric=rouge1"))
    # a sweep tunes the metric its runs keep their checkpoints by
    base = cfg("cola", "train.best_metric=loss")
    swept = study.Sweep.of(Path("sweeps/cola"), base, settings.SweepConfig(space=["train.lr=1e-5:1e-4:log"]))
    assert (swept.metric, swept.greater) == ("loss", False)
    with pytest.raises(TlabError, match="train.best_metric 'bleu'"):
        study.Sweep.of(Path("sweeps/cola"), cfg("cola", "train.best_metric=bleu"), settings.SweepConfig(space=["train.lr=1e-5:1e-4:log"]))
