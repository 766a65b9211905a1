"""`tlab attention`: the attention weights of one head as a heat map, or of every head of a layer as a grid, for
any model tlab trains (an encoder, a causal LM, an encoder-decoder: its encoder's, its decoder's or its cross
attention). The model is loaded with its own architecture class and the eager attention path: the fused kernels
(SDPA, flash) never materialise the weights. Each row of a map is one query token's distribution over the key
tokens, so it sums to one. matplotlib draws on an Agg canvas (no display needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tlab import modeling
from tlab.errors import TlabError

KINDS = ("encoder", "decoder", "cross")
MAX_NEW_TOKENS = 32  # a cross-attention map's generated target, when --target is not given
READABLE = 60  # tokens per axis beyond which the labels get too small to read


@dataclass
class Attention:
    """Every layer's and head's weights of one kind for one text."""

    model: str
    kind: str
    weights: np.ndarray  # (layers, heads, queries, keys); rows sum to 1
    queries: list[str]  # token labels, rows
    keys: list[str]  # token labels, columns

    @property
    def layers(self) -> int:
        return self.weights.shape[0]

    @property
    def heads(self) -> int:
        return self.weights.shape[1]


def _label(token: str) -> str:
    """A token as a tick label: byte-level BPE's Ġ / SentencePiece's ▁ word marks dropped, Ċ as ⏎."""
    shown = token.replace("Ġ", "").replace("▁", "").replace("Ċ", "⏎")
    return shown or token


def load(model: str):
    """(model, tokenizer, architecture) with eager attention, in eval mode; architecture: encoder-decoder,
    decoder-only or encoder-only."""
    import transformers

    from tlab.runtime import quiet_libraries

    quiet_libraries()
    path = modeling.resolve_checkpoint(model)
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None
    architecture = (getattr(config, "architectures", None) or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    loaded = modeling.load_pretrained(model_class or transformers.AutoModel, path, attn_implementation="eager").eval()
    c = loaded.config
    if getattr(c, "is_encoder_decoder", False):
        kind = "encoder-decoder"
    elif getattr(c, "is_decoder", False) or modeling.is_causal_lm(c) or c.model_type in DECODER_TYPES:
        kind = "decoder-only"
    else:
        kind = "encoder-only"
    return loaded, modeling.load_tokenizer(path), kind


DECODER_TYPES = ("gpt2", "llama", "mistral", "qwen2", "gpt_neox", "opt", "phi", "gemma")  # also as classifiers


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def pick_kind(kind: Optional[str], architecture: str, model: str) -> str:
    """--kind: encoder | decoder | cross for an encoder-decoder (default encoder); a single stack has one kind."""
    if kind is not None and kind not in KINDS:
        raise TlabError(f"--kind {kind!r}: one of {', '.join(KINDS)}")
    if architecture == "encoder-decoder":
        return kind or "encoder"
    own = "decoder" if architecture == "decoder-only" else "encoder"
    if kind not in (None, own):
        raise TlabError(f"--kind {kind}: {model} is {_a(architecture)} model, its attention is the {own}'s "
                        "(--kind decoder and cross are for encoder-decoder models)")
    return own


def _start(model) -> int:
    start = model.generation_config.decoder_start_token_id
    return model.config.decoder_start_token_id if start is None else start


def _decoder_ids(model, tokenizer, enc: dict, target: Optional[str]):
    """(1, T) decoder inputs: the decoder-start token and --target's tokens (teacher forcing, its end-of-sequence
    left out), or the model's own greedy output for the text."""
    import torch

    start = _start(model)
    eos = model.generation_config.eos_token_id
    ends = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.pad_token_id}
    if target is not None:
        if not target.strip():
            raise TlabError("--target is empty: give the output text whose attention to show, or leave --target out")
        ids = tokenizer(text_target=target)["input_ids"]
        ids = ids[1:] if ids and ids[0] == start else ids  # BERT-style tokenizers open with [CLS], the start token
        while ids and ids[-1] in ends:
            ids = ids[:-1]
        return torch.tensor([[start, *ids]])
    out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=MAX_NEW_TOKENS,
                         do_sample=False, num_beams=1)[0].tolist()
    while len(out) > 1 and out[-1] in ends:
        out = out[:-1]
    return torch.tensor([out])


