"""Per-example outcomes and the paired comparison of two evaluations on the same examples (`tlab eval --baseline`,
`tlab report`).

A family's evaluation leaves one `record` per split in `Job.outcomes`: each example's id, a digest of its input,
its prediction and its reference, enough to recompute every metric the split reports. `tlab eval --output` keeps
them in results.json, a finished run in outcomes.json. Two records of one task are comparable when their examples
are the same (ids, inputs and references, in order: `fingerprint`); `compare` then gives per metric the difference
new - baseline with a 95% paired-bootstrap interval (tlab.paired), a p-value (McNemar's exact test for accuracy,
sacreBLEU's paired bootstrap for BLEU/chrF, the bootstrap's own elsewhere) and a verdict.

Kinds of record (what `predictions` / `references` hold per example):
  labels      class ids                            accuracy, f1 (positive class 1), macro_f1, matthews_correlation
  scores      numbers (STS-B)                      pearson, spearmanr
  label_sets  multi-hot rows                       micro_f1, macro_f1, subset_accuracy
  answers     answer text / the reference texts    exact_match, f1 (x100), v2: HasAns_*, NoAns_* (null_odds, threshold)
  tags        IOB2 tag sequences                   precision, recall, f1, accuracy, strict_*, TYPE_precision/recall/f1
  texts       hypothesis / reference strings       bleu, chrf (sacreBLEU); rouge1, rouge2, rougeL, rougeLsum (x100)
Every metric compared is greater-is-better; a loss or perplexity is not compared (it needs per-example losses)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tlab import paired
from tlab.errors import TlabError

KINDS = ("labels", "scores", "label_sets", "answers", "tags", "texts")
OUTCOMES_FILE = "outcomes.json"  # a finished run's, beside metrics.json


# -- records ---------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Tuples as lists, numpy and torch scalars as numbers: what the record reads back from JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def digest(text: Any) -> str:
    """A short digest of one example's input (its text, or a list of texts / tokens)."""
    data = text if isinstance(text, str) else json.dumps(_plain(text), ensure_ascii=False)
    return hashlib.blake2b(data.encode(), digest_size=8).hexdigest()


def record(kind: str, ids: Sequence, inputs: Sequence, predictions: Sequence, references: Sequence,
           metrics: Sequence[str], suffix: str = "", **options: Any) -> dict:
    """One split's per-example outcomes. `metrics`: the split's metric names (without `suffix`, the split's
    ending of them, e.g. "_mismatched") that the record can recompute; `options`: what the kind needs besides
    (answers: version_2, null_odds, no_answer_threshold)."""
    if kind not in KINDS:
        raise ValueError(f"unknown outcome kind {kind!r} (known: {', '.join(KINDS)})")
    if not len(ids) == len(inputs) == len(predictions) == len(references):
        raise ValueError(f"outcomes of unequal lengths: {len(ids)} ids, {len(inputs)} inputs, "
                         f"{len(predictions)} predictions, {len(references)} references")
    known = supported(kind)
    per_type = ("_precision", "_recall", "_f1") if kind == "tags" else ()  # PER_f1, ...: entity types of the data
    found = {"kind": kind, "n": len(ids), "suffix": suffix,
             "metrics": [m for m in metrics if m in known or (per_type and m.endswith(per_type))],
             "ids": _plain(list(ids)), "inputs": [digest(x) for x in inputs], "predictions": _plain(list(predictions)),
             "references": _plain(list(references)), **_plain(options)}
    found["fingerprint"] = fingerprint(found)
    return found


