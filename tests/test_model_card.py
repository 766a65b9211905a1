"""Every saved model carries model/README.md in the Hub's format; huggingface_hub's own parser reads it back, and
its model-index names the task's metrics with the values of metrics.json."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from huggingface_hub import ModelCard

from conftest import lm_config
from tlab import config, model_card
from tlab.cli import main

TINY = ["model.preset=tiny", "model.vocab_size=1000", "data.block_size=64", "train.batch_size=16", "train.log_every=2",
        "data.validation_fraction=0.1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shakespeare):
    """A tiny MLM run through the `tlab` entry point, so the command line is recorded as typed."""
    out = tmp_path_factory.mktemp("card") / "mlm-card"
    argv = ["tlab", "pretrain", "--train-file", str(shakespeare), "--output-dir", str(out), "--max-steps", "6",
            "--eval-every", "3", *TINY]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            main()
    assert exit_.value.code in (0, None)
    return out, argv


def test_model_card_parses_and_matches_metrics_json(run):
    out, argv = run
    card = ModelCard.load(out / "model" / "README.md")
    metrics = json.loads((out / "metrics.json").read_text())
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "fill-mask" and "tlab" in data.tags
    assert data.base_model is None  # from scratch
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {k: metrics["final"][k] for k in ("loss", "perplexity", "accuracy")}  # not the token count
    assert {r.task_type for r in data.eval_results} == {"fill-mask"} and data.model_name == "mlm-card"
    assert shlex.join(argv) + "   # as typed" in card.text
    assert "tlab pretrain --config config.yaml" in card.text
    assert config.to_yaml(config.load(str(out / "config.yaml"))).strip() in card.text
    assert "train tokens:" in card.text


def test_fine_tuned_card_names_its_base_model_and_dataset(tmp_path):
    """Rendered for a GLUE fine-tune of a Hub model (no training needed to check the metadata)."""
    cfg = config.load(flags={"task": "sst2", "model.name_or_path": "google-bert/bert-base-uncased", "output_dir": str(tmp_path / "sst2")})
    metrics = {"final": {"accuracy": 0.91, "examples": 872}, "steps": 100, "parameters": 109_000_000,
               "best": {"checkpoint": "step-80", "accuracy": 0.91}, "last_eval": {"accuracy": 0.9}}
    card = ModelCard(model_card.render(cfg, metrics, [["tlab", "finetune", "--task", "sst2"]]))
    assert card.data.base_model == "google-bert/bert-base-uncased" and card.data.datasets == ["nyu-mll/glue"]
    assert card.data.pipeline_tag == "text-classification"
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_config) == ("accuracy", 0.91, "sst2")
    assert "the best checkpoint, step-80" in card.text


def test_local_base_model_stays_out_of_the_metadata(tmp_path, shakespeare):
    cfg = lm_config(tmp_path / "run", shakespeare, "mlm", **{"model.name_or_path": str(tmp_path)})
    card = ModelCard(model_card.render(cfg, {"final": {"loss": 2.0}}, []))
    assert card.data.base_model is None and f"starting from `{tmp_path}`" in card.text
