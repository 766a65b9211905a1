"""Translation throughput and quality: tlab vs the run_translation.py path (Seq2SeqTrainer), side by side in one run.

    python scripts/bench_translate.py --quick                 # 200 steps on 1,000 pairs, 100 sentences: ~6 min
    python scripts/bench_translate.py                         # 300 steps, 500 validation sentences: ~35 min on 2 cores
    python scripts/bench_translate.py --steps 200 --generate-with runs/wmt/model   # generation on a trained model
    python scripts/bench_translate.py --data-dir DIR --steps 1000 --threads 4

Identical for both variants: the parallel data (`--data-dir` with train.en/train.de/valid.en/valid.de, default
../shared/data/wmt/wmt14_en_de; without it the Hub's wmt14 de-en; Moses-tokenized files are detokenized by tlab's
loader for both), one shared BPE of `--vocab` tokens trained by tlab on both sides of the training text (the same
tokenizer object, saved once), the same model configuration (tlab's transformer-small preset: a Marian-architecture
3+3 x 256 Transformer, tied embeddings), seed, batches of `--batch-size` sentences grouped by length, label smoothing
0.1, lr 1e-3 with inverse-sqrt decay after `--warmup` steps, no weight decay, gradient clipping 1.0, fp32, the same
number of optimizer steps and the same OMP_NUM_THREADS:
  (a) tlab: `tlab finetune --task wmt14-en-de` through tlab.pipeline.run (its loop, collator, label-smoothed loss);
  (c) tlab with its default token-budget batches (`--max-tokens`, 4096): same steps, more pairs a step;
  (b) the run_translation.py path written out: `DataCollatorForSeq2Seq`, `Seq2SeqTrainer` with
      `label_smoothing_factor`, `group_by_length`, then `Seq2SeqTrainer.predict(predict_with_generate)`.
Each variant runs in a subprocess of its own.

A model trained for a few hundred steps still babbles to the length limit, so its generation speed says little;
`--generate-with DIR` measures both generation paths on one trained model (e.g. the default recipe's run).

Reported: training tokens/s (real source + target tokens, padding excluded, over the training time: the optimizer
steps with data loading; evaluation excluded), generation sentences/s with greedy search and beam 4 over the
validation sentences (tlab: `tlab.tasks.seq2seq.translate` with tlab's generation defaults, length-sorted batches
whose output is bounded by their source length (1.5 x + 10 tokens), and beam 4 again without that bound, the Trainer's max length
alone; (b): `Seq2SeqTrainer.predict` with its eval batch size), and sacreBLEU / chrF of the beam-4 translations (detokenized, tlab's offline modules),
and the ratios (a)/(b). Results go to scripts/results/bench_translate.json and BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "wmt" / "wmt14_en_de"
PRESET = "transformer-small"


def load_pairs(args):
    """Detokenized (train, validation) rows through tlab's own loader, so both variants read the same text."""
    from tlab import config
    from tlab.tasks import translation_data

    flags = {"task": "wmt14-en-de", "data.max_train_samples": args.train_lines, "data.max_eval_samples": args.valid_lines}
    if args.data_dir:
        flags["data.data_dir"] = args.data_dir
    cfg = config.load(flags=flags)
    hub = ("wmt/wmt14", "de-en")  # without --data-dir: the Hub's wmt14 de-en
    train, valid, _notes = translation_data.load(cfg, "en", "de", True, lambda m: None, hub)
    return train, valid


def tokens_of(batch) -> int:
    return int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())


def generate_speed(model, tokenizer, sources, beams: int, batch_size: int, bounded: bool = True):
    """tlab's generation as it ships (seq2seq.* defaults: the batch's output bounded at 1.5 x its longest source
    + 10 tokens, within max_new_tokens 128), or with `bounded=False` max_new_tokens alone, as the Trainer path."""
    from tlab import config
    from tlab.tasks import seq2seq

    options = {**seq2seq.generation_options(config.load(flags={"task": "wmt14-en-de"})), "num_beams": beams,
               "early_stopping": beams > 1}
    if not bounded:
        options["max_length_a"] = 0
    start = time.perf_counter()
    out = seq2seq.translate(model, tokenizer, sources, "", 128, batch_size, options)
    return out, len(sources) / (time.perf_counter() - start)


def score(hypotheses, references) -> dict:
    from tlab import metrics

    bleu = metrics.load("sacrebleu").compute(predictions=hypotheses, references=references)
    chrf = metrics.load("chrf").compute(predictions=hypotheses, references=references)
    return {"bleu": round(bleu["bleu"], 2), "chrf": round(chrf["chrf"], 2), "bleu_signature": bleu["signature"]}