def compute(model: str, text: str, kind: Optional[str] = None, target: Optional[str] = None) -> Attention:
    """Every layer's and head's attention weights of `kind` for `text` (encoder-decoder, decoder or cross:
    the decoder reads --target, or the model's own output)."""
    import torch

    if not text.strip():
        raise TlabError("no text: give the text whose attention to show, e.g. tlab attention --model RUN \"a sentence\"")
    loaded, tokenizer, architecture = load(model)
    kind = pick_kind(kind, architecture, model)
    if target is not None and architecture != "encoder-decoder":
        raise TlabError(f"--target is the output text of an encoder-decoder; {model} is {_a(architecture)} model")
    limit = modeling.max_positions(loaded.config)
    enc = dict(tokenizer(text, return_tensors="pt", truncation=bool(limit), max_length=limit))
    source = enc["input_ids"][0].tolist()
    with torch.no_grad():
        if architecture == "encoder-decoder":
            # the encoder's weights need no decoder: one start token is enough for the forward pass
            decoder = _decoder_ids(loaded, tokenizer, enc, target) if kind != "encoder" else torch.tensor([[_start(loaded)]])
            out = loaded(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=decoder,
                         output_attentions=True)
            stack = {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}[kind]
            rows = source if kind == "encoder" else decoder[0].tolist()
            columns = rows if kind != "cross" else source
        else:
            stack = loaded(**enc, output_attentions=True).attentions
            rows = columns = source
    if not stack or stack[0] is None:
        raise TlabError(f"{model} returned no attention weights (its architecture does not expose them)")
    weights = torch.stack([layer[0] for layer in stack]).float().numpy()  # (layers, heads, queries, keys)
    names = tokenizer.convert_ids_to_tokens
    return Attention(model, kind, weights, [_label(t) for t in names(rows)], [_label(t) for t in names(columns)])


def select(att: Attention, layer: Optional[int] = None, head: Optional[int] = None) -> tuple[int, list[int], np.ndarray]:
    """(layer, heads, (heads, queries, keys) weights) asked for: --layer (default the last), --head (default all);
    one refusal naming the valid range otherwise."""
    layer = att.layers - 1 if layer is None else layer
    if not 0 <= layer < att.layers:
        raise TlabError(f"--layer {layer} is out of range: the {att.kind} of {att.model} has {att.layers} layers "
                        f"(0-{att.layers - 1})")
    if head is not None and not 0 <= head < att.heads:
        raise TlabError(f"--head {head} is out of range: layer {layer} of the {att.kind} has {att.heads} heads "
                        f"(0-{att.heads - 1})")
    heads = list(range(att.heads)) if head is None else [head]
    return layer, heads, att.weights[layer, heads]


def figure(att: Attention, layer: Optional[int] = None, head: Optional[int] = None):
    """A matplotlib Figure: one heat map per head asked for (a grid for a whole layer), keys along x, queries
    along y, each panel's `AxesImage` holding its (queries, keys) weights."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layer, heads, maps = select(att, layer, head)
    n_q, n_k = len(att.queries), len(att.keys)
    columns = math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / columns)
    side = min(12.0, max(3.5, 0.22 * max(n_q, n_k) + 1.2))  # inches per panel: labels stay legible
    bar = 1.0 if len(heads) == 1 else 0.0  # the colour bar of a single map
    fig = Figure(figsize=(max(5.0, side * columns + bar), side * rows + 0.8), dpi=100)
    FigureCanvasAgg(fig)
    font = max(4.0, min(10.0, 260 / max(n_q, n_k, 1)))
    for i, (h, weights) in enumerate(zip(heads, maps)):
        ax = fig.add_subplot(rows, columns, i + 1)
        image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(weights.max()), 1e-9), aspect="auto")
        ax.set_xticks(range(n_k), att.keys, rotation=90, fontsize=font)
        ax.set_yticks(range(n_q), att.queries, fontsize=font)
        ax.set_title(f"layer {layer}, head {h}", fontsize=10)
        if len(heads) == 1:
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    what = {"encoder": "self-attention", "decoder": "decoder self-attention", "cross": "cross-attention (decoder -> encoder)"}
    fig.suptitle(f"{Path(att.model).name or att.model}: {what[att.kind]}\nrows (queries) attend to columns (keys)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def default_output(model: str, kind: str, layer: int, head: Optional[int]) -> Path:
    """RUN/attention/<kind>-layer<L>[-head<H>].png beside a run or model folder, else ./attention/."""
    folder = Path(model) / "attention" if Path(model).is_dir() else Path("attention")
    return folder / f"{kind}-layer{layer}{'' if head is None else f'-head{head}'}.png"


def draw(model: str, text: str, layer: Optional[int] = None, head: Optional[int] = None, kind: Optional[str] = None,
         target: Optional[str] = None, output: Optional[str] = None) -> tuple[Path, Attention, object]:
    """Compute, plot and save: (PNG path, the weights, the Figure)."""
    if output is not None and not output.lower().endswith(".png"):
        raise TlabError(f"--output {output}: give a .png file name")
    att = compute(model, text, kind, target)
    layer, _heads, _maps = select(att, layer, head)
    fig = figure(att, layer, head)
    path = Path(output) if output else default_output(model, att.kind, layer, head)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise TlabError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path, att, fig
