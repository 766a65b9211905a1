"""Tokenizers and models: train a tokenizer with `tokenizers`, build a model from a preset or load a checkpoint
(safetensors only, no remote code unless asked), freeze layers, add LoRA with `peft`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable, Optional

from tlab import presets
from tlab.config import ModelConfig
from tlab.errors import TlabError

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GPT_EOS = "<|endoftext|>"
SEQ2SEQ_SPECIALS = ["<pad>", "</s>", "<unk>"]

def resolve_checkpoint(name: str) -> str:
    """A tlab run directory means its model/; local directories must exist; anything else is a Hub id."""
    path = Path(name)
    if (path / "model" / "config.json").is_file():
        return str(path / "model")
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not (path / "config.json").is_file():
            raise TlabError(f"model directory {name} does not exist or holds no config.json")
    return name


# -- tokenizers ------------------------------------------------------------------------------------------------
def train_tokenizer(texts: Callable[[], Iterable[str]], objective: str, vocab_size: int, cache_key: str):
    """WordPiece (BERT-style) for MLM, byte-level BPE (GPT-style) for CLM, a shared SentencePiece-style BPE for
    seq2seq, cached by corpus and settings.
    `texts` gives a fresh iterator over the corpus each call (WordPiece reads it twice)."""
    from tlab.data import cache_dir

    key = hashlib.sha1(f"{cache_key}-{objective}-{vocab_size}-v3".encode()).hexdigest()[:16]
    path = cache_dir("tokenizers") / key
    if not (path / "tokenizer.json").is_file():
        if objective == "seq2seq":  # one vocabulary for both sides of a bitext (translation)
            fast = train_shared_bpe(texts(), vocab_size)
        else:
            fast = _train_wordpiece(texts, vocab_size) if objective == "mlm" else _train_bpe(texts(), vocab_size)
        tmp = path.with_name(f"{key}.{os.getpid()}.tmp")
        fast.save_pretrained(tmp)
        if path.exists():
            import shutil

            shutil.rmtree(path)
        os.replace(tmp, path)
    return load_tokenizer(str(path))


def _bert_tokenizer(model):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers

    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def _train_wordpiece(texts: Callable[[], Iterable[str]], vocab_size: int):
    from tokenizers import decoders, models, processors, trainers
    from transformers import PreTrainedTokenizerFast

    def learn(size: int, first_ids: list[str]) -> dict[str, int]:
        tok = _bert_tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.train_from_iterator(texts(), trainers.WordPieceTrainer(vocab_size=size, special_tokens=first_ids))
        return tok.get_vocab()

    # The trainer numbers the '##x' tokens in hash order and breaks ties between equally frequent merges by id, so
    # two trainings on the same text would differ (huggingface/tokenizers#1794). A first pass without merges finds the
    # alphabet; listing it (sorted, as the trainer numbers it) before training fixes every id and so every merge.
    alphabet = sorted((t for t in learn(0, BERT_SPECIALS) if t not in BERT_SPECIALS), key=lambda t: (t.startswith("##"), t))
    vocab = learn(vocab_size, BERT_SPECIALS + alphabet)
    # A fresh pipeline, so the alphabet listed above is not registered as special tokens.
    tok = _bert_tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.add_special_tokens(BERT_SPECIALS)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=presets.MAX_POSITIONS)


def _train_bpe(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[GPT_EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=GPT_EOS, eos_token=GPT_EOS, unk_token=GPT_EOS,
                                   pad_token=GPT_EOS, model_max_length=presets.GPT_POSITIONS)


def train_shared_bpe(texts: Iterable[str], vocab_size: int):
    """One BPE vocabulary for both sides of a sequence-to-sequence pair (so names and numbers are the same tokens on
    both sides and the embeddings can be tied), SentencePiece-style word boundaries so decoding gives back raw text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SEQ2SEQ_SPECIALS,
                                                       limit_alphabet=500))
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=1024)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not load a tokenizer from {name!r}: {str(exc).splitlines()[0][:200]}") from None


