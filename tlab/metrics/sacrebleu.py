"""Corpus BLEU with sacrebleu: it tokenizes detokenized text itself, so scores are comparable across papers, and
its signature records the settings that produced them."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
from sacrebleu.metrics import BLEU

_CITATION = """\
@inproceedings{post-2018-call,
  title={A Call for Clarity in Reporting {BLEU} Scores},
  author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation: Research Papers},
  year={2018},
  pages={186--191},
  doi={10.18653/v1/W18-6319}
}
@inproceedings{papineni-etal-2002-bleu,
  title={{B}leu: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics},
  year={2002},
  pages={311--318},
  doi={10.3115/1073083.1073135}
}
"""


class Sacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level BLEU in [0, 100] from sacrebleu (not a mean of sentence scores), with the "
                        "sacrebleu signature string.",
            citation=_CITATION,
            inputs_description="predictions: list of detokenized strings; references: list of strings (one per "
                               "prediction) or list of lists of strings (the same number for every prediction). "
                               "tokenize (default '13a'), lowercase, smooth_method, smooth_value, force, "
                               "use_effective_order as in sacrebleu.corpus_bleu.",
            # Two schemas: evaluate picks the one the first batch matches, so a single reference needs no wrapping.
            features=[
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, tokenize=None, lowercase=False, smooth_method="exp",
                 smooth_value=None, force=False, use_effective_order=False):
        references = [[r] if isinstance(r, str) else list(r) for r in references]
        per_prediction = {len(r) for r in references}
        if len(per_prediction) > 1:
            raise ValueError(f"sacrebleu needs the same number of references for every prediction, got "
                             f"{sorted(per_prediction)}")
        # sacrebleu takes reference streams (the i-th reference of every sentence), not per-sentence lists.
        streams = [[refs[i] for refs in references] for i in range(per_prediction.pop() if references else 0)]
        bleu = BLEU(lowercase=lowercase, force=force, tokenize=tokenize, smooth_method=smooth_method,
                    smooth_value=smooth_value, effective_order=use_effective_order)
        score = bleu.corpus_score(predictions, streams)
        return {"bleu": float(score.score), "signature": str(bleu.get_signature())}
