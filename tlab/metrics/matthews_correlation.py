"""Matthews correlation coefficient (GLUE CoLA): unlike accuracy it stays near 0 for a predictor that ignores
its input, however unbalanced the classes are."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_CITATION = """\
@article{matthews1975comparison,
  title={Comparison of the predicted and observed secondary structure of T4 phage lysozyme},
  author={Matthews, Brian W.},
  journal={Biochimica et Biophysica Acta (BBA) - Protein Structure},
  volume={405},
  number={2},
  pages={442--451},
  year={1975}
}
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Matthews correlation coefficient between predicted and reference labels, in [-1, 1]: "
                        "(TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) for two classes, its multiclass "
                        "generalisation otherwise; 0 when a denominator factor is 0.",
            citation=_CITATION,
            inputs_description="predictions, references: lists of class indices; sample_weight: optional "
                               "per-example weights.",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"],
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}
