"""Multi-label classification of your own files (`--task classification --multi-label`): each text has a set of
labels, none, one or several, for the glue family.

The label column holds a list per row in JSON Lines (`["sports", "politics"]`, `[0, 3]`), or in any text field (a
CSV/TSV cell, a JSON string) the labels joined by `classification.label_separator` (`sports|politics`; an empty
field is the empty set). The label set is discovered from the training data as `classification_data` does (sorted,
integers in numeric order) and saved in the model's config (id2label, problem_type multi_label_classification), so
`transformers.pipeline("text-classification", top_k=None)` gives every label's sigmoid probability. A training
label column holding one label per row (no list and no separator anywhere) is refused: that is single-label data.

Rows become multi-hot float targets (`label`: (labels,) of 0.0 / 1.0), which the model scores with a sigmoid and
binary cross-entropy per label; a label is predicted above `classification.threshold`. Scores: micro- and
macro-averaged F1 and subset accuracy (`tlab.metrics` multi_label)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import classification_data, glue_data
from tlab.tasks.glue_data import GlueSpec

METRICS = ("multi_label",)  # the metric module: micro_f1, macro_f1, subset_accuracy
MAIN_METRIC = "micro_f1"


def label_list(value, separator: str, path, lineno: int) -> list[str]:
    """The labels of one row as their texts: a list's items, or a text split on `separator` ("" = none)."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = [part for part in value.split(separator) if part.strip()]
    else:  # a JSON number (or null, refused by label_key): one label
        items = [value]
    return [classification_data.label_key(v, path, lineno) for v in items]


def _records(path: str, text_a: str, text_b: Optional[str], label: str, separator: str) -> list[tuple]:
    """(line number, text_a, text_b or None, labels, whether the field held a set) of every record."""
    found = []
    for lineno, rec in glue_data.read_records(path):
        if not isinstance(rec, dict):
            raise TlabError(f"{path} record {lineno} is not an object with named fields")
        if not found:
            glue_data.missing_columns(Path(path), rec, [text_a, text_b, label])
        texts = [rec.get(c) for c in (text_a, text_b) if c]
        bad = next((c for c, v in zip((text_a, text_b), texts) if not isinstance(v, str)), None)
        if bad is not None:
            raise TlabError(f"{path} line {lineno}: column {bad!r} holds {rec.get(bad)!r}, not text")
        if label not in rec:
            raise TlabError(f"{path} line {lineno} lacks column {label!r}")
        value = rec[label]
        several = isinstance(value, list) or (isinstance(value, str) and separator in value)
        found.append((lineno, texts[0], texts[1] if text_b else None, label_list(value, separator, path, lineno), several))
    if not found:
        raise TlabError(f"{path} is empty (no data rows)")
    return found


def read(spec: GlueSpec, cfg: RunConfig, files: Sequence[str], names: Optional[Sequence[str]], whose: str):
    """(dataset of text_a[, text_b] and multi-hot `label`, label names) of the files, as `classification_data._read`
    returns them; `names` None = discover them from the files (training), refusing single-label data."""
    import datasets

    d, separator = cfg.data, cfg.classification.label_separator
    text_a, text_b = d.text_a_column or spec.text_a, d.text_b_column or spec.text_b
    label = d.label_column or spec.label_column
    rows = {f: _records(f, text_a, text_b, label, separator) for f in files}
    if names is None:
        if not any(r[4] for found in rows.values() for r in found):
            raise TlabError(f"--multi-label needs a set of labels per row, but column {label!r} of {', '.join(files)} holds "
                            f"one label per row (no list, no {separator!r} in any row): give JSON Lines lists "
                            f"([\"a\", \"b\"]) or labels joined by {separator!r} (classification.label_separator), "
                            "or drop --multi-label")
        names = classification_data.discover([k for found in rows.values() for r in found for k in r[3]])
    index = {n: i for i, n in enumerate(names)}
    for f, found in rows.items():
        for lineno, *_, labels, _several in found:
            unknown = next((k for k in labels if k not in index), None)
            if unknown is not None:
                raise TlabError(f"label {unknown!r} in {f} line {lineno} {whose} (labels: {', '.join(names)}); a "
                                "classifier cannot predict a label it never trained on: drop it or add its examples")
    every = [r for found in rows.values() for r in found]
    columns = {"text_a": [r[1] for r in every], **({"text_b": [r[2] for r in every]} if text_b else {}),
               "label": [[1.0 if n in r[3] else 0.0 for n in names] for r in every]}
    features = datasets.Features({k: datasets.Value("string") for k in columns if k != "label"})
    features["label"] = datasets.Sequence(datasets.Value("float32"))
    return datasets.Dataset.from_dict(columns, features=features), tuple(names)


def load(spec: GlueSpec, cfg: RunConfig, path: str, train: bool):
    """`classification_data.load` with label sets (`read`): the spec says multi-label, its metric and main metric."""
    d = cfg.data
    if d.dataset and not (d.train_files or d.data_dir) and (train or not d.validation_file):
        raise TlabError("--multi-label reads your files (--train-file / --validation-file or --data-dir), not a Hub "
                        "dataset (data.dataset)")
    spec, train_ds, evals, notes = classification_data.load(spec, cfg, path, train, read=read)
    return dataclasses.replace(spec, multi_label=True, metrics=METRICS, main_metric=MAIN_METRIC), train_ds, evals, notes


def decide(probabilities, threshold: float):
    """(N, labels) probabilities -> (N, labels) 0/1: a label is predicted above the threshold."""
    return (probabilities > threshold).int()


def evaluate(model, loaders, accelerator, spec: GlueSpec, threshold: float, examples: Optional[dict] = None,
             outcomes: Optional[dict] = None) -> dict[str, float]:
    """micro/macro F1 and subset accuracy of the labels above `threshold`, and the loss (binary cross-entropy per
    label, the model's own), per validation split; gather_for_metrics counts each example once."""
    import torch

    from tlab import metrics
    from tlab.tasks import scaffold

    model.eval()
    results: dict[str, float] = {}
    for split, loader in loaders.items():
        probs, refs, loss_sum = [], [], 0.0
        with torch.no_grad():
            for batch in loader:
                out = model(**batch)
                prob = out.logits.float().sigmoid()  # (B, labels)
                loss = torch.full((len(prob),), out.loss.item(), device=prob.device)
                prob, ref, loss = accelerator.gather_for_metrics((prob, batch["labels"], loss))
                probs.append(prob.cpu())
                refs.append(ref.cpu())
                loss_sum += float(loss.sum())
        predicted, references = decide(torch.cat(probs), threshold), torch.cat(refs).round().int()
        scores = metrics.compute(list(spec.metrics), predicted.tolist(), references.tolist())
        scores["loss"] = loss_sum / max(1, len(references))
        suffix = scaffold.suffix(split, list(loaders), primary=spec.validation_splits[0])
        results.update({f"{k}{suffix}": float(v) for k, v in scores.items()})
        results[f"examples{suffix}"] = len(references)
        scaffold.keep_outcomes(outcomes, examples, split, "label_sets", predicted.tolist(), references.tolist(),
                               [k for k in scores if k != "loss"], suffix)
    return results