# -- language models -------------------------------------------------------------------------------------------
def build_lm(cfg: ModelConfig, objective: str, tokenizer, block_size: int, for_training: bool = True):
    """A model for pretraining: continued from cfg.name_or_path, or from a preset with random weights."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    if cfg.name_or_path:
        # for evaluation a head that would be newly initialised is refused, not scored as if trained
        head = None if for_training else ("masked-LM head" if objective == "mlm" else "causal-LM head")
        path = resolve_checkpoint(cfg.name_or_path)
        extra = checkpoint_overrides(path, cfg.overrides, cfg.trust_remote_code) if for_training else {}
        model = load_pretrained(auto, path, cfg.trust_remote_code, trained_only=head, **extra)
    else:
        config = preset_config(cfg, objective, tokenizer)
        try:
            model = auto.from_config(config)
        except (TypeError, ValueError) as exc:  # an override the config accepts but the model cannot be built with
            if not cfg.overrides:
                raise
            raise TlabError(f"invalid model.overrides for {config.model_type}: {str(exc).splitlines()[0][:240]}") from None
    positions = max_positions(model.config)
    if positions and block_size > positions:
        raise TlabError(f"block size {block_size} exceeds the model's {positions} positions (lower --block-size)")
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model


def preset_config(cfg: ModelConfig, objective: str, tokenizer):
    from transformers import CONFIG_MAPPING

    arch, size = presets.resolve(cfg.preset, objective)
    kwargs = presets.config_kwargs(arch, size)
    kwargs.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if objective == "mlm":
        kwargs.update(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                      bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
        if arch == "roberta":
            kwargs.update(type_vocab_size=1)
    else:
        kwargs.update(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    check_override_keys(CONFIG_MAPPING[arch], cfg.overrides, arch)
    kwargs.update(cfg.overrides)
    try:
        config = CONFIG_MAPPING[arch](**kwargs)
    except (TypeError, ValueError) as exc:
        raise TlabError(f"invalid model.overrides for {arch}: {str(exc).splitlines()[0][:240]}") from None
    check_heads(config, arch)
    return config


def checkpoint_overrides(path: str, overrides: dict, trust_remote_code: bool = False) -> dict:
    """model.overrides for a checkpoint about to be trained (hidden_dropout_prob, classifier_dropout, dropout, ...),
    as from_pretrained keywords, which update the loaded config. Checked against the checkpoint's own settings: a
    key it does not have would be stored and silently ignored."""
    if not overrides:
        return {}
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None
    check_override_keys(type(config), overrides, config.model_type, also_known=config.to_dict())
    return dict(overrides)


def check_override_keys(config_class, overrides: dict, arch: str, also_known=()) -> None:
    """PretrainedConfig stores any keyword, so a typo (num_hiden_layers) would be kept and silently ignored."""
    import difflib

    try:
        defaults = set(vars(config_class()))
    except (TypeError, ValueError):  # configs that need arguments (an encoder-decoder's two halves)
        defaults = set()
    known = defaults | set(getattr(config_class, "attribute_map", {})) | set(also_known)
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TlabError(f"unknown key model.overrides.{key}: {arch} models have no such setting{hint}")


def check_heads(config, arch: str) -> None:
    """Every architecture here splits the hidden size evenly over the heads; the models' own message comes later
    and names no config key."""
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and (heads < 1 or hidden % heads):
        divisors = [n for n in range(1, min(hidden, 64) + 1) if hidden % n == 0]
        raise TlabError(f"model.overrides: {heads} attention heads do not divide the hidden size {hidden} of {arch} "
                        f"(e.g. {', '.join(map(str, divisors[-4:]))} do)")


def max_positions(config) -> Optional[int]:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value - (2 if getattr(config, "model_type", "") == "roberta" else 0)
    return None


def is_causal_lm(config) -> bool:
    """A decoder-only model with its language-model head (GPT-2, Llama, a `tlab pretrain --objective clm` run): not
    a masked LM, a classifier built on a decoder (GPT2ForSequenceClassification) or an encoder-decoder."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    kind = getattr(config, "model_type", "")  # no architectures saved: BERT-style types also have a causal head
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_pretrained(auto_class, name: str, trust_remote_code: bool = False, trained_only: Optional[str] = None,
                    unused: tuple[str, ...] = (), **kwargs):
    """from_pretrained with safetensors only: pickled .bin weights can run code when loaded. With `trained_only`
    (the head's name, for evaluation) a checkpoint lacking weights the model needs is refused: transformers would
    initialise them randomly, and the scores of a random head look like a bad model's. Weights whose names start
    with one of `unused` are never read by the model's forward pass, and may be missing.
    A `tlab export` folder gives its ONNX Runtime model (tlab.exported), refused for training."""
    from tlab.outputs import is_export_dir

    if is_export_dir(name):
        from tlab import exported

        return exported.load(auto_class, name, trained_only)
    try:
        model, info = auto_class.from_pretrained(name, use_safetensors=True, trust_remote_code=trust_remote_code,
                                                 output_loading_info=True, **kwargs)
    except Exception as exc:
        raise TlabError(f"could not load model {name!r}: {str(exc).splitlines()[0][:240]}") from None
    missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith(unused))
    if trained_only and missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise TlabError(f"model {name} has no trained {trained_only} (missing weights {shown}): train it for this "
                        "task first")
    return model


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
