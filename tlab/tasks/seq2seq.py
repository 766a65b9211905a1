"""Sequence-to-sequence models (shared by translation and summarization): Transformer presets built from scratch
(Marian architecture: the paper's post-norm encoder-decoder, sinusoidal positions, one vocabulary shared by both sides
and tied embeddings), pretrained checkpoints (Marian, T5, BART, mBART) with the checks each needs, encoder-decoders
warm-started from an encoder (Rothe et al. 2020), and the pieces the loop and the evaluation use: features,
collation, a label-smoothed loss, token-budget batches, length-sorted generation put back in order and checkpoint
averaging. Rows are `source` / `target` text whatever the task calls them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from tlab import modeling
from tlab.errors import TlabError
from tlab.tasks import scaffold

# name: (layers per side, d_model, heads, ffn, dropout). base is the paper's (65M parameters with a 37k vocabulary);
# the smaller ones are for CPUs and little data, where strong dropout is what keeps a model from memorising.
PRESETS = {
    "transformer-tiny": (2, 128, 4, 512, 0.1),
    "transformer-small": (3, 256, 4, 1024, 0.3),
    "transformer-medium": (6, 256, 4, 1024, 0.3),
    "transformer-base": (6, 512, 8, 2048, 0.1),
}
# mBART's language codes (mbart-large-cc25 / mbart-50) for the WMT languages and a few more
MBART_CODES = {"en": "en_XX", "de": "de_DE", "ro": "ro_RO", "fr": "fr_XX", "es": "es_XX", "it": "it_IT", "cs": "cs_CZ",
               "ru": "ru_RU", "zh": "zh_CN", "ja": "ja_XX", "fi": "fi_FI", "tr": "tr_TR", "et": "et_EE", "lv": "lv_LV"}
LANGUAGE_NAMES = {"en": "English", "de": "German", "ro": "Romanian", "fr": "French"}
# A warm-started encoder-decoder's encoder has no pooler (`warm_start`), but EncoderDecoderModel.from_pretrained builds
# one, unused by its forward pass: its weights are rightly missing from a trained model.
UNUSED_WEIGHTS = ("encoder.pooler.",)


# -- tokenizer and models from scratch --------------------------------------------------------------------------
train_shared_bpe = modeling.train_shared_bpe  # the shared BPE lives with the other tokenizers


def shared_tokenizer(sources: Sequence[str], targets: Sequence[str], vocab_size: int):
    """The shared BPE trained on both sides of the training bitext, cached by its content."""
    digest = hashlib.sha1()
    for line in list(sources) + list(targets):
        digest.update(line.encode())
        digest.update(b"\n")
    return modeling.train_tokenizer(lambda: iter(list(sources) + list(targets)), "seq2seq", vocab_size,
                                    digest.hexdigest())


def from_preset(preset: str, tokenizer, overrides: dict, max_length: int):
    """A randomly initialised Marian-architecture Transformer of `preset`'s size over `tokenizer`'s vocabulary."""
    from transformers import MarianConfig, MarianMTModel

    if preset not in PRESETS:
        raise TlabError(f"unknown sequence-to-sequence preset {preset!r} (known: {', '.join(PRESETS)})")
    layers, d_model, heads, ffn, dropout = PRESETS[preset]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    kwargs = dict(vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                  encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                  dropout=dropout, attention_dropout=0.1, activation_dropout=0.1, activation_function="relu",
                  max_position_embeddings=max(512, max_length + 8), scale_embedding=True,
                  share_encoder_decoder_embeddings=True, tie_word_embeddings=True, pad_token_id=pad, eos_token_id=eos,
                  bos_token_id=None, decoder_start_token_id=pad, forced_eos_token_id=eos)
    modeling.check_override_keys(MarianConfig, overrides, "marian")
    kwargs.update(overrides)
    try:
        config = MarianConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise TlabError("invalid model.overrides for the sequence-to-sequence preset: "
                        f"{str(exc).splitlines()[0][:240]}") from None
    modeling.check_heads(config, "marian")
    model = MarianMTModel(config)
    set_generation_ids(model, decoder_start=pad, eos=eos, pad=pad)
    return model


def set_generation_ids(model, decoder_start: int, eos: int, pad: int) -> None:
    gen = model.generation_config
    gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id = decoder_start, eos, pad
    gen.forced_eos_token_id = None  # a translation cut at max_new_tokens stays visibly unfinished
    gen.bos_token_id = None
    gen.suppress_tokens = [pad]  # the decoder-start token is never a word (Marian's hub configs ban it too)
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.config, key, getattr(gen, key))


# -- pretrained checkpoints -------------------------------------------------------------------------------------
def kind_of(config) -> str:
    """encoder-decoder | decoder-only | encoder-only, from a transformers config."""
    if getattr(config, "is_encoder_decoder", False) or config.model_type == "encoder-decoder":
        return "encoder-decoder"
    architectures = getattr(config, "architectures", None) or []
    if getattr(config, "is_decoder", False) or any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures) \
            or config.model_type in ("gpt2", "llama", "mistral", "qwen2", "gpt_neox", "opt", "phi", "gemma"):
        return "decoder-only"
    return "encoder-only"


def load(path: str, cfg, src: str, tgt: str, for_training: bool, log, from_encoder: Optional[bool] = None,
         purpose: str = "translation"):
    """(model, tokenizer) from a checkpoint: a seq2seq model as it is, or with `from_encoder` (seq2seq.warm_start
    when not given) an encoder-decoder warm-started from an encoder. mBART gets its
    language codes (src, tgt); a language it lacks is refused. `purpose` names the task in the refusal of other
    models."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    path = modeling.resolve_checkpoint(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None
    kind = kind_of(config)
    tokenizer = modeling.load_tokenizer(path, cfg.model.trust_remote_code)
    if from_encoder is None:  # callers that pass a run's config only
        from_encoder = cfg.seq2seq.warm_start
    if from_encoder and for_training:
        if kind != "encoder-only":
            raise TlabError(f"seq2seq.warm_start (--warm-start) builds an encoder-decoder from an encoder; {path} is already "
                            f"{'an' if kind[0] == 'e' else 'a'} {kind} model ({config.model_type})")
        return warm_start(path, tokenizer, cfg), tokenizer
    if kind != "encoder-decoder":
        hint = ("pass --warm-start (seq2seq.warm_start=true) to build an encoder-decoder from it (Rothe et al. "
                "2020)" if kind == "encoder-only" else "use an encoder-decoder checkpoint (Marian, T5, BART, mBART), or "
                "an encoder with --warm-start")
        raise TlabError(f"{path} is a {kind} model ({config.model_type}); {purpose} needs an encoder-decoder: {hint}")
    extra = modeling.checkpoint_overrides(path, cfg.model.overrides, cfg.model.trust_remote_code) if for_training else {}
    model = modeling.load_pretrained(AutoModelForSeq2SeqLM, path, cfg.model.trust_remote_code,
                                     trained_only=None if for_training else f"{purpose} model", unused=UNUSED_WEIGHTS,
                                     **extra)
    if config.model_type in ("mbart", "m2m_100", "nllb-moe"):
        set_language_codes(model, tokenizer, src, tgt, path)
    return model, tokenizer


