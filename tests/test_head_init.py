"""model.head_init=zero: a new task head's output layer starts at zero; a head the checkpoint already has is kept."""

from __future__ import annotations

import pytest
import torch
from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification, BertConfig, BertModel,
                          RobertaConfig, RobertaModel)

from tlab import config, finetuning, modeling
from tlab.errors import TlabError

SIZES = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)


def saved_body(tmp_path, kind: str = "bert") -> str:
    torch.manual_seed(0)
    body = BertModel(BertConfig(**SIZES)) if kind == "bert" else RobertaModel(RobertaConfig(**SIZES, max_position_embeddings=40))
    body.save_pretrained(tmp_path / kind)
    return str(tmp_path / kind)


def adapted(model, head_init: str = "zero"):
    said = []
    return finetuning.adapt(model, config.ModelConfig(head_init=head_init), said.append), said


def test_zero_head_gives_equal_start_and_end_scores_and_still_learns(tmp_path):
    path = saved_body(tmp_path)
    model, said = adapted(modeling.load_pretrained(AutoModelForQuestionAnswering, path))
    assert said == ["head: qa_outputs starts at zero"]
    assert not model.qa_outputs.weight.any() and not model.qa_outputs.bias.any()
    body_before = {k: v.clone() for k, v in model.bert.state_dict().items()}
    reloaded = modeling.load_pretrained(AutoModelForQuestionAnswering, path)
    assert all(torch.equal(v, reloaded.bert.state_dict()[k]) for k, v in body_before.items())  # only the head moved

    ids = torch.randint(5, 100, (4, 12))
    out = model(input_ids=ids, start_positions=torch.tensor([1, 2, 3, 4]), end_positions=torch.tensor([2, 3, 4, 5]))
    assert torch.all(out.start_logits == 0) and torch.all(out.end_logits == 0)  # every position equally likely
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):  # step 1 moves the head; from step 2 on, the encoder gets gradient through it
        optimizer.zero_grad()
        loss = model(input_ids=ids, start_positions=torch.tensor([1, 2, 3, 4]),
                     end_positions=torch.tensor([2, 3, 4, 5])).loss
        loss.backward()
        optimizer.step()
    assert model.qa_outputs.weight.any()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_only_the_output_layer_of_a_two_layer_head_is_zeroed(tmp_path):
    model, said = adapted(modeling.load_pretrained(AutoModelForSequenceClassification, saved_body(tmp_path, "roberta"),
                                                   num_labels=3))
    assert said == ["head: classifier.out_proj starts at zero"]
    assert not model.classifier.out_proj.weight.any()
    assert model.classifier.dense.weight.std() > 0  # both zero would leave neither a gradient


def test_a_head_loaded_from_the_checkpoint_is_left_as_it_is(tmp_path):
    trained = modeling.load_pretrained(AutoModelForSequenceClassification, saved_body(tmp_path), num_labels=2)
    trained.save_pretrained(tmp_path / "classifier")
    model, said = adapted(modeling.load_pretrained(AutoModelForSequenceClassification, str(tmp_path / "classifier")))
    assert said == ["head: loaded from the checkpoint, so model.head_init=zero leaves it as it is"]
    assert torch.equal(model.classifier.weight, trained.classifier.weight)


def test_default_head_init_keeps_the_architectures_draw(tmp_path):
    path = saved_body(tmp_path)
    torch.manual_seed(3)
    model, said = adapted(modeling.load_pretrained(AutoModelForQuestionAnswering, path), "default")
    assert said == [] and model.qa_outputs.weight.std() > 0


def test_an_unknown_head_init_is_refused():
    with pytest.raises(TlabError, match="model.head_init must be default or zero, got 'ones'"):
        config.ModelConfig(head_init="ones")
