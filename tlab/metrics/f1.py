"""F1: harmonic mean of precision and recall. Binary F1 of label 1 by default, as GLUE reports for MRPC and QQP."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

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


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 = 2 * precision * recall / (precision + recall), in [0, 1]. With average='binary' "
                        "(the default) it is the F1 of pos_label only; 'macro', 'micro' and 'weighted' combine "
                        "the per-class scores as in scikit-learn.",
            citation=_CITATION,
            inputs_description="predictions, references: lists of class indices; labels, pos_label (default 1), "
                               "average ('binary', 'micro', 'macro', 'weighted'), sample_weight as in "
                               "sklearn.metrics.f1_score.",
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        score = f1_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight)
        # average=None gives one score per class: a single float would hide that, so it stays a list.
        return {"f1": np.asarray(score).tolist() if np.ndim(score) else float(score)}