def load_trained(path: str, purpose: str):
    """A trained seq2seq model for prediction; one lacking weights it needs is refused."""
    from transformers import AutoModelForSeq2SeqLM

    return modeling.load_pretrained(AutoModelForSeq2SeqLM, path, trained_only=f"{purpose} model",
                                    unused=UNUSED_WEIGHTS).eval()


def set_language_codes(model, tokenizer, src: str, tgt: str, path: str) -> None:
    """mBART-style models read the languages off special tokens: the tokenizer's src_lang / tgt_lang and the
    first generated token (forced_bos_token_id)."""
    codes = []
    for lang in (src, tgt):
        code = MBART_CODES.get(lang, lang)
        if tokenizer.convert_tokens_to_ids(code) in (None, tokenizer.unk_token_id):
            raise TlabError(f"model {path} does not know language {lang!r} (no language code {code!r} in its vocabulary)")
        codes.append(code)
    tokenizer.src_lang, tokenizer.tgt_lang = codes
    model.generation_config.forced_bos_token_id = tokenizer.convert_tokens_to_ids(codes[1])


def warm_start(path: str, tokenizer, cfg):
    """BERT2BERT: encoder and decoder both from the encoder checkpoint; the decoder gains causal masks and
    cross-attention (new weights). Token ids: [CLS] starts an output sequence, [SEP] ends it."""
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
        raise TlabError(f"--warm-start needs a BERT-style tokenizer with [CLS], [SEP] and [PAD]; {path}'s lacks them")
    trust = cfg.model.trust_remote_code
    extra = modeling.checkpoint_overrides(path, cfg.model.overrides, trust)  # the encoder's settings, for both halves
    encoder = modeling.load_pretrained(AutoModel, path, trust, add_pooling_layer=False, **extra)
    decoder = modeling.load_pretrained(AutoModelForCausalLM, path, trust, is_decoder=True, add_cross_attention=True,
                                       **extra)
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    set_generation_ids(model, decoder_start=tokenizer.cls_token_id, eos=tokenizer.sep_token_id, pad=tokenizer.pad_token_id)
    model.config.vocab_size = model.config.decoder.vocab_size
    return model


