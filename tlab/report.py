"""`tlab report`: compare runs — one table per task, PNG plots of every logged quantity over steps (one figure per
quantity, one line per run), report.md and optionally one self-contained HTML page.

Reads whatever a run directory holds, so it works on finished, running and interrupted runs (metrics.json is
written only at the end) and on resumed ones (the last record of a step wins). `tlab eval --output` results files
are accepted too, as table rows without curves. matplotlib is imported only when plotting. Runs of one task
that kept per-example outcomes (a run's outcomes.json, an eval results file's "outcomes") are also compared
example by example, each against the first given: delta, 95% paired-bootstrap interval, p-value (tlab.outcomes).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tlab.errors import TlabError

COUNTS = ("tokens", "examples")  # evaluation sizes, not scores: neither tabled nor plotted
LOWER_IS_BETTER = ("loss", "perplexity", "ter")  # for tasks this tlab does not know
FIGSIZE, DPI = (6.4, 4.0), 100  # 640 x 400 pixels


def read_log(path: Path) -> tuple[list[dict], list[int]]:
    """log.jsonl -> (records, numbers of the lines that are not JSON). A killed run's last line may be cut off."""
    records, skipped = [], []
    if not path.is_file():
        return records, skipped
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            skipped.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped.append(number)
    return records, skipped


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Run:
    path: Path
    task: str
    status: str  # finished | pruned (by tlab sweep) | running | interrupted | eval (a `tlab eval` results file)
    facts: dict = field(default_factory=dict)  # the start record and metrics.json, merged
    metrics: Optional[dict] = None  # metrics.json (or the eval results file)
    train: dict = field(default_factory=dict)  # step -> the last training record of that step
    evals: dict = field(default_factory=dict)  # step -> {metric: value} of the last evaluation at that step
    notes: list = field(default_factory=list)
    label: str = ""
    outcomes: Optional[dict] = None  # split -> per-example outcomes (tlab.outcomes), when the run kept them

    @property
    def complete(self) -> bool:
        return self.metrics is not None

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """quantity -> [(step, value)], numeric values only, one point per step."""
        found: dict[str, list[tuple[int, float]]] = {}
        for step in sorted(self.train):
            for key, name in (("loss", "train/loss"), ("lr", "train/lr")):
                if _number(self.train[step].get(key)):
                    found.setdefault(name, []).append((step, self.train[step][key]))
        for step in sorted(self.evals):
            for key, value in self.evals[step].items():
                if _number(value) and key not in COUNTS:
                    found.setdefault(f"eval/{key}", []).append((step, value))
        return found

    def final(self) -> dict[str, Any]:
        """The reported scores: the saved model's (metrics.json), else the latest evaluation."""
        if self.metrics is not None:
            return self.metrics.get("final") or self.metrics.get("metrics") or {}
        return self.evals[max(self.evals)] if self.evals else {}

    def steps(self) -> Optional[int]:
        if self.metrics is not None and "steps" in self.metrics:
            return self.metrics["steps"]
        seen = list(self.train) + list(self.evals)
        return max(seen) if seen else None


def load(path: str) -> Run:
    """A run directory (or a `tlab eval --output` JSON file) -> Run; TlabError for anything else."""
    target = Path(path)
    if target.is_file() and target.suffix == ".json":
        return _load_eval_results(target)
    if not target.exists():
        raise TlabError(f"{path} does not exist")
    if not target.is_dir():
        raise TlabError(f"{path} is not a tlab run directory (nor a `tlab eval --output` JSON file)")
    names = ("config.yaml", "log.jsonl", "metrics.json")
    if not any((target / name).is_file() for name in names):
        hint = " (it holds run directories: pass them, e.g. " + f"{path.rstrip('/')}/*)" if any(
            (child / "log.jsonl").is_file() for child in target.iterdir() if child.is_dir()) else ""
        raise TlabError(f"{path} is not a tlab run directory: it has no {', '.join(names)}{hint}")
    run = Run(target, task="?", status="interrupted")
    records, skipped = read_log(target / "log.jsonl")
    if skipped:
        last = skipped == [len((target / "log.jsonl").read_text(errors="replace").splitlines())]
        run.notes.append(f"log.jsonl line {skipped[0]} is cut off (the run was killed while writing it): skipped" if last
                         else f"log.jsonl lines {', '.join(map(str, skipped))} are not JSON: skipped")
    for record in records:
        if record.get("event") in ("start", "resume"):
            run.facts.update({k: v for k, v in record.items() if k not in ("event", "time")})
            run.facts.setdefault("started", record.get("time"))
        elif "step" in record and any(k.startswith("eval_") for k in record):
            run.evals[record["step"]] = {k[5:]: v for k, v in record.items() if k.startswith("eval_")}
        elif "step" in record and "event" not in record:
            run.train[record["step"]] = record
    try:
        run.metrics = json.loads((target / "metrics.json").read_text()) if (target / "metrics.json").is_file() else None
    except ValueError:
        run.notes.append("metrics.json is not valid JSON: ignored")
    if run.metrics:
        run.facts.update(run.metrics)
    run.task = run.facts.get("task") or _config_task(target) or "?"
    run.outcomes = _outcomes(target / "outcomes.json", run.notes)
    from tlab.runlock import held_by_another

    if held_by_another(target):
        run.status = "running"
    elif run.metrics is not None:
        run.status = "pruned" if run.metrics.get("state") == "pruned" else "finished"
    if not records and run.metrics is None:
        run.notes.append("log.jsonl is empty or missing: nothing logged yet")
    return run


