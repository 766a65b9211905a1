"""Causal LMs beyond pretraining: `tlab generate` (greedy as transformers' own generate, seeded sampling, stop
strings, left-padded batches, streaming, JSON lines, an encoder-decoder as `tlab predict` runs it) and
`tlab eval --task clm` perplexity, on a tlab run and on a plain Hub-format GPT-2 folder, checked against the model
run by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import gpt2_folder, lm_config, one_line_error
from tlab import generation
from tlab.cli import app

runner = CliRunner()
DATA = Path(__file__).parent / "data"
PROMPT = "First Citizen: Before we proceed"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shakespeare) -> Path:
    return gpt2_folder(tmp_path_factory.mktemp("hub") / "gpt2", shakespeare)


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory, ptb) -> Path:
    """A `tlab pretrain --objective clm` run directory: the tiny GPT-2 preset, 4 steps."""
    from tlab import pipeline

    run = tmp_path_factory.mktemp("clm") / "run"
    pipeline.run(lm_config(run, ptb, "clm", "train.max_steps=4"), echo=lambda _m: None)
    return run


def model_and_tokenizer(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    inner = path / "model" if (path / "model").is_dir() else path
    return AutoModelForCausalLM.from_pretrained(inner).eval(), AutoTokenizer.from_pretrained(inner)


def generate(*args: str, stdin: str | None = None) -> list[dict]:
    result = runner.invoke(app, ["generate", *args, "--json"], input=stdin)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


@pytest.mark.parametrize("which", ["folder", "clm_run"])
def test_greedy_is_transformers_greedy_with_its_token_counts(which, request):
    path = request.getfixturevalue(which)
    [out] = generate("--model", str(path), "--max-new-tokens", "12", PROMPT)
    model, tokenizer = model_and_tokenizer(path)
    enc = tokenizer([PROMPT], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.eos_token_id)[0]
    new = ids[enc["input_ids"].shape[1] :].tolist()
    ended = tokenizer.eos_token_id in new
    new = new[: new.index(tokenizer.eos_token_id)] if ended else new
    assert out == {"prompt": PROMPT, "text": tokenizer.decode(new, skip_special_tokens=True),
                   "prompt_tokens": enc["input_ids"].shape[1], "new_tokens": len(new),
                   "finish_reason": "eos" if ended else "length", "sequence": 0}
    assert out["text"] and out["prompt_tokens"] == len(tokenizer(PROMPT)["input_ids"])
    plain = runner.invoke(app, ["generate", "--model", str(path), "--max-new-tokens", "12", PROMPT])
    assert plain.exit_code == 0 and plain.output == PROMPT + out["text"] + "\n"


def test_batched_prompts_are_left_padded(folder):
    """Prompts of different lengths in one batch continue as each does alone (right padding would put pad tokens
    between a short prompt and its continuation)."""
    prompts = ["Short", "A much longer prompt than the first one, with words"]
    together = generate("--model", str(folder), "--max-new-tokens", "10", stdin="".join(p + "\n" for p in prompts))
    alone = [generate("--model", str(folder), "--max-new-tokens", "10", p)[0] for p in prompts]
    assert [o["prompt"] for o in together] == prompts
    assert together == alone
    assert together[0]["prompt_tokens"] < together[1]["prompt_tokens"]


def test_the_same_seed_samples_the_same_text(folder):
    args = ["--model", str(folder), "--max-new-tokens", "16", "--temperature", "1.0", "--top-k", "100", "-n", "3", PROMPT]
    first = generate(*args, "--seed", "5")
    assert generate(*args, "--seed", "5") == first
    other = generate(*args, "--seed", "6")
    assert [o["text"] for o in other] != [o["text"] for o in first]
    assert [o["sequence"] for o in first] == [0, 1, 2] and len({o["text"] for o in first}) > 1  # three samples, not one
    nucleus = generate("--model", str(folder), "--top-p", "0.9", "--repetition-penalty", "1.3", "--seed", "1", PROMPT)
    assert nucleus[0]["new_tokens"] > 0


def test_stop_strings_cut_the_text(folder):
    [full] = generate("--model", str(folder), "--max-new-tokens", "24", PROMPT)
    text = full["text"]
    at = next((i for i in range(2, len(text) - 3) if text[i : i + 3].isascii() and text[i : i + 3].isalpha()), None)
    assert at is not None, text
    stop = text[at : at + 3]
    [cut] = generate("--model", str(folder), "--max-new-tokens", "24", "--stop", "never-seen", "--stop", stop, PROMPT)
    assert cut["text"] == text[: text.find(stop)] and cut["finish_reason"] == "stop"
    assert cut["new_tokens"] <= full["new_tokens"]
    assert generation.cut("ab\ncd", ["\n"]) == ("ab", True) and generation.unescape(r"a\nb\tc\\n") == "a\nb\tc\\n"


@pytest.mark.parametrize("extra", [[], ["--stop", "e"]])
def test_streaming_shows_what_batched_generation_returns(folder, monkeypatch, extra):
    pieces = []
    original = generation.stream_class

    def recording():
        streamer = original()

        class Recording(streamer):
            def on_finalized_text(self, text, stream_end=False):
                pieces.append(text)
                super().on_finalized_text(text, stream_end)

        return Recording

    monkeypatch.setattr(generation, "stream_class", recording)
    monkeypatch.setattr(generation, "STREAM_INTERVAL", 0.0)  # every token decoded: pieces however fast the machine
    args = ["generate", "--model", str(folder), "--max-new-tokens", "30", "--temperature", "1.0", "--seed", "3", *extra, PROMPT]
    streamed = runner.invoke(app, args)
    assert streamed.exit_code == 0, streamed.output
    assert len(pieces) >= 2, pieces  # shown in pieces as the tokens came
    batched = runner.invoke(app, [*args, "--no-stream"])
    assert streamed.output == batched.output and streamed.output.startswith(PROMPT)
    if extra:
        assert "e" not in streamed.output[len(PROMPT) :]


def test_an_encoder_decoder_generates_as_predict_translates(tmp_path):
    from tlab.tasks import scaffold, seq2seq
    from tlab.tasks.translation import Translator

    sources = (DATA / "wmt" / "train.en").read_text().splitlines()[:200]
    targets = (DATA / "wmt" / "train.de").read_text().splitlines()[:200]
    tokenizer = seq2seq.shared_tokenizer(sources, targets, 300)
    torch.manual_seed(0)
    seq2seq.from_preset("transformer-tiny", tokenizer, {}, 64).save_pretrained(tmp_path / "mt")
    tokenizer.save_pretrained(tmp_path / "mt")
    inputs = ["The house is small.", "Parliament approved it."]
    expected = Translator(str(tmp_path / "mt"), scaffold.run_config(str(tmp_path / "mt"), None))(inputs)
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "mt"), *inputs])
    assert result.exit_code == 0, result.output
    assert result.output == "\n\n".join(expected) + "\n"


@pytest.fixture(scope="module")
def not_generative(tmp_path_factory) -> dict[str, Path]:
    """A masked LM and a classifier built on GPT-2: neither generates text."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2ForSequenceClassification

    root = tmp_path_factory.mktemp("other")
    BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(root / "mlm")
    GPT2ForSequenceClassification(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2)).save_pretrained(root / "cls")
    return {"mlm": root / "mlm", "cls": root / "cls"}


