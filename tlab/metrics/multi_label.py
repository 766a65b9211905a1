"""Multi-label classification: micro- and macro-averaged F1 and subset accuracy of label sets, each example a
multi-hot row (1 = the label is in its set), as scikit-learn scores label-indicator arrays.

Per label, F1 = 2 TP / (2 TP + FP + FN). micro_f1 pools the counts of every label (frequent labels weigh more);
macro_f1 is the unweighted mean over the labels that occur in the references or the predictions (as tlab's
single-label macro_f1: a label neither present nor predicted anywhere is not scored); subset_accuracy is the share
of examples whose whole set is right. With no label anywhere, nothing was missed or claimed: both F1 are 1."""

# evaluate scans these lines to check dependencies and misreads `import a, b`: keep one import a line.
import datasets
import evaluate
import numpy as np

_CITATION = """\
@article{tsoumakas2007multi,
  title={Multi-label classification: An overview},
  author={Tsoumakas, Grigorios and Katakis, Ioannis},
  journal={International Journal of Data Warehousing and Mining},
  volume={3},
  number={3},
  pages={1--13},
  year={2007}
}
"""


class MultiLabel(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="micro_f1, macro_f1 (over the labels present in references or predictions) and "
                        "subset_accuracy (exact match of the label set) of multi-label predictions, in [0, 1].",
            citation=_CITATION,
            inputs_description="predictions, references: one multi-hot list per example (0/1 per label, all of "
                               "one length).",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int32")),
                                        "references": datasets.Sequence(datasets.Value("int32"))}),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html#multilabel-ranking-metrics"],
        )

    def _compute(self, predictions, references):
        pred = np.asarray(predictions, dtype=bool).reshape(len(predictions), -1)  # (N, labels)
        ref = np.asarray(references, dtype=bool).reshape(len(references), -1)
        if pred.shape != ref.shape:
            raise ValueError(f"predictions {pred.shape} and references {ref.shape} differ in shape")
        tp = (pred & ref).sum(0)
        wrong = (pred & ~ref).sum(0) + (~pred & ref).sum(0)  # FP + FN per label
        scored = 2 * tp + wrong > 0
        micro = 2 * tp.sum() / (2 * tp.sum() + wrong.sum()) if scored.any() else 1.0
        macro = float(np.mean(2 * tp[scored] / (2 * tp[scored] + wrong[scored]))) if scored.any() else 1.0
        return {"micro_f1": float(micro), "macro_f1": macro,
                "subset_accuracy": float((pred == ref).all(1).mean()) if len(pred) else 0.0}
