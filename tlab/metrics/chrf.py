"""Corpus chrF (character n-gram F-score, Popović 2015) from sacrebleu, with its signature: less harsh than BLEU
on morphologically rich targets such as German, and informative where BLEU is near zero."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
from sacrebleu.metrics import CHRF

_CITATION = """\
@inproceedings{popovic-2015-chrf,
  title={chr{F}: character n-gram {F}-score for automatic {MT} evaluation},
  author={Popovi{\\'c}, Maja},
  booktitle={Proceedings of the Tenth Workshop on Statistical Machine Translation},
  year={2015},
  pages={392--395},
  doi={10.18653/v1/W15-3049}
}
"""


class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level chrF in [0, 100] from sacrebleu (chrF2 by default; word_order=2 gives chrF++), "
                        "with the sacrebleu signature string.",
            citation=_CITATION,
            inputs_description="predictions: list of detokenized strings; references: list of strings (one per "
                               "prediction) or list of lists of strings. char_order, word_order, beta, lowercase, "
                               "whitespace as in sacrebleu.metrics.CHRF.",
            features=[
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/W15-3049"],
        )

    def _compute(self, predictions, references, char_order=6, word_order=0, beta=2, lowercase=False, whitespace=False):
        references = [[r] if isinstance(r, str) else list(r) for r in references]
        per_prediction = {len(r) for r in references}
        if len(per_prediction) > 1:
            raise ValueError(f"chrF needs the same number of references for every prediction, got {sorted(per_prediction)}")
        streams = [[refs[i] for refs in references] for i in range(per_prediction.pop() if references else 0)]
        chrf = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase, whitespace=whitespace)
        score = chrf.corpus_score(predictions, streams)
        return {"chrf": float(score.score), "signature": str(chrf.get_signature())}
