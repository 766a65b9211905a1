"""A pretraining step never reads a tensor value back to the host.

On a GPU every such read (`.item()`, `bool(t)`, `x in t`, a boolean index whose result size depends on the data)
waits for all the work queued so far: the host stops queueing the next step while the GPU computes, and the GPU
then idles while the host catches up. The loop keeps its counters on the device for that reason; transformers'
GPT-2 probe for padding (`pad_token_id in input_ids`) is switched off for packed blocks, which have none.

Checked on CPU by recording every such read made between the first and the last training forward of a run that
logs and evaluates only at its end; batch loading (collation, on the host by design) is left out. C++-internal
synchronisations (e.g. a blocking host-to-device copy) are invisible here: the loader's non-blocking copies are
set in make_accelerator. About 10 s on 2 cores.
"""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import torch
import torch.utils.data.dataloader as torch_loader
from typer.testing import CliRunner

from tlab.cli import app

SHAKESPEARE = Path(__file__).parent / "data" / "corpus" / "tinyshakespeare.txt"
STEPS = 6
READS = ("item", "tolist", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")


class HostReadRecorder:
    """Patches the Tensor methods that return values to Python, and boolean-mask indexing."""

    def __init__(self, monkeypatch):
        self.reads: collections.Counter = collections.Counter()
        self.recording = False
        self.training_forwards = 0
        for name in READS:
            self._wrap(monkeypatch, name)
        original_getitem = torch.Tensor.__getitem__

        def getitem(tensor, index):
            if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
                self._record("boolean index")
            return original_getitem(tensor, index)

        monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
        original_next = torch_loader._BaseDataLoaderIter.__next__

        def next_batch(iterator):
            recording, self.recording = self.recording, False
            try:
                return original_next(iterator)
            finally:
                self.recording = recording

        monkeypatch.setattr(torch_loader._BaseDataLoaderIter, "__next__", next_batch)

    def _wrap(self, monkeypatch, name):
        original = getattr(torch.Tensor, name)

        def wrapper(tensor, *args, **kwargs):
            self._record(name)
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    def _record(self, what):
        if self.recording:
            frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack()[:-2]
                      if "/torch/" not in f.filename][-3:]
            self.reads[(what, " <- ".join(reversed(frames)))] += 1

    def forward_hook(self, module, args):
        """Records from the first training forward of the whole model to the last one."""
        if module.training and type(module).__name__.endswith(("ForMaskedLM", "ForCausalLM", "LMHeadModel")):
            self.training_forwards += 1
            self.recording = self.training_forwards < STEPS


def recorded_run(objective: str, preset: str, tmp_path, monkeypatch) -> HostReadRecorder:
    """A STEPS-step pretraining run that logs and evaluates only at its end, with its host reads recorded."""
    recorder = HostReadRecorder(monkeypatch)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(recorder.forward_hook)
    try:
        result = CliRunner().invoke(app, [
            "pretrain", "--objective", objective, "--preset", preset, "--train-file", str(SHAKESPEARE),
            "--vocab-size", "500", "--block-size", "64", "--batch-size", "8", "--max-steps", str(STEPS),
            "--eval-every", str(STEPS), f"train.log_every={STEPS}", "data.max_eval_samples=4", "-o", str(tmp_path / "run")])
    finally:
        handle.remove()
    assert result.exit_code == 0, result.output
    assert recorder.training_forwards == STEPS  # the window spans steps 1..STEPS-1 in full
    return recorder


@pytest.mark.parametrize("objective, preset, by_design", [
    ("mlm", "bert-tiny", None), ("mlm", "roberta-tiny", None), ("clm", "gpt2-tiny", None), ("clm", "llama-tiny", None),
    # ModernBERT's sparse prediction picks the masked positions out by boolean index (two data-dependent shapes a
    # step), the price of projecting only 15% of the tokens onto the vocabulary; nothing else may read.
    ("mlm", "tiny", "boolean index@modeling_modernbert.py"),
])
def test_training_steps_read_nothing_back_from_the_device(objective, preset, by_design, tmp_path, monkeypatch):
    reads = recorded_run(objective, preset, tmp_path, monkeypatch).reads
    if by_design:
        what, where = by_design.split("@")
        expected = {key: n for key, n in reads.items() if key[0] == what and key[1].startswith(where)}
        assert sum(expected.values()) == 2 * (STEPS - 1), reads
        for key in expected:
            del reads[key]
    assert not reads, "host reads inside training steps:\n" + "\n".join(
        f"{n} x {what}: {where}" for (what, where), n in reads.items())


def test_the_recorder_sees_a_read(tmp_path, monkeypatch):
    """The GPT-2 padding probe, switched back on, is caught: the check above can fail."""
    from tlab.tasks import lm

    monkeypatch.setattr(lm, "skip_padding_probe", lambda model: None)
    reads = recorded_run("clm", "gpt2-tiny", tmp_path, monkeypatch).reads
    assert any("warn_if_padding_and_no_attention_mask" in where for _, where in reads), reads
