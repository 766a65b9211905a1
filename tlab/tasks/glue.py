"""GLUE fine-tuning and evaluation: sequence classification (regression for STS-B) on the shared loop."""

from __future__ import annotations

import hashlib
from typing import Optional

import torch

from tlab import data, finetuning, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import glue_data
from tlab.tasks.contract import Job


def load_split(cfg: RunConfig, spec: glue_data.GlueSpec, split: str, files: Optional[list[str]] = None):
    """One split from the user's file, GLUE TSVs (--data-dir) or the Hub, as text_a/text_b/label."""
    d = cfg.data
    if files:
        parts = [glue_data.load_custom_file(f, d.text_a_column or spec.text_a, d.text_b_column if d.text_b_column else spec.text_b,
                                            d.label_column or spec.label_column, spec.label_names,
                                            score_range=spec.score_range) for f in files]
        if len(parts) == 1:
            return parts[0]
        import datasets

        return datasets.concatenate_datasets(parts)
    if d.data_dir:
        return glue_data.load_glue_split(spec, d.data_dir, split)
    return glue_data.load_glue_hub(spec, split)


def validation_sets(cfg: RunConfig, spec, train=None) -> tuple[dict, object]:
    """{split: dataset} for evaluation, and the training set minus any sentences held out for validation."""
    d = cfg.data
    if d.validation_file:
        return {"validation": load_split(cfg, spec, "validation", [d.validation_file])}, train
    if d.data_dir:
        present = glue_data.available_splits(spec, d.data_dir)
        found = {s: load_split(cfg, spec, s) for s in spec.validation_splits if s in present}
        if found:
            return found, train
    elif not d.train_files:
        return {s: load_split(cfg, spec, s) for s in spec.validation_splits}, train
    if train is None and d.train_files and d.validation_fraction > 0:  # tlab eval of a run trained on --train-file
        return held_out_by_sentence(load_split(cfg, spec, "train", d.train_files), d.validation_fraction, cfg.train.seed)[0], None
    if train is None and d.data_dir and "train" in glue_data.available_splits(spec, d.data_dir) and d.validation_fraction > 0:
        return held_out_by_sentence(load_split(cfg, spec, "train"), d.validation_fraction, cfg.train.seed)[0], None
    if train is None:
        raise TlabError(f"no {spec.name} validation data: give --validation-file or a --data-dir holding "
                        f"{spec.split_files[spec.validation_splits[0]]}")
    if d.validation_fraction <= 0:
        return {}, train
    return held_out_by_sentence(train, d.validation_fraction, cfg.train.seed)


