"""tlab's offline metric modules against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from tlab import metrics


def test_accuracy_and_binary_f1_by_hand():
    predictions = [1, 1, 0, 1, 0, 0, 1, 0]
    references = [1, 0, 0, 1, 1, 0, 1, 0]
    # TP = 3 (0, 3, 6), FP = 1 (1), FN = 1 (4), TN = 3 (2, 5, 7)
    # accuracy = 6 / 8; precision = recall = 3 / 4, so F1 = 0.75
    scores = metrics.compute(["accuracy", "f1"], predictions, references)
    assert scores == pytest.approx({"accuracy": 0.75, "f1": 0.75})


def test_f1_of_the_positive_class_only():
    # TP = 1, FP = 2, FN = 0: precision 1/3, recall 1, F1 = 2 * (1/3) / (4/3) = 0.5
    assert metrics.compute(["f1"], [1, 1, 1, 0], [1, 0, 0, 0])["f1"] == pytest.approx(0.5)


def test_matthews_correlation_by_hand():
    predictions = [1, 1, 1, 0, 0, 1, 0, 0, 1, 1]
    references = [1, 1, 0, 0, 0, 1, 1, 0, 1, 1]
    # TP = 5, TN = 3, FP = 1, FN = 1
    tp, tn, fp, fn = 5, 3, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 14 / sqrt(6*6*4*4) = 14/24
    assert expected == pytest.approx(14 / 24)
    assert metrics.compute(["matthews_correlation"], predictions, references)["matthews_correlation"] == pytest.approx(expected)
    # A constant predictor has no correlation, whatever its accuracy (CoLA's reason for using MCC).
    assert metrics.compute(["matthews_correlation"], [1] * 6, [1, 1, 1, 1, 1, 0])["matthews_correlation"] == 0.0


def test_pearson_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 4.0, 5.0, 4.0, 5.0]
    # means 3 and 4; deviations x: -2 -1 0 1 2, y: -2 0 1 0 1
    # cov = 4 + 0 + 0 + 0 + 2 = 6; sx^2 = 10; sy^2 = 4 + 0 + 1 + 0 + 1 = 6; r = 6 / sqrt(60)
    assert metrics.compute(["pearson"], x, y)["pearson"] == pytest.approx(6 / math.sqrt(60))


def test_spearman_with_ties_by_hand():
    x = [10.0, 20.0, 30.0, 40.0]
    y = [1.0, 3.0, 3.0, 2.0]
    # ranks x: 1 2 3 4; ranks y (ties share the mean rank): 1 3.5 3.5 2
    # Pearson of the ranks: deviations -1.5 -0.5 0.5 1.5 and -1.5 1 1 -0.5
    # cov = 2.25 - 0.5 + 0.5 - 0.75 = 1.5; sx^2 = 5; sy^2 = 2.25 + 1 + 1 + 0.25 = 4.5
    expected = 1.5 / math.sqrt(5 * 4.5)
    assert metrics.compute(["spearmanr"], x, y)["spearmanr"] == pytest.approx(expected)


def test_evaluate_api_works_offline_with_batches(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    accuracy = metrics.load("accuracy")
    accuracy.add_batch(predictions=[1, 0], references=[1, 1])
    accuracy.add_batch(predictions=[0, 0], references=[0, 0])
    assert accuracy.compute() == {"accuracy": 0.75}
    assert set(metrics.LOCAL_METRICS) >= {"accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr"}
