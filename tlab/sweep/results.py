"""The end of a sweep: the table of trials (best first), trials.csv, score_over_trials.png, param_importances.png
and best.yaml, a config that `tlab finetune --config best.yaml` reruns with the best trial's parameters."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Optional

from tlab import config, tasks
from tlab.errors import TlabError
from tlab.outputs import write_atomic
from tlab.sweep import settings as st
from tlab.sweep.study import Sweep

BEST_FILE = "best.yaml"
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "queued"}


def rows(sweep: Sweep, study) -> list[dict[str, Any]]:
    """One row per trial, best first: complete trials by score, then pruned ones (by their last evaluation), then
    the rest by number."""
    keys = [p.key for p in sweep.params]
    found = []
    trials = study.get_trials(deepcopy=False)
    rerun_as = {t.user_attrs["retry_of"]: t.number for t in trials if t.user_attrs.get("retry_of") is not None}
    for t in trials:
        state = STATES.get(t.state.name, t.state.name.lower())
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        found.append({"trial": t.number, "state": state, "score": t.value if state == "complete" else None,
                      "last_eval": last, **{k: t.params.get(k) for k in keys},
                      "seconds": round(seconds, 1) if seconds is not None else None,
                      "run_dir": t.user_attrs.get("run_dir", ""), "note": _note(t, rerun_as.get(t.number))})
    sign = -1 if sweep.greater else 1

    def order(row: dict) -> tuple:
        rank = {"complete": 0, "pruned": 1}.get(row["state"], 2)
        value = row["score"] if rank == 0 else row["last_eval"] if rank == 1 else None
        return (rank, sign * value if _finite(value) else math.inf, row["trial"])

    return sorted(found, key=order)


def _note(t, rerun_as: Optional[int]) -> str:
    if t.user_attrs.get("pruned_at_step") is not None:
        return f"pruned at step {t.user_attrs['pruned_at_step']}"
    if t.user_attrs.get("retry_of") is not None and t.state.name != "FAIL":
        return f"re-run of trial {t.user_attrs['retry_of']}"
    if t.state.name == "FAIL":
        error = t.user_attrs.get("error") or "cut (its process died)"
        if t.user_attrs.get("counted"):
            return error
        return f"{error}; not counted, " + (f"re-run as trial {rerun_as}" if rerun_as is not None else "to be run again")
    return ""


def table(sweep: Sweep, found: list[dict[str, Any]]) -> str:
    keys = [p.key for p in sweep.params]
    head = ["trial", "state", sweep.metric, *keys, "time", "note"]
    lines = [head]
    for r in found:
        score = _fmt(r["score"]) if r["score"] is not None else (f"({_fmt(r['last_eval'])})" if r["last_eval"] is not None else "—")
        lines.append([str(r["trial"]), r["state"], score, *(_fmt(r[k]) for k in keys),
                      f"{r['seconds']:.0f} s" if r["seconds"] is not None else "—", r["note"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def write_csv(path: Path, sweep: Sweep, found: list[dict[str, Any]]) -> None:
    out = io.StringIO()
    fields = ["trial", "state", "score", "last_eval", *(p.key for p in sweep.params), "seconds", "run_dir", "note"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r.get(k) for k in fields} for r in found)
    write_atomic(path, out.getvalue())


def best_yaml(sweep: Sweep, study) -> Optional[Path]:
    """best.yaml: the sweep's base config with the best trial's parameters, writing outside the sweep folder."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    folder = sweep.folder
    out_dir = folder.parent / f"{folder.name}-best"
    cfg = config.with_values(st.base_for_trials(sweep.base), {**best.params, "output_dir": str(out_dir)})
    path = folder / BEST_FILE
    write_atomic(path, f"# tlab {_command(sweep)} --config {path}    (trial {best.number} of the sweep in {folder}: "
                       f"{sweep.metric} {best.value:.4g})\n" + config.to_yaml(cfg))
    return path


def plot_scores(path: Path, sweep: Sweep, study) -> bool:
    """Each trial's score by trial number (pruned ones at their last evaluation) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [(t.number, t.value) for t in trials if t.state.name == "COMPLETE" and _finite(t.value)]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state.name == "PRUNED" and t.intermediate_values]
    if not complete and not pruned:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    if complete:
        ax.plot(*zip(*complete), "o", label="complete")
        best, line = None, []
        for n, v in complete:
            best = v if best is None or (v > best if sweep.greater else v < best) else best
            line.append((n, best))
        ax.step(*zip(*line), where="post", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="grey", label="pruned (last evaluation)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{sweep.metric} (validation)")
    ax.set_title(f"{sweep.base.task}: {sweep.metric} over trials")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def importances(sweep: Sweep, study) -> tuple[Optional[dict[str, float]], str]:
    """Parameter importances by fANOVA, else by mean decrease in impurity; (None, why) when they cannot be told."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return None, f"parameter importances: skipped ({len(complete)} complete trial(s); they need at least 2)"
    if len({t.value for t in complete}) == 1:
        return None, "parameter importances: skipped (every complete trial has the same score)"
    evaluators = [("fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=sweep.settings.seed)),
                  ("mean decrease in impurity", optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=sweep.settings.seed))]
    errors = []
    for name, evaluator in evaluators:
        try:
            return optuna.importance.get_param_importances(study, evaluator=evaluator), name
        except (ImportError, ValueError, RuntimeError) as exc:
            errors.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return None, "parameter importances: skipped (" + "; ".join(errors) + ")"


def plot_importances(path: Path, found: dict[str, float], method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(found)[::-1]  # most important at the top
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(names)))
    ax.barh(names, [found[n] for n in names])
    ax.set_xlabel(f"importance ({method})")
    ax.set_title("parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finish(sweep: Sweep, echo: Callable[[str], None]) -> dict[str, Any]:
    """Print the table and write trials.csv, the plots and best.yaml; returns what was written."""
    from tlab.sweep.study import open_study

    study = open_study(sweep)
    found = rows(sweep, study)
    if not found:
        raise TlabError(f"sweep {sweep.folder} has no trials yet")
    echo(table(sweep, found))
    folder = sweep.folder
    write_csv(folder / "trials.csv", sweep, found)
    written = {"trials.csv": folder / "trials.csv"}
    if plot_scores(folder / "score_over_trials.png", sweep, study):
        written["score_over_trials.png"] = folder / "score_over_trials.png"
    found_importances, method = importances(sweep, study)
    if found_importances:
        plot_importances(folder / "param_importances.png", found_importances, method)
        written["param_importances.png"] = folder / "param_importances.png"
        echo(f"parameter importances ({method}): " + ", ".join(f"{k} {v:.2f}" for k, v in found_importances.items()))
    else:
        echo(method)
    best = best_yaml(sweep, study)
    if best is not None:
        written[BEST_FILE] = best
        t = study.best_trial
        echo(f"best: trial {t.number}, {sweep.metric} {t.value:.4g} ({', '.join(f'{k} {_fmt(v)}' for k, v in t.params.items())}); "
             f"rerun it with `tlab {_command(sweep)} --config {best}`")
    else:
        echo("no complete trial: no best.yaml")
    echo("written: " + ", ".join(str(p) for p in written.values()))
    return written


def _command(sweep: Sweep) -> str:
    return tasks.info(sweep.base.task).family.command  # finetune, or pretrain for mlm / clm


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)
