"""Accuracy: share of predictions equal to the reference label (GLUE SST-2, QNLI, RTE, WNLI, MNLI)."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
from sklearn.metrics import accuracy_score

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy: the share of predictions equal to the reference label, in [0, 1].",
            citation=_CITATION,
            inputs_description="predictions, references: lists of class indices; normalize=False counts instead; "
                               "sample_weight: optional per-example weights.",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize,
                                                 sample_weight=sample_weight))}
