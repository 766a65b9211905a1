"""`tlab eval`: score a checkpoint on a task; JSON results and an exit code a CI job can gate on."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, user_errors
from tlab.errors import TlabError

PASSED, FAILED, BROKEN = 0, 1, 2  # BROKEN: bad input, an unusable model or an unexpected error; never "a worse model"


def parse_bounds(items: list[str], flag: str) -> dict[str, float]:
    """["accuracy=0.9"] -> {"accuracy": 0.9}."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            found[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise TlabError(f"{flag} {item!r} is not of the form metric=value (e.g. accuracy=0.9)")
        if not math.isfinite(found[name.strip()]):
            raise TlabError(f"{flag} {item!r}: the bound must be a finite number")
    return found


def check_writable(output: str) -> None:
    """Refuse an --output that cannot be written before the evaluation runs, not after it (write_json creates
    missing folders, so the nearest existing one must take a new file: a probe file says so even for root)."""
    import tempfile

    target = Path(output).expanduser()
    if target.is_dir():
        raise TlabError(f"--output {output} is a folder: give a file name, e.g. {target / 'results.json'}")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise TlabError(f"--output {output} cannot be written: {parent} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".tlab-probe-"):
            pass
    except OSError as exc:
        raise TlabError(f"--output {output} cannot be written: {parent} takes no new files ({exc.strerror or exc})") from None


def refuse_non_finite(metrics: dict, model: str) -> None:
    """A NaN/inf loss means NaN/inf outputs: the model is broken (a diverged run), which is not a score to gate on.
    Other metrics may be NaN for a finite model (Pearson of constant predictions); those only fail their gates."""
    loss = metrics.get("loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        raise TlabError(f"model outputs are not finite ({loss} loss): {model} is broken (diverged training?), not scored")


def gates(metrics: dict, bounds: list[tuple[str, str, float]]) -> list[dict]:
    """One record per --min/--max; a non-finite value passes no gate (inf >= 0.9 would otherwise hold)."""
    def holds(value, op: str, bound: float) -> bool:
        return math.isfinite(value) and (value >= bound if op == ">=" else value <= bound)

    return [{"metric": m, "op": op, "bound": v, "value": metrics[m], "passed": holds(metrics[m], op, v)}
            for m, op, v in bounds]


@app.command("eval")
def eval_command(
    task: o.Task = None,
    model: o.Model = None,
    data_dir: o.DataDir = None,
    validation_file: o.ValidationFile = None,
    minimum: Annotated[Optional[list[str]], typer.Option("--min", help="Gate: metric=value; exit 1 when the metric is below it (repeatable).")] = None,
    maximum: Annotated[Optional[list[str]], typer.Option("--max", help="Gate: metric=value; exit 1 when the metric is above it, e.g. perplexity=40.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", help="Write the results as JSON to this file.")] = None,
    batch_size: o.BatchSize = None,
    precision: o.Precision = None,
    config: o.ConfigFile = None,
    overrides: o.Overrides = None,
) -> None:
    """Evaluate a checkpoint on a task's validation data. Exit codes: 0 every --min/--max holds, 1 a gate failed,
    2 anything else (bad input, a model that does not fit the task or outputs NaN, an unexpected error).

    [dim]Example (a CI gate):[/dim]  tlab eval --task sst2 --model runs/sst2 --min accuracy=0.90 --output results.json
    """
    code = PASSED
    with user_errors(unexpected_exit=BROKEN):
        from tlab import config as config_mod, outputs, pipeline

        bounds = [(m, ">=", v) for m, v in parse_bounds(minimum or [], "--min").items()]
        bounds += [(m, "<=", v) for m, v in parse_bounds(maximum or [], "--max").items()]
        flags = o.common_flags(task=task, model=model, data_dir=data_dir, validation_file=validation_file,
                               precision=precision)
        flags["train.eval_batch_size"] = batch_size
        cfg = config_mod.load(config, flags, overrides, defaults={"task": "sst2", "data.validation_fraction": 0.05})
        from tlab.tasks import info

        info(cfg.task)  # an unknown task fails before any model is loaded
        if output:
            check_writable(output)
        results = pipeline.evaluate(cfg)
        refuse_non_finite(results["metrics"], cfg.model.name_or_path)
        unknown = [m for m, _, _ in bounds if m not in results["metrics"]]
        if unknown:
            raise TlabError(f"--min/--max name metric(s) {', '.join(unknown)} that task {cfg.task} does not report "
                            f"(it reports: {', '.join(results['metrics'])})")
        results["gates"] = gates(results["metrics"], bounds)
        results["passed"] = all(g["passed"] for g in results["gates"])
        if output:
            outputs.write_json(Path(output), results)
        typer.echo(f"{cfg.task} on {', '.join(results['splits'])} ({results['examples']} examples, {results['eval_seconds']:.1f} s)")
        for name, value in results["metrics"].items():
            marks = [f"{g['op']} {g['bound']:g} {'ok' if g['passed'] else 'FAILED'}" for g in results["gates"] if g["metric"] == name]
            shown = f"{value:d}" if isinstance(value, int) else f"{value:.4f}"
            typer.echo(f"  {name:24s} {shown:>10s}  {'; '.join(marks)}".rstrip())
        if not results["passed"]:
            code = FAILED
    raise typer.Exit(code)

