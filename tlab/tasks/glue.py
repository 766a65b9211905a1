"""Sequence classification (regression for STS-B) on the shared loop: the GLUE benchmarks, and through the
data adapter a task names in `params["loader"]` (`classification_data`) users' own labelled files and IMDB; with
classification.multi_label, its `params["multi_label_loader"]`: a set of labels per text (`multi_label`).
Documents longer than the window (data.long_text mean | max): windows whose logits are combined per document,
in `long_text`. A causal LM is scored few-shot from prompts instead (fewshot.shots, `tlab eval --shots`), in `fewshot`."""

from __future__ import annotations

from typing import Optional

import torch

from tlab import data, finetuning, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import fewshot, glue_data, long_text, multi_label, scaffold
from tlab.tasks.contract import Job, PredictRequest, Prepared, TaskInfo
from tlab.tasks.glue_data import held_out_by_sentence  # here since the family's start (scripts/ import it)


def load_split(cfg: RunConfig, spec: glue_data.GlueSpec, split: str, files: Optional[list[str]] = None):
    """One split from the user's file, GLUE TSVs (--data-dir) or the Hub, as text_a/text_b/label."""
    d = cfg.data
    if files:
        parts = [glue_data.load_custom_file(f, d.text_a_column or spec.text_a, d.text_b_column if d.text_b_column else spec.text_b,
                                            d.label_column or spec.label_column, spec.label_names,
                                            score_range=spec.score_range, official_names=spec.column_names) for f in files]
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


def tokenize(ds, tokenizer, max_length: int, regression: bool, both_orders: bool = False):
    """Model inputs, labels and lengths; with `both_orders` each pair also as (text_b, text_a), under "swapped_"
    keys (classification.average_orders: BothOrdersCollator puts the two orders in one batch)."""
    pair = "text_b" in ds.column_names

    def encode(batch):
        enc = tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True, max_length=max_length)
        lengths = [len(ids) for ids in enc["input_ids"]]
        if both_orders:
            swapped = tokenizer(batch["text_b"], batch["text_a"], truncation=True, max_length=max_length)
            lengths = [max(n, len(ids)) for n, ids in zip(lengths, swapped["input_ids"])]
            enc.update({f"swapped_{k}": v for k, v in swapped.items()})
        enc["labels"] = batch["label"]
        enc["length"] = lengths
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenizing")


def named_split(cfg: RunConfig, spec: glue_data.GlueSpec, split: str):
    """`tlab eval --split`: one split of the benchmark by its name, from the files in --data-dir (those present) or
    the Hub; a split without labels (GLUE's test files: their labels are not public) is refused."""
    d = cfg.data
    known = glue_data.available_splits(spec, d.data_dir) if d.data_dir else list(spec.split_files)
    if split not in known:
        where = f" in --data-dir {d.data_dir}" if d.data_dir else ""
        raise TlabError(f"task {spec.name} has no split {split!r}{where} (known: {', '.join(known)})")
    ds = load_split(cfg, spec, split)
    if len(ds) and all(label == -1 for label in ds["label"]):
        raise TlabError(f"the {spec.name} {split} split has no labels to score (GLUE's test labels are not public): "
                        f"score {' or '.join(spec.validation_splits)}, or submit predictions to the benchmark")
    return ds


