"""Cheaper dropout for CPU training.

torch draws one float from its Mersenne-Twister generator per element for a dropout mask, one element at a time:
on a small CPU that is a visible share of a fine-tuning step (BENCHMARKS.md), mostly in the attention-probability
dropout inside SDPA. Here a mask costs one 64-bit draw per four elements (16 random bits each, from the same seeded generator,
so runs stay reproducible and resumable), with p rounded to a multiple of 1/65536. Masks keep torch's meaning:
each element kept independently with probability 1 - p and scaled by 1 / (1 - p). GPUs keep torch's own dropout
(its Philox kernel is already cheap).

`cheap_dropout(model)` swaps the model's nn.Dropout modules, torch.nn.functional.dropout and, for bidirectional
attention, its attention function (registered through transformers' AttentionInterface, the library's extension point) for the training
run, and puts the originals back afterwards, so what is saved and evaluated is the unchanged model.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

ATTENTION_NAME = "tlab_cheap_dropout"
_RESOLUTION = 1 << 16


def dropout_tensor(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with keep probability 1 - round(p * 65536) / 65536."""
    drop = round(p * _RESOLUTION)
    if drop <= 0:
        return x
    if drop >= _RESOLUTION:
        return torch.zeros_like(x)
    n = x.numel()
    bits = torch.empty(((n + 3) // 4,), dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    keep = bits.view(torch.int16)[:n].view(x.shape) >= drop - (_RESOLUTION >> 1)  # int16 spans [-32768, 32767]
    return x * keep.to(x.dtype).mul_(_RESOLUTION / (_RESOLUTION - drop))


class CheapDropout(torch.nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout_tensor(x, self.p) if self.training and self.p > 0 else x


def _functional_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """torch.nn.functional.dropout's signature and meaning (a new tensor even when `inplace`)."""
    return dropout_tensor(input, p) if training and p > 0 else input


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Bidirectional attention with cheap dropout on the probabilities; without dropout (evaluation), SDPA itself.
    The math is that of transformers' per-model eager_attention_forward, which calls torch's dropout directly and so
    cannot be reused with another dropout."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if not (module.training and dropout > 0):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=scaling, **kwargs)
    if key.shape[1] != query.shape[1]:  # grouped-query attention
        groups = query.shape[1] // key.shape[1]
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = may attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., : key.shape[-2]]
    probs = dropout_tensor(torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # the same masks SDPA gets


def _bidirectional_sdpa(model) -> bool:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or getattr(config, "is_decoder", False):
        return False
    return not any(getattr(m, "is_causal", False) for m in model.modules())


@contextmanager
def cheap_dropout(model) -> Iterator[None]:
    """Within the block, `model` trains with cheap dropout; on exit it is the model it was."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Dropout and child.p > 0:
                swapped.append((parent, name, child))
    for parent, name, child in swapped:
        setattr(parent, name, CheapDropout(child.p, child.inplace).train(child.training))
    attention_swapped = _bidirectional_sdpa(model)
    if attention_swapped:
        _register_attention()
        model.set_attn_implementation(ATTENTION_NAME)
    # Models such as Marian and BART call torch.nn.functional.dropout rather than holding nn.Dropout modules (their
    # mask draws are a large share of a translation step): the function is swapped for the block as well.
    functional = torch.nn.functional.dropout
    torch.nn.functional.dropout = _functional_dropout
    try:
        yield
    finally:
        torch.nn.functional.dropout = functional
        for parent, name, child in swapped:
            setattr(parent, name, child)
        if attention_swapped:
            model.set_attn_implementation("sdpa")
