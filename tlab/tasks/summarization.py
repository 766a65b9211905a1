"""Abstractive summarization (samsum, xsum, cnn_dailymail, and `summarization` for any documents with reference
summaries) on the shared loop and the sequence-to-sequence pieces of `seq2seq`: a model from scratch, a pretrained
encoder-decoder (T5 reads its "summarize: " prefix from its config) or one warm-started from an encoder, label
smoothing, beam search with a length penalty, min/max new tokens and no_repeat_ngram_size on length-sorted batches
put back in order, and ROUGE-1/2/L/Lsum F1 (rouge-score, Porter stemming) beside the teacher-forced validation loss
and the mean summary length."""

from __future__ import annotations

import json
from typing import Any, Optional

import torch

from tlab import finetuning, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import scaffold, selection, seq2seq, summarization_data
from tlab.tasks.contract import Job, PredictRequest, Prepared, TaskInfo

LANGUAGES = ("en", "en")  # what mBART-style checkpoints are told; every summarization task here is English


def _prefix(model, cfg: RunConfig, log) -> str:
    return seq2seq.task_prefix(model, cfg, "summarization", "summarize: ", "for summarization", log)


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, train: bool = True) -> Prepared:
    s = cfg.seq2seq
    seq2seq.check_options(cfg, train, "summarization")
    with accelerator.main_process_first():
        train_ds, valid_ds, notes = summarization_data.load(cfg, dict(info.params), train, log)
        model, tokenizer, built = seq2seq.build(cfg, train_ds, *LANGUAGES, train, log, "summarization")
        notes.update(built)
        prefix = _prefix(model, cfg, log)
        start = model.generation_config.decoder_start_token_id
        train_feats, valid_ds, valid_feats = seq2seq.features(train_ds, valid_ds, tokenizer, prefix, cfg, start,
                                                              valid_labels=True)
    if train:
        model = finetuning.adapt(model, cfg.model, log, info.peft_task_type)
    world = accelerator.num_processes
    collate = seq2seq.Seq2SeqCollator(tokenizer.pad_token_id, start)
    eval_loaders = scaffold.eval_loaders({"validation": valid_feats}, cfg, world, collate)
    artifacts: dict[str, Any] = {}
    outcomes: dict[str, Any] = {}
    gen = seq2seq.model_generation_options(model, cfg)

    def scores(m, loaders, acc):
        return evaluate(m, loaders, acc, tokenizer, valid_ds, gen, artifacts, outcomes)

    def finish(m, run, acc, loaders, final):
        return seq2seq.average(m, run, acc, loaders, final, s.average_checkpoints, scores, log, *selection(info, cfg))

    job = Job(
        model=model,
        train_data=train_feats.with_format("python") if train_feats is not None else None,
        train_batches=seq2seq.train_batches(info, cfg, train_feats, world, log) if train_feats is not None else None,
        collate=collate,
        eval_loaders=eval_loaders,
        evaluate=scores,
        main_metric=info.main_metric,
        greater_is_better=info.greater_is_better,
        artifacts=artifacts,
        outcomes=outcomes,
        count_tokens=seq2seq.count_tokens,
        loss=seq2seq.label_smoothed_loss(s.label_smoothing),
        finish=finish if s.average_checkpoints else None,
    )
    cut = sum(len(ids) >= s.max_source_length for ids in valid_feats["input_ids"])
    summary = {"train_examples": 0 if train_ds is None else len(train_ds), "validation_examples": len(valid_ds),
               "vocab_size": len(tokenizer), **notes, "validation_documents_truncated": cut,
               **({"max_tokens": s.max_tokens} if s.max_tokens and world == 1 else {}),
               **({"source_prefix": prefix} if prefix else {})}
    if cut:
        log(f"{cut} of {len(valid_ds)} validation documents are longer than seq2seq.max_source_length "
            f"{s.max_source_length} tokens and are cut there")
    return Prepared(job, tokenizer, summary)


def validation_loss(model, loader, accelerator) -> float:
    """Mean cross-entropy per summary token, teacher-forced and without label smoothing (comparable across runs
    whatever their seq2seq.label_smoothing)."""
    import torch.nn.functional as F

    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits  # (B, T, V)
            labels = batch["labels"]  # (B, T), -100 on padding
            per_token = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                        reduction="none").view(labels.shape)
            sums, counts = accelerator.gather_for_metrics((per_token.sum(dim=1), (labels != -100).sum(dim=1)))
            total += float(sums.sum())
            tokens += int(counts.sum())
    return total / max(1, tokens)


