"""tlab's offline metric modules against values worked out by hand."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tlab import metrics


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails loudly, so a metric that quietly reached the Hub cannot pass."""
    def refuse(*args, **kwargs):
        raise AssertionError("a metric tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def squad_ref(qid: str, *answers: str) -> dict:
    return {"id": qid, "answers": {"text": list(answers), "answer_start": [0] * len(answers)}}


def squad_pred(qid: str, text: str) -> dict:
    return {"id": qid, "prediction_text": text}


# --- classification ------------------------------------------------------------------------------------------

def test_accuracy_and_binary_f1_by_hand():
    predictions = [1, 1, 0, 1, 0, 0, 1, 0]
    references = [1, 0, 0, 1, 1, 0, 1, 0]
    # TP = 3 (0, 3, 6), FP = 1 (1), FN = 1 (4), TN = 3 (2, 5, 7)
    # accuracy = 6 / 8; precision = recall = 3 / 4, so F1 = 0.75
    scores = metrics.compute(["accuracy", "f1"], predictions, references)
    assert scores == pytest.approx({"accuracy": 0.75, "f1": 0.75})
    assert all(type(v) is float for v in scores.values())


def test_f1_of_the_positive_class_only():
    # TP = 1, FP = 2, FN = 0: precision 1/3, recall 1, F1 = 2 * (1/3) / (4/3) = 0.5
    assert metrics.compute(["f1"], [1, 1, 1, 0], [1, 0, 0, 0])["f1"] == pytest.approx(0.5)
    # Same data scored for label 0: TP = 1 (3), FP = 0, FN = 2 (1, 2): precision 1, recall 1/3, F1 = 0.5
    assert metrics.compute(["f1"], [1, 1, 1, 0], [1, 0, 0, 0], pos_label=0)["f1"] == pytest.approx(0.5)


def test_f1_macro_average_by_hand():
    predictions = [0, 1, 2, 2]
    references = [0, 1, 1, 2]
    # class 0: TP 1, FP 0, FN 0 -> F1 1
    # class 1: TP 1, FP 0, FN 1 -> P 1,   R 1/2 -> F1 2/3
    # class 2: TP 1, FP 1, FN 0 -> P 1/2, R 1   -> F1 2/3
    # macro = (1 + 2/3 + 2/3) / 3 = 7/9; micro = accuracy = 3/4
    assert metrics.compute(["f1"], predictions, references, average="macro")["f1"] == pytest.approx(7 / 9)
    assert metrics.compute(["f1"], predictions, references, f1={"average": "micro"})["f1"] == pytest.approx(0.75)
    per_class = metrics.load("f1").compute(predictions=predictions, references=references, average=None)["f1"]
    assert per_class == pytest.approx([1, 2 / 3, 2 / 3])


def test_matthews_correlation_by_hand():
    predictions = [1, 1, 1, 0, 0, 1, 0, 0, 1, 1]
    references = [1, 1, 0, 0, 0, 1, 1, 0, 1, 1]
    # TP = 5 (0, 1, 5, 8, 9), TN = 3 (3, 4, 7), FP = 1 (2), FN = 1 (6)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (15 - 1) / sqrt(6*6*4*4) = 14/24
    assert metrics.compute(["matthews_correlation"], predictions, references) == pytest.approx(
        {"matthews_correlation": 14 / 24})
    # A constant predictor has no correlation, whatever its accuracy (CoLA's reason for using MCC).
    assert metrics.compute(["matthews_correlation"], [1] * 6, [1, 1, 1, 1, 1, 0])["matthews_correlation"] == 0.0
    # Every prediction flipped: perfectly anti-correlated.
    assert metrics.compute(["matthews_correlation"], [0, 1, 1], [1, 0, 0])["matthews_correlation"] == pytest.approx(-1)


# --- regression ----------------------------------------------------------------------------------------------

def test_pearson_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 4.0, 5.0, 4.0, 5.0]
    # means 3 and 4; deviations x: -2 -1 0 1 2, y: -2 0 1 0 1
    # sum dx*dy = 4 + 0 + 0 + 0 + 2 = 6; sum dx^2 = 10; sum dy^2 = 4 + 0 + 1 + 0 + 1 = 6; r = 6 / sqrt(60)
    assert metrics.compute(["pearson"], x, y) == pytest.approx({"pearson": 6 / math.sqrt(60)})
    # "pearson" (the result key tasks ask for) and "pearsonr" (the module) are the same metric.
    assert metrics.compute(["pearsonr"], x, y)["pearson"] == pytest.approx(6 / math.sqrt(60))
    # Linear in either argument: an affine map of the predictions changes nothing.
    assert metrics.compute(["pearson"], [3 * v - 7 for v in x], y)["pearson"] == pytest.approx(6 / math.sqrt(60))