# -- (a) tlab ----------------------------------------------------------------------------------------------------
def run_tlab(args, work: Path, max_tokens: int = 0) -> dict:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tlab import config, pipeline

    torch.set_num_threads(args.threads)
    flags = {"task": "wmt14-en-de", "output_dir": str(work / "tlab-run"), "overwrite": True,
             "data.max_train_samples": args.train_lines, "data.max_eval_samples": args.valid_lines}
    if args.data_dir:
        flags["data.data_dir"] = args.data_dir
    overrides = [f"model.preset={PRESET}", f"model.vocab_size={args.vocab}", "train.lr=1e-3", f"train.warmup={args.warmup}",
                 "train.schedule=inverse_sqrt", "train.weight_decay=0", f"train.batch_size={args.batch_size}",
                 f"train.max_steps={args.steps}", f"train.eval_every={args.steps}", f"seq2seq.max_tokens={max_tokens}",
                 "seq2seq.num_beams=1", "seq2seq.label_smoothing=0.1", "train.group_by_length=true",
                 "train.precision=fp32", f"train.seed={args.seed}", "seq2seq.average_checkpoints=0",
                 f"train.eval_batch_size={args.eval_batch}", "train.log_every=25"]
    cfg = config.load(flags=flags, overrides=overrides)
    start = time.perf_counter()
    result = pipeline.run(cfg, echo=lambda m: None)
    wall = time.perf_counter() - start
    model_dir = Path(args.generate_with) if args.generate_with else work / "tlab-run" / "model"
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    _train, valid = load_pairs(args)
    sources, refs = list(valid["source"]), list(valid["target"])
    greedy, greedy_s = generate_speed(model, tokenizer, sources, 1, args.eval_batch)
    beam, beam_s = generate_speed(model, tokenizer, sources, 4, args.eval_batch)
    unbounded, unbounded_s = generate_speed(model, tokenizer, sources, 4, args.eval_batch, bounded=False)
    return {"beam4_unbounded_sentences_per_s": round(unbounded_s, 2), "beam4_unbounded": score(unbounded, refs),
            "train_tokens_per_s": result["tokens_per_s"], "train_seconds": result["train_seconds"],
            "steps": result["steps"], "own_model_greedy": {k: result["final"][k] for k in ("bleu", "chrf")}, "greedy_sentences_per_s": round(greedy_s, 2),
            "beam4_sentences_per_s": round(beam_s, 2), "greedy": score(greedy, refs), "beam4": score(beam, refs),
            "parameters": result["parameters"], "wall_seconds": round(wall, 1), "sample": beam[:3]}


# -- (b) the run_translation.py path ------------------------------------------------------------------------------
def run_trainer(args, work: Path) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

    from tlab.tasks import seq2seq

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    train, valid = load_pairs(args)
    tokenizer = seq2seq.shared_tokenizer(train["source"], train["target"], args.vocab)  # the cached one tlab trained
    model = seq2seq.from_preset(PRESET, tokenizer, {}, 128)

    def preprocess(rows):  # run_translation.py's preprocess_function (no prefix, max lengths 128)
        enc = tokenizer(rows["source"], max_length=128, truncation=True)
        enc["labels"] = tokenizer(text_target=rows["target"], max_length=128, truncation=True)["input_ids"]
        return enc

    train_feats = train.map(preprocess, batched=True, remove_columns=train.column_names)
    valid_feats = valid.map(preprocess, batched=True, remove_columns=valid.column_names)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    counted = {"tokens": 0}

    def counting(rows):
        batch = collator(rows)
        if model.training:
            counted["tokens"] += tokens_of(batch)
        return batch

    targs = Seq2SeqTrainingArguments(
        output_dir=str(work / "trainer-run"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch, learning_rate=1e-3, lr_scheduler_type="inverse_sqrt",
        warmup_steps=args.warmup, weight_decay=0.0, max_grad_norm=1.0, label_smoothing_factor=0.1,
        train_sampling_strategy="group_by_length", max_steps=args.steps, logging_steps=25, save_strategy="no", eval_strategy="no",
        report_to="none", seed=args.seed, use_cpu=True, predict_with_generate=True, generation_max_length=128,
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=train_feats, data_collator=counting,
                             processing_class=tokenizer)
    start = time.perf_counter()
    out = trainer.train()
    train_seconds = out.metrics["train_runtime"]
    model.eval()
    results = {"train_tokens_per_s": round(counted["tokens"] / train_seconds, 1), "train_seconds": round(train_seconds, 2),
               "steps": out.global_step}
    refs = list(valid["target"])
    if args.generate_with:  # its own model's quality first (greedy, as (a)'s final evaluation), then speed on (a)'s
        pred = trainer.predict(valid_feats, num_beams=1, max_length=128)
        own = score(in_order(pred, valid_feats, tokenizer), refs)
        results["own_model_greedy"] = {k: own[k] for k in ("bleu", "chrf")}
    if args.generate_with:  # generation speed on the same trained model as (a)'s, through the Trainer's predict
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        model = AutoModelForSeq2SeqLM.from_pretrained(args.generate_with).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.generate_with)
        valid_feats = valid.map(preprocess, batched=True, remove_columns=valid.column_names)
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
        trainer = Seq2SeqTrainer(model=model, args=targs, data_collator=collator, processing_class=tokenizer)
    for name, beams in (("greedy", 1), ("beam4", 4)):
        t0 = time.perf_counter()
        pred = trainer.predict(valid_feats, num_beams=beams, max_length=128)
        seconds = time.perf_counter() - t0
        hyps = in_order(pred, valid_feats, tokenizer)
        results[f"{name}_sentences_per_s"] = round(len(hyps) / seconds, 2)
        results[name] = score(hyps, refs)
        if name == "beam4":
            results["sample"] = hyps[:3]
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    return results