def load_glue(spec: glue_data.GlueSpec, cfg: RunConfig, path: str, train: bool):
    """A GLUE benchmark's (spec, training set or None, {split: validation set}, summary notes). Tasks with
    a loader of their own in `params["loader"]` return the same, their spec holding the labels they found."""
    d = cfg.data
    if not train and d.eval_split and not d.validation_file and (d.data_dir or not d.train_files):
        return spec, None, {d.eval_split: named_split(cfg, spec, d.eval_split)}, {}
    train_ds = load_split(cfg, spec, "train", cfg.data.train_files) if train else None
    if train_ds is not None and len(train_ds) == 0:
        raise TlabError(f"no {spec.name} training examples found")
    evals, train_ds = validation_sets(cfg, spec, train_ds)
    return spec, train_ds, evals, {}


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, train: bool = True) -> Prepared:
    if cfg.fewshot.shots is not None:  # a causal LM scored from prompts, no classifier (tasks/fewshot.py)
        return fewshot.prepare(info, cfg, accelerator, log, info.params.get("loader", load_glue), train)
    path = scaffold.require_model(cfg)
    if not train:
        fewshot.refuse_causal_lm(path, cfg)
    with accelerator.main_process_first():
        loader = info.params["multi_label_loader"] if cfg.classification.multi_label else info.params.get("loader", load_glue)
        spec, train_ds, evals, notes = loader(info.params["spec"], cfg, path, train)
        evals = scaffold.only_split(evals, cfg, info.name) if not train else evals
        if train and not spec.is_regression and not spec.multi_label and -1 in train_ds.unique("label"):
            raise TlabError(f"the {spec.name} training data has no labels")
        train_ds = scaffold.clip(train_ds, cfg.data.max_train_samples)
        if train_ds is not None and cfg.data.both_orders:
            train_ds = glue_data.in_both_orders(train_ds)
            notes["both_orders"] = f"each training pair also as (text_b, text_a): {len(train_ds):,} rows"
        evals = scaffold.clip_all(evals, cfg.data.max_eval_samples)
        tokenizer = modeling.load_tokenizer(path, cfg.model.trust_remote_code)
        model = finetuning.load_classifier(path, spec, cfg.model, for_training=train, head=info.head)
        finetuning.first_token_only_in_last_layer(model)
        max_length = scaffold.input_length(cfg.data.max_length, model.config)
        pair = any("text_b" in ds.column_names for ds in [train_ds, *evals.values()] if ds is not None)
        windows = long_text.windows_for(cfg, spec, tokenizer, max_length, pair)  # None: truncate
        orders = check_average_orders(cfg, pair, windows)
        if windows is None:
            train_tok = tokenize(train_ds, tokenizer, max_length, spec.is_regression) if train_ds is not None else None
            # "row": each example's place in its split, read back after the length sort (per-example outcomes)
            eval_tok = {k: with_rows(tokenize(v, tokenizer, max_length, spec.is_regression, orders)).sort("length")
                        for k, v in evals.items()}
        else:  # one row per window, "index" naming its document (long_text)
            train_tok = long_text.tokenize(train_ds, tokenizer, windows) if train_ds is not None else None
            eval_tok = {k: long_text.tokenize(v, tokenizer, windows).sort("length") for k, v in evals.items()}
        started = [] if train_ds is None else [long_text.start_line(  # training runs only: eval prints its scores
            long_text.count_longer(train_ds, tokenizer, max_length, train_tok if windows else None), len(train_ds),
            max_length, cfg.data.long_text)]
        if windows is not None and train_tok is not None and cfg.data.train_windows == "first":
            train_tok = long_text.first_windows(train_tok)
    if train:
        model = finetuning.adapt(model, cfg.model, log, info.peft_task_type)
    for line in started:  # "N of M training examples are longer than max_length ... (truncated)", once all is well
        log(line)
    world = accelerator.num_processes  # loaders yield global batches; accelerate splits them across ranks
    collate = data.PadCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    eval_collate = BothOrdersCollator(collate) if orders else collate
    if windows is not None:  # evaluation rows carry their document's "index"
        collate = eval_collate = long_text.IndexCollator(collate)
    side = ["length"] if windows is None else ["length", "index"]
    outcomes: dict = {}
    examples = {k: (v["row"] if "row" in v.column_names else None, scaffold.texts_of(evals[k])) for k, v in eval_tok.items()}
    job = Job(
        model=model,
        train_data=train_tok.remove_columns(side).with_format("python") if train_tok is not None else None,
        train_batches=scaffold.train_batches(info, cfg, len(train_tok), world, train_tok["length"])
        if train_tok is not None else None,
        collate=collate,
        eval_loaders=scaffold.eval_loaders(eval_tok, cfg, world, eval_collate, drop=["length", "row"]),
        evaluate=evaluator(spec, windows, cfg, examples, outcomes, orders),
        main_metric=spec.main_metric if spec.multi_label else info.main_metric,
        greater_is_better=info.greater_is_better,
        outcomes=outcomes,
    )
    summary = {"train_examples": 0 if train_tok is None else len(train_ds),
               **{f"{k}_examples": len(evals[k]) for k in eval_tok}, "labels": spec.label_names or "regression", **notes}
    if spec.multi_label:
        summary["multi_label"] = f"a set of labels per text, each predicted above threshold {cfg.classification.threshold:g}"
    if orders:
        summary["average_orders"] = "each validation pair scored as (a, b) and (b, a), the outputs averaged"
    if windows is not None:
        summary.update({"long_text": f"{windows.mode} of windows ({max_length} tokens, stride {windows.stride})",
                        **({"train_windows": len(train_tok)} if train_tok is not None else {}),
                        **{f"{k}_windows": len(v) for k, v in eval_tok.items()}})
    return Prepared(job, tokenizer, summary)


