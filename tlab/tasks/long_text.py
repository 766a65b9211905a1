"""Documents longer than the model's window, for sequence classification (`data.long_text` mean | max).

Each example is cut into windows of `data.max_length` tokens, consecutive windows sharing `data.stride` tokens
(the fast tokenizer's `return_overflowing_tokens=True, stride=...`). Sentence pairs: the second text is cut into
windows, the first repeated whole in each, when the first leaves room for it (its tokens + the special tokens +
the stride below the window); otherwise the first text is cut and the second repeated; a pair where neither fits
is refused with one error.

Training: every window is an example of its own carrying its document's label (a document of k windows weighs k
times), or with `data.train_windows: first` only a document's first window is trained on (BENCHMARKS.md, "Long
documents", measures both). Evaluation and `tlab predict`: the logits of a document's windows are averaged (mean) or their per-class
maximum taken (max) before argmax / softmax, so every document counts once; evaluation rows carry the document's
row number in an "index" column, gathered with the logits, so the grouping holds under several processes.

`data.long_text: truncate` (the default) does not come through here except for the start line's count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tlab.config import RunConfig
from tlab.errors import TlabError


@dataclass(frozen=True)
class Windows:
    """How long documents are cut (window, stride in tokens) and their window logits combined (mean | max)."""

    mode: str
    window: int
    stride: int

    def check(self, tokenizer, pair: bool) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TlabError(f"data.long_text {self.mode} needs a fast tokenizer (return_overflowing_tokens with stride); "
                            f"{type(tokenizer).__name__} is not one: use data.long_text=truncate")
        room = self.window - tokenizer.num_special_tokens_to_add(pair=pair)
        if self.stride >= room:
            raise TlabError(f"data.stride (--stride) {self.stride} must be below the {room} text tokens of a "
                            f"{self.window}-token window (data.max_length less the special tokens)")

    def encode(self, tokenizer, firsts: list[str], seconds: Optional[list[str]] = None) -> tuple[dict, list[int]]:
        """The windows' features (input_ids, attention_mask, ... as lists) and, per window, the position of its
        document in `firsts`; a document's windows are consecutive, in text order."""
        options = {"max_length": self.window, "stride": self.stride, "return_overflowing_tokens": True}
        if seconds is None:
            enc = tokenizer(firsts, truncation=True, **options)
            doc = list(enc.pop("overflow_to_sample_mapping"))
            return {k: list(v) for k, v in enc.items()}, doc
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        len_a = [len(x) for x in tokenizer(firsts, add_special_tokens=False, verbose=False)["input_ids"]]
        len_b = [len(x) for x in tokenizer(seconds, add_special_tokens=False, verbose=False)["input_ids"]]
        groups: dict[str, list[int]] = {"only_second": [], "only_first": []}
        for i, (la, lb) in enumerate(zip(len_a, len_b)):
            if la + lb + specials <= self.window or la + specials + self.stride < self.window:
                groups["only_second"].append(i)
            elif lb + specials + self.stride < self.window:
                groups["only_first"].append(i)
            else:
                raise TlabError(f"pair {i} ({la} + {lb} tokens) leaves no room for windows of {self.window} tokens with "
                                f"stride {self.stride}: raise data.max_length, lower data.stride or use truncate")
        rows: list[tuple[int, int, dict]] = []  # (document, window number, features)
        for strategy, members in groups.items():
            if not members:
                continue
            enc = tokenizer([firsts[i] for i in members], [seconds[i] for i in members], truncation=strategy, **options)
            mapping = enc.pop("overflow_to_sample_mapping")
            keys = list(enc.keys())
            for w, local in enumerate(mapping):
                rows.append((members[local], w, {k: enc[k][w] for k in keys}))
        rows.sort(key=lambda r: (r[0], r[1]))
        keys = list(rows[0][2]) if rows else ["input_ids", "attention_mask"]
        return {k: [r[2][k] for r in rows] for k in keys}, [r[0] for r in rows]

    def aggregate(self, logits: torch.Tensor, doc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the distinct documents in `doc`, sorted; their logits: the mean or per-class max over their windows)."""
        return aggregate(logits, doc, self.mode)


def aggregate(logits: torch.Tensor, doc: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Window logits (N, C) of documents `doc` (N,) -> (documents (D,), logits (D, C)) by mean or max."""
    docs, inverse = torch.unique(doc, return_inverse=True)
    n, classes = len(docs), logits.shape[-1]
    if mode == "mean":
        sums = torch.zeros(n, classes, dtype=logits.dtype, device=logits.device).index_add_(0, inverse, logits)
        counts = torch.bincount(inverse, minlength=n).to(logits.dtype)
        return docs, sums / counts[:, None]
    if mode == "max":
        out = torch.full((n, classes), float("-inf"), dtype=logits.dtype, device=logits.device)
        return docs, out.scatter_reduce_(0, inverse[:, None].expand_as(logits), logits, reduce="amax")
    raise ValueError(f"unknown aggregation {mode!r}")


