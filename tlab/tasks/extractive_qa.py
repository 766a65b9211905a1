"""Span-extraction QA on any fast tokenizer: sliding windows of question + context with answer positions
(training) or offsets (evaluation), as transformers' run_qa.py makes them; a right-padding collator; and n-best
post-processing (utils_qa.py's search) written over one question at a time so evaluation can stream.

Feature columns: input_ids, attention_mask, token_type_ids (when the tokenizer makes them), then
start_positions/end_positions (training) or example_id/offset_mapping (evaluation: side columns the collator
leaves out). Example rows follow tlab/tasks/squad_data.py's schema (id, context, question, answers).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

from tlab.errors import TlabError

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


# -- features --------------------------------------------------------------------------------------------------
def _windows(examples: Mapping[str, list], tokenizer, max_seq_length: int, doc_stride: int):
    """Tokenized windows of question + context (context + question for left-padding tokenizers, as run_qa.py) and
    the sequence id (0/1) of the context."""
    if not getattr(tokenizer, "is_fast", False):
        raise TlabError("question answering needs a fast tokenizer (for offset mappings); "
                        f"{type(tokenizer).__name__} is not one")
    question_first = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in examples["question"]]  # leading spaces would only waste window room
    pair = (questions, examples["context"]) if question_first else (examples["context"], questions)
    try:
        encoded = tokenizer(*pair, truncation="only_second" if question_first else "only_first",
                            max_length=max_seq_length, stride=doc_stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True, padding=False)
    except Exception as e:  # tokenizers raises a bare Exception when a question leaves no room for the context
        raise TlabError(f"cannot cut windows of max_seq_length {max_seq_length} with doc_stride {doc_stride}: {e} "
                        "(a question is too long; raise max_seq_length or lower doc_stride)") from None
    return encoded, 1 if question_first else 0


def _token_span(offsets, sequence_ids, context_id: int, start_char: int, end_char: int):
    """(first, last) token of the answer when this window's context holds it whole, else None."""
    tokens = [k for k, s in enumerate(sequence_ids) if s == context_id]
    if not tokens or not (offsets[tokens[0]][0] <= start_char and offsets[tokens[-1]][1] >= end_char):
        return None
    start, end = tokens[0], tokens[-1]
    # Bounded by the context on both sides: run_qa.py's scan can run on into the final [SEP].
    while start < end and offsets[start + 1][0] <= start_char:
        start += 1
    while end > start and offsets[end - 1][1] >= end_char:
        end -= 1
    return start, end


def _cls_index(input_ids: list[int], tokenizer) -> int:
    for special in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        if special is not None and special in input_ids:
            return input_ids.index(special)
    return 0


def prepare_train_features(examples, tokenizer, max_seq_length: int = 384, doc_stride: int = 128) -> dict:
    """Batched `Dataset.map` function: windows with start/end token positions of the first answer, or the CLS
    position where the window does not hold the whole answer (and for unanswerable questions). Unpadded."""
    encoded, context_id = _windows(examples, tokenizer, max_seq_length, doc_stride)
    out = {key: encoded[key] for key in MODEL_KEYS if key in encoded}
    out["start_positions"], out["end_positions"] = [], []
    for i, offsets in enumerate(encoded["offset_mapping"]):
        answers = examples["answers"][encoded["overflow_to_sample_mapping"][i]]
        span = None
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            span = _token_span(offsets, encoded.sequence_ids(i), context_id, start_char,
                               start_char + len(answers["text"][0]))
        start, end = span or (_cls_index(encoded["input_ids"][i], tokenizer),) * 2
        out["start_positions"].append(start)
        out["end_positions"].append(end)
    return out


def prepare_validation_features(examples, tokenizer, max_seq_length: int = 384, doc_stride: int = 128) -> dict:
    """Batched `Dataset.map` function: windows with their question's example_id and character offsets, None for
    every token outside the context (question, special tokens), so no answer can be taken from there."""
    encoded, context_id = _windows(examples, tokenizer, max_seq_length, doc_stride)
    out = {key: encoded[key] for key in MODEL_KEYS if key in encoded}
    out["example_id"] = [examples["id"][j] for j in encoded["overflow_to_sample_mapping"]]
    out["offset_mapping"] = [[o if s == context_id else None for o, s in zip(offsets, encoded.sequence_ids(i))]
                             for i, offsets in enumerate(encoded["offset_mapping"])]
    return out


class QACollator:
    """Pads a batch of windows on the right to its longest: (B, T) int64 input_ids (pad id of the tokenizer),
    attention_mask, token_type_ids; (B,) int64 start/end positions when present. Side columns (example_id,
    offset_mapping) are left out; post-processing reads them from the features dataset in the same order.
    Always right padding: positions and offsets index the unpadded window, left padding would shift them."""

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = None):
        self.tokenizer, self.pad_to_multiple_of = tokenizer, pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        batch = self.tokenizer.pad([{k: r[k] for k in MODEL_KEYS if k in r} for r in rows], padding_side="right",
                                   pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        batch = dict(batch)
        for key in ("start_positions", "end_positions"):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.int64)
        return batch


# -- post-processing -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    text: str               # "" = no answer
    start: int              # character offset in the context; -1 for no answer
    score: float            # start + end logit of the span (the null score for no answer)
    null_score_diff: float  # min null score - best span score (inf with no valid span): v2's no-answer score
    nbest: list             # [{text, start, score, probability}], best first; v2 includes the null answer


