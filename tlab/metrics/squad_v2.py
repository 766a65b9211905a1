"""SQuAD v2.0 exact match and F1 with the unanswerable-question breakdown and best no-answer thresholds, computed
as the official evaluate-v2.0.py script does."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
# `from .squad import` is copied next to this file when evaluate loads it by path, so both share one normalisation.
from collections import Counter

import datasets
import evaluate

from .squad import exact_match_score
from .squad import normalize_answer

_CITATION = """\
@inproceedings{rajpurkar-etal-2018-know,
  title={Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}},
  author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy},
  booktitle={Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics},
  year={2018},
  pages={784--789},
  doi={10.18653/v1/P18-2124}
}
"""


def f1_score(prediction: str, ground_truth: str) -> float:
    """v1.1's token F1, except that an empty side (a no-answer) scores 1 against another empty side, else 0."""
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    if not prediction_tokens or not truth_tokens:
        return float(prediction_tokens == truth_tokens)
    num_same = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def _mean(scores: dict, ids) -> float:
    ids = list(ids)
    return 100.0 * sum(scores[i] for i in ids) / len(ids)


def find_best_thresh(predicted: dict, scores: dict, na_probs: dict, has_answer: dict) -> tuple[float, float]:
    """The official sweep: start with every question answered "no answer" (all unanswerable ones right), then
    admit questions in increasing no-answer probability; the threshold is the probability where the running
    score peaked (the first such point on ties). Returns (best score in [0, 100], threshold)."""
    current = best = sum(1 for has in has_answer.values() if not has)
    best_thresh = 0.0
    # sorted() is stable: equal probabilities keep the predictions' order, as the script's dict order does.
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predicted[qid]:
            current -= 1  # an unanswerable question now gets a span: it was right under "no answer"
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v2.0: exact match and bag-of-tokens F1 as in v1.1, where an unanswerable question "
                        "is right only when the prediction is empty. Reports totals, HasAns_/NoAns_ breakdowns, "
                        "and best_exact/best_f1 with the no-answer thresholds that reach them (official "
                        "evaluate-v2.0.py with --na-prob-file). All scores in [0, 100].",
            citation=_CITATION,
            inputs_description="predictions: [{'id': str, 'prediction_text': str ('' = no answer), "
                               "'no_answer_probability': float}]; references: [{'id': str, 'answers': {'text': "
                               "[str, ...], 'answer_start': [int, ...]}}] with empty lists for an unanswerable "
                               "question. no_answer_probability may be any score where higher means 'no answer' "
                               "(e.g. the null-score minus best-span-score difference); best_*_thresh are in the "
                               "same units. no_answer_threshold (official --na-prob-thresh, default 1.0): a question "
                               "whose no_answer_probability exceeds it is scored as answered 'no answer'.",
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string"),
                                "no_answer_probability": datasets.Value("float64")},
                "references": {
                    "id": datasets.Value("string"),
                    "answers": datasets.Sequence({"text": datasets.Value("string"),
                                                  "answer_start": datasets.Value("int32")}),
                },
            }),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold: float = 1.0):
        if not references:
            raise ValueError("squad_v2 needs at least one reference")
        predicted = {p["id"]: p["prediction_text"] for p in predictions}
        na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
        has_answer = {r["id"]: bool(r["answers"]["text"]) for r in references}
        missing = [qid for qid in has_answer if qid not in predicted]
        if missing:
            # The official script crashes with a KeyError here; say which questions instead.
            raise ValueError(f"squad_v2: {len(missing)} question(s) have no prediction, e.g. {missing[0]!r}")
        exact, f1 = {}, {}
        for ref in references:
            # An answer that normalises to nothing ("the") counts as no answer, as in the official script.
            truths = [t for t in ref["answers"]["text"] if normalize_answer(t)] or [""]
            prediction = predicted[ref["id"]]
            exact[ref["id"]] = max(exact_match_score(prediction, t) for t in truths)
            f1[ref["id"]] = max(f1_score(prediction, t) for t in truths)

        def thresholded(raw: dict) -> dict:
            return {qid: float(not has_answer[qid]) if na_probs[qid] > no_answer_threshold else s
                    for qid, s in raw.items()}

        exact_t, f1_t = thresholded(exact), thresholded(f1)
        result = {"exact": _mean(exact_t, exact_t), "f1": _mean(f1_t, f1_t), "total": len(exact_t)}
        for prefix, wanted in (("HasAns", True), ("NoAns", False)):
            ids = [qid for qid, has in has_answer.items() if has == wanted]
            if ids:  # as in the official script, a breakdown with no questions is left out, not reported as 0
                result.update({f"{prefix}_exact": _mean(exact_t, ids), f"{prefix}_f1": _mean(f1_t, ids),
                               f"{prefix}_total": len(ids)})
        result["best_exact"], result["best_exact_thresh"] = find_best_thresh(predicted, exact, na_probs, has_answer)
        result["best_f1"], result["best_f1_thresh"] = find_best_thresh(predicted, f1, na_probs, has_answer)
        return result
