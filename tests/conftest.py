"""Hermetic tests: no network, caches in a per-session temporary folder, small real data samples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE = tempfile.mkdtemp(prefix="tlab-test-cache-")
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TLAB_CACHE=os.path.join(_CACHE, "tlab"),
    HF_DATASETS_CACHE=os.path.join(_CACHE, "datasets"),
    TOKENIZERS_PARALLELISM="false",
)

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    return DATA / "corpus" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def ptb() -> Path:
    return DATA / "corpus" / "ptb-valid.txt"


def lm_config(out: Path, train_file: Path, objective: str = "mlm", *overrides: str, **flags):
    """A tiny, fast pretraining config on a real text sample."""
    from tlab import config

    base = {"task": objective, "output_dir": str(out), "data.train_files": [str(train_file)]}
    base.update(flags)
    return config.load(
        flags=base,
        overrides=["model.preset=tiny", "model.vocab_size=1000", "data.block_size=64", "train.batch_size=16",
                   "train.lr=2e-3", "train.warmup=0.1", "train.log_every=2", "data.validation_fraction=0.1",
                   *overrides],
    )
