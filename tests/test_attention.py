"""`tlab attention`: attention weights of tiny random models (a 2-layer BERT classifier, a transformer-tiny
encoder-decoder, a GPT-2): the eager weights are those softmax(QK^T / sqrt(d)) gives by hand, every row sums to
one, one panel per head asked for, PNGs beside the run or at --output, and bad input as one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import gpt2_folder, one_line_error
from tlab import attention
from tlab.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()
TEXT = "the movie was good and the plot really great"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    from tlab import modeling
    from tlab.tasks import seq2seq

    root = tmp_path_factory.mktemp("attention")
    sentences = (DATA / "wmt" / "train.en").read_text().splitlines()
    tokenizer = modeling.train_tokenizer(lambda: iter(sentences), "mlm", 300, "attention-test")
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64,
                                             num_labels=2)).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    shared = seq2seq.shared_tokenizer(sentences, (DATA / "wmt" / "train.de").read_text().splitlines(), 400)
    seq2seq.from_preset("transformer-tiny", shared, {}, 64).save_pretrained(root / "mt")
    shared.save_pretrained(root / "mt")
    gpt2_folder(root / "gpt2", DATA / "corpus" / "ptb-valid.txt")
    return root


def rows_sum_to_one(weights: np.ndarray) -> bool:
    return bool(np.allclose(weights.sum(-1), 1.0, atol=1e-5))


def test_encoder_weights_are_the_softmax_of_queries_and_keys(models):
    from transformers import BertForSequenceClassification

    found = attention.compute(str(models / "bert"), TEXT)
    assert found.kind == "encoder" and found.weights.shape == (2, 4, len(found.queries), len(found.keys))
    assert found.queries == found.keys and found.queries[0] == "[CLS]" and found.queries[-1] == "[SEP]" and "the" in found.queries
    assert rows_sum_to_one(found.weights)
    # layer 0 by hand: softmax(Q K^T / sqrt(head size)) of the embeddings, per head
    model = BertForSequenceClassification.from_pretrained(models / "bert").eval()
    ids = attention.modeling.load_tokenizer(str(models / "bert"))(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model.bert.embeddings(input_ids=ids)
        own = model.bert.encoder.layer[0].attention.self
        q, k = own.query(hidden), own.key(hidden)  # (1, T, 32)
        split = lambda t: t.view(1, -1, 4, 8).transpose(1, 2)  # noqa: E731  (1, heads, T, 8)
        by_hand = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(8), dim=-1)[0].numpy()
    assert np.allclose(found.weights[0], by_hand, atol=1e-5)


def test_a_layer_is_a_grid_of_every_head_and_a_head_one_panel(models):
    found = attention.compute(str(models / "bert"), TEXT)
    grid = attention.figure(found, layer=1)
    panels = [ax for ax in grid.axes if ax.images]
    assert len(panels) == 4 and [ax.get_title() for ax in panels] == [f"layer 1, head {h}" for h in range(4)]
    for h, ax in enumerate(panels):
        plotted = np.asarray(ax.images[0].get_array())
        assert rows_sum_to_one(plotted) and np.allclose(plotted, found.weights[1, h])
        assert [t.get_text() for t in ax.get_xticklabels()] == found.keys
    one = attention.figure(found, layer=0, head=2)
    panels = [ax for ax in one.axes if ax.images]
    assert len(panels) == 1 and np.allclose(panels[0].images[0].get_array(), found.weights[0, 2])


def test_encoder_decoder_kinds_and_a_causal_decoder(models):
    mt = str(models / "mt")
    cross = attention.compute(mt, "The house is small.", kind="cross", target="Das Haus ist klein und sehr alt.")
    encoder = attention.compute(mt, "The house is small.")
    assert cross.kind == "cross" and cross.keys == encoder.keys and len(cross.queries) > len(cross.keys)
    assert cross.queries[0] == "<pad>" and cross.queries[1:3] == ["D", "as"]  # the decoder start, then the target
    assert cross.weights.shape[2:] == (len(cross.queries), len(cross.keys)) and rows_sum_to_one(cross.weights)
    decoder = attention.compute(mt, "The house is small.", kind="decoder", target="Das Haus ist klein und sehr alt.")
    assert decoder.queries == decoder.keys == cross.queries and rows_sum_to_one(decoder.weights)
    assert np.allclose(np.triu(decoder.weights, k=1), 0)  # a decoder position never sees later ones
    generated = attention.compute(mt, "The house is small.", kind="cross")  # no --target: the model's own output
    assert 1 < len(generated.queries) <= attention.MAX_NEW_TOKENS + 1 and rows_sum_to_one(generated.weights)
    gpt = attention.compute(str(models / "gpt2"), "the cat sat on the mat")
    assert gpt.kind == "decoder" and rows_sum_to_one(gpt.weights) and np.allclose(np.triu(gpt.weights, k=1), 0)


def test_the_cli_writes_a_png_beside_the_model_or_at_output(models, tmp_path):
    result = runner.invoke(app, ["attention", "--model", str(models / "bert"), TEXT])
    assert result.exit_code == 0, result.output
    made = models / "bert" / "attention" / "encoder-layer1.png"
    assert made.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(made) in result.output
    out = tmp_path / "cross.png"
    result = runner.invoke(app, ["attention", "--model", str(models / "mt"), "The house is small.", "--kind", "cross",
                                 "--target", "Das Haus ist klein.", "--layer", "0", "--head", "1", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG" and "cross attention, layer 0, head 1" in result.output


@pytest.mark.parametrize("args,needles", [
    (["--layer", "2"], ["--layer 2 is out of range", "2 layers (0-1)"]),
    (["--layer", "-1"], ["--layer -1 is out of range"]),
    (["--head", "4"], ["--head 4 is out of range", "4 heads (0-3)"]),
    (["--kind", "cross"], ["--kind cross", "encoder-only"]),
    (["--kind", "sideways"], ["--kind 'sideways'"]),
    (["--target", "x"], ["--target is the output text of an encoder-decoder"]),
    (["--output", "map.jpg"], ["give a .png file name"]),
])
def test_bad_input_is_one_line_exit_2(models, args, needles):
    result = runner.invoke(app, ["attention", "--model", str(models / "bert"), TEXT, *args])
    assert result.exit_code == 2
    one_line_error(result, *needles)


def test_empty_text_or_no_model_is_one_line_exit_2(models):
    for args, needle in (([" "], "no text"), (["", "--layer", "0"], "no text")):
        result = runner.invoke(app, ["attention", "--model", str(models / "bert"), *args])
        assert result.exit_code == 2
        one_line_error(result, needle)
    result = runner.invoke(app, ["attention", TEXT])
    assert result.exit_code == 2
    one_line_error(result, "pass --model")
