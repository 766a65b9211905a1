"""What the side-by-side benchmarks (bench_ner, bench_qa, bench_summarize) share: each variant of a round runs in a
fresh interpreter of the calling script (`--worker KEY`) with the same thread settings, and writes
result-KEY.json into the work folder; its peak memory is its own process's."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

RUN_DIRS = {"a": "tlab-run", "b": "trainer-run"}


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            # the Rust tokenizer's thread pool: only tokenization (wall time), set alike for both variants
            "RAYON_NUM_THREADS": str(threads), "RAYON_RS_NUM_CPUS": str(threads), "TOKENIZERS_PARALLELISM": "true"}


def start(script: str, key: str, work: Path, argv: list[str], threads: int, seed: int):
    """Variant `key` of `script` at `seed` in a fresh interpreter with the same thread settings: (process, start)."""
    for leftover in (RUN_DIRS[key], f"result-{key}.json"):  # a new round writes afresh
        path = work / leftover
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    process = subprocess.Popen([sys.executable, script, *argv, "--seed", str(seed), "--worker", key, "--work", str(work)],
                               env=thread_env(threads))
    return process, time.perf_counter()


def finish(label: str, key: str, work: Path, process, began: float) -> dict:
    if process.wait() != 0:
        sys.exit(f"variant {label} failed (exit {process.returncode})")
    result = json.loads((work / f"result-{key}.json").read_text())
    result["process_seconds"] = time.perf_counter() - began
    return result
