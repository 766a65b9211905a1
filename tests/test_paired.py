"""The statistics of `tlab eval --baseline` (tlab/paired.py) and the per-example outcomes they read
(tlab/outcomes.py): the paired bootstrap's interval on synthetic cases whose difference is known, McNemar's exact
test against scipy's binomial test, every kind of record recomputing the metric tlab reports, a resample weighted
by counts scoring what the resampled lists score, sacreBLEU's own resamples, and the comparison's verdicts and
refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, pearsonr, spearmanr

from tlab import metrics, outcomes, paired
from tlab.errors import TlabError


def labels_record(pred, ref, names=("accuracy",), inputs=None) -> dict:
    n = len(ref)
    return outcomes.record("labels", list(range(n)), inputs or [f"text {i}" for i in range(n)], list(pred), list(ref),
                           list(names))


def drawn(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One resample as counts (1, n) and as the indices it stands for."""
    counts = next(paired.resample_counts(n, 1, seed))
    return counts, np.repeat(np.arange(n), counts[0].astype(int))


# -- the paired bootstrap ---------------------------------------------------------------------------------------
def correct_pairs(rng, n: int, p_base: float, p_new: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of two models whose accuracies differ by p_new - p_base in the population; the
    new one is right wherever the baseline is and on a share of the rest (a paired, correlated design)."""
    base = rng.random(n) < p_base
    gain = rng.random(n) < (p_new - p_base) / (1 - p_base)
    return base, base | gain


def accuracy_of(correct: np.ndarray) -> paired.Metric:
    return lambda counts: counts @ correct.astype(float) / counts.sum(1)


def test_the_interval_holds_a_known_difference_and_excludes_zero_when_it_is_large():
    rng = np.random.default_rng(0)
    base, new = correct_pairs(rng, 2000, 0.70, 0.75)  # a true difference of +0.05
    found = paired.paired_bootstrap(accuracy_of(base), accuracy_of(new), 2000)
    assert found.low < 0.05 < found.high
    assert found.low > 0 and found.p_value < 0.01  # 0.05 on 2,000 examples is far from noise
    assert found.delta == pytest.approx(new.mean() - base.mean())
    assert found.high - found.low < 0.04  # a paired design: tighter than two independent accuracies' intervals

    small = paired.paired_bootstrap(accuracy_of(base[:100]), accuracy_of(base[:100] | (rng.random(100) < 0.01)), 100)
    assert small.low <= 0 <= small.high and small.p_value > 0.05  # a point or two on 100 examples: noise


def test_the_95_percent_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        base, new = correct_pairs(rng, 400, 0.6, 0.65)
        found = paired.paired_bootstrap(accuracy_of(base), accuracy_of(new), 400, resamples=400, seed=trial)
        covered += found.low <= 0.05 <= found.high
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_a_model_against_itself_differs_by_nothing():
    correct = np.random.default_rng(2).random(300) < 0.8
    found = paired.paired_bootstrap(accuracy_of(correct), accuracy_of(correct), 300)
    assert (found.delta, found.low, found.high, found.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_resamples_are_sacrebleus_draws_and_a_fixed_seed_repeats_them():
    rows = np.concatenate(list(paired.resample_counts(37, 50, seed=12345)))
    draws = np.random.default_rng(12345).choice(37, size=(50, 37))
    expected = np.stack([np.bincount(d, minlength=37) for d in draws])
    assert (rows == expected).all() and (rows.sum(1) == 37).all()
    again = np.concatenate(list(paired.resample_counts(37, 50, seed=12345)))
    assert (rows == again).all()


# -- McNemar ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (3, 9), (10, 10), (25, 7), (0, 14), (120, 95)])
def test_mcnemar_is_the_binomial_test_on_the_discordant_pairs(b, c):
    # b examples only the baseline gets right, c only the new model, 40 both, 11 neither
    base = [True] * b + [False] * c + [True] * 40 + [False] * 11
    new = [False] * b + [True] * c + [True] * 40 + [False] * 11
    p, found_b, found_c = paired.mcnemar_exact(base, new)
    assert (found_b, found_c) == (b, c)
    expected = 1.0 if b + c == 0 else binomtest(c, b + c, 0.5).pvalue
    assert p == pytest.approx(expected, rel=1e-12)


# -- records recompute what tlab reports --------------------------------------------------------------------------
def test_label_metrics_match_tlab_metrics_on_the_sample_and_on_a_resample():
    rng = np.random.default_rng(4)
    names = ["accuracy", "f1", "macro_f1", "matthews_correlation"]
    for classes in (2, 3):
        ref = rng.integers(0, classes, 240)
        pred = np.where(rng.random(240) < 0.7, ref, rng.integers(0, classes, 240))
        wanted = names if classes == 2 else [n for n in names if n != "f1"]
        rec = labels_record(pred.tolist(), ref.tolist(), wanted)
        assert outcomes.recompute(rec) == pytest.approx(metrics.compute(wanted, pred.tolist(), ref.tolist()), abs=1e-12)
        counts, idx = drawn(240)
        weighted = {k: float(f(counts)[0]) for k, f in outcomes.metric_functions(rec).items()}
        assert weighted == pytest.approx(metrics.compute(wanted, pred[idx].tolist(), ref[idx].tolist()), abs=1e-12)
    sparse_ref, sparse_pred = [4, 9, 1, 4, 4, 9, 1, 1], [4, 1, 1, 9, 4, 9, 4, 1]  # labels need not be 0..k-1
    wanted = ["accuracy", "macro_f1", "matthews_correlation"]
    assert outcomes.recompute(labels_record(sparse_pred, sparse_ref, wanted)) == pytest.approx(
        metrics.compute(wanted, sparse_pred, sparse_ref), abs=1e-12)


def test_correlations_with_ties_match_scipy_on_a_resample():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=200), 1)  # rounded: many ties, which ranks must average
    y = np.round(x + rng.normal(size=200), 1)
    rec = outcomes.record("scores", list(range(200)), [str(i) for i in range(200)], x.tolist(), y.tolist(),
                          ["pearson", "spearmanr"])
    assert outcomes.recompute(rec) == pytest.approx(metrics.compute(["pearson", "spearmanr"], x.tolist(), y.tolist()))
    counts, idx = drawn(200)
    fns = outcomes.metric_functions(rec)
    assert float(fns["pearson"](counts)[0]) == pytest.approx(pearsonr(x[idx], y[idx])[0], abs=1e-12)
    assert float(fns["spearmanr"](counts)[0]) == pytest.approx(spearmanr(x[idx], y[idx])[0], abs=1e-12)


def test_tag_sequences_match_seqeval_overall_strict_and_per_type():
    rng = np.random.default_rng(6)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]  # I-ORG: ill-formed, strict mode reads it otherwise
    refs = [[tags[i] for i in rng.choice([0, 0, 0, 1, 2, 3, 4], size=rng.integers(1, 9))] for _ in range(90)]
    preds = [[t if rng.random() < 0.8 else tags[rng.integers(0, 6)] for t in r] for r in refs]
    scores = metrics.compute(["seqeval"], preds, refs)
    rec = outcomes.record("tags", list(range(90)), refs, preds, refs, list(scores))
    assert outcomes.recompute(rec) == pytest.approx(scores, abs=1e-12)
    assert {"PER_f1", "LOC_f1", "ORG_f1", "strict_f1", "accuracy"} <= set(rec["metrics"])
    counts, idx = drawn(90)
    resampled = metrics.compute(["seqeval"], [preds[i] for i in idx], [refs[i] for i in idx])
    weighted = {k: float(f(counts)[0]) for k, f in outcomes.metric_functions(rec).items()}
    assert weighted == pytest.approx({k: resampled.get(k, 0.0) for k in weighted}, abs=1e-12)


def test_answers_match_the_official_squad_scores_v1_and_v2():
    answers = [["Denver Broncos"], ["Santa Clara", "Levi's Stadium"], ["gold"], [], [], ["the 50th"]]
    said = ["Denver Broncos", "Levi's Stadium in Santa Clara", "golden", "", "a span", "50th"]
    ids = [f"q{i}" for i in range(len(said))]
    refs = [{"id": q, "answers": {"text": a, "answer_start": [0] * len(a)}} for q, a in zip(ids, answers)]
    v1 = outcomes.record("answers", ids[:3] + ids[5:], ["x"] * 4, said[:3] + said[5:], answers[:3] + answers[5:],
                         ["exact_match", "f1"])
    official = metrics.load("squad").compute(predictions=[{"id": q, "prediction_text": p} for q, p in zip(ids, said)
                                                          if q in v1["ids"]], references=[r for r in refs if r["id"] in v1["ids"]])
    assert outcomes.recompute(v1) == pytest.approx(official)
    odds = [-3.0, 0.5, 2.5, 4.0, -1.0, None]  # None: no valid span (inf)
    v2 = outcomes.record("answers", ids, ["x"] * 6, said, answers, ["exact_match", "f1", "HasAns_exact", "HasAns_f1",
                         "NoAns_exact", "NoAns_f1"], version_2=True, null_odds=odds, no_answer_threshold=1.0)
    official = metrics.load("squad_v2").compute(
        predictions=[{"id": q, "prediction_text": p, "no_answer_probability": float("inf") if o is None else o}
                     for q, p, o in zip(ids, said, odds)], references=refs, no_answer_threshold=1.0)
    official["exact_match"] = official.pop("exact")
    assert outcomes.recompute(v2) == pytest.approx({k: official[k] for k in v2["metrics"]})


def test_texts_match_sacrebleu_chrf_and_rouge():
    hyps = ["the cat sat on the mat .", "a dog runs fast", "hello world, here we go", "it is raining today"] * 6
    refs = ["the cat is on the mat.", "the dog runs", "hello there world", "today it rains"] * 6
    rec = outcomes.record("texts", list(range(24)), refs, hyps, refs, ["bleu", "chrf", "rouge1", "rouge2", "rougeL",
                                                                        "rougeLsum"])
    found = outcomes.recompute(rec)
    assert found["bleu"] == pytest.approx(metrics.load("sacrebleu").compute(predictions=hyps, references=refs)["bleu"])
    assert found["chrf"] == pytest.approx(metrics.load("chrf").compute(predictions=hyps, references=refs)["chrf"])
    rouge = metrics.load("rouge").compute(predictions=hyps, references=refs)
    assert {k: found[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")} == pytest.approx(
        {k: rouge[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")})


def test_bleu_intervals_come_from_sacrebleus_own_paired_bootstrap():
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    rng = np.random.default_rng(7)
    words = "the a cat dog sat ran on under mat house red big".split()
    refs = [" ".join(rng.choice(words, 6)) for _ in range(60)]
    worse = [" ".join(w if rng.random() < 0.5 else "x" for w in r.split()) for r in refs]
    better = [" ".join(w if rng.random() < 0.9 else "x" for w in r.split()) for r in refs]
    base = {"task": "wmt", "outcomes": {"validation": outcomes.record("texts", list(range(60)), refs, worse, refs, ["bleu"])}}
    new = {"task": "wmt", "outcomes": {"validation": outcomes.record("texts", list(range(60)), refs, better, refs, ["bleu"])}}
    row = outcomes.compare(base, new)["metrics"][0]
    _sigs, scores = PairedTest([("b", worse), ("n", better)], {"bleu": BLEU()}, [refs], test_type="bs", n_samples=1000)()
    theirs = scores["BLEU"][1]
    assert row["new"] == pytest.approx(theirs.score) and row["p_value"] == pytest.approx(theirs.p_value)
    # the same resamples: our resampled scores of the new system have sacreBLEU's mean
    fn = outcomes.metric_functions(new["outcomes"]["validation"])["bleu"]
    ours = np.concatenate([fn(c) for c in paired.resample_counts(60)])
    assert ours.mean() == pytest.approx(theirs.mean, abs=1e-3)
    assert row["low"] > 0 and row["verdict"] == "better" and row["test"] == "sacreBLEU paired bootstrap"


# -- the comparison -----------------------------------------------------------------------------------------------
def results_of(rec: dict, task: str = "sst2") -> dict:
    return {"task": task, "outcomes": {"validation": rec}}


def test_noise_passes_the_gate_and_a_real_drop_fails_it():
    rng = np.random.default_rng(8)
    ref = rng.integers(0, 2, 400)
    base_pred = np.where(rng.random(400) < 0.9, ref, 1 - ref)
    noisy = base_pred.copy()
    noisy[np.flatnonzero(base_pred == ref)[:3]] ^= 1  # 3 of 400 answers flipped: -0.0075
    worse = np.where(rng.random(400) < 0.8, ref, 1 - ref)
    base = results_of(labels_record(base_pred, ref))
    noise = outcomes.compare(base, results_of(labels_record(noisy, ref)), {"accuracy": 0.01})
    row = noise["metrics"][0]
    assert row["delta"] == pytest.approx(-0.0075) and row["high"] > -0.01 and noise["passed"]
    assert row["verdict"] in ("within noise", "worse") and row["test"] == "McNemar exact"
    drop = outcomes.compare(base, results_of(labels_record(worse, ref)), {"accuracy": 0.01})
    row = drop["metrics"][0]
    assert row["high"] < -0.01 and row["verdict"] == "regression" and not drop["passed"] and row["p_value"] < 0.001
    same = outcomes.compare(base, base, {"accuracy": 0.0})
    assert same["passed"] and same["metrics"][0]["delta"] == 0 and same["metrics"][0]["p_value"] == 1.0


def test_other_examples_or_tasks_are_refused_naming_the_first_difference():
    ref = [0, 1] * 50
    base = results_of(labels_record(ref, ref))
    inputs = [f"text {i}" for i in range(100)]
    inputs[7] = inputs[42] = "another sentence"
    with pytest.raises(TlabError, match=r"other examples: 2 of 100 validation examples differ, the first at id 7"):
        outcomes.compare(base, results_of(labels_record(ref, ref, inputs=inputs)))
    with pytest.raises(TlabError, match=r"10 of 100 .*\(100 examples in --baseline b.json, 90 here\), the first at id 90"):
        outcomes.compare(base, results_of(labels_record(ref[10:], ref[10:])), source="b.json")
    with pytest.raises(TlabError, match="is of task sst2, this evaluation of rte"):
        outcomes.compare(base, results_of(labels_record(ref, ref), task="rte"))
    with pytest.raises(TlabError, match="not comparable example by example"):
        outcomes.check_tolerances({"loss": 0.1}, ["accuracy", "loss"], base["outcomes"], "sst2")
    with pytest.raises(TlabError, match="does not report"):
        outcomes.check_tolerances({"f1": 0.1}, ["accuracy", "loss"], base["outcomes"], "sst2")