def _window_spans(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence, n_best: int,
                  max_answer_length: int) -> list[tuple[float, int, int]]:
    """(score, start char, end char) of every valid pair among the n_best top starts x n_best top ends."""
    in_context = np.array([o is not None for o in offsets])
    starts = np.argsort(start_logits)[::-1][:n_best, None]  # (n, 1)
    ends = np.argsort(end_logits)[::-1][None, :n_best]      # (1, n)
    valid = in_context[starts] & in_context[ends] & (ends >= starts) & (ends - starts + 1 <= max_answer_length)
    scores = start_logits[starts] + end_logits[ends]         # (n, n)
    rows, cols = np.nonzero(valid)  # start-major, the order of run_qa's loops (it decides ties)
    return [(float(scores[r, c]), offsets[starts[r, 0]][0], offsets[ends[0, c]][1]) for r, c in zip(rows, cols)]


def best_answers(context: str, windows_logits: Iterable[tuple[Sequence[float], Sequence[float]]],
                 windows_offsets: Iterable[Sequence], n_best: int = 20, max_answer_length: int = 30,
                 version_2: bool = False, null_threshold: float = 0.0, null_index: int = 0) -> Answer:
    """One question's answer from its windows: (start (T_i,), end (T_i,)) logits and T'_i offsets each (None
    outside the context). Logits may be longer than the offsets (a padded batch): the padding is cut off.
    v2: no answer when the smallest window null score (CLS start + end, at null_index) beats the best span by
    more than null_threshold."""
    spans, null_score = [], float("inf")
    for (start_logits, end_logits), offsets in zip(windows_logits, windows_offsets):
        start_logits = np.asarray(start_logits, dtype=np.float64)[: len(offsets)]
        end_logits = np.asarray(end_logits, dtype=np.float64)[: len(offsets)]
        null_score = min(null_score, float(start_logits[null_index] + end_logits[null_index]))
        spans += _window_spans(start_logits, end_logits, offsets, n_best, max_answer_length)
    spans.sort(key=lambda span: -span[0])  # stable: equal scores keep window order
    best_of: dict[tuple[int, int], float] = {}
    for score, s, e in spans:  # overlapping windows find the same span: keep its best score once
        best_of.setdefault((s, e), score)
    nbest = [{"text": context[s:e], "start": s, "score": score}
             for (s, e), score in itertools.islice(best_of.items(), n_best)]
    best = nbest[0] if nbest else None
    diff = null_score - best["score"] if best else float("inf")
    if version_2:
        nbest = sorted(nbest + [{"text": "", "start": -1, "score": null_score}], key=lambda c: -c["score"])
    if nbest:
        scores = np.array([c["score"] for c in nbest])
        probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        nbest = [{**c, "probability": float(p)} for c, p in zip(nbest, probabilities)]
    if best is None or (version_2 and diff > null_threshold):
        return Answer("", -1, null_score, diff, nbest)
    return Answer(best["text"], best["start"], best["score"], diff, nbest)


def stream_answers(windows: Iterable[tuple], contexts: Mapping[str, str], **options) -> Iterator[tuple[str, Answer]]:
    """(example_id, Answer) per question from (example_id, start_logits, end_logits, offsets) windows in feature
    order; only one question's windows are held at a time. Evaluation must not shuffle: a question's windows have
    to come together, as prepare_validation_features makes them. `options` go to best_answers."""
    seen = set()
    for qid, group in itertools.groupby(windows, key=lambda w: w[0]):
        if qid in seen:
            raise ValueError(f"windows of question {qid!r} are not contiguous (were the features shuffled?)")
        seen.add(qid)
        group = list(group)
        yield qid, best_answers(contexts[qid], [(w[1], w[2]) for w in group], [w[3] for w in group], **options)


@dataclass(frozen=True)
class QAPredictions:
    predictions: dict             # id -> answer text ("" = no answer), in the examples' order
    nbest: dict                   # id -> n-best list
    null_score_diff: Optional[dict]  # v2: id -> null score - best span score (the metric's no_answer_probability)

    def metric_inputs(self, examples) -> tuple[list[dict], list[dict]]:
        """(predictions, references) for the squad / squad_v2 metric; give squad_v2 no_answer_threshold =
        the null_threshold used here, so it agrees with the predictions."""
        predictions = [{"id": qid, "prediction_text": text,
                        **({"no_answer_probability": self.null_score_diff[qid]} if self.null_score_diff else {})}
                       for qid, text in self.predictions.items()]
        return predictions, [{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"])]


def postprocess(examples, features, start_logits, end_logits, n_best: int = 20, max_answer_length: int = 30,
                version_2: bool = False, null_threshold: float = 0.0) -> QAPredictions:
    """Answers for every question of `examples` from the logits of `features` (row i of start_logits/end_logits,
    (T_i,) or padded, belongs to features row i). For evaluation in batches, call stream_answers instead."""
    contexts = dict(zip(examples["id"], examples["context"]))
    windows = zip(features["example_id"], start_logits, end_logits, features["offset_mapping"])
    answers = dict(stream_answers(windows, contexts, n_best=n_best, max_answer_length=max_answer_length,
                                  version_2=version_2, null_threshold=null_threshold))
    missing = [qid for qid in contexts if qid not in answers]
    if missing:
        raise ValueError(f"{len(missing)} question(s) have no features, e.g. {missing[0]!r}")
    return QAPredictions({q: answers[q].text for q in contexts}, {q: answers[q].nbest for q in contexts},
                         {q: answers[q].null_score_diff for q in contexts} if version_2 else None)