def check_average_orders(cfg: RunConfig, pair: bool, windows) -> bool:
    """classification.average_orders, refused where there is no second text to swap or windows to combine."""
    if not cfg.classification.average_orders:
        return False
    if not pair:
        raise TlabError("classification.average_orders needs sentence pairs: this task's examples are single texts")
    if windows is not None or cfg.classification.multi_label:
        raise TlabError("classification.average_orders works with one label (or score) per truncated pair: not with "
                        "data.long_text windows or classification.multi_label")
    return True


class BothOrdersCollator:
    """A batch of B pairs as 2B rows, the B as given and then the same B swapped (the tokenized "swapped_" keys),
    padded together; evaluate() averages the two halves' outputs (classification.average_orders)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        given = [{k: v for k, v in r.items() if not k.startswith("swapped_")} for r in rows]
        swapped = [{**{k[len("swapped_"):]: v for k, v in r.items() if k.startswith("swapped_")}, "labels": r["labels"]}
                   for r in rows]
        return self.collate(given + swapped)


def with_rows(ds):
    """The tokenized split with each example's place in it ("row"), kept through the sort by length."""
    return ds.add_column("row", list(range(len(ds))))


def evaluator(spec: glue_data.GlueSpec, windows, cfg: RunConfig, examples: dict, outcomes: dict, orders: bool = False):
    """The job's evaluate: the argmax per text, per document of windows (long_text), or every label above
    classification.threshold (multi_label). `examples`: split -> (rows in loader order or None, inputs)."""
    if spec.multi_label:
        return lambda m, loaders, acc: multi_label.evaluate(m, loaders, acc, spec, cfg.classification.threshold,
                                                            examples, outcomes)
    if windows is not None:
        return lambda m, loaders, acc: long_text.evaluate(m, loaders, acc, spec, windows.mode, examples, outcomes)
    return lambda m, loaders, acc: evaluate(m, loaders, acc, spec, examples, outcomes, orders)