def in_order(pred, feats, tokenizer) -> list[str]:
    """The Trainer's translations in dataset order. With group_by_length its evaluation sampler is length-grouped as
    well (transformers 5), so predictions come back permuted; their label rows say where each belongs (the
    run_translation path never notices: it decodes references from the same permuted labels)."""
    import numpy as np

    where: dict = {}
    for i, labels in enumerate(feats["labels"]):
        where.setdefault(tuple(labels), []).append(i)
    out = [""] * len(feats)
    ids = np.where(pred.predictions != -100, pred.predictions, tokenizer.pad_token_id)
    texts = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    for text, labels in zip(texts, pred.label_ids):
        out[where[tuple(int(x) for x in labels if x != -100)].pop(0)] = text
    return out


def machine() -> str:
    try:
        name = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor()
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    extras = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{name} ({', '.join(extras)}), {os.cpu_count()} logical CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(SHARED) if SHARED.is_dir() else None,
                        help="folder with train.en/train.de/valid.en/valid.de (default ../shared/...; else the Hub)")
    parser.add_argument("--train-lines", type=int, default=10000)
    parser.add_argument("--valid-lines", type=int, default=500)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--generate-with", help="a trained translation model dir (e.g. a run's model/): both variants "
                        "measure generation on it, so their speeds compare on the same outputs (default: own models)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-tokens", type=int, default=4096, help="(c): tlab with token-budget batches of this size")
    parser.add_argument("--only", choices=["a", "b", "c"], help="run one variant (results merge into the output file)")
    parser.add_argument("--quick", action="store_true", help="200 steps on 1,000 pairs, 100 validation sentences")
    parser.add_argument("--output", default=str(ROOT / "scripts" / "results" / "bench_translate.json"))
    parser.add_argument("--worker", choices=["a", "b", "c"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.train_lines, args.valid_lines, args.steps = 1000, 100, 200
    if args.worker:
        result = {"a": lambda: run_tlab(args, Path(args.work)), "b": lambda: run_trainer(args, Path(args.work)),
                  "c": lambda: run_tlab(args, Path(args.work), max_tokens=args.max_tokens)}[args.worker]()
        print("RESULT " + json.dumps(result))
        return
    out = Path(args.output)
    report = json.loads(out.read_text()) if args.only and out.is_file() else {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TLAB_CACHE": os.environ.get("TLAB_CACHE", str(Path.home() / ".cache" / "tlab"))}
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k not in ("worker", "work", "only", "quick") and v is not None]
    with tempfile.TemporaryDirectory(prefix="bench-translate-") as work:
        for variant in ([args.only] if args.only else ["a", "c", "b"]):
            print(f"running ({variant}) ...", flush=True)
            done = subprocess.run([sys.executable, __file__, *passthrough, "--worker", variant, "--work", work],
                                  capture_output=True, text=True, env=env)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
            report[variant] = json.loads(line[7:])
            print(variant, json.dumps(report[variant], indent=1), flush=True)
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("worker", "work", "only", "output")}
    report["machine"] = machine()
    report["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if "a" in report and "b" in report:
        a, b = report["a"], report["b"]
        report["ratios"] = {k: round(a[k] / b[k], 2) for k in ("train_tokens_per_s", "greedy_sentences_per_s",
                                                                "beam4_sentences_per_s") if b.get(k)}
        if b.get("beam4_sentences_per_s") and a.get("beam4_unbounded_sentences_per_s"):
            report["ratios"]["beam4_unbounded_sentences_per_s"] = round(
                a["beam4_unbounded_sentences_per_s"] / b["beam4_sentences_per_s"], 2)
        report["ratios"]["beam4_bleu_difference"] = round(a["beam4"]["bleu"] - b["beam4"]["bleu"], 2)
        if "c" in report:
            report["ratios"]["c_train_tokens_per_s"] = round(report["c"]["train_tokens_per_s"] / b["train_tokens_per_s"], 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report.get("ratios", {}), indent=1))


if __name__ == "__main__":
    main()
