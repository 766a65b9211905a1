"""Paired statistics for two models scored on the same examples: the paired bootstrap (examples resampled with
replacement, both models' metric recomputed on each resample, the interval read off the differences) and McNemar's
exact test (a binomial test on the examples exactly one of the two gets right).

Pure numpy/scipy, nothing of tlab's tasks: a metric comes in as a function of example weights, `(c, n) counts ->
(c,) values`, where row r says how often each of the n examples is drawn in resample r (a row of ones is the sample
itself). Every metric tlab compares is a function of a weighted sample (a confusion matrix, sums of per-example
scores, sacreBLEU's sufficient statistics, weighted ranks), so one set of draws serves them all.

The draws are sacreBLEU's: `numpy.random.default_rng(seed).choice(n, size=(resamples, n))` with its default seed,
so a BLEU interval here comes from the very resamples of sacreBLEU's own paired bootstrap (`--paired-bs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

SEED = 12345  # sacreBLEU's default (SACREBLEU_SEED)
RESAMPLES = 1000  # sacreBLEU's default for its paired bootstrap
LEVEL = 0.95
_BUDGET = 4_000_000  # counts held at once (resamples x examples)

Metric = Callable[[np.ndarray], np.ndarray]  # (c, n) example counts -> (c,) metric values


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """(c, n) float counts of each example in each resample, a few resamples at a time (memory stays
    `_BUDGET` counts); the rows are those of `default_rng(seed).choice(n, size=(resamples, n))`."""
    rng = np.random.default_rng(seed)
    step = max(1, min(resamples, _BUDGET // max(1, n)))
    done = 0
    while done < resamples:
        c = min(step, resamples - done)
        drawn = rng.choice(n, size=(c, n))  # (c, n) example indices
        flat = (drawn + np.arange(c)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=c * n).reshape(c, n).astype(np.float64)
        done += c


@dataclass(frozen=True)
class Paired:
    """new - baseline on the examples: the observed difference, its interval, a two-sided p-value."""

    baseline: float
    new: float
    delta: float
    low: float
    high: float
    p_value: float
    n: int
    test: str  # how p_value was computed
    resamples: int
    seed: int


def ones(n: int) -> np.ndarray:
    """The sample itself, as counts: (1, n) ones."""
    return np.ones((1, n))


def interval(deltas: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap differences (resamples where a metric is undefined left out)."""
    finite = deltas[np.isfinite(deltas)]
    if not len(finite):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of "no difference": twice the share of resampled differences on the
    far side of zero (+1 smoothing, so never 0). It is below 0.05 where the 95% interval excludes 0; a model
    compared with itself (every difference 0) gets 1."""
    finite = deltas[np.isfinite(deltas)]
    if not len(finite):
        return float("nan")
    below, above = int((finite <= 0).sum()), int((finite >= 0).sum())
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(finite) + 1)))


def deltas(baseline: Metric, new: Metric, n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples,) new - baseline on each resample (the same draws for both: the test is paired)."""
    parts = [new(counts) - baseline(counts) for counts in resample_counts(n, resamples, seed)]
    return np.concatenate(parts) if parts else np.zeros(0)


def paired_bootstrap(baseline: Metric, new: Metric, n: int, resamples: int = RESAMPLES, seed: int = SEED,
                     level: float = LEVEL) -> Paired:
    """The paired bootstrap of new - baseline, its p-value from the same resamples (`bootstrap_p`)."""
    base_value, new_value = float(baseline(ones(n))[0]), float(new(ones(n))[0])
    found = deltas(baseline, new, n, resamples, seed)
    low, high = interval(found, level)
    return Paired(base_value, new_value, new_value - base_value, low, high, bootstrap_p(found), n,
                  "paired bootstrap", resamples, seed)


def mcnemar_exact(baseline_correct, new_correct) -> tuple[float, int, int]:
    """McNemar's exact test: (two-sided p, b, c), b = examples only the baseline gets right, c = only the new
    model. Under "equally accurate" each of the b + c discordant examples goes either way with probability 1/2:
    p = min(1, 2 P(Binomial(b + c, 1/2) <= min(b, c))), 1 without discordant examples."""
    from scipy.stats import binom

    base, new = np.asarray(baseline_correct, dtype=bool), np.asarray(new_correct, dtype=bool)
    if base.shape != new.shape:
        raise ValueError(f"{base.shape} and {new.shape} outcomes: the test pairs the same examples")
    b, c = int((base & ~new).sum()), int((~base & new).sum())
    if b + c == 0:
        return 1.0, b, c
    return float(min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5))), b, c
