"""Few-shot scoring of a causal LM on a classification task (`tlab eval --task sst2 --model M --shots K`): the choice
is the label whose continuation the model finds most likely, computed here by hand; each prompt holds exactly K
solved training examples, drawn reproducibly from the seed; a tiny CLM trained on SST-2-style lines picks the
right labels; and whatever the scoring cannot serve is refused in one line."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import gpt2_folder, lm_config, one_line_error
from tlab.cli import app

runner = CliRunner()
DATA = Path(__file__).parent / "data"
GLUE = DATA / "glue"  # SST-2 has only train.tsv here: validation is held out of it
SHOT = re.compile(r"Review: (.*)\nSentiment: (negative|positive)")
LAST = re.compile(r"Review: (.*)\nSentiment:")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shakespeare) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("hub") / "gpt2", shakespeare, n_positions=512)


def sst2_labels() -> dict[str, str]:
    """sentence (stripped) -> label name, from the SST-2 sample."""
    rows = [line.rsplit("\t", 1) for line in (GLUE / "SST-2" / "train.tsv").read_text().splitlines()[1:]]
    return {sentence.strip(): ["negative", "positive"][int(label)] for sentence, label in rows}


def evaluate(tmp_path: Path, *args: str) -> tuple[dict, list[dict]]:
    """`tlab eval --output` results and the per-example file written beside them."""
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["eval", "--task", "sst2", *args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "fewshot.jsonl").read_text().splitlines()]
    return json.loads(out.read_text()), rows


def shown_prompt(*args: str) -> str:
    """The first example's prompt as `tlab eval --dry-run` shows it (between its two comment lines)."""
    result = runner.invoke(app, ["eval", "--task", "sst2", "--data-dir", str(GLUE), "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return result.output.split("# few-shot prompt of the first heldout example", 1)[1].split("\n", 1)[1] \
        .rsplit("\n# continuations scored:", 1)[0]


@pytest.mark.parametrize("budget", [None, 1])  # 1: a forward pass per candidate, as a huge vocabulary would force
def test_the_choice_is_the_most_likely_continuation_computed_by_hand(folder, tmp_path, monkeypatch, budget):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if budget:
        monkeypatch.setattr("tlab.tasks.fewshot.LOGIT_BUDGET", budget)
    results, rows = evaluate(tmp_path, "--model", str(folder), "--data-dir", str(GLUE), "--shots", "2",
                             "--batch-size", "2", "--precision", "fp32", "data.max_eval_samples=3")  # fp32 on a GPU too
    assert len(rows) == 3 and results["metrics"]["examples"] == len(rows), rows
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    truth = sst2_labels()
    for row in rows:
        context = tokenizer(row["prompt"])["input_ids"]
        scores = {}
        for name, verbalizer in (("negative", " negative"), ("positive", " positive")):
            ids = tokenizer(row["prompt"] + verbalizer)["input_ids"]
            assert ids[: len(context)] == context and len(ids) > len(context)
            with torch.no_grad():
                logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            scores[name] = sum(logp[t - 1, ids[t]].item() for t in range(len(context), len(ids)))  # continuation only
        assert row["loglikelihoods"] == pytest.approx(scores, abs=1e-4)
        assert row["prediction"] == max(scores, key=scores.get)
        assert row["label"] == truth[LAST.fullmatch(row["prompt"].split("\n\n")[-1]).group(1)]
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert results["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert results["config"]["fewshot"]["shots"] == 2 and results["passed"]


def test_a_prompt_longer_than_the_model_loses_its_start(tmp_path, shakespeare):
    short = gpt2_folder(tmp_path / "short", shakespeare, n_positions=64)
    result = runner.invoke(app, ["eval", "--task", "sst2", "--model", str(short), "--data-dir", str(GLUE), "--shots", "4"])
    assert result.exit_code == 0, result.output
    assert "longer than the model's 64 positions lost their start" in result.output


def test_each_prompt_holds_k_training_examples_drawn_from_the_seed(folder, tmp_path):
    truth = sst2_labels()
    for k in (0, 1, 4):
        blocks = shown_prompt("--shots", str(k), "--seed", "3").split("\n\n")
        assert len(blocks) == k + 1, blocks
        shots = [SHOT.fullmatch(block).groups() for block in blocks[:-1]]
        assert all(truth[sentence] == label for sentence, label in shots)  # training rows, with their own labels
        assert LAST.fullmatch(blocks[-1]).group(1) not in {sentence for sentence, _ in shots}
    assert shown_prompt("--shots", "4", "--seed", "3") == shown_prompt("--shots", "4", "--seed", "3")
    assert shown_prompt("--shots", "4", "--seed", "3") != shown_prompt("--shots", "4", "--seed", "4")
    # what --dry-run shows is what the evaluation scores; every example draws its own shots, none held out
    _, rows = evaluate(tmp_path, "--model", str(folder), "--data-dir", str(GLUE), "--shots", "4", "--seed", "3",
                       "data.validation_fraction=0.1")
    assert rows[0]["prompt"] == shown_prompt("--shots", "4", "--seed", "3", "data.validation_fraction=0.1")
    held_out = {LAST.fullmatch(r["prompt"].split("\n\n")[-1]).group(1) for r in rows}
    drawn = [[SHOT.fullmatch(b).group(1) for b in r["prompt"].split("\n\n")[:-1]] for r in rows]
    assert all(len(d) == 4 and not held_out & set(d) for d in drawn)
    assert len({tuple(d) for d in drawn}) > 1


def test_the_template_and_verbalizers_come_from_the_config():
    prompt = shown_prompt("--shots", "1", 'fewshot.template="Text: {text_a} =>"', 'fewshot.verbalizers=[" bad", " good"]')
    assert re.fullmatch(r"Text: .+ => (bad|good)\n\nText: .+ =>", prompt), prompt
    assert shown_prompt("--shots", "0", "fewshot.template='{sentence}?'").endswith("?")


@pytest.fixture(scope="module")
def masked_lm(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    path = tmp_path_factory.mktemp("mlm") / "bert"
    BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(path)
    return path


@pytest.mark.parametrize("args,phrase", [
    (["eval", "--task", "sst2", "--model", "{mlm}", "--shots", "2"], "needs a causal language model"),
    (["eval", "--task", "sst2", "--model", "{gpt}"],
     "is a causal language model (GPT2LMHeadModel) without a classification head: score it few-shot with --shots"),
    (["eval", "--task", "squad", "--model", "{gpt}", "--shots", "2"], "scores a causal LM on a classification task"),
    (["eval", "--task", "clm", "--model", "{gpt}", "--shots", "0"], "clm is a pretraining task"),
    (["eval", "--task", "stsb", "--model", "{gpt}", "--shots", "2"], "stsb is a regression task"),
    (["eval", "--task", "sst2", "--model", "{gpt}", "--shots", "-1"], "fewshot.shots (--shots) must be >= 0"),
    (["eval", "--task", "sst2", "--model", "{gpt}", "--shots", "100"], "--shots 100 needs as many labelled training examples"),
    (["eval", "--task", "sst2", "--model", "{gpt}", "--shots", "1", "fewshot.verbalizers=[a,b,c]"], "gives 3 continuations for the 2 labels"),
    (["eval", "--task", "sst2", "--model", "{gpt}", "--shots", "1", "fewshot.template='{{review}}:'"], "names {review}, which sst2 examples lack"),
    (["finetune", "--task", "sst2", "--model", "{gpt}", "fewshot.shots=2", "--max-steps", "1", "-o", "{out}"], "is for tlab eval"),
])
def test_what_few_shot_scoring_cannot_serve_is_refused(folder, masked_lm, tmp_path, args, phrase):
    paths = {"gpt": str(folder), "mlm": str(masked_lm), "out": str(tmp_path / "out")}
    data = [] if "squad" in args or "clm" in args else ["--data-dir", str(GLUE)]
    result = runner.invoke(app, [a.format(**paths) for a in args] + data)
    assert result.exit_code == 2
    one_line_error(result, phrase)
    assert not (tmp_path / "out").exists()


POSITIVE = ["great", "wonderful", "brilliant", "moving", "delightful", "superb", "charming", "beautiful"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "bland", "painful"]
NOUNS = ["film", "movie", "story", "plot", "cast", "script", "ending", "score"]
FORMS = ["the {n} is {a}", "this {n} feels {a}", "a {n} , {a}", "the {n} : {a}"]


def reviews(n: int, seed: int) -> list[tuple[str, int]]:
    """Made-up SST-2-style reviews whose sentiment is their adjective's, labels balanced and shuffled (in order,
    the label of a line would be predictable from the line before)."""
    rng = random.Random(seed)
    rows = [(rng.choice(FORMS).format(n=rng.choice(NOUNS), a=rng.choice(POSITIVE if i % 2 else NEGATIVE)), i % 2)
            for i in range(n)]
    rng.shuffle(rows)
    return rows


@pytest.mark.slow
def test_a_tiny_clm_trained_on_reviews_picks_their_labels(tmp_path):
    """200 steps on 600 lines "Review: <text> Sentiment: <label>" teach the tiny GPT-2 preset the adjectives'
    sentiment; zero-shot scoring of 40 unseen balanced reviews then gets them (nearly) all, where its untrained
    copy is at chance. It is the format the model saw (one review a line), not few-shot learning from the prompt:
    a model this small does not learn from in-context examples."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tlab import pipeline

    (tmp_path / "SST-2").mkdir()
    for name, rows in (("train.tsv", reviews(600, 1)), ("dev.tsv", reviews(40, 2))):
        (tmp_path / "SST-2" / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("".join(f"Review: {s} Sentiment: {['negative', 'positive'][y]}\n" for s, y in reviews(600, 1)))
    run = tmp_path / "run"
    pipeline.run(lm_config(run, corpus, "clm", "train.max_steps=200", "train.lr=4e-3", "data.validation_fraction=0"),
                 echo=lambda _m: None)
    untrained = tmp_path / "untrained"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(run / "model")).save_pretrained(untrained)
    AutoTokenizer.from_pretrained(run / "model").save_pretrained(untrained)
    scored = {}
    for name, model in (("trained", run), ("untrained", untrained)):
        results, rows = evaluate(tmp_path, "--model", str(model), "--data-dir", str(tmp_path), "--shots", "0",
                                 'fewshot.template="Review: {sentence} Sentiment:"')
        assert results["metrics"]["examples"] == 40 and {r["label"] for r in rows} == {"negative", "positive"}
        scored[name] = results["metrics"]["accuracy"]
    assert scored["trained"] >= 0.8 and scored["untrained"] <= 0.7, scored