def warn_if_lossy(tokenizer, targets: Sequence[str], path: str, log) -> None:
    """Warn when the tokenizer folds case or accents (an uncased BERT lowercases and strips them): its translations
    come out that way, and cased sacreBLEU counts every such difference as an error. (Characters it has no token
    for are not what this is about: a BPE trained on the training text meets a few new ones in validation.)"""
    import unicodedata

    def fold(text: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c) and not c.isspace())

    for text in targets:
        back = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
        if "".join(back.split()) != "".join(text.split()) and fold(back) == fold(text):
            word = next((a for a, b in zip(text.split(), back.split()) if a != b), text.split()[0] if text.split() else "")
            log(f"warning: {path}'s tokenizer folds case or accents ({word!r} -> {fold(word)!r}): translations come "
                "out that way, and cased sacreBLEU counts each such difference against them")
            return


def source_prefix(model, cfg, src: str, tgt: str, log) -> str:
    """Translation's source prefix: the user's, or T5's own from its config (translation_<src>_to_<tgt>)."""
    example = f"translate {LANGUAGE_NAMES.get(src, src)} to {LANGUAGE_NAMES.get(tgt, tgt)}: "
    return task_prefix(model, cfg, f"translation_{src}_to_{tgt}", example, f"for {src}->{tgt}", log)


def task_prefix(model, cfg, params_key: str, example: str, what: str, log) -> str:
    """The text put before each source: the user's (seq2seq.source_prefix), or T5's own task prefix from its
    config's task_specific_params[params_key] ("summarize: ", "translate English to German: "); T5 without one is
    warned about (it then scores near zero). `what` names the task in the warning."""
    given = cfg.seq2seq.source_prefix
    if given is not None or getattr(model.config, "model_type", "") not in ("t5", "mt5", "umt5"):
        return given or ""
    params = (getattr(model.config, "task_specific_params", None) or {}).get(params_key) or {}
    if params.get("prefix"):
        log(f"T5 task prefix from the model's config: {params['prefix']!r}")
        return params["prefix"]
    log(f"warning: T5 without a task prefix scores near zero; its config names none {what}: pass "
        f"seq2seq.source_prefix='{example}' (the form T5 was trained with)")
    return ""


def check_options(cfg, train: bool, purpose: str) -> None:
    """Options that cannot work together, refused before any data is read."""
    s = cfg.seq2seq
    if not train and not cfg.model.name_or_path:
        raise TlabError(f"pass --model: a {purpose} run directory or model to evaluate")
    if s.warm_start and not cfg.model.name_or_path:
        raise TlabError("--warm-start builds on an encoder checkpoint: pass --model (e.g. a BERT directory)")
    if s.average_checkpoints > cfg.train.keep_checkpoints:
        raise TlabError(f"seq2seq.average_checkpoints {s.average_checkpoints} needs train.keep_checkpoints >= "
                        f"{s.average_checkpoints} (it is {cfg.train.keep_checkpoints})")


def build(cfg, train_ds, src: str, tgt: str, train: bool, log, purpose: str) -> tuple:
    """(model, tokenizer, notes) by the run's model route: --model a seq2seq checkpoint, or an encoder with
    seq2seq.warm_start; without --model a `model.preset` Transformer over a BPE trained on both sides of the
    training rows (src, tgt: language codes for mBART's; "" elsewhere)."""
    s = cfg.seq2seq
    if cfg.model.name_or_path:
        model, tokenizer = load(cfg.model.name_or_path, cfg, src, tgt, train, log, from_encoder=s.warm_start,
                                purpose=purpose)
        return model, tokenizer, {}
    tokenizer = shared_tokenizer(train_ds["source"], train_ds["target"], cfg.model.vocab_size)
    model = from_preset(cfg.model.preset, tokenizer, cfg.model.overrides,
                        max(s.max_source_length, s.max_target_length, s.max_new_tokens))
    return model, tokenizer, {"preset": cfg.model.preset}


