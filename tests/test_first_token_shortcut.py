"""Computing only the [CLS] position in a classifier's last layer changes nothing but the work done."""

from __future__ import annotations

import pytest
import torch

from tlab.finetuning import first_token_only_in_last_layer


def tiny(kind: str):
    import transformers

    torch.manual_seed(0)
    sizes = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    config_cls, model_cls = {"bert": ("BertConfig", "BertForSequenceClassification"),
                             "roberta": ("RobertaConfig", "RobertaForSequenceClassification"),
                             "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification"),
                             "camembert": ("CamembertConfig", "CamembertForSequenceClassification"),
                             "electra": ("ElectraConfig", "ElectraForSequenceClassification")}[kind]
    extra = {"embedding_size": 32} if kind == "electra" else {}
    return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**sizes, **extra))


def batch():
    ids = torch.tensor([[5, 15, 16, 17, 18, 19, 6], [5, 40, 41, 6, 1, 1, 1]])
    return {"input_ids": ids, "attention_mask": (ids != 1).long(), "labels": torch.tensor([0, 2])}


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "camembert", "electra"])
def test_same_logits_loss_and_gradients(kind):
    reference, shortcut = tiny(kind), tiny(kind)
    assert first_token_only_in_last_layer(shortcut)
    out_ref, out = reference(**batch()), shortcut(**batch())
    torch.testing.assert_close(out.logits, out_ref.logits, rtol=1e-5, atol=1e-6)
    out_ref.loss.backward()
    out.loss.backward()
    for (name, p_ref), (_, p) in zip(reference.named_parameters(), shortcut.named_parameters()):
        if p_ref.grad is not None:
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)
    # and the last layer really is cut to one position
    seen = []
    layer = shortcut.base_model.encoder.layer[-1].output
    layer.register_forward_hook(lambda m, a, o: seen.append(o.shape))
    shortcut(**batch())
    assert seen == [torch.Size([2, 1, 32])]


def test_not_applied_where_the_head_reads_other_positions():
    from transformers import BertConfig, BertForTokenClassification, GPT2Config, GPT2ForSequenceClassification

    assert not first_token_only_in_last_layer(BertForTokenClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)))
    assert not first_token_only_in_last_layer(GPT2ForSequenceClassification(GPT2Config(
        vocab_size=100, n_positions=16, n_embd=32, n_layer=1, n_head=4)))  # reads the last real token