def windows_for(cfg: RunConfig, spec, tokenizer, window: int, pair: bool) -> Optional[Windows]:
    """The run's Windows (None for truncate), or one error for a regression task or a stride that does not fit."""
    mode = cfg.data.long_text
    if mode == "truncate":
        return None
    if spec.is_regression:
        raise TlabError(f"data.long_text (--long-text) {mode} needs class logits; {spec.name} is a regression task: "
                        "use truncate")
    windows = Windows(mode, window, cfg.data.stride)
    windows.check(tokenizer, pair)
    return windows


def tokenize(ds, tokenizer, windows: Windows):
    """Rows of text_a (text_b), label -> one row per window: features, labels, length, and "index" (its document)."""
    pair = "text_b" in ds.column_names

    def encode(batch, indices):
        enc, doc = windows.encode(tokenizer, batch["text_a"], batch["text_b"] if pair else None)
        enc["labels"] = [batch["label"][d] for d in doc]
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc["index"] = [indices[d] for d in doc]
        return enc

    return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names, desc="tokenizing into windows")


def first_windows(windowed):
    """Only the first window of each document (data.train_windows first): its windows are consecutive rows."""
    index = windowed["index"]
    return windowed.select([i for i, doc in enumerate(index) if i == 0 or index[i - 1] != doc])


def count_longer(ds, tokenizer, window: int, windowed=None) -> int:
    """How many examples of `ds` exceed `window` tokens: from the windows when `windowed` (the tokenized windows)
    is given, else by tokenizing `ds` in full once (cached by datasets)."""
    if windowed is not None:
        from collections import Counter

        return sum(1 for n in Counter(windowed["index"]).values() if n > 1)
    pair = "text_b" in ds.column_names

    def lengths(batch):
        enc = tokenizer(batch["text_a"], batch["text_b"] if pair else None, verbose=False)
        return {"n": [len(ids) for ids in enc["input_ids"]]}

    counted = ds.map(lengths, batched=True, remove_columns=ds.column_names, desc="counting long examples")
    return sum(1 for n in counted["n"] if n > window)


def start_line(longer: int, total: int, window: int, mode: str, what: str = "training") -> str:
    fate = "truncated" if mode == "truncate" else f"split into windows, {mode} of their logits"
    return f"{longer} of {total} {what} examples are longer than max_length {window} tokens ({fate})"


class IndexCollator:
    """A collator for rows that carry their document's "index": padded as usual, the index a (B,) tensor."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if "index" not in rows[0]:
            return self.collate(rows)
        index = torch.tensor([r["index"] for r in rows], dtype=torch.long)
        batch = self.collate([{k: v for k, v in r.items() if k != "index"} for r in rows])
        batch["index"] = index
        return batch


def evaluate(model, loaders, accelerator, spec, mode: str, examples: Optional[dict] = None,
             outcomes: Optional[dict] = None) -> dict[str, float]:
    """glue.evaluate's metrics over documents: window logits gathered with their document index (each window once
    under several processes), combined per document, then argmax; loss: cross-entropy of the combined logits."""
    from tlab import metrics
    from tlab.tasks import scaffold

    model.eval()
    results: dict[str, float] = {}
    for split, loader in loaders.items():
        logits_, refs_, index_ = [], [], []
        with torch.no_grad():
            for batch in loader:
                index = batch.pop("index")
                logits = model(**batch).logits.float()
                logits, ref, index = accelerator.gather_for_metrics((logits, batch["labels"], index))
                logits_.append(logits.cpu())
                refs_.append(ref.cpu())
                index_.append(index.cpu())
        logits, refs, index = torch.cat(logits_), torch.cat(refs_), torch.cat(index_)
        docs, doc_logits = aggregate(logits, index, mode)
        labels = torch.zeros(len(docs), dtype=torch.long).scatter_(0, torch.searchsorted(docs, index), refs.long())
        scores = metrics.compute(list(spec.metrics), doc_logits.argmax(-1).tolist(), labels.tolist())
        scores["loss"] = float(torch.nn.functional.cross_entropy(doc_logits, labels)) if len(docs) else 0.0
        suffix = scaffold.suffix(split, list(loaders), primary=spec.validation_splits[0])
        results.update({f"{k}{suffix}": float(v) for k, v in scores.items()})
        results[f"examples{suffix}"] = len(docs)
        scaffold.keep_outcomes(outcomes, examples, split, "labels", doc_logits.argmax(-1).tolist(), labels.tolist(),
                               spec.metrics, suffix)  # docs: every document of the split, in its order
    return results
