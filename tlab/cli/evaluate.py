"""`tlab eval`: score a checkpoint on a task; JSON results and an exit code a CI job can gate on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, user_errors
from tlab.errors import TlabError

PASSED, FAILED = 0, 1  # bad input exits with TlabError.exit_code (2)


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
    return found


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
    """Evaluate a checkpoint on a task's validation data. Exit 0 when every --min/--max holds, 1 when one
    fails, 2 on bad input.

    [dim]Example (a CI gate):[/dim]  tlab eval --task sst2 --model runs/sst2 --min accuracy=0.90 --output results.json
    """
    code = PASSED
    with user_errors():
        from tlab import config as config_mod, outputs, pipeline

        bounds = [(m, ">=", v) for m, v in parse_bounds(minimum or [], "--min").items()]
        bounds += [(m, "<=", v) for m, v in parse_bounds(maximum or [], "--max").items()]
        flags = o.common_flags(task=task, model=model, data_dir=data_dir, validation_file=validation_file,
                               precision=precision)
        flags["train.eval_batch_size"] = batch_size
        cfg = config_mod.load(config, flags, overrides, defaults={"task": "sst2", "data.validation_fraction": 0.05})
        from tlab.tasks import info

        info(cfg.task)  # an unknown task fails before any model is loaded
        results = pipeline.evaluate(cfg)
        unknown = [m for m, _, _ in bounds if m not in results["metrics"]]
        if unknown:
            raise TlabError(f"--min/--max name metric(s) {', '.join(unknown)} that task {cfg.task} does not report "
                            f"(it reports: {', '.join(results['metrics'])})")
        results["gates"] = [
            {"metric": m, "op": op, "bound": v, "value": results["metrics"][m],
             "passed": results["metrics"][m] >= v if op == ">=" else results["metrics"][m] <= v}
            for m, op, v in bounds
        ]
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