def fingerprint(rec: dict) -> str:
    """The examples of a record: sha256 of their ids, input digests and references, in order."""
    data = json.dumps([rec["ids"], rec["inputs"], rec["references"]], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def fingerprint_all(outcomes: dict) -> Optional[str]:
    """One fingerprint for every split's examples (None without outcomes)."""
    if not outcomes:
        return None
    joined = "".join(f"{split}:{outcomes[split]['fingerprint']};" for split in sorted(outcomes))
    return hashlib.sha256(joined.encode()).hexdigest()


def supported(kind: str) -> tuple[str, ...]:
    """Metric names a record of `kind` may recompute (tags add TYPE_precision/recall/f1 per entity type)."""
    return {"labels": ("accuracy", "f1", "macro_f1", "matthews_correlation"), "scores": ("pearson", "spearmanr"),
            "label_sets": ("micro_f1", "macro_f1", "subset_accuracy"),
            "answers": ("exact_match", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"),
            "tags": ("precision", "recall", "f1", "accuracy", "strict_precision", "strict_recall", "strict_f1"),
            "texts": ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum")}[kind]


# -- metrics as functions of example counts ----------------------------------------------------------------------
def _ratio(top: np.ndarray, bottom: np.ndarray, scale: float = 1.0) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, scale * top / np.where(bottom > 0, bottom, 1), 0.0)


def _summed(stats: np.ndarray, finish: Callable[[np.ndarray], np.ndarray]) -> paired.Metric:
    """A metric of per-example additive statistics (n, k): finish(counts @ stats) per resample."""
    return lambda counts: finish(counts @ stats)


def _labels(rec: dict) -> dict[str, paired.Metric]:
    raw_pred, raw_ref = np.asarray(rec["predictions"], dtype=np.int64), np.asarray(rec["references"], dtype=np.int64)
    values = np.union1d(raw_pred, raw_ref)  # the labels seen, as sklearn's unique_labels; class i = values[i]
    positive = int(np.searchsorted(values, 1)) if 1 in values else None  # f1's pos_label=1
    pred, ref = np.searchsorted(values, raw_pred), np.searchsorted(values, raw_ref)
    k = max(1, len(values))
    cells = ref * k + pred  # one confusion cell per example
    groups = [(int(c), np.flatnonzero(cells == c)) for c in np.unique(cells)]

    def confusion(counts: np.ndarray) -> np.ndarray:  # (c, k, k): [true, predicted]
        out = np.zeros((counts.shape[0], k * k))
        for cell, members in groups:
            out[:, cell] = counts[:, members].sum(1)
        return out.reshape(-1, k, k)

    def accuracy(counts):
        m = confusion(counts)
        return _ratio(np.trace(m, axis1=1, axis2=2), m.sum((1, 2)))

    def f1(counts):  # binary, positive label 1 (sklearn's average="binary"); 0 when no example has it
        m = confusion(counts)
        if positive is None:
            return np.zeros(len(m))
        tp = m[:, positive, positive]
        return _ratio(2 * tp, m[:, :, positive].sum(1) + m[:, positive, :].sum(1))

    def macro_f1(counts):  # over the classes in the references or the predictions (sklearn's average="macro")
        m = confusion(counts)
        tp, true, predicted = np.diagonal(m, axis1=1, axis2=2), m.sum(2), m.sum(1)
        present = (true + predicted) > 0
        per_class = _ratio(2 * tp, true + predicted)
        return _ratio((per_class * present).sum(1), present.sum(1))

    def matthews(counts):  # sklearn's multi-class formula
        m = confusion(counts)
        t, p = m.sum(2), m.sum(1)
        c, s = np.trace(m, axis1=1, axis2=2), m.sum((1, 2))
        cov_tp = c * s - (t * p).sum(1)
        denominator = np.sqrt((s ** 2 - (p * p).sum(1)) * (s ** 2 - (t * t).sum(1)))
        return _ratio(cov_tp, denominator)

    return {"accuracy": accuracy, "f1": f1, "macro_f1": macro_f1, "matthews_correlation": matthews}


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson's r of (c, n) or (n,) values x, y under (c, n) weights (NaN where a side is constant)."""
    total = w.sum(1, keepdims=True)
    mx, my = (w * x).sum(1, keepdims=True) / total, (w * y).sum(1, keepdims=True) / total
    dx, dy = x - mx, y - my
    with np.errstate(divide="ignore", invalid="ignore"):
        return (w * dx * dy).sum(1) / np.sqrt((w * dx * dx).sum(1) * (w * dy * dy).sum(1))


def _weighted_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(c, n): each example's rank in each resample, ties averaged, as scipy.stats.rankdata gives on the
    resampled values (an example drawn w times is w tied values)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_of = np.empty(len(values), dtype=np.int64)
    group_of[order] = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    weights = np.add.reduceat(counts[:, order], starts, axis=1)  # (c, groups)
    before = np.cumsum(weights, axis=1) - weights
    return (before + (weights + 1) / 2)[:, group_of]


def _scores(rec: dict) -> dict[str, paired.Metric]:
    x, y = np.asarray(rec["predictions"], dtype=np.float64), np.asarray(rec["references"], dtype=np.float64)
    return {"pearson": lambda counts: _weighted_pearson(x, y, counts),
            "spearmanr": lambda counts: _weighted_pearson(_weighted_ranks(x, counts), _weighted_ranks(y, counts), counts)}


def _label_sets(rec: dict) -> dict[str, paired.Metric]:
    pred = np.asarray(rec["predictions"], dtype=bool).reshape(rec["n"], -1)
    ref = np.asarray(rec["references"], dtype=bool).reshape(rec["n"], -1)
    labels = pred.shape[1]
    stats = np.concatenate([pred & ref, (pred & ~ref) | (~pred & ref), (pred == ref).all(1, keepdims=True)], 1)
    stats = stats.astype(np.float64)  # (n, 2 labels + 1): tp per label, fp + fn per label, exact

    def f1s(sums):
        tp, wrong = sums[:, :labels], sums[:, labels : 2 * labels]
        return tp, wrong, (2 * tp + wrong) > 0

    def micro(sums):
        tp, wrong, scored = f1s(sums)
        return np.where(scored.any(1), _ratio(2 * tp.sum(1), 2 * tp.sum(1) + wrong.sum(1)), 1.0)

    def macro(sums):
        tp, wrong, scored = f1s(sums)
        return np.where(scored.any(1), _ratio((_ratio(2 * tp, 2 * tp + wrong) * scored).sum(1), scored.sum(1)), 1.0)

    return {"micro_f1": _summed(stats, micro), "macro_f1": _summed(stats, macro),
            "subset_accuracy": _summed(stats, lambda s: s[:, -1] / max(1, rec["n"]))}


def answer_scores(rec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact, f1, has answer) per question, as the official SQuAD scripts score them (v2: the no-answer
    threshold applied to null_odds)."""
    from tlab.metrics.squad import exact_match_score, f1_score, normalize_answer
    from tlab.metrics.squad_v2 import f1_score as f1_v2

    exact, f1, has = [], [], []
    v2 = bool(rec.get("version_2"))
    odds, threshold = rec.get("null_odds") or [], rec.get("no_answer_threshold", 0.0)
    for i, (prediction, truths) in enumerate(zip(rec["predictions"], rec["references"])):
        has.append(bool(truths))
        if v2:
            truths = [t for t in truths if normalize_answer(t)] or [""]
        e = max(exact_match_score(prediction, t) for t in truths) if truths else 0.0
        f = max((f1_v2 if v2 else f1_score)(prediction, t) for t in truths) if truths else 0.0
        if v2 and (odds[i] is None or odds[i] > threshold):  # None: inf in JSON (no valid span)
            e = f = float(not has[-1])
        exact.append(e)
        f1.append(f)
    return np.asarray(exact), np.asarray(f1), np.asarray(has, dtype=np.float64)


def _answers(rec: dict) -> dict[str, paired.Metric]:
    exact, f1, has = answer_scores(rec)
    stats = np.stack([exact, f1, exact * has, f1 * has, has, exact * (1 - has), f1 * (1 - has), 1 - has,
                      np.ones_like(has)], 1)
    found = {"exact_match": (0, 8), "f1": (1, 8), "HasAns_exact": (2, 4), "HasAns_f1": (3, 4),
             "NoAns_exact": (5, 7), "NoAns_f1": (6, 7)}
    return {name: _summed(stats, lambda s, a=a, b=b: _ratio(s[:, a], s[:, b], 100.0)) for name, (a, b) in found.items()}


def _tags(rec: dict) -> dict[str, paired.Metric]:
    from seqeval.metrics.sequence_labeling import get_entities
    from seqeval.scheme import IOB2, Entities

    types = sorted({kind for tags in [*rec["references"], *rec["predictions"]] for kind, _s, _e in get_entities(list(tags))})
    rows = []
    for pred, ref in zip(rec["predictions"], rec["references"]):
        true, guess = set(get_entities(list(ref))), set(get_entities(list(pred)))
        strict_true = {e.to_tuple() for e in Entities([list(ref)], IOB2).entities[0]}
        strict_guess = {e.to_tuple() for e in Entities([list(pred)], IOB2).entities[0]}
        row = [len(true & guess), len(guess), len(true), len(strict_true & strict_guess), len(strict_guess),
               len(strict_true), sum(p == r for p, r in zip(pred, ref)), len(ref)]
        for kind in types:
            t, g = {e for e in true if e[0] == kind}, {e for e in guess if e[0] == kind}
            row += [len(t & g), len(g), len(t)]
        rows.append(row)
    stats = np.asarray(rows, dtype=np.float64).reshape(len(rows), 8 + 3 * len(types))

    def prf(offset: int) -> dict[str, paired.Metric]:
        return {"precision": _summed(stats, lambda s: _ratio(s[:, offset], s[:, offset + 1])),
                "recall": _summed(stats, lambda s: _ratio(s[:, offset], s[:, offset + 2])),
                "f1": _summed(stats, lambda s: _ratio(2 * s[:, offset], s[:, offset + 1] + s[:, offset + 2]))}

    found = {**prf(0), **{f"strict_{k}": v for k, v in prf(3).items()},
             "accuracy": _summed(stats, lambda s: _ratio(s[:, 6], s[:, 7]))}
    for i, kind in enumerate(types):
        found.update({f"{kind}_{k}": v for k, v in prf(8 + 3 * i).items()})
    return found


def _sacrebleu_metrics() -> dict:
    """tlab's BLEU and chrF settings (tlab/metrics/sacrebleu.py, chrf.py defaults): sacreBLEU's own defaults."""
    from sacrebleu.metrics import BLEU, CHRF

    return {"bleu": BLEU(), "chrf": CHRF()}


def _texts(rec: dict) -> dict[str, paired.Metric]:
    hyps, refs = list(rec["predictions"]), list(rec["references"])
    found: dict[str, paired.Metric] = {}
    wanted = set(rec["metrics"])
    for name, metric in _sacrebleu_metrics().items():
        if name in wanted:
            stats = np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)
            found[name] = _summed(stats, lambda sums, m=metric: np.array([m._compute_score_from_stats(s).score for s in sums]))
    rouge = [t for t in ("rouge1", "rouge2", "rougeL", "rougeLsum") if t in wanted]
    if rouge:
        from rouge_score import rouge_scorer

        from tlab.metrics.rouge import sentences_per_line

        scorer = rouge_scorer.RougeScorer(rouge, use_stemmer=True)
        per = np.asarray([[s.fmeasure for s in scorer.score(sentences_per_line(r), sentences_per_line(h)).values()]
                          for h, r in zip(hyps, refs)], dtype=np.float64).reshape(len(hyps), len(rouge))
        per = np.concatenate([100.0 * per, np.ones((len(hyps), 1))], 1)  # the F1s in [0, 100], and a count
        for i, name in enumerate(rouge):
            found[name] = _summed(per, lambda s, i=i: _ratio(s[:, i], s[:, -1]))
    return found


SCORERS = {"labels": _labels, "scores": _scores, "label_sets": _label_sets, "answers": _answers, "tags": _tags,
           "texts": _texts}


def metric_functions(rec: dict) -> dict[str, paired.Metric]:
    """metric name (without the split's suffix) -> function of example counts, for the record's metrics."""
    found = SCORERS[rec["kind"]](rec)
    return {k: v for k, v in found.items() if k in rec["metrics"]}


def recompute(rec: dict) -> dict[str, float]:
    """The record's metrics on its own examples (they match what the evaluation reported)."""
    return {k + rec.get("suffix", ""): float(fn(paired.ones(rec["n"]))[0]) for k, fn in metric_functions(rec).items()}


# -- comparing two evaluations ---------------------------------------------------------------------------------
def load(path: str) -> dict:
    """{"task", "outcomes", "source"} of a `tlab eval --output` results file or of a run directory's outcomes.json
    (TlabError for anything else; a run without outcomes.json gives outcomes None)."""
    target = Path(path)
    if target.is_dir():
        file = target / OUTCOMES_FILE
        if not file.is_file():
            return {"task": _run_task(target), "outcomes": None, "source": str(target)}
    elif target.is_file():
        file = target
    else:
        raise TlabError(f"--baseline {path} does not exist")
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise TlabError(f"--baseline {file} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "task" not in data:
        raise TlabError(f"--baseline {file} is neither a `tlab eval --output` results file nor a run's {OUTCOMES_FILE}")
    return {"task": data["task"], "outcomes": data.get("outcomes") or None, "source": str(target)}


def _run_task(run: Path) -> Optional[str]:
    """The task a run directory was trained for (config.yaml), None when it is not a run."""
    try:
        import yaml

        return (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("task")
    except Exception:  # no config.yaml (a plain model directory), or not YAML
        return None


def check_same_examples(baseline: dict, new: dict, what: str = "the baseline") -> None:
    """Refuse (TlabError) two outcome sets of other tasks or other examples, saying which examples differ.
    `what` names the baseline in the message (e.g. "--baseline results.json")."""
    if baseline["task"] != new["task"]:
        raise TlabError(f"{what} is of task {baseline['task']}, this evaluation of {new['task']}: compare "
                        "evaluations of one task")
    if not baseline.get("outcomes"):
        raise TlabError(f"{what} holds no per-example outcomes (results of an older tlab, or of a task that records "
                        "none): evaluate it again with `tlab eval --output`")
    if not new.get("outcomes"):
        raise TlabError(f"task {new['task']} records no per-example outcomes: nothing to compare example by example")
    a, b = baseline["outcomes"], new["outcomes"]
    if sorted(a) != sorted(b):
        raise TlabError(f"{what} scored split(s) {', '.join(sorted(a))}, this evaluation {', '.join(sorted(b))}: "
                        "not the same examples")
    for split in sorted(a):
        x, y = a[split], b[split]
        if x["fingerprint"] == y["fingerprint"] and x["n"] == y["n"]:
            continue
        keys = list(zip(x["ids"], x["inputs"], x["references"]))
        other = list(zip(y["ids"], y["inputs"], y["references"]))
        differ = [i for i in range(min(len(keys), len(other))) if keys[i] != other[i]]
        count = len(differ) + abs(len(keys) - len(other))
        first = differ[0] if differ else min(len(keys), len(other))
        ids = y["ids"] if first < len(y["ids"]) else x["ids"]
        sizes = f" ({x['n']} examples in {what}, {y['n']} here)" if x["n"] != y["n"] else ""
        raise TlabError(f"{what} was computed on other examples: {count} of {max(x['n'], y['n'])} {split} examples "
                        f"differ{sizes}, the first at id {ids[first]!r}")


def comparable(outcomes: dict) -> dict[str, tuple[str, str]]:
    """metric name as reported (with its split's suffix) -> (split, metric name in the record)."""
    return {m + rec.get("suffix", ""): (split, m) for split, rec in outcomes.items() for m in rec["metrics"]}


def check_tolerances(tolerances: dict[str, float], reported: Sequence[str], outcomes: dict, task: str) -> None:
    """--max-drop must name metrics the task reports and that can be compared example by example."""
    unknown = [m for m in tolerances if m not in reported]
    if unknown:
        raise TlabError(f"--max-drop names metric(s) {', '.join(unknown)} that task {task} does not report "
                        f"(it reports: {', '.join(reported)})")
    known = comparable(outcomes or {})
    other = [m for m in tolerances if m not in known]
    if other:
        raise TlabError(f"--max-drop {', '.join(other)}: not comparable example by example (comparable: "
                        f"{', '.join(known) or 'none'})")
    negative = [m for m, t in tolerances.items() if t < 0]
    if negative:
        raise TlabError(f"--max-drop {negative[0]}={tolerances[negative[0]]:g}: a tolerance is a drop, 0 or more")


def _special_p(kind: str, metric: str, base: dict, new: dict) -> Optional[tuple[float, str]]:
    """McNemar's exact test for accuracy; sacreBLEU's paired bootstrap for BLEU and chrF."""
    if kind == "labels" and metric == "accuracy":
        refs = np.asarray(base["references"])
        p, _b, _c = paired.mcnemar_exact(np.asarray(base["predictions"]) == refs, np.asarray(new["predictions"]) == refs)
        return p, "McNemar exact"
    if kind == "texts" and metric in ("bleu", "chrf"):
        if base["predictions"] == new["predictions"]:
            return 1.0, "sacreBLEU paired bootstrap"
        from sacrebleu.significance import PairedTest

        test = PairedTest([("baseline", list(base["predictions"])), ("new", list(new["predictions"]))],
                          {metric: _sacrebleu_metrics()[metric]}, [list(base["references"])], test_type="bs",
                          n_samples=paired.RESAMPLES)
        _signatures, scores = test()
        result = [v for k, v in scores.items() if k != "System"][0][1]
        return float(result.p_value), "sacreBLEU paired bootstrap"
    return None


def verdict(low: float, high: float, tolerance: Optional[float]) -> tuple[str, bool]:
    """(verdict, passed): a regression only where the whole interval lies below -tolerance (the drop is larger
    than the tolerance with 95% confidence); otherwise worse / better (the interval excludes 0) or within noise."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undefined", True
    if tolerance is not None and high < -tolerance:
        return "regression", False
    if high < 0:
        return "worse", True
    if low > 0:
        return "better", True
    return "within noise", True


def compare(baseline: dict, new: dict, tolerances: Optional[dict[str, float]] = None, source: str = "baseline",
            resamples: int = paired.RESAMPLES, seed: int = paired.SEED, what: Optional[str] = None) -> dict:
    """Every comparable metric of two outcome sets ({"task", "outcomes"}) on the same examples: baseline, new,
    delta = new - baseline, its 95% interval, p-value and test, n, verdict (tolerances: --max-drop). `source`
    names the baseline in the result, `what` in a refusal (default "--baseline <source>")."""
    tolerances = tolerances or {}
    check_same_examples(baseline, new, what or f"--baseline {source}")
    rows = []
    for split in new["outcomes"]:
        base_rec, new_rec = baseline["outcomes"][split], new["outcomes"][split]
        base_fns, new_fns = metric_functions(base_rec), metric_functions(new_rec)
        suffix = new_rec.get("suffix", "")
        for metric in [m for m in new_fns if m in base_fns] if new_rec["n"] else []:
            found = paired.paired_bootstrap(base_fns[metric], new_fns[metric], new_rec["n"], resamples, seed)
            special = _special_p(new_rec["kind"], metric, base_rec, new_rec)
            p, test = special if special else (found.p_value, found.test)
            name = metric + suffix
            tolerance = tolerances.get(name)
            said, passed = verdict(found.low, found.high, tolerance)
            rows.append({"metric": name, "split": split, "n": found.n, "baseline": found.baseline, "new": found.new,
                         "delta": found.delta, "low": found.low, "high": found.high, "p_value": p, "test": test,
                         "tolerance": tolerance, "verdict": said, "passed": passed})
    return {"baseline": source, "task": new["task"], "examples": sum(r["n"] for r in new["outcomes"].values()),
            "resamples": resamples, "seed": seed, "level": paired.LEVEL, "metrics": rows,
            "passed": all(r["passed"] for r in rows)}


def _number(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _signed(value: float) -> str:
    text = _number(value)
    return text if text.startswith("-") or text == "nan" else "+" + text


def table(comparison: dict, only: Optional[Sequence[str]] = None) -> list[list[str]]:
    """Rows of strings (a header first) for the terminal and Markdown: metric, n, baseline, new, delta,
    interval, p, test, verdict. `only`: these metrics (the gated ones), else every row."""
    head = ["metric", "n", "baseline", "new", "delta", "95% interval", "p", "test", "verdict"]
    out = [head]
    for r in comparison["metrics"]:
        if only and r["metric"] not in only:
            continue
        gate = f" (max drop {r['tolerance']:g}: {'ok' if r['passed'] else 'FAILED'})" if r["tolerance"] is not None else ""
        said = r["verdict"] + gate
        p = "nan" if r["p_value"] is None or not math.isfinite(r["p_value"]) else f"{r['p_value']:.3g}"
        out.append([r["metric"], str(r["n"]), _number(r["baseline"]), _number(r["new"]), _signed(r["delta"]),
                    f"[{_signed(r['low'])}, {_signed(r['high'])}]", p, r["test"], said])
    return out


def title(comparison: dict) -> str:
    return (f"paired comparison with {comparison['baseline']}: {comparison['examples']} examples, new - baseline, "
            f"{comparison['level']:.0%} intervals from {comparison['resamples']} bootstrap resamples (seed {comparison['seed']})")


def lines(comparison: dict) -> list[str]:
    """The comparison as terminal lines: the title, an aligned table, and which gates failed."""
    rows = table(comparison)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = (0, 7, 8)  # metric, test, verdict: text; the rest numbers
    out = [title(comparison)]
    out += ["  " + "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]
    failed = [r["metric"] for r in comparison["metrics"] if not r["passed"]]
    if failed:
        out.append(f"regression: {', '.join(failed)} dropped by more than the --max-drop tolerance with 95% confidence")
    return out
