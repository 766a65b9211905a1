"""`tlab eval --baseline ... --max-drop ...`: a gate that tells noise from a regression, end to end on tiny models
(a 2-layer hidden-32 BERT, tokenizers trained in-process). Each family's evaluation keeps per-example outcomes
that recompute exactly the metrics it reports; a trained classifier passes against itself (delta 0) and fails
against a copy with its head flipped; results on other examples, of another task or a --max-drop naming a metric
the task does not have end in one line and exit 2."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from tlab import config, outcomes, pipeline
from tlab.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()
quiet = {"echo": lambda _m: None}
FILLER = "the a movie film story plot actor scene music was is and it this that very quite really".split()
POSITIVE, NEGATIVE = "good great fine lovely superb".split(), "bad awful poor boring dull".split()


def reviews(path: Path, n: int, seed: int) -> Path:
    """Made-up reviews whose label is told by one word: a tiny model learns them in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.random() < 0.5
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"text": " ".join(words), "label": "positive" if label else "negative"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_bert(path: Path, texts: list[str], head: str, **config) -> Path:
    """A random 2-layer hidden-32 BERT with `head` (e.g. BertForSequenceClassification) and a WordPiece tokenizer
    trained on `texts`, saved as a plain model folder."""
    import torch
    import transformers

    from tlab import modeling

    tokenizer = modeling.train_tokenizer(lambda: iter(texts), "mlm", 300, f"gate-{path.name}")
    torch.manual_seed(0)
    model = getattr(transformers, head)(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=256, **config))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny classifier trained to ~100% on the made-up reviews, its results file, and a copy whose head is
    flipped (it predicts the other label every time)."""
    tmp = tmp_path_factory.mktemp("gate")
    train, valid = reviews(tmp / "train.jsonl", 400, 0), reviews(tmp / "valid.jsonl", 200, 1)
    texts = [json.loads(line)["text"] for line in train.read_text().splitlines()]
    start = tiny_bert(tmp / "bert", texts, "BertForSequenceClassification", num_labels=2)
    run = tmp / "run"
    result = runner.invoke(app, ["finetune", "--task", "classification", "--model", str(start), "--train-file", str(train),
                                 "--validation-file", str(valid), "-o", str(run), "--max-steps", "80", "--batch-size", "16",
                                 "--lr", "3e-3", "--eval-every", "40", "train.warmup=0.1"])
    assert result.exit_code == 0, result.output
    flipped = tmp / "flipped"
    shutil.copytree(run, flipped)
    (flipped / outcomes.OUTCOMES_FILE).unlink()
    from safetensors.torch import load_file, save_file

    weights = load_file(flipped / "model" / "model.safetensors")
    for name in ("classifier.weight", "classifier.bias"):
        weights[name] = weights[name].flip(0).contiguous()
    save_file(weights, flipped / "model" / "model.safetensors", metadata={"format": "pt"})
    results = tmp / "results.json"
    scored = runner.invoke(app, ["eval", "--model", str(run), "--output", str(results)])
    assert scored.exit_code == 0, scored.output
    return {"run": run, "flipped": flipped, "results": results, "valid": valid, "tmp": tmp}


@pytest.mark.slow  # trains the tiny classifier (a few seconds)
def test_results_keep_outcomes_that_recompute_their_metrics(classifier):
    data = json.loads(classifier["results"].read_text())
    record = data["outcomes"]["validation"]
    assert record["kind"] == "labels" and record["n"] == 200 and record["ids"] == list(range(200))
    assert data["metrics"]["accuracy"] > 0.9  # the tiny model learned the reviews
    assert outcomes.recompute(record) == pytest.approx({k: data["metrics"][k] for k in ("accuracy", "macro_f1")})
    labels = {"negative": 0, "positive": 1}  # the references are the file's labels, in the file's order
    assert record["references"] == [labels[json.loads(line)["label"]] for line in classifier["valid"].read_text().splitlines()]
    assert data["fingerprint"] == outcomes.fingerprint_all(data["outcomes"])
    saved = json.loads((classifier["run"] / outcomes.OUTCOMES_FILE).read_text())  # the run's own: the saved model's
    assert saved["outcomes"]["validation"]["predictions"] == record["predictions"]


@pytest.mark.slow  # trains the tiny classifier (a few seconds)
def test_a_model_against_itself_passes_with_delta_zero(classifier, tmp_path):
    for baseline in (classifier["results"], classifier["run"]):  # a results file, a run's outcomes.json
        out = tmp_path / "self.json"
        result = runner.invoke(app, ["eval", "--model", str(classifier["run"]), "--baseline", str(baseline),
                                     "--max-drop", "accuracy=0.01", "--output", str(out)])
        assert result.exit_code == 0, result.output
        rows = {r["metric"]: r for r in json.loads(out.read_text())["comparison"]["metrics"]}
        assert rows["accuracy"]["delta"] == 0 and rows["accuracy"]["p_value"] == 1 and rows["accuracy"]["passed"]
        assert rows["accuracy"]["n"] == 200 and rows["accuracy"]["test"] == "McNemar exact"
        assert "paired comparison with" in result.output and "within noise (max drop 0.01: ok)" in result.output


@pytest.mark.slow  # trains the tiny classifier (a few seconds)
def test_a_clearly_worse_model_fails_the_gate(classifier, tmp_path):
    out = tmp_path / "worse.json"
    result = runner.invoke(app, ["eval", "--model", str(classifier["flipped"]), "--baseline", str(classifier["results"]),
                                 "--max-drop", "accuracy=0.01", "--output", str(out)])
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    row = next(r for r in data["comparison"]["metrics"] if r["metric"] == "accuracy")
    assert row["verdict"] == "regression" and row["high"] < -0.01 and row["p_value"] < 1e-6 and data["passed"] is False
    assert "regression (max drop 0.01: FAILED)" in result.output
    # without --max-drop the comparison is shown but gates nothing; a run without outcomes.json is evaluated
    shown = runner.invoke(app, ["eval", "--model", str(classifier["run"]), "--baseline", str(classifier["flipped"])])
    assert shown.exit_code == 0, shown.output
    assert "evaluating the baseline" in shown.output and "better" in shown.output


@pytest.mark.slow  # trains the tiny classifier (a few seconds)
def test_other_examples_another_task_or_an_unknown_metric_are_one_line_exit_2(classifier, tmp_path):
    other = reviews(tmp_path / "other.jsonl", 200, 2)
    run, results = str(classifier["run"]), str(classifier["results"])
    moved = runner.invoke(app, ["eval", "--model", run, "--validation-file", str(other), "--baseline", results])
    assert moved.exit_code == 2
    one_line_error(moved, "other examples", "of 200 validation examples differ", "the first at id")
    fewer = runner.invoke(app, ["eval", "--model", run, "--baseline", results, "data.max_eval_samples=150"])
    assert fewer.exit_code == 2
    one_line_error(fewer, "50 of 200 validation examples differ", "(200 examples in --baseline", "150 here")
    data = json.loads(classifier["results"].read_text())
    (tmp_path / "rte.json").write_text(json.dumps({**data, "task": "rte"}))
    wrong_task = runner.invoke(app, ["eval", "--model", run, "--baseline", str(tmp_path / "rte.json")])
    assert wrong_task.exit_code == 2
    one_line_error(wrong_task, "is of task rte", "this evaluation of classification")
    for args, needle in ((["--max-drop", "f1=0.01"], "does not report"), (["--max-drop", "loss=0.1"], "not comparable"),
                         (["--max-drop", "accuracy"], "not of the form")):
        bad = runner.invoke(app, ["eval", "--model", run, "--baseline", results, *args])
        assert bad.exit_code == 2
        one_line_error(bad, needle)
    alone = runner.invoke(app, ["eval", "--model", run, "--max-drop", "accuracy=0.01"])
    assert alone.exit_code == 2
    one_line_error(alone, "pass --baseline")


# -- every family's outcomes recompute its metrics ------------------------------------------------------------------
def evaluated(task: str, model: Path, *overrides: str, **flags) -> dict:
    cfg = config.load(flags={"task": task, "model.name_or_path": str(model), **flags}, overrides=list(overrides))
    return pipeline.evaluate(cfg, **quiet)


def assert_recomputed(results: dict) -> None:
    assert results["outcomes"], results["task"]
    for rec in results["outcomes"].values():
        found = outcomes.recompute(rec)
        assert found and found == pytest.approx({k: results["metrics"][k] for k in found}, abs=1e-4), results["task"]


def test_regression_scores_and_their_pearson_spearman(tmp_path):
    texts = [line.split("\t")[7] for line in (DATA / "glue" / "STS-B" / "dev.tsv").read_text().splitlines()[1:]]
    model = tiny_bert(tmp_path / "stsb", texts, "BertForSequenceClassification", num_labels=1)
    results = evaluated("stsb", model, **{"data.data_dir": str(DATA / "glue")})
    assert results["outcomes"]["validation"]["kind"] == "scores"
    assert_recomputed(results)


def test_named_entities_by_sentence(tmp_path):
    rows = [{"tokens": ["John", "lives", "in", "Paris", "."], "ner_tags": ["B-PER", "O", "O", "B-LOC", "O"]},
            {"tokens": ["Mary", "Ann", "Smith", "met", "Bob"], "ner_tags": ["B-PER", "I-PER", "I-PER", "O", "B-PER"]},
            {"tokens": ["Rome", "and", "New", "York"], "ner_tags": ["B-LOC", "O", "B-LOC", "I-LOC"]}] * 10
    valid = tmp_path / "valid.jsonl"
    valid.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    model = tiny_bert(tmp_path / "ner", [" ".join(r["tokens"]) for r in rows], "BertForTokenClassification",
                      num_labels=5, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    results = evaluated("ner", model, **{"data.validation_file": str(valid)})
    assert results["outcomes"]["validation"]["kind"] == "tags" and results["outcomes"]["validation"]["n"] == 30
    assert_recomputed(results)


@pytest.mark.parametrize("task,sample", [("squad", "dev-v1.1-sample.json"), ("squad_v2", "v2-sample.json")])
def test_answers_by_question(tmp_path, task, sample):
    doc = json.loads((DATA / "squad" / sample).read_text())
    texts = [p["context"] for a in doc["data"] for p in a["paragraphs"]]
    model = tiny_bert(tmp_path / task, texts, "BertForQuestionAnswering")
    results = evaluated(task, model, "qa.max_seq_length=128", "qa.doc_stride=32",
                        **{"data.validation_file": str(DATA / "squad" / sample)})
    rec = results["outcomes"]["validation"]
    ids = [q["id"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    assert rec["kind"] == "answers" and rec["ids"] == ids and bool(rec.get("version_2")) == (task == "squad_v2")
    assert_recomputed(results)


@pytest.fixture(scope="module")
def seq2seq_model(tmp_path_factory):
    """A random transformer-tiny over a BPE of the WMT sample's both sides."""
    from tlab.tasks import seq2seq

    folder = tmp_path_factory.mktemp("mt") / "model"
    sources = (DATA / "wmt" / "train.en").read_text().splitlines()
    targets = (DATA / "wmt" / "train.de").read_text().splitlines()
    tokenizer = seq2seq.shared_tokenizer(sources, targets, 500)
    seq2seq.from_preset("transformer-tiny", tokenizer, {}, 64).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_translations_by_sentence(seq2seq_model):
    results = evaluated("translation", seq2seq_model, "translation.source_lang=en", "translation.target_lang=de",
                        "seq2seq.max_new_tokens=8", "data.max_eval_samples=12", **{"data.data_dir": str(DATA / "wmt")})
    rec = results["outcomes"]["validation"]
    assert rec["kind"] == "texts" and rec["n"] == 12 and set(rec["metrics"]) == {"bleu", "chrf"}
    assert_recomputed(results)