# -- features, collation, loss ----------------------------------------------------------------------------------
def tokenize(rows, tokenizer, prefix: str, max_source: int, max_target: Optional[int], decoder_start: int) -> dict:
    """Source ids, and target ids as labels (without a leading decoder-start token, which BERT-style tokenizers
    add as [CLS]: the decoder is given it, it is not a word to predict)."""
    enc = tokenizer([prefix + s for s in rows["source"]], max_length=max_source, truncation=True)
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if max_target is not None:
        labels = tokenizer(text_target=list(rows["target"]), max_length=max_target, truncation=True)["input_ids"]
        out["labels"] = [ids[1:] if ids and ids[0] == decoder_start else ids for ids in labels]
    return out


def features(train_ds, valid_ds, tokenizer, prefix: str, cfg, decoder_start: int, valid_labels: bool = False) -> tuple:
    """(training features or None, validation rows with an "index" column, validation features). Validation
    features come in generation batches of similar length, longest first; "index" puts the outputs back in the
    rows' order. With `valid_labels` they carry target ids too (a teacher-forced validation loss)."""
    s = cfg.seq2seq
    options = {"tokenizer": tokenizer, "prefix": prefix, "max_source": s.max_source_length, "decoder_start": decoder_start}
    train_feats = None
    if train_ds is not None:
        train_feats = train_ds.map(tokenize, batched=True, remove_columns=train_ds.column_names,
                                   fn_kwargs={**options, "max_target": s.max_target_length}, desc="tokenizing")
    valid_ds = valid_ds.add_column("index", list(range(len(valid_ds))))
    lengths = [len(text) for text in valid_ds["source"]]
    order = sorted(range(len(valid_ds)), key=lambda i: -lengths[i])
    target = s.max_target_length if valid_labels else None
    valid_feats = valid_ds.select(order).map(
        lambda rows: {**tokenize(rows, max_target=target, **options), "index": rows["index"]},
        batched=True, remove_columns=valid_ds.column_names, desc="tokenizing")
    return train_feats, valid_ds, valid_feats


@dataclass
class Seq2SeqCollator:
    """Pads sources (pad id) and labels (-100, ignored by the loss) to the longest in the batch, and makes the
    decoder inputs: labels shifted right behind the decoder-start token (teacher forcing)."""

    pad_id: int
    decoder_start_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)  # (B, S)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in rows[0]:
            target = max(len(r["labels"]) for r in rows)
            labels = torch.full((len(rows), target), -100, dtype=torch.long)  # (B, T)
            for i, r in enumerate(rows):
                labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
            decoder = torch.full_like(labels, self.pad_id)
            decoder[:, 0] = self.decoder_start_id
            decoder[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.pad_id)
            batch.update(labels=labels, decoder_input_ids=decoder)
        if "index" in rows[0]:
            batch["index"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
        return batch


def label_smoothed_loss(smoothing: float) -> Callable:
    """(model, batch) -> mean token cross-entropy with label smoothing (Szegedy et al.; 0.1 in Vaswani et al.).
    The model is not given the labels, so it does not also compute its own unsmoothed loss, and its output layer
    sees only the decoder states of real target tokens: the vocabulary projection and the softmax over it are a
    large share of a small model's step, and padding is up to half the target positions of a length-grouped batch."""
    import torch.nn.functional as F

    def loss(model, batch):
        labels = batch["labels"]
        keep = labels != -100
        # not under torch.compile: a hook added and removed every step would make it recompile every step
        compiled = any(hasattr(m, "_orig_mod") for m in (model, getattr(model, "module", None)))
        head = None if compiled else output_layer(model)

        def labelled_only(_module, args):
            hidden = args[0]
            return (hidden[keep],) + tuple(args[1:]) if hidden.shape[:2] == keep.shape else None

        handle = head.register_forward_pre_hook(labelled_only) if head is not None else None
        try:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits
        finally:
            if handle is not None:
                handle.remove()
        if logits.dim() == 2:  # (real target tokens, V)
            return F.cross_entropy(logits.float(), labels[keep], label_smoothing=smoothing)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, label_smoothing=smoothing)

    return loss


