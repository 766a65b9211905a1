"""Fine-tuning levers on the encoder's layer stack: layer-wise learning-rate decay and re-initialised top layers."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tlab import config, finetuning
from tlab.errors import TlabError
from tlab.train import _param_groups


def tiny_bert(layers: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=layers,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=2))


def lr_of(groups, param) -> float:
    return next(g["lr"] for g in groups if any(p is param for p in g["params"]))


def test_layer_lr_decay_scales_each_depth_and_keeps_weight_decay_off_norms_and_biases():
    model = tiny_bert(layers=3)
    groups = _param_groups(model, weight_decay=0.01, lr=1e-3, layer_lr_decay=0.5)
    bert = model.bert
    assert lr_of(groups, model.classifier.weight) == pytest.approx(1e-3)
    assert lr_of(groups, bert.pooler.dense.weight) == pytest.approx(1e-3)
    for index, layer in enumerate(bert.encoder.layer):  # top layer at lr x 0.5, the one below at lr x 0.25, ...
        assert lr_of(groups, layer.attention.self.query.weight) == pytest.approx(1e-3 * 0.5 ** (3 - index))
        assert lr_of(groups, layer.output.LayerNorm.weight) == pytest.approx(1e-3 * 0.5 ** (3 - index))
    assert lr_of(groups, bert.embeddings.word_embeddings.weight) == pytest.approx(1e-3 * 0.5 ** 4)
    assert lr_of(groups, bert.embeddings.LayerNorm.weight) == pytest.approx(1e-3 * 0.5 ** 4)
    for group in groups:
        for param in group["params"]:
            assert group["weight_decay"] == (0.01 if param.ndim >= 2 and param is not bert.embeddings.LayerNorm.weight else 0.0)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})


def test_without_decay_the_groups_are_the_two_weight_decay_groups_in_their_old_order():
    """A checkpoint's optimizer state is matched to the groups by position: decay 1.0 must keep the old layout."""
    model = tiny_bert()
    groups = _param_groups(model, weight_decay=0.01, lr=1e-3)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert all(g["lr"] == 1e-3 for g in groups)
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])


def test_reinit_top_layers_redraws_the_top_layers_and_the_pooler_only_and_repeats_with_the_seed():
    def reinitialised(seed: int):
        model = tiny_bert(layers=3)
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(0.5)
        torch.manual_seed(seed)
        finetuning.reinit_top_layers(model, 2)
        return model

    model = reinitialised(1)
    bert = model.bert
    for layer in bert.encoder.layer[1:]:
        weight = layer.intermediate.dense.weight
        assert weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.3)
        assert torch.equal(layer.output.LayerNorm.weight, torch.ones_like(layer.output.LayerNorm.weight))
        assert torch.equal(layer.output.dense.bias, torch.zeros_like(layer.output.dense.bias))
    assert bert.pooler.dense.weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.3)
    untouched = [*bert.encoder.layer[0].parameters(), *bert.embeddings.parameters(), *model.classifier.parameters()]
    assert all(torch.all(p == 0.5) for p in untouched)
    again, other = reinitialised(1), reinitialised(2)
    top = lambda m: m.bert.encoder.layer[2].attention.self.key.weight  # noqa: E731
    assert torch.equal(top(model), top(again)) and not torch.equal(top(model), top(other))


def test_reinit_more_layers_than_the_model_has_is_refused():
    with pytest.raises(TlabError, match="has 3 layers"):
        finetuning.reinit_top_layers(tiny_bert(layers=3), 4)


@pytest.mark.parametrize("override, message", [("train.layer_lr_decay=0", "layer_lr_decay must be in"),
                                               ("train.layer_lr_decay=1.5", "layer_lr_decay must be in"),
                                               ("model.reinit_layers=-1", "reinit_layers must be >= 0")])
def test_bad_values_are_refused(override, message):
    with pytest.raises(TlabError, match=message):
        config.load(flags={"task": "sst2", "model.name_or_path": "m"}, overrides=[override])


def test_a_run_with_both_levers_trains_and_saves_the_redrawn_top_layer(tmp_path):
    """Wiring: the config keys reach the model (re-initialised top layer saved) and the optimizer (the run trains)."""
    import os

    from safetensors.torch import load_file

    from tlab import pipeline
    from test_finetune import MINILM, finetune_cfg, sst2_dir

    data_dir = sst2_dir(tmp_path, train_rows=48, dev_rows=16)
    lines = []
    cfg = finetune_cfg(tmp_path / "run", data_dir, "train.max_steps=2", "train.layer_lr_decay=0.8", "model.reinit_layers=1")
    pipeline.run(cfg, echo=lines.append)
    assert any("re-initialised the pooler and the top 1 layer" in line for line in lines)
    before = load_file(os.path.join(MINILM, "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    key = "encoder.layer.{}.intermediate.dense.weight"
    saved = lambda i: after.get("bert." + key.format(i), after.get(key.format(i)))  # noqa: E731
    assert (saved(5) - before[key.format(5)]).abs().mean() > 10 * (saved(4) - before[key.format(4)]).abs().mean()


def test_head_lr_scale_multiplies_the_rate_above_the_layers_only_and_composes_with_decay():
    model = tiny_bert(layers=2)
    bert = model.bert
    groups = _param_groups(model, weight_decay=0.01, lr=1e-3, head_lr_scale=10)
    for param in (model.classifier.weight, model.classifier.bias, bert.pooler.dense.weight):
        assert lr_of(groups, param) == pytest.approx(1e-2)
    for param in (*bert.encoder.layer.parameters(), *bert.embeddings.parameters()):
        assert lr_of(groups, param) == pytest.approx(1e-3)
    decayed = _param_groups(model, weight_decay=0.01, lr=1e-3, layer_lr_decay=0.5, head_lr_scale=10)
    assert lr_of(decayed, model.classifier.weight) == pytest.approx(1e-2)
    assert lr_of(decayed, bert.encoder.layer[1].output.dense.weight) == pytest.approx(5e-4)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})


def test_a_head_lr_scale_of_zero_is_refused():
    with pytest.raises(TlabError, match="train.head_lr_scale must be > 0, got 0"):
        config.TrainConfig(head_lr_scale=0)


def test_model_overrides_set_a_checkpoints_dropout_when_it_is_trained_and_a_typo_is_refused(tmp_path):
    """model.overrides used to reach only models built from a preset: on a checkpoint they were dropped silently."""
    tiny_bert().save_pretrained(tmp_path / "ckpt")
    spec = type("Spec", (), {"label_names": ["no", "yes"], "num_labels": 2, "name": "toy"})()
    cfg = config.ModelConfig(overrides={"hidden_dropout_prob": 0.3, "classifier_dropout": 0.4})
    model = finetuning.load_classifier(str(tmp_path / "ckpt"), spec, cfg, for_training=True)
    assert model.config.hidden_dropout_prob == 0.3 and model.config.classifier_dropout == 0.4
    assert model.bert.encoder.layer[0].output.dropout.p == 0.3 and model.dropout.p == 0.4
    plain = finetuning.load_classifier(str(tmp_path / "ckpt"), spec, config.ModelConfig(), for_training=True)
    assert plain.config.hidden_dropout_prob == 0.1 and plain.bert.encoder.layer[0].output.dropout.p == 0.1
    with pytest.raises(TlabError, match="unknown key model.overrides.hidden_dropout: .*did you mean 'hidden_dropout_prob'"):
        finetuning.load_classifier(str(tmp_path / "ckpt"), spec, config.ModelConfig(overrides={"hidden_dropout": 0.3}),
                                   for_training=True)
