"""Pearson correlation (GLUE STS-B): linear agreement of predicted and reference scores."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
from scipy.stats import pearsonr

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


class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Pearson correlation coefficient between predicted and reference scores, in [-1, 1]: "
                        "cov(x, y) / (std(x) * std(y)). NaN when either side is constant.",
            citation=_CITATION,
            inputs_description="predictions, references: lists of floats (at least 2); return_pvalue=True adds "
                               "the two-sided p-value under 'p-value'.",
            # float64, not evaluate's usual float32: rounding the inputs would move r in the 7th digit.
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = pearsonr(predictions, references)
        scores = {"pearson": float(result[0])}
        if return_pvalue:
            scores["p-value"] = float(result[1])
        return scores