def test_summaries_by_document(seq2seq_model):
    results = evaluated("summarization", seq2seq_model, "seq2seq.max_new_tokens=8", "seq2seq.min_new_tokens=0",
                        "data.max_eval_samples=8", "seq2seq.max_source_length=64",
                        **{"data.validation_file": str(DATA / "summarization" / "wikitext-lead1.jsonl")})
    rec = results["outcomes"]["validation"]
    assert rec["kind"] == "texts" and rec["ids"][0] == "wt2-valid-1"
    assert_recomputed(results)


@pytest.mark.slow  # trains the tiny classifier (a few seconds)
def test_documents_scored_by_windows(classifier):
    results = evaluated("classification", classifier["run"], "data.long_text=mean", "data.max_length=8", "data.stride=2",
                        **{"data.validation_file": str(classifier["valid"])})
    assert results["outcomes"]["validation"]["n"] == 200
    assert_recomputed(results)


@pytest.mark.slow  # trains a tiny multi-label classifier
def test_label_sets(tmp_path):
    rng = random.Random(3)
    rows = [{"text": " ".join(rng.sample(FILLER + POSITIVE, 5)), "label": rng.sample(["a", "b", "c"], rng.randint(0, 2))}
            for _ in range(60)]
    train = tmp_path / "sets.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = tiny_bert(tmp_path / "bert", [r["text"] for r in rows], "BertForSequenceClassification", num_labels=3)
    run = tmp_path / "run"
    result = runner.invoke(app, ["finetune", "--task", "classification", "--model", str(start), "--train-file", str(train),
                                 "--multi-label", "-o", str(run), "--max-steps", "4", "data.validation_fraction=0.3"])
    assert result.exit_code == 0, result.output
    results = pipeline.evaluate(config.load(run_config=str(run / "config.yaml"), flags={"model.name_or_path": str(run)}), **quiet)
    assert results["outcomes"]["heldout"]["kind"] == "label_sets"
    assert_recomputed(results)