def test_spearman_with_ties_by_hand():
    x = [10.0, 20.0, 30.0, 40.0]
    y = [1.0, 3.0, 3.0, 2.0]
    # ranks x: 1 2 3 4; ranks y (ties share the mean rank): 1 3.5 3.5 2
    # Pearson of the ranks: deviations -1.5 -0.5 0.5 1.5 and -1.5 1 1 -0.5
    # cov = 2.25 - 0.5 + 0.5 - 0.75 = 1.5; sx^2 = 5; sy^2 = 2.25 + 1 + 1 + 0.25 = 4.5
    expected = 1.5 / math.sqrt(5 * 4.5)
    assert metrics.compute(["spearmanr"], x, y)["spearmanr"] == pytest.approx(expected)
    # Only the order counts: a monotone but non-linear map of the predictions is still a perfect 1.
    assert metrics.compute(["spearmanr"], [v ** 3 for v in x], x)["spearmanr"] == pytest.approx(1.0)


def test_the_stsb_pair_together():
    scores = metrics.compute(["pearson", "spearmanr"], [0.5, 1.5, 2.5], [1.0, 2.0, 3.0])
    assert scores == pytest.approx({"pearson": 1.0, "spearmanr": 1.0})


# --- SQuAD ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, answer", [
    ("The  Cat!", "cat"),                 # case, article, punctuation, double space
    ("an apple.", "Apple"),
    ("  the   end , of it ", "end of it"),
    ("A Tale of Two Cities", "tale of two cities"),
])
def test_squad_normalisation_gives_exact_match(prediction, answer):
    scores = metrics.load("squad").compute(predictions=[squad_pred("q", prediction)],
                                           references=[squad_ref("q", answer)])
    assert scores == {"exact_match": 100.0, "f1": 100.0}


@pytest.mark.parametrize("prediction, answer", [
    ("theatre", "atre"),        # articles only as whole words: "the" inside "theatre" stays
    ("the-end", "end"),         # punctuation goes first, so "the-end" is the one word "theend"
    ("cats", "cat"),            # no stemming
])
def test_squad_normalisation_leaves_words_alone(prediction, answer):
    scores = metrics.load("squad").compute(predictions=[squad_pred("q", prediction)],
                                           references=[squad_ref("q", answer)])
    assert scores == {"exact_match": 0.0, "f1": 0.0}


def test_squad_by_hand():
    predictions = [
        squad_pred("q1", "Denver Broncos"),
        squad_pred("q2", "the big red dog dog"),
        squad_pred("q3", "in 1850"),
        squad_pred("unknown", "ignored: no reference has this id"),
    ]
    references = [
        squad_ref("q1", "Broncos", "Denver Broncos"),  # the second answer matches exactly
        squad_ref("q2", "red dog", "big cat"),
        squad_ref("q3", "1850s"),
        squad_ref("q4", "never answered"),
    ]
    # q1: best of EM(0, 1) = 1, best of F1(2/3, 1) = 1
    # q2: prediction tokens big red dog dog (the article goes); vs "red dog": common red, dog (dog counted once) = 2,
    #     P = 2/4, R = 2/2, F1 = 2/3; vs "big cat": common big = 1, P = 1/4, R = 1/2, F1 = 1/3; best 2/3, EM 0
    # q3: tokens in, 1850 vs 1850s: nothing in common, F1 0, EM 0
    # q4: no prediction, scores 0 but still counts in the denominator
    # EM = 100 * 1/4 = 25; F1 = 100 * (1 + 2/3) / 4 = 41.67
    scores = metrics.load("squad").compute(predictions=predictions, references=references)
    assert scores == pytest.approx({"exact_match": 25.0, "f1": 100 * (1 + 2 / 3) / 4})


def test_squad_rejects_questions_without_answers():
    with pytest.raises(ValueError, match="squad_v2"):
        metrics.load("squad").compute(predictions=[squad_pred("q", "x")], references=[squad_ref("q")])


# --- sacrebleu -----------------------------------------------------------------------------------------------

