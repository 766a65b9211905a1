"""Hermetic tests: no network, caches in a per-session temporary folder, small real data samples."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Tokenizers, tokenized corpora and packed blocks are cached per test session, never in ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="tlab-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TLAB_CACHE=os.path.join(_CACHE, "tlab"),
    HF_DATASETS_CACHE=os.path.join(_CACHE, "datasets"),
    HF_HOME=os.path.join(_CACHE, "hf"),  # evaluate's module cache and anything else of the Hub libraries
    TOKENIZERS_PARALLELISM="false",
)
# One math thread unless asked otherwise: the tiny models gain nothing from more, and on a busy 2-core machine two
# OpenMP threads spin against other processes (the pretraining tests took 170 s instead of 12 s next to a benchmark).
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def one_line_error(result, *needles) -> None:
    """A CLI result that failed with one line naming the problem (each of `needles`) and no traceback."""
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def gpt2_folder(path: Path, corpus: Path, seed: int = 0, n_positions: int = 128) -> Path:
    """A plain `save_pretrained` GPT-2 folder as the Hub has them, not a tlab run: random weights (2 layers, hidden
    32) and a byte-level BPE trained on `corpus` with an end-of-text token but no padding token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus.read_text().splitlines(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
