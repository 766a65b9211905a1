"""Scaling and precision benchmark for tlab pretraining: processes, bf16 vs fp32, and model FLOPs utilisation.

    python scripts/bench_scaling.py                          # 2-core CPU: ~1-2 min; a GPU machine adds ~5-10 min
    python scripts/bench_scaling.py --steps 3 --gpu-steps 3 --out /tmp/bench.md    # smoke run, ~1 min on CPU

Runs `tlab pretrain` as a user would (subprocesses, tokens/s read from the run directory) and writes markdown to
--out (default scripts/results/bench_scaling.md). It runs unchanged on a CPU or a GPU machine and says which
hardware it measured.

1. CPU scaling, always (GPUs hidden): 1 process vs `torchrun --nproc_per_node 2` (or --procs) on the mini
   ModernBERT MLM (4 x 256) and the embedded WikiText-2 sample, same per-process batch and steps, the cores split
   evenly between the processes (OMP_NUM_THREADS = cores / processes).
2. With CUDA: fp32 vs bf16 on one GPU for BERT-base MLM (tlab preset bert-base, sequence 128) and GPT-2 small
   CLM (tlab preset gpt2-base = 12 x 768; tlab's "small" is 6 x 512) at block 1024; with 2+ GPUs also 1 vs N
   GPU processes for BERT-base bf16.

Throughput is the median tokens/s of the logged windows after the first (start-up, allocation, autotuning
excluded); the whole-run figure from metrics.json is shown next to it. Evaluation is excluded by tlab itself.

MFU = achieved model FLOP/s / peak FLOP/s, with model FLOPs per token (forward + backward, PaLM appendix B):
    6 * (N_body + f * d * V) + 12 * L * d * T
N_body: parameters outside the token/position embeddings and the output projection; d * V: the output projection
(a matmul even when its weight is tied to the input embedding), over a share f of the tokens (f = mlm_probability
for ModernBERT's sparse prediction, else 1); 12 * L * d * T: attention scores and weighted values over T tokens,
counted in full (causal masking not discounted). Recomputation (gradient checkpointing) is not model FLOPs.
Peaks: the data-sheet dense peak where the GPU is known (H100/H200 SXM: 989 TFLOP/s bf16, 67 TFLOP/s fp32 -
tlab leaves TF32 off, so fp32 runs on the fp32 units), and always the measured torch.mm peak of this machine
(on the CPU the only peak used).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "scripts" / "results" / "bench_scaling.md"

# Dense data-sheet peaks in TFLOP/s (no sparsity): (substring of the device name, bf16, fp32).
SPEC_PEAKS = [
    ("H100 PCIe", 756.0, 51.2),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 66.9),  # SXM
    ("H200", 989.4, 66.9),
    ("GH200", 989.4, 66.9),
    ("A100", 312.0, 19.5),
    ("L40S", 362.0, 91.6),
    ("A10G", 70.0, 31.2),
]


# -- hardware --------------------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def spec_peak(name: str) -> tuple[float, float] | None:
    for key, bf16, fp32 in SPEC_PEAKS:
        if key in name:
            return bf16, fp32
    return None


def matmul_peak(device: str, dtype: torch.dtype, n: int, seconds: float = 1.0, windows: int = 3) -> float:
    """Measured dense matmul TFLOP/s: square torch.mm of size n, the best of `windows` runs of about `seconds`
    (the best, because a shared or just-woken machine only ever makes a window slower)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        torch.mm(a, b)
    sync()
    best = 0.0
    for _ in range(windows):
        reps, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            reps += 1
            if reps % 5 == 0:
                sync()
                if time.perf_counter() - start > seconds:
                    break
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e12)
    return best


# -- running tlab ----------------------------------------------------------------------------------------------
def tlab_env(cache: Path, threads: int, gpus: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "TLAB_STOP"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads),
               TLAB_CACHE=str(cache), HF_DATASETS_CACHE=str(cache / "datasets"))
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    # tlab from this checkout unless one is already importable ahead of it
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    return env


