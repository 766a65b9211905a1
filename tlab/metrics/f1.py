"""F1 of the positive class (GLUE MRPC and QQP report binary F1 of label 1)."""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score: harmonic mean of precision and recall (binary: of pos_label).",
            citation="",
            inputs_description="predictions, references: lists of class indices; average, pos_label as in scikit-learn",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        return {"f1": float(f1_score(references, predictions, average=average, pos_label=pos_label))}