def _config_task(run_dir: Path) -> Optional[str]:
    try:
        import yaml

        return (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("task")
    except Exception:
        return None


def _load_eval_results(path: Path) -> Run:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise TlabError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "metrics" not in data or "task" not in data:
        raise TlabError(f"{path} is neither a tlab run directory nor a `tlab eval --output` results file")
    return Run(path, task=data["task"], status="eval", facts=dict(data), metrics=data, outcomes=data.get("outcomes") or None)


def _outcomes(path: Path, notes: list) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("outcomes") or None
    except (ValueError, AttributeError):
        notes.append(f"{path.name} is not valid JSON: not compared")
        return None


def labels(runs: list[Run]) -> None:
    """Each run's name in tables and legends: its directory name, with parents added until names are unique."""
    depth = 1
    while True:
        names = ["/".join(r.path.resolve().parts[-depth:]) for r in runs]
        if len(set(names)) == len(names) or depth > 6:
            break
        depth += 1
    for run, name in zip(runs, names):
        run.label = name


# -- tables ---------------------------------------------------------------------------------------------------
def _task_info(task: str):
    from tlab import tasks

    try:
        return tasks.info(task)
    except Exception:  # a task of another tlab version, or a registry that does not import
        return None


def metric_names(task: str, runs: list[Run]) -> list[str]:
    """The group's numeric scores, the task's own metrics first."""
    info = _task_info(task)
    seen: list[str] = list(info.metrics) if info else []
    present = set()
    for run in runs:
        present.update(k for k, v in run.final().items() if _number(v))
        for scores in run.evals.values():
            present.update(k for k, v in scores.items() if _number(v))
    extra = sorted(present - set(seen))
    return [m for m in seen + extra if m in present and m not in COUNTS]


def main_metric(task: str, names: list[str]) -> tuple[Optional[str], bool]:
    info = _task_info(task)
    if info and info.main_metric:
        return info.main_metric, info.greater_is_better
    if not names:
        return None, True
    return names[0], not any(word in names[0] for word in LOWER_IS_BETTER)


def best(run: Run, metric: Optional[str], greater: bool) -> Optional[tuple[float, int]]:
    points = [(scores[metric], step) for step, scores in run.evals.items() if metric and _number(scores.get(metric))]
    if not points:
        return None
    return (max if greater else min)(points, key=lambda p: (p[0], p[1]) if greater else (p[0], -p[1]))


def _seconds(run: Run) -> Optional[float]:
    if run.metrics is not None:
        return run.metrics.get("train_seconds") or run.metrics.get("eval_seconds")
    log = run.path / "log.jsonl"
    if run.facts.get("started") and log.is_file():
        return max(0.0, log.stat().st_mtime - run.facts["started"])  # wall time so far, pauses included
    return None


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else (f"{rest // 60}m {rest % 60:02d}s" if rest >= 60 else f"{rest} s")


def _compact(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= size * 10:
                return f"{value / size:.1f}{unit}"
        return str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


@dataclass
class Table:
    task: str
    columns: list[str]
    rows: list[list[str]]
    compact_columns: list[str]
    compact_rows: list[list[str]]


def tables(runs: list[Run]) -> list[Table]:
    """One table per task, tasks in the order their first run was given."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.task, []).append(run)
    found = []
    for task, members in groups.items():
        info = _task_info(task)
        pretraining = info is not None and info.family.command == "pretrain"
        rate = "tokens/s" if pretraining else "samples/s"
        names = metric_names(task, members)
        main, greater = main_metric(task, names)
        columns = ["run", "status", "model", "params", "steps", "epochs", "wall time", rate, "precision", "world",
                   *names] + ([f"best {main} (step)"] if main else [])
        compact_columns = ["run", "status", "steps", "time", rate, *names] + ([f"best {main}"] if main else [])
        rows, compact_rows = [], []
        for run in members:
            last = run.train[max(run.train)] if run.train else {}
            throughput = run.facts.get(rate.replace("/", "_per_")) if run.complete else None
            if throughput is None and rate == "tokens/s":
                throughput = last.get("tokens_per_s")
            epochs = run.facts.get("epochs") if run.complete else last.get("epoch")
            final = run.final()
            top = best(run, main, greater)
            if top is None and main and run.complete and _number(final.get(main)):
                top = (final[main], run.steps())
            status = run.status if run.status in ("finished", "pruned", "eval") else f"{run.status} (no metrics.json)"
            scores = [_compact(final.get(name)) for name in names]
            best_cell = [f"{_compact(top[0])} ({top[1]})" if top else "—"] if main else []
            rows.append([run.label, status, str(run.facts.get("model") or "—"), _compact(run.facts.get("parameters")),
                         _compact(run.steps()), _compact(epochs), _duration(_seconds(run)), _compact(throughput),
                         str(run.facts.get("precision") or "—"), _compact(run.facts.get("world_size")), *scores, *best_cell])
            compact_rows.append([run.label, run.status, _compact(run.steps()), _duration(_seconds(run)), _compact(throughput),
                                 *scores, *[c.split(" (")[0] for c in best_cell]])
        found.append(Table(task, columns, rows, compact_columns, compact_rows))
    return found


def markdown(table: Table, compact: bool = False) -> str:
    columns, rows = (table.compact_columns, table.compact_rows) if compact else (table.columns, table.rows)
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------------------------
@dataclass
class Plot:
    path: Path
    task: str
    quantity: str  # train/loss, train/lr, eval/<metric>
    lines: list[str]  # the run label of each line drawn
    size: tuple[int, int]  # pixels (width, height)


def plots(runs: list[Run], out: Path) -> list[Plot]:
    """One PNG per task and quantity, one line per run that logged it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    made = []
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.status != "eval":
            groups.setdefault(run.task, []).append(run)
    for task, members in groups.items():
        series = [(run, run.series()) for run in members]
        quantities = [q for q in ("train/loss", "train/lr") if any(q in s for _r, s in series)]
        quantities += sorted({q for _r, s in series for q in s if q.startswith("eval/")})
        for quantity in quantities:
            figure = Figure(figsize=FIGSIZE, dpi=DPI)
            FigureCanvasAgg(figure)
            axes = figure.add_subplot()
            for run, found in series:
                if quantity in found:
                    steps, values = zip(*found[quantity])
                    axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=run.label)
            axes.set_title(f"{task}: {quantity.replace('/', ' ')}")
            axes.set_xlabel("optimizer step")
            axes.set_ylabel(quantity.split("/", 1)[1])
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small")
            figure.tight_layout()
            lines = [line.get_label() for line in axes.get_lines()]
            path = out / f"{_slug(task)}_{_slug(quantity)}.png"
            figure.savefig(path, dpi=DPI)
            width, height = figure.canvas.get_width_height()
            made.append(Plot(path, task, quantity, lines, (width, height)))
    return made


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


# -- paired comparisons --------------------------------------------------------------------------------------
@dataclass
class Comparison:
    task: str
    baseline: str  # run labels
    new: str
    result: dict  # tlab.outcomes.compare's


def comparisons(runs: list[Run], found_notes: list[str]) -> list[Comparison]:
    """Per task, every run with per-example outcomes against the first such run, on the same examples; runs of
    other examples get a note instead."""
    from tlab import outcomes

    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.outcomes:
            groups.setdefault(run.task, []).append(run)
    made = []
    for task, members in groups.items():
        first = members[0]
        for other in members[1:]:
            try:
                result = outcomes.compare({"task": task, "outcomes": first.outcomes}, {"task": task, "outcomes": other.outcomes},
                                          source=first.label, what=first.label)
            except TlabError as exc:
                found_notes.append(f"{other.label} not compared with {first.label} example by example: {exc}")
                continue
            made.append(Comparison(task, first.label, other.label, result))
    return made


def comparison_markdown(comparison: Comparison) -> str:
    from tlab import outcomes

    rows = outcomes.table(comparison.result)
    return markdown(Table(comparison.task, rows[0], rows[1:], rows[0], rows[1:]))


def comparison_title(comparison: Comparison) -> str:
    r = comparison.result
    return (f"{comparison.new} against {comparison.baseline}: {r['examples']} examples, new - baseline, "
            f"{r['level']:.0%} paired-bootstrap intervals ({r['resamples']} resamples, seed {r['seed']})")


# -- the report -----------------------------------------------------------------------------------------------
@dataclass
class Report:
    runs: list[Run]
    tables: list[Table]
    plots: list[Plot]
    notes: list[str]
    files: list[Path]
    comparisons: list[Comparison] = field(default_factory=list)


def notes(runs: list[Run]) -> list[str]:
    found = [f"{run.label}: {note}" for run in runs for note in run.notes]
    incomplete = [f"{run.label} ({run.status}, step {run.steps() or 0})" for run in runs if not run.complete]
    if incomplete:
        found.append("incomplete (no metrics.json; scores are the latest evaluation): " + ", ".join(incomplete))
    return found


def build(paths: list[str], output: Optional[str] = None, html_page: bool = False) -> Report:
    if not paths:
        raise TlabError("give at least one run directory")
    runs = [load(p) for p in paths]
    labels(runs)
    if not any(run.train or run.evals or run.metrics for run in runs):
        raise TlabError(f"nothing to report: {', '.join(paths)} logged no steps yet (log.jsonl is empty)")
    out = Path(output) if output else (runs[0].path if runs[0].path.is_dir() else runs[0].path.parent) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlabError(f"cannot write the report to {out}: {exc.strerror}") from None
    report = Report(runs, tables(runs), plots(runs, out), notes(runs), [])
    report.comparisons = comparisons(runs, report.notes)
    from tlab.outputs import write_atomic

    write_atomic(out / "report.md", to_markdown(report))
    report.files = [out / "report.md", *[p.path for p in report.plots]]
    if html_page:
        write_atomic(out / "report.html", to_html(report))
        report.files.append(out / "report.html")
    return report


def to_markdown(report: Report, compact: bool = False) -> str:
    parts = []
    for table in report.tables:
        parts += [f"### {table.task}" if not compact else f"**{table.task}**", "", markdown(table, compact), ""]
        for comparison in (c for c in report.comparisons if c.task == table.task):
            parts += [f"paired comparison, {comparison_title(comparison)}:", "", comparison_markdown(comparison), ""]
        if not compact:
            parts += [f"![{p.task}: {p.quantity}]({p.path.name})" for p in report.plots if p.task == table.task] + [""]
    parts += [f"- {note}" for note in report.notes]
    return "\n".join(parts).rstrip() + "\n"


def to_html(report: Report) -> str:
    """One page, no external files: the tables, the notes and the plots as base64 PNGs."""
    body = ["<h1>tlab report</h1>"]
    for table in report.tables:
        body.append(f"<h2>{html.escape(table.task)}</h2><table><tr>"
                    + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows]
        body.append("</table>")
        for comparison in (c for c in report.comparisons if c.task == table.task):
            from tlab import outcomes

            rows = outcomes.table(comparison.result)
            body.append(f"<p>paired comparison, {html.escape(comparison_title(comparison))}</p><table><tr>"
                        + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]]
            body.append("</table>")
        body.append("<div class='plots'>")
        for plot in (p for p in report.plots if p.task == table.task):
            data = base64.b64encode(plot.path.read_bytes()).decode()
            body.append(f"<img alt='{html.escape(plot.task)}: {html.escape(plot.quantity)}' "
                        f"width='{plot.size[0]}' height='{plot.size[1]}' src='data:image/png;base64,{data}'>")
        body.append("</div>")
    if report.notes:
        body.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:14px}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "img{margin:8px 8px 0 0;max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>tlab report</title><style>{style}</style></head>"
            f"<body>\n" + "\n".join(body) + "\n</body></html>\n")
