"""SQuAD v1.1 exact match and token F1, computed as the official evaluate-v1.1.py script does."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import re
import string
from collections import Counter

import datasets
import evaluate

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
  title={{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing},
  year={2016},
  pages={2383--2392},
  doi={10.18653/v1/D16-1264}
}
"""

_PUNCTUATION = frozenset(string.punctuation)
# Word boundaries keep "a" inside "cat" or "then": only whole-word articles go.
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop articles, collapse whitespace: the official order, which matters
    ("the-end" loses its hyphen before "the" can be matched as a word)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    # A multiset intersection: a token repeated in the prediction only counts as often as the reference has it.
    num_same = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v1.1: exact match and bag-of-tokens F1 between the predicted answer and each "
                        "reference answer after normalisation (lowercase, no punctuation, no articles a/an/the, "
                        "single spaces). Each question scores its best reference; both are averaged over the "
                        "references and reported in [0, 100].",
            citation=_CITATION,
            inputs_description="predictions: [{'id': str, 'prediction_text': str}]; references: "
                               "[{'id': str, 'answers': {'text': [str, ...], 'answer_start': [int, ...]}}]. "
                               "A reference with no prediction of its id scores 0, as in the official script.",
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                "references": {
                    "id": datasets.Value("string"),
                    "answers": datasets.Sequence({"text": datasets.Value("string"),
                                                  "answer_start": datasets.Value("int32")}),
                },
            }),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        predicted = {p["id"]: p["prediction_text"] for p in predictions}
        if not references:
            raise ValueError("squad needs at least one reference")
        exact_match = f1 = 0.0
        # The official script walks the references, not the predictions: a missing answer costs its question.
        for ref in references:
            if ref["id"] not in predicted:
                continue
            truths = ref["answers"]["text"]
            if not truths:
                raise ValueError(f"question {ref['id']!r} has no reference answer; SQuAD v1.1 always has one "
                                 "(unanswerable questions need the squad_v2 metric)")
            prediction = predicted[ref["id"]]
            exact_match += max(exact_match_score(prediction, t) for t in truths)
            f1 += max(f1_score(prediction, t) for t in truths)
        return {"exact_match": 100.0 * exact_match / len(references), "f1": 100.0 * f1 / len(references)}