def evaluate(model, loaders, accelerator, tokenizer, examples, gen: dict, artifacts: dict,
             outcomes: Optional[dict] = None) -> dict:
    """The validation loss, then a summary for every document (each process its share of the batches) put back
    in file order and scored: ROUGE F1 with its signature, and mean lengths (generated tokens; words of the
    summaries and of the references)."""
    from tlab import metrics
    from tlab import outcomes as oc

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    results: dict[str, Any] = {}
    for split, loader in loaders.items():
        loss = validation_loss(unwrapped, loader, accelerator)
        summaries, lengths = seq2seq.generate_in_order(unwrapped, loader, accelerator, tokenizer, gen, len(examples))
        references = list(examples["target"])
        rouge = metrics.load("rouge").compute(predictions=summaries, references=references)
        suffix = scaffold.suffix(split, list(loaders))
        n = max(1, len(summaries))
        results.update({f"{name}{suffix}": round(rouge[name], 4) for name in ("rouge1", "rouge2", "rougeL", "rougeLsum")})
        results.update({f"loss{suffix}": round(loss, 4), f"gen_len{suffix}": round(sum(lengths) / n, 2),
                        f"gen_words{suffix}": round(sum(len(t.split()) for t in summaries) / n, 2),
                        f"ref_words{suffix}": round(sum(len(t.split()) for t in references) / n, 2),
                        f"examples{suffix}": len(summaries), f"rouge_signature{suffix}": rouge["signature"]})
        artifacts[f"summaries{suffix}.jsonl"] = [
            {"id": i, "line": line, "reference": r, "summary": h}
            for i, line, r, h in zip(examples["id"], examples["line"], references, summaries)]
        if outcomes is not None:  # each document's output and reference, for a paired comparison
            outcomes[split] = oc.record("texts", list(examples["id"]), list(examples["source"]), summaries, references,
                                        ["rouge1", "rouge2", "rougeL", "rougeLsum"], suffix)
    return results


save = finetuning.save  # LoRA merged, safetensors


class Summarizer:
    """`tlab predict` for a summarization model: one summary per document, in input order."""

    def __init__(self, model_path: str, cfg: RunConfig):
        path = modeling.resolve_checkpoint(model_path)
        self.model = seq2seq.load_trained(path, "summarization")
        self.tokenizer = modeling.load_tokenizer(path)
        self.prefix = _prefix(self.model, cfg, lambda _m: None)
        self.max_source = cfg.seq2seq.max_source_length
        self.options = seq2seq.model_generation_options(self.model, cfg)

    @classmethod
    def for_model(cls, model: str, task: Optional[str] = None, overrides: Optional[list[str]] = None) -> "Summarizer":
        """Options (lengths, beams, prefix) from the run's config.yaml when `model` is a tlab run."""
        from tlab.runtime import quiet_libraries

        quiet_libraries()
        return cls(model, scaffold.run_config(model, task, overrides))

    def __call__(self, documents: list[str], batch_size: int = 16) -> list[str]:
        out = seq2seq.generate_texts(self.model, self.tokenizer, documents, self.prefix, self.max_source, batch_size,
                                     self.options)
        return [" ".join(text.split("\n")) for text in out]  # one line per document


def read_documents(request: PredictRequest, column: str) -> list[str]:
    """Documents as arguments, or one JSON value per stdin line (a string, or an object with "text" or the run's
    document column): a dialogue's newlines are written \\n inside it. A blank line is an empty document."""
    if request.texts:
        return [summarization_data.normalise(t) for t in request.texts]
    lines = request.stdin().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    documents = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            documents.append("")
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise TlabError(f"stdin line {number} is not JSON: give one document a line as a JSON string or "
                            '{"text": ...} (newlines inside it written \\n), or documents as arguments') from None
        if isinstance(value, dict):
            value = value.get("text", value.get(column))
        if not isinstance(value, str):
            raise TlabError(f'stdin line {number}: expected a JSON string or an object with a "text" field (or '
                            f'"{column}") holding the document')
        documents.append(summarization_data.normalise(value))
    return documents


def predict(request: PredictRequest, echo) -> None:
    """One summary per document, in input order (an empty document gives an empty line)."""
    from tlab import tasks

    cfg = scaffold.run_config(request.model, request.task, request.overrides)
    known = tasks.info(cfg.task)
    column = summarization_data.columns(dict(known.params), cfg)[0]
    documents = read_documents(request, column)
    if not any(d.strip() for d in documents):
        raise TlabError("no document to summarize: give documents as arguments, or one JSON line per document on "
                        'stdin ("..." or {"text": "..."})')
    from tlab.runtime import quiet_libraries

    quiet_libraries()
    summarizer = Summarizer(request.model, cfg)
    wanted = [i for i, d in enumerate(documents) if d.strip()]
    done = dict(zip(wanted, summarizer([documents[i] for i in wanted], request.batch_size)))
    for i in range(len(documents)):
        echo(done.get(i, ""))
