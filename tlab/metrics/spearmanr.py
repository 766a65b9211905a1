"""Spearman rank correlation (GLUE STS-B): Pearson correlation of the ranks, tied values sharing their mean rank,
so it rewards getting the order right whatever the scale."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
from scipy.stats import spearmanr

_CITATION = """\
@article{2020SciPy-NMeth,
  author={Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and others},
  title={{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  journal={Nature Methods},
  year={2020},
  volume={17},
  pages={261--272},
  doi={10.1038/s41592-019-0686-2}
}
"""


class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Spearman rank correlation between predicted and reference scores, in [-1, 1]; ties get "
                        "the mean of the ranks they span. NaN when either side is constant.",
            citation=_CITATION,
            inputs_description="predictions, references: lists of floats; return_pvalue=True adds the two-sided "
                               "p-value under 'spearmanr_pvalue'.",
            # float64: float32 would turn nearly equal scores into ties and change the ranks.
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = spearmanr(predictions, references)
        scores = {"spearmanr": float(result[0])}
        if return_pvalue:
            scores["spearmanr_pvalue"] = float(result[1])
        return scores
