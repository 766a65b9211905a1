"""Extractive question answering, SQuAD v1.1 (`squad`) and v2.0 (`squad_v2`), on the shared loop: a span head
(AutoModelForQuestionAnswering) over sliding windows, n-best post-processing streamed question by question,
and the official EM/F1 (v2: HasAns/NoAns and the best no-answer threshold)."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

from tlab import finetuning, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import extractive_qa as qa
from tlab.tasks import scaffold, squad_data
from tlab.tasks.contract import Job, PredictRequest, Prepared, TaskInfo


def load_examples(cfg: RunConfig, version_2: bool, train: bool, log=lambda _msg: None):
    """(training examples or None, {split: validation examples}, training questions skipped) from the user's files
    or the Hub. Without a validation file, whole articles of the training data are held out (questions of one
    paragraph share it; said at start), or with data.validation_fraction=0 nothing is: training uses every
    question and there is no validation split. Training questions whose answer text is not at its answer_start
    are skipped and counted."""
    d = cfg.data

    def from_files(files):
        import datasets

        parts = [squad_data.load_squad_file(f, version_2) for f in files]
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    validation = from_files([d.validation_file]) if d.validation_file else None
    train_ds = None
    if d.train_files and (train or validation is None):
        train_ds = from_files(d.train_files)
    elif train or validation is None:
        train_ds = squad_data.load_squad_hub(version_2, "train") if train else None
        if validation is None:
            validation = squad_data.load_squad_hub(version_2, "validation")
    if validation is None and d.validation_fraction <= 0 and train:
        log(f"data.validation_fraction=0: training on all {len(train_ds):,} questions ({_articles(train_ds)} articles), "
            "no validation: nothing picks a best checkpoint, the last step's model is saved")
    elif validation is None:
        if d.validation_fraction <= 0:
            raise TlabError("give --validation-file or a data.validation_fraction > 0 to hold out articles")
        train_ds, validation = squad_data.split_by_article(train_ds, d.validation_fraction, cfg.train.seed)
        log(f"held out {len(validation):,} questions ({_articles(validation)} articles) of {len(train_ds) + len(validation):,} "
            f"for validation (data.validation_fraction={d.validation_fraction:g}, seed {cfg.train.seed})"
            + (f"; training on {len(train_ds):,} ({_articles(train_ds)} articles); data.validation_fraction=0 trains on "
               "all of them" if train else ""))
    dropped = 0
    if train_ds is not None and train:
        train_ds, dropped = squad_data.drop_misaligned(train_ds)
        if len(train_ds) == 0:
            raise TlabError("no usable training questions (every answer's text differs from the context at its answer_start)")
    train_ds = scaffold.clip(train_ds, d.max_train_samples) if train else None
    evals = {"validation": scaffold.clip(validation, d.max_eval_samples)} if validation is not None else {}
    return train_ds, evals, dropped


def _articles(ds) -> int:
    """Articles of a split: titles, or contexts for untitled rows (as split_by_article groups them)."""
    return len({title or context for title, context in zip(ds["title"], ds["context"])})


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, train: bool = True) -> Prepared:
    version_2 = info.params["version_2"]
    q = cfg.qa
    path = scaffold.require_model(cfg, "question answering")
    with accelerator.main_process_first():
        train_ex, evals, skipped = load_examples(cfg, version_2, train, log)
        if skipped:
            log(f"skipped {skipped} training question(s) whose answer text is not at its answer_start")
        tokenizer = modeling.load_tokenizer(path, cfg.model.trust_remote_code)
        model = finetuning.load_model(info.head, path, cfg.model, train, "question-answering head")
        max_len = scaffold.input_length(q.max_seq_length, model.config)
        options = {"tokenizer": tokenizer, "max_seq_length": max_len, "doc_stride": min(q.doc_stride, max_len // 2)}
        train_feats = None
        if train_ex is not None:
            train_feats = train_ex.map(qa.prepare_train_features, batched=True, remove_columns=train_ex.column_names,
                                       fn_kwargs=options, desc="windows")
        # Questions longest first: their windows stay together (post-processing streams question by question) and
        # evaluation batches hold windows of similar length, so they carry little padding.
        order = {k: longest_first(v) for k, v in evals.items()}
        eval_feats = {k: v.select(order[k]).map(qa.prepare_validation_features, batched=True, remove_columns=v.column_names,
                                                fn_kwargs=options, desc="windows") for k, v in evals.items()}
    if train:
        model = finetuning.adapt(model, cfg.model, log, info.peft_task_type)
    world = accelerator.num_processes
    collate = qa.QACollator(tokenizer)
    eval_loaders = scaffold.eval_loaders(eval_feats, cfg, world, collate, drop=["example_id", "offset_mapping"])
    artifacts: dict[str, Any] = {}
    outcomes: dict[str, Any] = {}
    options = {"n_best": q.n_best, "max_answer_length": q.max_answer_length, "version_2": version_2,
               "null_threshold": q.null_threshold}
    job = Job(
        model=model,
        train_data=train_feats.with_format("python") if train_feats is not None else None,
        train_batches=scaffold.train_batches(info, cfg, len(train_feats), world,
                                             [len(ids) for ids in train_feats["input_ids"]] if cfg.train.group_by_length else None)
        if train_feats is not None else None,
        collate=collate,
        eval_loaders=eval_loaders,
        evaluate=lambda m, loaders, acc: evaluate(m, loaders, acc, evals, eval_feats, options, artifacts, outcomes),
        main_metric=info.main_metric if eval_loaders else "",  # no validation: the last step's model is kept
        greater_is_better=info.greater_is_better,
        artifacts=artifacts,
        outcomes=outcomes,
    )
    summary = {"train_examples": 0 if train_ex is None else len(train_ex), "skipped_misaligned": skipped,
               "train_windows": 0 if train_feats is None else len(train_feats),
               **{f"{k}_examples": len(v) for k, v in evals.items()},
               **{f"{k}_windows": len(v) for k, v in eval_feats.items()}, "max_seq_length": max_len,
               "doc_stride": options.get("doc_stride", q.doc_stride)}
    return Prepared(job, tokenizer, summary)


def longest_first(examples) -> list[int]:
    """Row order by question + context length, longest first (stable)."""
    import numpy as np

    lengths = np.array([len(q) + len(c) for q, c in zip(examples["question"], examples["context"])])
    return np.argsort(-lengths, kind="stable").tolist()


def _windows(model, loader, features, accelerator) -> Iterator[tuple]:
    """(example_id, start logits (T,), end logits (T,), offsets) per window, in feature order. Each global batch's
    logits are padded to one length across processes and gathered; offsets are read a batch at a time, so only
    one batch of windows is in memory."""
    row = 0
    with torch.no_grad():
        for batch in loader:
            out = model(**{k: v for k, v in batch.items() if k in qa.MODEL_KEYS})
            logits = torch.stack([out.start_logits, out.end_logits], dim=1).float()  # (B, 2, T)
            logits = accelerator.pad_across_processes(logits, dim=2, pad_index=-1e4)
            logits = accelerator.gather_for_metrics(logits).cpu().numpy()
            side = features[row : row + len(logits)]
            for i in range(len(logits)):
                yield side["example_id"][i], logits[i, 0], logits[i, 1], side["offset_mapping"][i]
            row += len(logits)
    if row != len(features):
        raise RuntimeError(f"evaluation saw {row} windows of {len(features)}")


def evaluate(model, loaders, accelerator, examples: dict, features: dict, options: dict, artifacts: dict,
             outcomes: Optional[dict] = None) -> dict[str, float]:
    """EM/F1 (v2: also HasAns/NoAns and best threshold) per validation split; the predictions and n-best lists go
    to `artifacts` for `tlab eval` to write, each question's answer and references to `outcomes`."""
    from tlab import metrics
    from tlab import outcomes as oc

    model.eval()
    results: dict[str, float] = {}
    for split, loader in loaders.items():
        ex = examples[split]
        contexts = dict(zip(ex["id"], ex["context"]))
        predictions, nbest, diffs = {}, {}, {}
        for qid, answer in qa.stream_answers(_windows(model, loader, features[split], accelerator), contexts, **options):
            predictions[qid], nbest[qid], diffs[qid] = answer.text, answer.nbest, answer.null_score_diff
        missing = [qid for qid in contexts if qid not in predictions]
        if missing:
            raise TlabError(f"{len(missing)} question(s) got no window, e.g. {missing[0]!r}")
        refs = [{"id": i, "answers": a} for i, a in zip(ex["id"], ex["answers"])]
        if options["version_2"]:
            preds = [{"id": q, "prediction_text": predictions[q], "no_answer_probability": diffs[q]} for q in ex["id"]]
            scores = metrics.load("squad_v2").compute(predictions=preds, references=refs,
                                                      no_answer_threshold=options["null_threshold"])
        else:
            preds = [{"id": q, "prediction_text": predictions[q]} for q in ex["id"]]
            scores = metrics.load("squad").compute(predictions=preds, references=refs)
        suffix = scaffold.suffix(split, list(loaders))
        results.update({f"{_name(k)}{suffix}": float(v) for k, v in scores.items() if isinstance(v, (int, float))})
        results[f"examples{suffix}"] = len(ex)
        ids = ex["id"]  # the file's order (windows were made longest first)
        artifacts[f"predictions{suffix}.json"] = {q: predictions[q] for q in ids}
        artifacts[f"nbest_predictions{suffix}.json"] = {q: nbest[q] for q in ids}
        if options["version_2"]:
            artifacts[f"null_odds{suffix}.json"] = {q: diffs[q] for q in ids}
        if outcomes is not None:
            v2 = {"version_2": True, "null_odds": [_finite(diffs[q]) for q in ids],
                  "no_answer_threshold": options["null_threshold"]} if options["version_2"] else {}
            outcomes[split] = oc.record("answers", ids, [[q, c] for q, c in zip(ex["question"], ex["context"])],
                                        [predictions[q] for q in ids], [a["text"] for a in ex["answers"]],
                                        [_name(k) for k in scores], suffix, **v2)
    return results