def test_few_shot_labels_from_a_causal_lm(tmp_path):
    from conftest import gpt2_folder

    model = gpt2_folder(tmp_path / "gpt2", DATA / "glue" / "SST-2" / "train.tsv", n_positions=512)
    results = evaluated("sst2", model, "fewshot.shots=0", "data.max_eval_samples=24", **{"data.data_dir": str(DATA / "glue")})
    assert [rec["kind"] for rec in results["outcomes"].values()] == ["labels"]
    assert_recomputed(results)


@pytest.mark.slow  # trains the tiny classifier (a few seconds)
def test_report_compares_two_runs_of_one_task_example_by_example(classifier, tmp_path):
    from tlab import report

    worse = tmp_path / "worse.json"
    assert runner.invoke(app, ["eval", "--model", str(classifier["flipped"]), "--output", str(worse)]).exit_code == 0
    other = tmp_path / "other.json"
    moved = runner.invoke(app, ["eval", "--model", str(classifier["run"]), "--output", str(other), "--validation-file",
                                str(reviews(tmp_path / "o.jsonl", 50, 5))])
    assert moved.exit_code == 0, moved.output
    made = report.build([str(classifier["run"]), str(worse), str(other)], str(tmp_path / "report"))
    assert [(c.baseline, c.new) for c in made.comparisons] == [("run", "worse.json")]
    rows = {r["metric"]: r for r in made.comparisons[0].result["metrics"]}
    assert rows["accuracy"]["delta"] < -0.9 and rows["accuracy"]["verdict"] == "worse"
    assert any("other.json not compared with run" in n and "other examples" in n for n in made.notes)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "paired comparison, worse.json against run" in text and "| accuracy | 200 |" in text
    shown = runner.invoke(app, ["report", str(classifier["run"]), str(worse), "-o", str(tmp_path / "r2"), "--markdown"])
    assert shown.exit_code == 0 and "McNemar exact" in shown.output, shown.output