def held_out_by_sentence(train, fraction: float, seed: int):
    """Split off `fraction` of the distinct first sentences as split "heldout": a sentence seen in validation is
    never trained on (SST-2 repeats phrases, so a row-level split would leak). Depends only on the text and the
    seed, so `tlab eval` with the same --data-dir and seed finds the same held-out rows."""

    def held(text: str) -> bool:
        digest = hashlib.sha1(f"{seed}:{text.strip().lower()}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    sentences = len({t.strip().lower() for t in train["text_a"]})
    if sentences * fraction < 1:  # a hash split would hold out nothing, or by chance far more than `fraction`
        raise TlabError(f"the training data is too small to hold out validation ({sentences} distinct sentences x "
                        f"data.validation_fraction {fraction:g} < 1): give --validation-file")
    flags = [held(t) for t in train["text_a"]]
    validation = train.select([i for i, f in enumerate(flags) if f])
    rest = train.select([i for i, f in enumerate(flags) if not f])
    if len(validation) == 0 or len(rest) == 0:
        raise TlabError("the training file is too small to hold out a validation part; give --validation-file")
    return {"heldout": validation}, rest


def tokenize(ds, tokenizer, max_length: int, regression: bool):
    pair = "text_b" in ds.column_names

    def encode(batch):
        enc = tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenizing")


def prepare(cfg: RunConfig, accelerator, log, train: bool = True):
    spec = glue_data.get_spec(cfg.task)
    if not cfg.model.name_or_path:
        raise TlabError("fine-tuning needs a model: pass --model (a tlab run directory, a model directory or a Hub id)")
    path = modeling.resolve_checkpoint(cfg.model.name_or_path)
    with accelerator.main_process_first():
        train_ds = load_split(cfg, spec, "train", cfg.data.train_files) if train else None
        if train_ds is not None and len(train_ds) == 0:
            raise TlabError(f"no {spec.name} training examples found")
        evals, train_ds = validation_sets(cfg, spec, train_ds)
        if train and not spec.is_regression and -1 in train_ds.unique("label"):
            raise TlabError(f"the {spec.name} training data has no labels")
        if cfg.data.max_train_samples and train_ds is not None:
            train_ds = train_ds.select(range(min(cfg.data.max_train_samples, len(train_ds))))
        if cfg.data.max_eval_samples:
            evals = {k: v.select(range(min(cfg.data.max_eval_samples, len(v)))) for k, v in evals.items()}
        tokenizer = modeling.load_tokenizer(path, cfg.model.trust_remote_code)
        model = finetuning.load_classifier(path, spec, cfg.model, for_training=train)
        finetuning.first_token_only_in_last_layer(model)
        max_length = min(cfg.data.max_length, modeling.max_positions(model.config) or cfg.data.max_length)
        train_tok = tokenize(train_ds, tokenizer, max_length, spec.is_regression) if train_ds is not None else None
        eval_tok = {k: tokenize(v, tokenizer, max_length, spec.is_regression).sort("length") for k, v in evals.items()}
    if train:
        model = finetuning.adapt(model, cfg.model, log)
    world = accelerator.num_processes  # loaders yield global batches; accelerate splits them across ranks
    collate = data.PadCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    eval_loaders = {
        name: torch.utils.data.DataLoader(ds.remove_columns("length").with_format("python"), batch_size=cfg.train.eval_batch() * world,
                                          collate_fn=collate)
        for name, ds in eval_tok.items()
    }
    job = Job(
        model=model,
        train_data=train_tok.remove_columns("length").with_format("python") if train_tok is not None else None,
        train_batches=data.EpochBatches(len(train_tok), cfg.train.batch_size * world, cfg.train.seed,
                                        lengths=train_tok["length"] if cfg.train.group_by_length else None)
        if train_tok is not None else None,
        collate=collate,
        eval_loaders=eval_loaders,
        evaluate=lambda m, loaders, acc: evaluate(m, loaders, acc, spec),
        main_metric=spec.main_metric,
        greater_is_better=True,
    )
    summary = {"train_examples": 0 if train_tok is None else len(train_tok),
               **{f"{k}_examples": len(v) for k, v in eval_tok.items()}, "labels": spec.label_names or "regression"}
    return job, tokenizer, summary


def evaluate(model, loaders, accelerator, spec) -> dict[str, float]:
    """The benchmark's own metrics over every validation split; gather_for_metrics drops the duplicates
    that pad a distributed run's last batch, so each example counts once."""
    from tlab import metrics

    model.eval()
    results: dict[str, float] = {}
    for split, loader in loaders.items():
        preds, refs, loss_sum = [], [], 0.0
        with torch.no_grad():
            for batch in loader:
                out = model(**batch)
                logits = out.logits.float()
                pred = logits.squeeze(-1) if spec.is_regression else logits.argmax(-1)
                loss = torch.full((len(pred),), out.loss.item(), device=pred.device)
                pred, ref, loss = accelerator.gather_for_metrics((pred, batch["labels"], loss))
                preds.append(pred.cpu())
                refs.append(ref.cpu())
                loss_sum += float(loss.sum())
        predictions, references = torch.cat(preds), torch.cat(refs)
        scores = metrics.compute(list(spec.metrics), predictions.tolist(), references.tolist())
        scores["loss"] = loss_sum / max(1, len(references))
        suffix = "" if len(loaders) == 1 or split == spec.validation_splits[0] else "_" + split.replace("validation_", "")
        results.update({f"{k}{suffix}": float(v) for k, v in scores.items()})
        results[f"examples{suffix}"] = len(references)
    return results


save = finetuning.save  # LoRA merged, safetensors
