"""Model size presets for pretraining from scratch. Kept free of heavy imports so `tlab presets` is instant.

A preset is `[arch-]size`. MLM defaults to ModernBERT, whose `sparse_prediction` computes the vocabulary
projection only at masked positions (a much cheaper step than BertForMaskedLM's: BENCHMARKS.md); classic BERT and
RoBERTa stay available. CLM defaults to GPT-2; Llama-style (RoPE, SwiGLU, RMSNorm) is available.
"""

from __future__ import annotations

from tlab.errors import TlabError

# size: (layers, hidden, heads)
SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (6, 512, 8),
    "base": (12, 768, 12),
}
ARCHS = {"mlm": ("modernbert", "bert", "roberta"), "clm": ("gpt2", "llama")}
MAX_POSITIONS = 512
GPT_POSITIONS = 1024


def resolve(preset: str, objective: str) -> tuple[str, str]:
    """'bert-mini' -> ('bert', 'mini'); 'mini' -> the objective's default architecture."""
    arch, _, size = preset.rpartition("-")
    arch = arch or ARCHS[objective][0]
    if size not in SIZES:
        raise TlabError(f"unknown preset {preset!r}: the size must be one of {', '.join(SIZES)}")
    if arch not in ARCHS[objective]:
        raise TlabError(f"preset {preset!r} does not fit objective {objective} (architectures: {', '.join(ARCHS[objective])})")
    return arch, size


def config_kwargs(arch: str, size: str) -> dict:
    """transformers config fields for the preset (token ids are filled in from the tokenizer later)."""
    layers, hidden, heads = SIZES[size]
    if arch == "modernbert":
        return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                    intermediate_size=hidden * 3 // 2, max_position_embeddings=MAX_POSITIONS,
                    sparse_prediction=True, global_attn_every_n_layers=3, local_attention=128)
    if arch in ("bert", "roberta"):
        return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                    intermediate_size=hidden * 4, max_position_embeddings=MAX_POSITIONS + (2 if arch == "roberta" else 0))
    if arch == "gpt2":
        return dict(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=GPT_POSITIONS)
    if arch == "llama":
        return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=heads,
                    intermediate_size=hidden * 8 // 3 // 64 * 64 or hidden * 2, max_position_embeddings=GPT_POSITIONS,
                    tie_word_embeddings=True)
    raise TlabError(f"unknown architecture {arch!r}")


def table() -> list[tuple[str, str, str]]:
    """(preset, objective, shape) rows for `tlab presets`."""
    rows = []
    for objective, archs in ARCHS.items():
        for arch in archs:
            for size, (layers, hidden, heads) in SIZES.items():
                rows.append((f"{arch}-{size}", objective, f"{layers} layers x {hidden} hidden, {heads} heads"))
    return rows
