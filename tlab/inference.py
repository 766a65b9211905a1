"""A fine-tuned classifier ready to predict: tokenizer + model from a run directory or model directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tlab import finetuning, modeling
from tlab.errors import TlabError


@dataclass
class Classifier:
    model: object
    tokenizer: object
    max_length: int = 512
    # documents cut into windows and their logits combined (tlab.tasks.long_text.Windows: encode, aggregate) for a
    # run trained with data.long_text mean | max; None = truncated at max_length
    windows: Optional[object] = None
    # a multi-label classifier (problem_type multi_label_classification) predicts every label whose sigmoid
    # probability is above this (classification.threshold)
    threshold: float = 0.5
    # sentence pairs scored as (a, b) and (b, a), the logits averaged (classification.average_orders)
    average_orders: bool = False

    @classmethod
    def load(cls, name: str) -> "Classifier":
        from transformers import AutoConfig, AutoModelForSequenceClassification

        from tlab.runtime import quiet_libraries

        quiet_libraries()
        path = modeling.resolve_checkpoint(name)
        config = AutoConfig.from_pretrained(path)
        if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
            raise TlabError(f"{name} holds no sequence classifier (architectures: {config.architectures}); fine-tune it first")
        model = modeling.load_pretrained(AutoModelForSequenceClassification, path, trained_only="classification head").eval()
        finetuning.first_token_only_in_last_layer(model)
        return cls(model, modeling.load_tokenizer(path), modeling.max_positions(config) or 512)

    def __call__(self, pairs: list[tuple[str, Optional[str]]]) -> list[tuple[Optional[str], float]]:
        """(label, probability) per input, or (None, score) for a regression model (single-label models: see
        `predict` for the label sets of a multi-label one)."""
        return [(found.get("label"), found["score"]) for found in self.predict(pairs)]

    @property
    def multi_label(self) -> bool:
        return self.model.config.problem_type == finetuning.MULTI_LABEL

    def predict(self, pairs: list[tuple[str, Optional[str]]]) -> list[dict]:
        """Per input: {"label", "score" (its probability), "probabilities" (every label's)}; {"score"} for a
        regression model; {"labels", "scores" (those above the threshold, most probable first), "probabilities"
        (every label's sigmoid)} for a multi-label one."""
        logits = self.logits(pairs)
        if self.model.config.problem_type == "regression" or logits.shape[-1] == 1:
            return [{"score": float(v)} for v in logits.squeeze(-1)]
        names = self.model.config.id2label
        found = []
        if self.multi_label:
            for p in logits.sigmoid().tolist():
                above = sorted((i for i, v in enumerate(p) if v > self.threshold), key=lambda i: -p[i])
                found.append({"labels": [names[i] for i in above], "scores": [p[i] for i in above],
                              "probabilities": {names[i]: v for i, v in enumerate(p)}})
            return found
        for p in logits.softmax(-1).tolist():
            best = max(range(len(p)), key=p.__getitem__)
            found.append({"label": names[best], "score": p[best], "probabilities": {names[i]: v for i, v in enumerate(p)}})
        return found

    def logits(self, pairs: list[tuple[str, Optional[str]]]) -> torch.Tensor:
        """(N, labels) float logits of the inputs (windows combined for a windowed run); refuses non-finite ones."""
        firsts = [a for a, _ in pairs]
        seconds = [b for _, b in pairs]
        if any(b is None for b in seconds) and not all(b is None for b in seconds):
            raise TlabError("mix of single sentences and pairs: give every input a second sentence or none")
        if self.windows is not None:
            logits = self._windowed(firsts, None if seconds[0] is None else seconds)
        else:
            logits = self._encoded(firsts, None if seconds[0] is None else seconds)
            if self.average_orders and seconds[0] is not None:
                logits = (logits + self._encoded(seconds, firsts)) / 2
        if not torch.isfinite(logits).all():  # NaN weights (a diverged run) would print "negative nan"
            raise TlabError("model outputs are not finite (NaN/inf logits): the model is broken (diverged training?)")
        return logits

    def _encoded(self, firsts: list[str], seconds: Optional[list[str]]) -> torch.Tensor:
        enc = self.tokenizer(firsts, seconds, truncation=True, padding=True, max_length=self.max_length,
                             return_tensors="pt")
        with torch.no_grad():
            return self.model(**enc).logits.float()

    def _windowed(self, firsts: list[str], seconds: Optional[list[str]], chunk: int = 32) -> torch.Tensor:
        """One row of logits per input: its windows' logits combined (mean or max), windows run `chunk` at a time."""
        features, doc = self.windows.encode(self.tokenizer, firsts, seconds)
        parts = []
        with torch.no_grad():
            for start in range(0, len(doc), chunk):
                rows = {k: v[start : start + chunk] for k, v in features.items()}
                enc = self.tokenizer.pad(rows, return_tensors="pt")
                parts.append(self.model(**enc).logits.float())
        return self.windows.aggregate(torch.cat(parts), torch.tensor(doc))[1]