def launcher(procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "tlab"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m", "tlab"]


def run_tlab(args: list[str], out: Path, procs: int, env: dict[str, str], timeout: int) -> dict:
    command = [*launcher(procs), "pretrain", *args, "-o", str(out)]
    print("  $", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        return {"error": f"exit {done.returncode}: {tail}", "wall_s": wall, "procs": procs}
    metrics = json.loads((out / "metrics.json").read_text())
    windows = [r["tokens_per_s"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
               if "tokens_per_s" in r and "loss" in r]
    steady = statistics.median(windows[1:]) if len(windows) > 1 else metrics["tokens_per_s"]
    return {**metrics, "steady_tokens_per_s": steady, "wall_s": wall, "procs": procs, "run_dir": str(out)}


def preprocess(args: list[str], env: dict[str, str], workdir: Path, timeout: int) -> None:
    """Tokenizer and packed blocks into the shared cache first, so no timed run waits on them."""
    done = subprocess.run([sys.executable, "-m", "tlab", "pretrain", *args, "--preprocess-only"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"preprocessing failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


# -- model FLOPs -----------------------------------------------------------------------------------------------
EMBEDDING_PARTS = ("embeddings.", "wte.", "wpe.", "embed_tokens.", "tok_embeddings.")


def flops_per_token(run_dir: str, seq: int, mlm_probability: float = 0.15) -> dict[str, float]:
    """6 * (N_body + f * d * V) + 12 * L * d * T for the model a run saved (built on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    config = AutoConfig.from_pretrained(Path(run_dir) / "model")
    auto = AutoModelForCausalLM if config.model_type in ("gpt2", "llama") else AutoModelForMaskedLM
    with torch.device("meta"):
        model = auto.from_config(config)
    out_weight = model.get_output_embeddings().weight
    body = sum(p.numel() for name, p in model.named_parameters()
               if p is not out_weight and not any(part in name for part in EMBEDDING_PARTS))
    d = getattr(config, "hidden_size", None) or config.n_embd
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    vocab = config.vocab_size
    head_share = mlm_probability if getattr(config, "sparse_prediction", False) else 1.0
    dense = 6 * (body + head_share * d * vocab)
    attention = 12 * layers * d * seq
    return {"flops_per_token": dense + attention, "body_params": body, "head_params": d * vocab, "layers": layers,
            "hidden": d, "vocab": vocab, "attention_share": attention / (dense + attention)}


# -- the benchmark ---------------------------------------------------------------------------------------------
def cpu_scaling(opts, workdir: Path) -> dict:
    n_cores = cores()
    print(f"CPU scaling on {cpu_name()} ({n_cores} cores visible)", flush=True)
    torch.set_num_threads(n_cores)
    peak = matmul_peak("cpu", torch.float32, 1024 if n_cores <= 4 else 2048)
    print(f"  measured fp32 torch.mm peak: {peak * 1000:.1f} GFLOP/s", flush=True)
    args = ["--objective", "mlm", "--preset", "mini", "--batch-size", str(opts.batch_size), "--max-steps", str(opts.steps),
            "--eval-every", str(opts.steps), "--precision", "fp32", "--seed", "0",
            f"train.log_every={max(1, opts.steps // 6)}", "data.max_eval_samples=50"]
    cache = workdir / "cache"
    preprocess(args, tlab_env(cache, n_cores, ""), workdir, opts.timeout)
    rows = []
    for procs in opts.procs:
        threads = max(1, n_cores // procs)
        result = run_tlab(args, workdir / f"cpu-{procs}p", procs, tlab_env(cache, threads, ""), opts.timeout)
        result["threads"] = threads
        if "error" not in result and result["world_size"] != procs:
            result["error"] = (f"asked for {procs} processes, the run had world size {result['world_size']} "
                               "(each rank trained alone)")
        rows.append(result)
    flops = next((flops_per_token(r["run_dir"], 128) for r in rows if "error" not in r), None)
    return {"peak_tflops": peak, "rows": rows, "flops": flops, "args": args, "cores": n_cores}


def gpu_precision(opts, workdir: Path) -> dict:
    name = torch.cuda.get_device_name(0)
    spec = spec_peak(name)
    print(f"GPU precision on {name} (x{torch.cuda.device_count()})", flush=True)
    measured = {"bf16": matmul_peak("cuda", torch.bfloat16, 8192), "fp32": matmul_peak("cuda", torch.float32, 8192)}
    print(f"  measured torch.mm peak: bf16 {measured['bf16']:.0f}, fp32 {measured['fp32']:.1f} TFLOP/s", flush=True)
    torch.cuda.empty_cache()
    jobs = [
        ("BERT-base MLM", 128, ["--objective", "mlm", "--preset", "bert-base", "--block-size", "128",
                                "--batch-size", str(opts.bert_batch)]),
        ("GPT-2 small CLM", 1024, ["--objective", "clm", "--preset", "gpt2-base", "--block-size", "1024",
                                   "--batch-size", str(opts.gpt_batch)]),
    ]
    common = ["--max-steps", str(opts.gpu_steps), "--eval-every", str(opts.gpu_steps), "--seed", "0",
              f"train.log_every={max(1, opts.gpu_steps // 6)}", "data.max_eval_samples=50"]
    cache = workdir / "cache"
    threads = max(1, min(8, cores()))
    rows = []
    for label, seq, args in jobs:
        preprocess([*args, *common], tlab_env(cache, threads, "0"), workdir, opts.timeout)
        flops = None
        for precision in ("fp32", "bf16"):
            tag = f"{label.split()[0].lower()}-{precision}"
            result = run_tlab([*args, *common, "--precision", precision], workdir / f"gpu-{tag}", 1,
                              tlab_env(cache, threads, "0"), opts.timeout)
            if "error" not in result and flops is None:
                flops = flops_per_token(result["run_dir"], seq)
            rows.append({**result, "label": label, "seq": seq, "precision_asked": precision, "flops": flops})
        for mode in opts.compile_modes:  # bf16 again, through torch.compile (the first, compiling window is not counted)
            result = run_tlab([*args, *common, "--precision", "bf16", "train.compile=true", f"train.compile_mode={mode}"],
                              workdir / f"gpu-{label.split()[0].lower()}-bf16-compile-{mode}", 1,
                              tlab_env(cache, threads, "0"), opts.timeout)
            rows.append({**result, "label": label, "seq": seq, "precision_asked": f"bf16, compile {mode}", "flops": flops,
                         "compile": mode})
    scaling = []
    n_gpus = torch.cuda.device_count()
    if n_gpus >= 2:
        label, seq, args = jobs[0]
        for procs in (1, n_gpus):
            result = run_tlab([*args, *common, "--precision", "bf16"], workdir / f"gpu-scaling-{procs}", procs,
                              tlab_env(cache, threads, ",".join(map(str, range(procs)))), opts.timeout)
            if "error" not in result and result["world_size"] != procs:
                result["error"] = f"asked for {procs} processes, the run had world size {result['world_size']}"
            scaling.append(result)
    return {"name": name, "count": n_gpus, "spec": spec, "measured": measured, "rows": rows, "scaling": scaling,
            "common": common, "jobs": jobs}


# -- report ----------------------------------------------------------------------------------------------------
def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def report(opts, cpu: dict | None, gpu: dict | None) -> str:
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("torch", "transformers", "accelerate") if _has(p))
    hw = f"CPU {cpu_name()}, {cores()} cores visible"
    if torch.cuda.is_available():
        hw += f"; GPU {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()} (CUDA {torch.version.cuda})"
    else:
        hw += "; no GPU"
    lines = [
        "# tlab scaling and precision benchmark",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on: **{hw}**. {versions}, Python {platform.python_version()}.",
        f"Command: `python scripts/bench_scaling.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"Load average when it started: {opts.load:.2f} (other work on the machine skews CPU numbers, most of all for",
        "runs whose threads wait on each other: one process with all cores suffers first).",
        "",
        "tokens/s: median of the logged windows after the first (whole run, from metrics.json, in brackets).",
        "MFU = tokens/s x model FLOPs per token / peak; model FLOPs per token = 6 (N_body + f d V) + 12 L d T",
        "(PaLM appendix B; N_body excludes embeddings and the output projection, d V is the output projection over a",
        "share f of the tokens, 12 L d T is full attention over T tokens, fwd + bwd).",
        "",
    ]
    if cpu:
        lines += [f"## CPU: 1 vs {max(opts.procs)} processes (mini ModernBERT MLM, 4 x 256, block 128, fp32)", ""]
        f = cpu["flops"]
        if f:
            lines.append(f"Model FLOPs per token {f['flops_per_token'] / 1e6:.1f} M (N_body {f['body_params'] / 1e6:.2f} M, "
                         f"attention {f['attention_share']:.0%}). Peak: measured fp32 torch.mm with {cpu['cores']} threads, "
                         f"{cpu['peak_tflops'] * 1000:.1f} GFLOP/s.")
        lines += ["", f"`tlab pretrain {' '.join(cpu['args'])}`; processes via `torchrun --standalone --nproc_per_node N -m tlab`.",
                  "", "| processes | threads each | global batch | tokens/s | speed-up | efficiency | MFU |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        base = next((r["steady_tokens_per_s"] for r in cpu["rows"] if r["procs"] == 1 and "error" not in r), None)
        for r in cpu["rows"]:
            if "error" in r:
                lines.append(f"| {r['procs']} | {r.get('threads', '')} | | not measured: {_one_line(r['error'])} | | | |")
                continue
            tps = r["steady_tokens_per_s"]
            speed = tps / base if base else float("nan")
            mfu = tps * f["flops_per_token"] / (cpu["peak_tflops"] * 1e12) if f else float("nan")
            lines.append(f"| {r['procs']} | {r['threads']} | {r['global_batch']} | {fmt(tps)} ({fmt(r['tokens_per_s'])}) | "
                         f"{speed:.2f}x | {speed / r['procs']:.0%} | {mfu:.1%} |")
        lines.append("")
    if gpu:
        spec = gpu["spec"]
        peak_text = (f"data sheet {spec[0]:.0f} TFLOP/s bf16, {spec[1]:.1f} fp32 (dense)" if spec
                     else "no data-sheet peak known for this GPU")
        lines += [f"## GPU: fp32 vs bf16 on one {gpu['name']}", "",
                  f"Peaks: {peak_text}; measured torch.mm {gpu['measured']['bf16']:.0f} TFLOP/s bf16, "
                  f"{gpu['measured']['fp32']:.1f} fp32. TF32 stays off (PyTorch's default), so fp32 is true fp32.", "",
                  "| model | precision | batch x seq | tokens/s | model TFLOP/s | MFU (data sheet) | MFU (measured mm) |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for r in gpu["rows"]:
            if "error" in r:
                lines.append(f"| {r['label']} | {r['precision_asked']} | | not measured: {_one_line(r['error'])} | | | |")
                continue
            f = r["flops"]
            achieved = r["steady_tokens_per_s"] * f["flops_per_token"] / 1e12
            key = "bf16" if r["precision"] == "bf16" else "fp32"
            sheet = f"{achieved / (spec[0] if key == 'bf16' else spec[1]):.1%}" if spec else "n/a"
            shown = r["precision"] + (f", compile {r['compile']}" if r.get("compile") else "")
            lines.append(f"| {r['label']} | {shown} | {r['per_device_batch']} x {r['seq']} | "
                         f"{fmt(r['steady_tokens_per_s'])} ({fmt(r['tokens_per_s'])}) | {achieved:.1f} | {sheet} | "
                         f"{achieved / gpu['measured'][key]:.1%} |")
        for label, _seq, args in gpu["jobs"]:
            rows = [r for r in gpu["rows"] if r["label"] == label and r.get("flops")]
            if rows:
                f = rows[0]["flops"]
                lines.append(f"\n{label}: `tlab pretrain {' '.join(args + gpu['common'])} --precision fp32|bf16`; "
                             f"{f['layers']} x {f['hidden']}, vocab {f['vocab']}, N_body {f['body_params'] / 1e6:.1f} M, "
                             f"{f['flops_per_token'] / 1e9:.3f} GFLOP per token (attention {f['attention_share']:.0%}).")
        if gpu["scaling"]:
            lines += ["", f"## GPU: 1 vs {gpu['count']} processes (BERT-base MLM, bf16)", "",
                      "| processes | global batch | tokens/s | efficiency |", "|---:|---:|---:|---:|"]
            base = next((r["steady_tokens_per_s"] for r in gpu["scaling"] if r["procs"] == 1 and "error" not in r), None)
            for r in gpu["scaling"]:
                if "error" in r:
                    lines.append(f"| {r['procs']} | | not measured: {_one_line(r['error'])} | |")
                else:
                    eff = r["steady_tokens_per_s"] / base / r["procs"] if base else float("nan")
                    lines.append(f"| {r['procs']} | {r['global_batch']} | {fmt(r['steady_tokens_per_s'])} | {eff:.0%} |")
        lines.append("")
    return "\n".join(lines)


def _has(package: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(package)
        return True
    except md.PackageNotFoundError:
        return False


def _one_line(text: str) -> str:
    wanted = [line for line in text.splitlines() if line.startswith("error:")] or text.splitlines()[:1]
    return wanted[0].replace("|", "/")[:200] if wanted else "failed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per CPU run")
    parser.add_argument("--batch-size", type=int, default=32, help="per-process batch of the CPU runs")
    parser.add_argument("--procs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="CPU process counts, comma-separated (default 1,2)")
    parser.add_argument("--gpu-steps", type=int, default=60, help="optimizer steps per GPU run")
    parser.add_argument("--bert-batch", type=int, default=128, help="per-GPU batch of BERT-base (sequence 128)")
    parser.add_argument("--gpt-batch", type=int, default=16, help="per-GPU batch of GPT-2 small (block 1024)")
    parser.add_argument("--compile-modes", type=lambda s: [m for m in s.split(",") if m], default=[],
                        help="GPU: also run bf16 with train.compile=true in these modes, e.g. default,reduce-overhead")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories here (default: a temporary one)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per tlab run")
    opts = parser.parse_args()
    opts.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        workdir = opts.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cpu = gpu = None
        if not opts.skip_cpu:
            (workdir / "cpu").mkdir(exist_ok=True)
            cpu = cpu_scaling(opts, workdir / "cpu")
        if torch.cuda.is_available():
            (workdir / "gpu").mkdir(exist_ok=True)
            gpu = gpu_precision(opts, workdir / "gpu")
        else:
            print("no CUDA device: the GPU part (bf16 vs fp32, MFU of BERT-base and GPT-2 small) is skipped", flush=True)
        text = report(opts, cpu, gpu)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(text)
    print("\n" + text)
    print(f"written to {opts.out}")


if __name__ == "__main__":
    main()