def output_layer(model) -> Optional[torch.nn.Module]:
    """The vocabulary projection of a (possibly DDP- or PEFT-wrapped) seq2seq model, or None."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, torch.nn.Module) else None


def count_tokens(batch) -> torch.Tensor:
    """Real (unpadded) tokens on both sides: what a sequence-to-sequence step processes."""
    return batch["attention_mask"].sum() + (batch["labels"] != -100).sum()


class TokenBatches(torch.utils.data.Sampler):
    """Token-budget batches (fairseq's --max-tokens): pairs sorted by length (random tie-breaks from the seed) are
    cut into batches of at most `max_tokens` padded tokens on the longer side, fixed once; each epoch shuffles
    their order from (seed, epoch) alone, so a resumed run sees the same batches. One process only: accelerate
    splits a global batch across processes by a fixed batch size."""

    def __init__(self, source_lengths: Sequence[int], target_lengths: Sequence[int], max_tokens: int, seed: int):
        src, tgt = np.asarray(source_lengths), np.asarray(target_lengths)
        longest = np.maximum(src, tgt)
        if longest.max(initial=0) > max_tokens:
            raise TlabError(f"seq2seq.max_tokens {max_tokens} is below the longest pair ({int(longest.max())} "
                            "tokens): raise it")
        # by the longer side, then the shorter: a batch's padding on both sides stays small (sorting by the source
        # alone left half of the target positions padding)
        tie = np.random.default_rng([seed, 7]).random(len(src))
        order = np.lexsort((tie, np.minimum(src, tgt), longest))
        self.batches: list[list[int]] = []
        current: list[int] = []
        width = 0
        for index in order.tolist():
            wider = max(width, int(longest[index]))
            if current and wider * (len(current) + 1) > max_tokens:
                self.batches.append(current)
                current, wider = [], int(longest[index])
            current.append(index)
            width = wider
        if current:
            self.batches.append(current)
        self.seed, self.epoch = seed, 0
        # accelerate checks that split_batches can divide a batch across processes by this attribute
        self.batch_size = max(len(b) for b in self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for index in np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches)):
            yield self.batches[index]


def train_batches(info, cfg, feats, world: int, log):
    """Token-budget batches (seq2seq.max_tokens, one process), else length-grouped batches of train.batch_size."""
    sources = [len(ids) for ids in feats["input_ids"]]
    if cfg.seq2seq.max_tokens and world > 1:
        log(f"token-budget batches (seq2seq.max_tokens) are single-process for now: with {world} processes, "
            f"batches of train.batch_size {cfg.train.batch_size} sentences per process, length-grouped")
    elif cfg.seq2seq.max_tokens:
        targets = [len(ids) for ids in feats["labels"]]
        return TokenBatches(sources, targets, cfg.seq2seq.max_tokens, cfg.train.seed)
    return scaffold.train_batches(info, cfg, len(feats), world, sources)


# -- generation -------------------------------------------------------------------------------------------------
def generation_options(cfg) -> dict:
    t = cfg.seq2seq
    return {"num_beams": t.num_beams, "length_penalty": t.length_penalty, "max_new_tokens": t.max_new_tokens,
            "early_stopping": True if t.num_beams > 1 else False, "do_sample": False,
            "max_length_a": t.max_length_a, "max_length_b": t.max_length_b,
            **({"min_new_tokens": t.min_new_tokens} if t.min_new_tokens else {}),
            **({"no_repeat_ngram_size": t.no_repeat_ngram_size} if t.no_repeat_ngram_size else {})}


def model_generation_options(model, cfg) -> dict:
    """generation_options plus the first token the model itself forces (mBART's target language code)."""
    forced = getattr(model.generation_config, "forced_bos_token_id", None)
    return {**generation_options(cfg), **({"forced_bos_token_id": forced} if forced else {})}


def batch_options(options: dict, input_ids: torch.Tensor) -> dict:
    """generate() keywords for one batch: max_new_tokens bounded by the batch's source length (fairseq's
    max_len_a * source length + max_len_b; `input_ids` is padded to the batch's longest source)."""
    out = dict(options)
    a, b = out.pop("max_length_a", 0), out.pop("max_length_b", 0)
    if a:
        out["max_new_tokens"] = min(out["max_new_tokens"], int(a * input_ids.shape[1]) + b)
        if "min_new_tokens" in out:
            out["min_new_tokens"] = min(out["min_new_tokens"], out["max_new_tokens"])
    return out


def generate_in_order(model, loader, accelerator, tokenizer, options: dict, n: int) -> tuple[list[str], list[int]]:
    """Outputs for the `n` examples of `loader` (batches with an "index" column, each process its share), in the
    examples' order, with their lengths in tokens (special tokens not counted)."""
    pad = tokenizer.pad_token_id
    special = torch.tensor(sorted({i for i in tokenizer.all_special_ids if i is not None}), dtype=torch.long)
    found: dict[int, tuple[str, int]] = {}
    with torch.no_grad():
        for batch in loader:
            out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 **batch_options(options, batch["input_ids"]))
            out = accelerator.pad_across_processes(out, dim=1, pad_index=pad)
            out, index = accelerator.gather_for_metrics((out, batch["index"]))  # (B, T) ids, (B,)
            lengths = (~torch.isin(out, special.to(out.device))).sum(dim=1).tolist()
            for i, text, length in zip(index.tolist(), tokenizer.batch_decode(out, skip_special_tokens=True), lengths):
                found[i] = (text.strip(), length)
    if len(found) != n:
        raise RuntimeError(f"evaluation generated outputs for {len(found)} of {n} examples")
    return [found[i][0] for i in range(n)], [found[i][1] for i in range(n)]


def generate_texts(model, tokenizer, sources: Sequence[str], prefix: str, max_source: int, batch_size: int,
                   options: dict) -> list[str]:
    """Outputs (translations, summaries) in input order: sources sorted by length (longest first) into batches, so
    a batch carries little padding and the beams of a batch end at about the same step."""
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    out: list[Optional[str]] = [None] * len(sources)
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            enc = tokenizer([prefix + sources[i] for i in chosen], max_length=max_source, truncation=True, padding=True,
                            return_tensors="pt")
            generated = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                                       **batch_options(options, enc["input_ids"]))
            for i, text in zip(chosen, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                out[i] = text.strip()
    return out  # type: ignore[return-value]


translate = generate_texts


# -- checkpoint averaging ---------------------------------------------------------------------------------------
def averaged_weights(checkpoints: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The mean of the model weights saved in `checkpoints` (accelerate's model.safetensors in each), in fp32."""
    from safetensors.torch import load_file

    total: dict[str, torch.Tensor] = {}
    for checkpoint in checkpoints:
        weights = load_file(str(Path(checkpoint) / "model.safetensors"))
        for name, tensor in weights.items():
            if name in total:
                total[name] += tensor.float()
            else:
                total[name] = tensor.float().clone()
    return {name: tensor / len(checkpoints) for name, tensor in total.items()}


def average(model, run, accelerator, loaders, final: dict, n: int, evaluate_fn, log, main_metric: str,
            greater_is_better: bool = True) -> Optional[dict]:
    """Average the last `n` checkpoints' weights; keep the average when it scores at least as well on `main_metric`
    as the model the loop ended with (the best checkpoint), else put that model back."""
    checkpoints = run.checkpoints()[-n:]
    if len(checkpoints) < 2:
        log(f"checkpoint averaging: only {len(checkpoints)} checkpoint(s), nothing to average")
        return None
    unwrapped = accelerator.unwrap_model(model)
    kept = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
    averaged = averaged_weights(checkpoints)
    missing, unexpected = unwrapped.load_state_dict(averaged, strict=False)
    if unexpected or any(k in kept and not _tied(k) for k in missing):
        raise TlabError(f"checkpoint averaging: the checkpoints do not match the model ({(unexpected or missing)[0]})")
    unwrapped.tie_weights()
    scores = evaluate_fn(model, loaders, accelerator)
    names = [c.name for c in checkpoints]
    main, before = scores.get(main_metric), (final or {}).get(main_metric)
    if before is not None and main is not None and (main < before if greater_is_better else main > before):
        log(f"averaging {', '.join(names)} scored {main_metric} {main:.2f} against {before:.2f}: keeping the model as it was")
        unwrapped.load_state_dict(kept)
        evaluate_fn(model, loaders, accelerator)  # the artifacts belong to the saved model
        return None
    log(f"averaged {', '.join(names)}: {main_metric} {main:.2f}" + (f" (was {before:.2f})" if before is not None else ""))
    return {**scores, "averaged_checkpoints": names}


def _tied(name: str) -> bool:
    """Weights that safetensors stores once (tied embeddings) come back through tie_weights."""
    return "embed" in name or "lm_head" in name or "shared" in name