def evaluate(model, loaders, accelerator, spec, examples: Optional[dict] = None,
             outcomes: Optional[dict] = None, orders: bool = False) -> dict[str, float]:
    """The benchmark's own metrics over every validation split; gather_for_metrics drops the duplicates
    that pad a distributed run's last batch, so each example counts once. Each split's per-example outcomes go
    to `outcomes` (`examples`: split -> (rows in loader order, inputs)). With `orders` each batch holds its pairs
    given and swapped (BothOrdersCollator): the two outputs are averaged, and the loss is that of the average."""
    from tlab import metrics

    model.eval()
    results: dict[str, float] = {}
    for split, loader in loaders.items():
        preds, refs, loss_sum = [], [], 0.0
        with torch.no_grad():
            for batch in loader:
                out = model(**batch)
                logits, labels, batch_loss = out.logits.float(), batch["labels"], out.loss.item()
                if orders:
                    half = len(logits) // 2
                    logits, labels = (logits[:half] + logits[half:]) / 2, labels[:half]
                    batch_loss = float(torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
                                       if spec.is_regression else torch.nn.functional.cross_entropy(logits, labels))
                pred = logits.squeeze(-1) if spec.is_regression else logits.argmax(-1)
                loss = torch.full((len(pred),), batch_loss, device=pred.device)
                pred, ref, loss = accelerator.gather_for_metrics((pred, labels, loss))
                preds.append(pred.cpu())
                refs.append(ref.cpu())
                loss_sum += float(loss.sum())
        predictions, references = torch.cat(preds), torch.cat(refs)
        scores = metrics.compute(list(spec.metrics), predictions.tolist(), references.tolist())
        scores["loss"] = loss_sum / max(1, len(references))
        suffix = scaffold.suffix(split, list(loaders), primary=spec.validation_splits[0])
        results.update({f"{k}{suffix}": float(v) for k, v in scores.items()})
        results[f"examples{suffix}"] = len(references)
        scaffold.keep_outcomes(outcomes, examples, split, "scores" if spec.is_regression else "labels",
                               predictions.tolist(), references.tolist(), spec.metrics, suffix)
    return results


save = finetuning.save  # LoRA merged, safetensors


def preview(info: TaskInfo, cfg: RunConfig) -> Optional[str]:
    """`tlab eval --dry-run`: the few-shot prompt of the first validation example (nothing for a classifier)."""
    if cfg.fewshot.shots is None:
        return None
    return fewshot.preview(info, cfg, info.params.get("loader", load_glue))


def predict(request: PredictRequest, echo) -> None:
    """Label, probability and text per input (score and text for regression; for a multi-label model every label
    above classification.threshold, joined by classification.label_separator, "-" for none, and their
    probabilities the same way): texts, else stdin lines; a tab (or --text-b) gives the second sentence of a pair.
    --json: {"text"[, "text_b"], "label", "score", "probabilities"} per input ({"text", "score"} for regression,
    {"text", "labels", "scores", "probabilities"} for multi-label)."""
    import json

    from tlab.inference import Classifier

    lines = request.texts or [line.rstrip("\r") for line in request.stdin().split("\n") if line.strip()]
    if not lines:
        raise TlabError("no text to classify: give texts as arguments or lines on stdin")
    text_b = request.text_b
    pairs = [(line, text_b) if text_b is not None else tuple((line.split("\t", 1) + [None])[:2]) for line in lines]
    classifier = Classifier.load(request.model)
    cfg = scaffold.run_config(request.model, request.task, request.overrides)
    d, sep = cfg.data, cfg.classification.label_separator
    classifier.threshold = cfg.classification.threshold
    if cfg.classification.average_orders:  # as the run was scored: each pair both ways, the outputs averaged
        if not all(b is not None for _, b in pairs):
            raise TlabError("this model averages the two orders of a sentence pair (classification.average_orders): "
                            "give every input a second sentence (after a tab, or --text-b)")
        classifier.average_orders = True
    if d.long_text != "truncate":  # a run trained on windows predicts on windows, combined the same way
        classifier.windows = long_text.Windows(d.long_text, min(d.max_length, classifier.max_length), d.stride)
    for start in range(0, len(pairs), request.batch_size):
        chunk = pairs[start : start + request.batch_size]
        for (a, b), found in zip(chunk, classifier.predict(chunk)):
            if request.json_lines:
                echo(json.dumps({"text": a, **({"text_b": b} if b is not None else {}), **found}, ensure_ascii=False))
                continue
            shown = a if b is None else f"{a}\t{b}"
            if "labels" in found:  # multi-label
                labels, scores = sep.join(found["labels"]) or "-", sep.join(f"{p:.4f}" for p in found["scores"]) or "-"
                echo(f"{labels}\t{scores}\t{shown}")
            elif "label" in found:
                echo(f"{found['label']}\t{found['score']:.4f}\t{shown}")
            else:
                echo(f"{found['score']:.4f}\t{shown}")
