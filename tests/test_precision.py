"""Precision is set in one place (--precision) and the precision in effect is recorded.

resolve_precision maps tlab's --precision onto accelerate's mixed_precision; it is passed to Accelerator explicitly,
so it wins over an accelerate config file (which reaches the process as ACCELERATE_MIXED_PRECISION).
The end-to-end runs force the CPU (CUDA_VISIBLE_DEVICES=""), about 20 s in all on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tlab.cli import app
from tlab.errors import TlabError
from tlab.runtime import resolve_precision

SHAKESPEARE = Path(__file__).parent / "data" / "corpus" / "tinyshakespeare.txt"  # first 120 KB of Tiny Shakespeare
TINY_CLM = ["pretrain", "--objective", "clm", "--vocab-size", "500", "--block-size", "64", "--batch-size", "8",
            "--max-steps", "3", "--eval-every", "3", "model.preset=tiny", "model.overrides.resid_pdrop=0",
            "model.overrides.embd_pdrop=0", "model.overrides.attn_pdrop=0"]


@pytest.mark.parametrize(
    "requested, cuda, bf16_ok, expected",
    [
        ("auto", True, True, "bf16"),  # Ampere / Hopper
        ("auto", True, False, "fp16"),  # V100, T4: loss-scaled fp16
        ("auto", False, False, "no"),  # CPU: fp32 (bf16 autocast is slower than fp32 on most CPUs)
        ("fp32", True, True, "no"),
        ("fp32", False, False, "no"),
        ("bf16", True, True, "bf16"),
        ("bf16", False, False, "bf16"),  # allowed on CPU: autocast to bfloat16
        ("fp16", True, False, "fp16"),
        ("fp16", True, True, "fp16"),
    ],
)
def test_resolve_precision(requested, cuda, bf16_ok, expected):
    assert resolve_precision(requested, cuda=cuda, bf16_ok=bf16_ok) == expected


def test_fp16_needs_a_gpu():
    with pytest.raises(TlabError, match="fp16.*GPU"):
        resolve_precision("fp16", cuda=False, bf16_ok=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid where there is a GPU")
def test_fp16_on_cpu_is_one_line_exit_2_and_no_run_directory(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question\n" * 50)
    result = CliRunner().invoke(app, [*TINY_CLM, "--train-file", str(text), "--precision", "fp16", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fp16" in lines[0], result.output
    assert not (tmp_path / "run").exists()


# -- end to end, on the CPU ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    text = tmp / "shakespeare.txt"
    text.write_bytes(SHAKESPEARE.read_bytes()[:40_000])
    return tmp, text


def run_tiny(corpus, name: str, *extra: str, **env: str) -> dict:
    tmp, text = corpus
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "TLAB_"))}
    full_env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
                    TLAB_CACHE=str(tmp / "cache"), HF_DATASETS_CACHE=str(tmp / "cache" / "datasets"), **env)
    out = tmp / name
    done = subprocess.run([sys.executable, "-m", "tlab", *TINY_CLM, "--train-file", str(text), "-o", str(out), *extra],
                          cwd=tmp, env=full_env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["precision"] == metrics["precision"]
    return metrics


@pytest.mark.slow
def test_precision_flag_wins_over_the_accelerate_environment(corpus):
    """An accelerate config's mixed_precision arrives as ACCELERATE_MIXED_PRECISION; fp16 would fail on CPU."""
    fp32 = run_tiny(corpus, "fp32", "--precision", "fp32", ACCELERATE_MIXED_PRECISION="fp16")
    assert fp32["precision"] == "fp32" and fp32["device"] == "cpu"
    auto = run_tiny(corpus, "auto", ACCELERATE_MIXED_PRECISION="bf16")  # default auto -> fp32 on CPU
    assert auto["precision"] == "fp32"
    assert auto["final"]["loss"] == fp32["final"]["loss"]  # same seed, same arithmetic


@pytest.mark.slow
def test_bf16_runs_on_cpu_and_is_recorded(corpus):
    bf16 = run_tiny(corpus, "bf16", "--precision", "bf16")
    fp32 = run_tiny(corpus, "fp32-ref", "--precision", "fp32")
    assert bf16["precision"] == "bf16" and bf16["device"] == "cpu"
    loss, reference = bf16["final"]["loss"], fp32["final"]["loss"]
    assert loss == pytest.approx(reference, rel=0.02)  # bf16 keeps ~3 significant digits
    assert loss != reference  # autocast really ran the matmuls in bfloat16
