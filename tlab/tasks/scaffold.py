"""The steps every fine-tuning family repeats, one helper each: the needs-a-model check, sample clipping, the
input length a model allows, evaluation loaders, the split `tlab eval --split` asks for, training batches, metric
names per split and the run's config for `tlab predict`. A family's `prepare` reads as its own steps between these."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from tlab import data, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks.contract import TaskInfo


def require_model(cfg: RunConfig, what: str = "fine-tuning") -> str:
    """The checkpoint to start from (a run directory resolves to its model/), or one clear error."""
    if not cfg.model.name_or_path:
        raise TlabError(f"{what} needs a model: pass --model (a tlab run directory, a model directory or a Hub id)")
    return modeling.resolve_checkpoint(cfg.model.name_or_path)


def clip(ds, limit: Optional[int]):
    """The first `limit` examples (data.max_train_samples / max_eval_samples); None or 0 = all of them."""
    if ds is None or not limit:
        return ds
    return ds.select(range(min(limit, len(ds))))


def clip_all(splits: Mapping[str, Any], limit: Optional[int]) -> dict:
    return {name: clip(ds, limit) for name, ds in splits.items()}


def input_length(requested: int, model_config) -> int:
    """The longest input the run asks for, but no longer than the model's position table."""
    return min(requested, modeling.max_positions(model_config) or requested)


def eval_loaders(splits: Mapping[str, Any], cfg: RunConfig, world: int, collate: Callable,
                 drop: Sequence[str] = ()) -> dict[str, torch.utils.data.DataLoader]:
    """One loader per split of global batches (accelerate splits each across the ranks); `drop`: side columns
    the evaluation reads itself, kept out of the batches. `datasets` tables are read as Python rows; any other
    torch Dataset (packed blocks) as it is."""
    def rows(ds):
        if not hasattr(ds, "column_names"):
            return ds
        present = [c for c in drop if c in ds.column_names]
        return (ds.remove_columns(present) if present else ds).with_format("python")

    return {name: torch.utils.data.DataLoader(rows(ds), batch_size=cfg.train.eval_batch() * world, collate_fn=collate)
            for name, ds in splits.items()}


def train_batches(info: TaskInfo, cfg: RunConfig, n: int, world: int,
                  lengths: Optional[Sequence[int]]) -> data.EpochBatches:
    """Global batches of train.batch_size x processes, length-grouped when train.group_by_length (lengths are only
    read then); bucket size: train.length_bucket, else the family's."""
    t = cfg.train
    return data.EpochBatches(n, t.batch_size * world, t.seed, lengths=lengths if t.group_by_length else None,
                             group_batches=t.length_group_batches,
                             bucket=t.length_bucket if t.length_bucket is not None else info.family.length_bucket)


def suffix(split: str, splits: Sequence[str], primary: Optional[str] = None) -> str:
    """'' for the only (or the primary) validation split, else _<split> (validation_ stripped: MNLI's
    accuracy_mismatched), so metric names stay those of the benchmark."""
    if len(splits) == 1 or split == primary:
        return ""
    return "_" + split.replace("validation_", "") if primary is not None else f"_{split}"


def texts_of(ds) -> list:
    """Each classification example's text, or [text_a, text_b] for pairs: the inputs its outcomes digest."""
    if "text_b" in ds.column_names:
        return [[a, b] for a, b in zip(ds["text_a"], ds["text_b"])]
    return list(ds["text_a"])


def keep_outcomes(outcomes: Optional[dict], examples: Optional[Mapping], split: str, kind: str, predictions: list,
                  references: list, metrics: Sequence[str], suffix: str = "", **options: Any) -> None:
    """Record a split's per-example outcomes (`tlab.outcomes.record`) in `outcomes`, ids the examples' places in
    the split. `examples`: split -> (rows, inputs): `rows[i]` the place of the i-th prediction (None: already in
    the split's order), `inputs` each example's text in the split's order."""
    if outcomes is None or examples is None or split not in examples:
        return
    from tlab import outcomes as oc

    rows, inputs = examples[split]
    if rows is not None:  # loader order -> the split's order
        order = sorted(range(len(rows)), key=rows.__getitem__)
        predictions, references = [predictions[i] for i in order], [references[i] for i in order]
    outcomes[split] = oc.record(kind, list(range(len(references))), inputs, predictions, references, list(metrics),
                                suffix, **options)


def only_split(splits: Mapping[str, Any], cfg: RunConfig, task: str) -> dict:
    """The evaluation splits a family prepared, or only `data.eval_split` of them (`tlab eval --split`). A family
    whose data has named splits (CoNLL-2003's files, GLUE's) builds the one asked for itself; one that reads your
    files knows only the split it validates on, and any other name is refused here with one error naming it."""
    wanted = cfg.data.eval_split
    if not wanted:
        return dict(splits)
    if wanted not in splits:
        known = ", ".join(splits) or "none"
        raise TlabError(f"task {task} has no split {wanted!r} to score here (known: {known}); --validation-file scores "
                        "any file of the task's format")
    return {wanted: splits[wanted]}


def run_config(model: str, task: Optional[str], overrides: Optional[list[str]] = None) -> RunConfig:
    """How the run in `model` was trained (its config.yaml), with --task and --set on top; defaults for a plain
    model directory."""
    from tlab import config, outputs

    return config.load(flags={"task": task}, overrides=overrides, run_config=outputs.run_config_of(model))