@pytest.mark.parametrize("args,stdin,phrase", [
    (["x"], None, "pass --model"),
    (["--model", "{folder}"], "", "no prompt"),
    (["--model", "{folder}", "--temperature", "0", "x"], None, "--temperature must be > 0 when sampling"),
    (["--model", "{folder}", "--sample", "--temperature", "-1", "x"], None, "--temperature must be > 0"),
    (["--model", "{folder}", "--top-p", "0", "x"], None, "--top-p must be in (0, 1]"),
    (["--model", "{folder}", "--top-p", "1.5", "x"], None, "--top-p must be in (0, 1]"),
    (["--model", "{folder}", "-n", "2", "x"], None, "needs sampling"),
    (["--model", "{folder}", "--stop", "", "x"], None, "--stop strings must not be empty"),
    (["--model", "{folder}", "--max-new-tokens", "200", "x"], None, "exceed the model's 128 positions"),
    (["--model", "{mlm}", "x"], None, "BertForMaskedLM model, which does not generate text"),
    (["--model", "{cls}", "x"], None, "GPT2ForSequenceClassification model, which does not generate text"),
])
def test_generate_refuses_bad_input_in_one_line(folder, not_generative, args, stdin, phrase):
    paths = {"folder": str(folder), **{k: str(v) for k, v in not_generative.items()}}
    result = runner.invoke(app, ["generate", *[a.format(**paths) for a in args]], input=stdin)
    assert result.exit_code == 2
    one_line_error(result, phrase)


def hand_perplexity(path: Path, text_file: Path, block: int) -> tuple[float, int]:
    """exp(mean NLL) computed with the model itself: the non-blank lines' tokens each followed by end-of-text, end
    to end, cut into blocks (the last partial one dropped), each block's tokens after its first predicted."""
    model, tokenizer = model_and_tokenizer(path)
    ids = [t for line in text_file.read_text().splitlines() if line.strip()
           for t in tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    blocks = torch.tensor(ids[: len(ids) // block * block]).view(-1, block)
    with torch.no_grad():
        logits = model(blocks).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), blocks[:, 1:].flatten(), reduction="sum")
    count = blocks[:, 1:].numel()
    return math.exp(nll.item() / count), count


def eval_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["eval", *args, "--precision", "fp32", "--output", str(out)])  # as the hand computation
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_perplexity_of_a_hub_format_folder(folder, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join((DATA / "corpus" / "ptb-valid.txt").read_text().splitlines(keepends=True)[:60]))
    found = eval_json(tmp_path, "--task", "clm", "--model", str(folder), "--validation-file", str(text))
    expected, tokens = hand_perplexity(folder, text, block=128)  # data.block_size's default
    assert found["metrics"]["tokens"] == tokens
    assert found["metrics"]["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert found["metrics"]["loss"] == pytest.approx(math.log(expected), rel=1e-4)


def test_perplexity_of_a_tlab_run(clm_run, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join((DATA / "corpus" / "tinyshakespeare.txt").read_text().splitlines(keepends=True)[:80]))
    expected, tokens = hand_perplexity(clm_run, text, block=64)  # the run's data.block_size (lm_config)
    for task in ([], ["--task", "clm"]):  # the run's own task, or named
        found = eval_json(tmp_path, *task, "--model", str(clm_run), "--validation-file", str(text))
        assert found["task"] == "clm" and found["metrics"]["tokens"] == tokens
        assert found["metrics"]["perplexity"] == pytest.approx(expected, rel=1e-4)