def test_sacrebleu_identical_is_100():
    sentences = ["The cat sat on the mat.", "It rained all day, and nobody went out."]
    scores = metrics.load("sacrebleu").compute(predictions=sentences, references=sentences)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_sacrebleu_partial_by_hand_and_against_sacrebleu():
    import sacrebleu

    hypothesis, reference = "the cat sat on the mat", "the cat sat on a mat"
    # n-gram precisions (clipped): 1-grams 5/6 (the second "the" has no partner), 2-grams 3/5 (the cat, cat sat,
    # sat on), 3-grams 2/4, 4-grams 1/3; equal lengths so BP = 1
    # BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * (1/12) ** (1/4) = 53.73
    scores = metrics.load("sacrebleu").compute(predictions=[hypothesis], references=[reference])
    assert scores["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu([hypothesis], [[reference]]).score)


def test_sacrebleu_multiple_references_match_sacrebleu_streams():
    import sacrebleu

    predictions = ["the cat sat on the mat", "there is a dog in the garden", "it is raining"]
    references = [["the cat sat on a mat", "a cat was on the mat"],
                  ["a dog is in the garden", "there is a dog outside"],
                  ["it rains", "it is raining today"]]
    streams = [[refs[i] for refs in references] for i in range(2)]
    expected = sacrebleu.corpus_bleu(predictions, streams)
    scores = metrics.load("sacrebleu").compute(predictions=predictions, references=references)
    assert scores["bleu"] == pytest.approx(expected.score)
    assert scores["signature"].startswith("nrefs:2|")
    lowered = metrics.load("sacrebleu").compute(predictions=["The Cat"], references=["the cat"], lowercase=True)
    assert lowered["bleu"] == pytest.approx(sacrebleu.corpus_bleu(["The Cat"], [["the cat"]], lowercase=True).score)


def test_sacrebleu_needs_the_same_number_of_references():
    with pytest.raises(ValueError, match="same number of references"):
        metrics.load("sacrebleu").compute(predictions=["a b", "c d"], references=[["a b"], ["c d", "c e"]])


# --- the module API ------------------------------------------------------------------------------------------

def test_load_is_offline_with_batches(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert set(metrics.LOCAL_METRICS) == {"accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr",
                                          "squad", "squad_v2", "sacrebleu", "chrf", "seqeval", "multi_label", "rouge"}
    for name in metrics.LOCAL_METRICS:
        assert metrics.load(name).name == name
    accuracy = metrics.load("accuracy")
    accuracy.add_batch(predictions=[1, 0], references=[1, 1])
    accuracy.add_batch(predictions=[0, 0], references=[0, 0])
    assert accuracy.compute() == {"accuracy": 0.75}
    # Each load is a fresh module: nothing added above leaks into the next caller's examples.
    assert metrics.load("accuracy").compute(predictions=[1], references=[1]) == {"accuracy": 1.0}

    squad = metrics.load("squad")
    squad.add_batch(predictions=[squad_pred("a", "The Cat")], references=[squad_ref("a", "cat")])
    squad.add(prediction=squad_pred("b", "dog"), reference=squad_ref("b", "cat", "bird"))
    assert squad.compute() == {"exact_match": 50.0, "f1": 50.0}

    bleu = metrics.load("sacrebleu")
    bleu.add_batch(predictions=["the cat sat on the mat"], references=[["the cat sat on a mat"]])
    bleu.add_batch(predictions=["it is raining"], references=[["it is raining"]])
    import sacrebleu
    expected = sacrebleu.corpus_bleu(["the cat sat on the mat", "it is raining"],
                                     [["the cat sat on a mat", "it is raining"]]).score
    assert bleu.compute()["bleu"] == pytest.approx(expected)


def test_load_in_a_fresh_offline_process(tmp_path):
    """A new interpreter with empty caches and the Hub switched off still loads every metric: nothing is
    fetched, nothing was left behind by an earlier online run."""
    script = textwrap.dedent("""
        import socket
        def refuse(*a, **k):
            raise AssertionError("network")
        socket.socket.connect = refuse
        from tlab import metrics
        for name in metrics.LOCAL_METRICS:
            metrics.load(name)
        print(metrics.compute(["accuracy", "pearson"], [1, 0, 1], [1, 1, 1]))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_EVALUATE_CACHE": str(tmp_path / "evaluate")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # Pearson against a constant is undefined: NaN, and no crash.
    assert done.stdout.strip() == "{'accuracy': 0.6666666666666666, 'pearson': nan}"


def test_compute_keeps_numbers_and_routes_keyword_arguments():
    # accuracy takes no `average`, so only f1 gets it; the string signature of sacrebleu is left out.
    scores = metrics.compute(["accuracy", "f1"], [0, 1, 2, 2], [0, 1, 1, 2], average="macro")
    assert scores == pytest.approx({"accuracy": 0.75, "f1": 7 / 9})
    assert metrics.compute(["sacrebleu"], ["a b c d"], ["a b c d"]) == pytest.approx({"bleu": 100.0})
    with pytest.raises(TypeError, match="avarage"):
        metrics.compute(["accuracy", "f1"], [0, 1], [0, 1], avarage="macro")


def test_other_names_go_to_the_hub(monkeypatch):
    import evaluate

    asked = []
    monkeypatch.setattr(evaluate, "load", lambda name, **kw: asked.append(name) or name)
    assert metrics.load("bertscore") == "bertscore"
    metrics.load("spearmanr")
    assert asked[0] == "bertscore"
    assert asked[1].endswith(os.path.join("tlab", "metrics", "spearmanr.py")) and os.path.isabs(asked[1])


def test_importing_tlab_metrics_does_not_import_evaluate():
    done = subprocess.run([sys.executable, "-c", "import sys, tlab.metrics; print('evaluate' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
