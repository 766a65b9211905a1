"""The CPU dropout: same distribution as torch's, same attention math as SDPA, and the model restored afterwards."""

from __future__ import annotations

import math

import pytest
import torch

from tlab.cheap_dropout import CheapDropout, cheap_dropout, dropout_tensor


def tiny_bert(p: float):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        hidden_dropout_prob=p, attention_probs_dropout_prob=p, num_labels=2)
    return BertForSequenceClassification(config)


def padded_batch():
    ids = torch.tensor([[2, 15, 16, 17, 18, 19, 3], [2, 40, 41, 3, 0, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(1)
    n = 1_000_000
    out = dropout_tensor(torch.ones(n), p)
    kept = out > 0
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / (1 - p)), rtol=1e-4)  # inverted-dropout scale
    assert abs(out.mean().item() - 1) < 5 * sigma / (1 - p)  # expectation preserved
    # neighbouring elements are independent (they share a 64-bit draw): P(both kept) = (1 - p)^2
    pairs = kept[: n // 2 * 2].view(-1, 2).all(dim=1).float().mean().item()
    assert abs(pairs - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 / (n // 2))


def test_masks_follow_the_seed_and_differ_between_calls():
    x = torch.ones(64, 48)
    torch.manual_seed(3)
    first, second = dropout_tensor(x, 0.3), dropout_tensor(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(dropout_tensor(x, 0.3), first)
    assert not torch.equal(first, second)
    assert torch.equal(dropout_tensor(x, 0.0), x) and torch.equal(dropout_tensor(x, 1.0), torch.zeros_like(x))


def test_attention_math_matches_sdpa_with_padding():
    # p below 1/65536 rounds to "keep all": the training path then runs its own attention math with no dropout,
    # which must equal SDPA (the evaluation path) on a padded batch.
    model = tiny_bert(1e-7)
    batch = padded_batch()
    model.eval()
    reference = model(**batch).logits
    with cheap_dropout(model):
        model.train()
        torch.testing.assert_close(model(**batch).logits, reference, rtol=1e-5, atol=1e-6)


def test_model_is_restored_and_evaluation_unchanged():
    model = tiny_bert(0.2)
    batch = padded_batch()
    model.eval()
    reference = model(**batch).logits
    with cheap_dropout(model):
        assert model.config._attn_implementation != "sdpa"
        assert sum(isinstance(m, CheapDropout) for m in model.modules()) > 0
        assert torch.equal(model(**batch).logits, reference)  # eval mode: no dropout anywhere
        model.train()
        torch.manual_seed(0)
        a = model(**batch).logits
        b = model(**batch).logits
        assert not torch.equal(a, b) and not torch.equal(a, reference)  # dropout is really applied in training
    assert model.config._attn_implementation == "sdpa"
    assert not any(isinstance(m, CheapDropout) for m in model.modules())
    model.eval()
    assert torch.equal(model(**batch).logits, reference)


def test_causal_attention_keeps_its_own_kernel():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4))
    with cheap_dropout(model):
        assert model.config._attn_implementation == "sdpa"  # only bidirectional attention is replaced
        assert any(isinstance(m, CheapDropout) for m in model.modules())
    assert not any(isinstance(m, CheapDropout) for m in model.modules())