def _finite(value: float) -> Optional[float]:
    """A no-answer score for JSON: inf (no valid span) as None, which the comparison reads back as inf."""
    return value if value == value and abs(value) != float("inf") else None


def _name(key: str) -> str:
    """v1 reports exact_match, v2 exact: one name for both, so gates read the same."""
    return {"exact": "exact_match", "total": "questions"}.get(key, key)




save = finetuning.save  # LoRA merged, safetensors


class Answerer:
    """`tlab predict` for a question-answering model: answer, character span and score per question."""

    def __init__(self, model_path: str, max_seq_length: int = 384, doc_stride: int = 128, n_best: int = 20,
                 max_answer_length: int = 30, null_threshold: Optional[float] = None):
        from transformers import AutoModelForQuestionAnswering

        path = modeling.resolve_checkpoint(model_path)
        self.model = modeling.load_pretrained(AutoModelForQuestionAnswering, path, trained_only="question-answering head").eval()
        self.tokenizer = modeling.load_tokenizer(path)
        limit = modeling.max_positions(self.model.config) or max_seq_length
        self.options = {"tokenizer": self.tokenizer, "max_seq_length": min(max_seq_length, limit),
                        "doc_stride": min(doc_stride, min(max_seq_length, limit) // 2)}
        self.search = {"n_best": n_best, "max_answer_length": max_answer_length,
                       "version_2": null_threshold is not None, "null_threshold": null_threshold or 0.0}

    @classmethod
    def for_model(cls, model: str, task: Optional[str] = None) -> "Answerer":
        """Options from the run's config.yaml when `model` is a tlab run (v2 runs may answer "no answer")."""
        from tlab import outputs, tasks
        from tlab.runtime import quiet_libraries

        quiet_libraries()
        cfg = scaffold.run_config(model, task)
        q = cfg.qa
        known = bool(task or outputs.run_config_of(model))  # else the defaults' task, which says nothing
        version_2 = known and bool(tasks.info(cfg.task).params.get("version_2"))
        return cls(model, q.max_seq_length, q.doc_stride, q.n_best, q.max_answer_length,
                   q.null_threshold if version_2 else None)

    def __call__(self, questions: list[dict]) -> list[qa.Answer]:
        """questions: [{"question": ..., "context": ...}] -> one Answer each."""
        rows = {"id": [str(i) for i in range(len(questions))], "question": [q["question"] for q in questions],
                "context": [q["context"] for q in questions]}
        feats = qa.prepare_validation_features(rows, **self.options)
        batch = qa.QACollator(self.tokenizer)([{k: feats[k][i] for k in qa.MODEL_KEYS if k in feats}
                                               for i in range(len(feats["input_ids"]))])
        with torch.no_grad():
            out = self.model(**batch)
        windows = zip(feats["example_id"], out.start_logits.float().numpy(), out.end_logits.float().numpy(),
                      feats["offset_mapping"])
        answers = dict(qa.stream_answers(windows, dict(zip(rows["id"], rows["context"])), **self.search))
        return [answers[i] for i in rows["id"]]


def predict(request: PredictRequest, echo) -> None:
    """Answer, character span and score per question: --question/--context, or JSON Lines {"question",
    "context"[, "id"]} on stdin ("no answer" when a v2 model abstains). --json: {["id",] "question", "answer",
    "start", "end", "score"} per question (answer, start and end null for no answer)."""
    import json

    if request.texts:
        raise TlabError("a question answering model takes --question and --context (or JSON Lines on stdin), not texts")
    if (request.question is None) != (request.context is None):
        raise TlabError("give both --question and --context")
    if request.question is not None:
        rows = [{"question": request.question, "context": request.context}]
    else:
        rows = []
        for number, line in enumerate(request.stdin().split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise TlabError(f"stdin line {number} is not JSON (one {{\"question\": ..., \"context\": ...}} per line)") from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("context"), str):
                raise TlabError(f"stdin line {number} needs string fields \"question\" and \"context\"")
            rows.append(row)
        if not rows:
            raise TlabError("no question: give --question and --context, or JSON Lines on stdin")
    answerer = Answerer.for_model(request.model, request.task)
    for start in range(0, len(rows), request.batch_size):
        chunk = rows[start : start + request.batch_size]
        for row, answer in zip(chunk, answerer(chunk)):
            if request.json_lines:
                start = int(answer.start) if answer.text else None
                echo(json.dumps({**({"id": row["id"]} if "id" in row else {}), "question": row["question"],
                                 "answer": answer.text or None, "start": start,
                                 "end": None if start is None else start + len(answer.text),
                                 "score": float(answer.score)}, ensure_ascii=False))
                continue
            span = f"{answer.start}-{answer.start + len(answer.text)}" if answer.text else "-"
            prefix = f"{row['id']}\t" if "id" in row else ""
            echo(f"{prefix}{answer.text or 'no answer'}\t{span}\t{answer.score:.4f}")
