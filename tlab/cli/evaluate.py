"""`tlab eval`: score a checkpoint on a task; JSON results and an exit code a CI job can gate on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, user_errors
from tlab.errors import TlabError
from tlab.gates import BROKEN, FAILED, PASSED, check_writable, gates, parse_bounds, refuse_non_finite


@app.command("eval")
def eval_command(
    task: o.Task = None,
    model: o.Model = None,
    data_dir: o.DataDir = None,
    validation_file: o.ValidationFile = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Score this split of the task's data instead of its validation split(s), by the task's name for it, e.g. test or testb for conll2003, validation_mismatched for mnli (data.eval_split; `tlab tasks` lists the tasks).", rich_help_panel="Data")] = None,
    minimum: Annotated[Optional[list[str]], typer.Option("--min", help="Gate: metric=value; exit 1 when the metric is below it (repeatable).")] = None,
    maximum: Annotated[Optional[list[str]], typer.Option("--max", help="Gate: metric=value; exit 1 when the metric is above it, e.g. perplexity=40.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", help="Write the results as JSON to this file (with each example's outcome: what --baseline compares).")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Compare with these results, example by example: a `tlab eval --output` file, or a run (its outcomes.json; a run or model without one is evaluated on the same examples). Shows delta, 95% paired-bootstrap interval, p-value (McNemar for accuracy), n and verdict.", rich_help_panel="Comparison")] = None,
    max_drop: Annotated[Optional[list[str]], typer.Option("--max-drop", help="Gate on --baseline: metric=tolerance; exit 1 only when the metric dropped by more than the tolerance with 95% confidence (the interval's upper end below -tolerance), e.g. accuracy=0.01 (repeatable; the metric's own units).", rich_help_panel="Comparison")] = None,
    batch_size: o.BatchSize = None,
    precision: o.Precision = None,
    shots: Annotated[Optional[int], typer.Option("--shots", help="Score a causal LM on a classification task from prompts holding N solved training examples (0 = zero-shot): the label whose verbalisation is most likely wins (fewshot.* sets the template).", rich_help_panel="Few-shot")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Few-shot: seed of the shots drawn for each example.", rich_help_panel="Few-shot")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config (and the first few-shot prompt) and exit.")] = False,
    config: o.ConfigFile = None,
    overrides: o.Overrides = None,
) -> None:
    """Evaluate a checkpoint on a task's validation data, or on another split of it (--split). Exit codes: 0 every
    --min/--max/--max-drop holds, 1 a gate failed, 2 anything else (bad input, a model that does not fit the task or
    outputs NaN, a --baseline of other examples or another task, an unexpected error).

    [dim]Examples:[/dim]
      tlab eval --task sst2 --model runs/sst2 --min accuracy=0.90 --output results.json   # a CI gate
      tlab eval --task conll2003 --model runs/ner --split testb --min f1=0.85 --output test.json
      tlab eval --task clm --model gpt2-folder --validation-file text.txt                  # perplexity
      tlab eval --task sst2 --model runs/gpt --shots 4 --data-dir glue/                    # a causal LM, 4-shot
      tlab eval --model runs/sst2-new --baseline main.json --max-drop accuracy=0.01       # noise or regression?
    """
    code = PASSED
    with user_errors(unexpected_exit=BROKEN):
        from tlab import config as config_mod, outputs, pipeline

        bounds = [(m, ">=", v) for m, v in parse_bounds(minimum or [], "--min").items()]
        bounds += [(m, "<=", v) for m, v in parse_bounds(maximum or [], "--max").items()]
        tolerances = parse_bounds(max_drop or [], "--max-drop")
        if tolerances and not baseline:
            raise TlabError("--max-drop gates on a comparison: pass --baseline (a `tlab eval --output` file or a run)")
        flags = o.common_flags(task=task, model=model, data_dir=data_dir, validation_file=validation_file,
                               precision=precision)
        flags.update({"train.eval_batch_size": batch_size, "data.eval_split": split, "fewshot.shots": shots,
                      "fewshot.seed": seed})
        # A tlab run is scored the way it was trained: its config.yaml (task, max length, held-out split and seed,
        # task options) is the base that --config, flags and key=value override. On another task (a causal LM
        # scored few-shot on sst2) only its model is taken: its data options are its own task's.
        run_config = outputs.run_config_of(model) if model else None
        if run_config and task and task != outputs.task_of_run(run_config):
            run_config = None
        cfg = config_mod.load(config, flags, overrides, run_config=run_config)
        from tlab.tasks import info

        if task is None and run_config is None and not config:
            raise TlabError("pass --task (see `tlab tasks`): the model is not a tlab run directory with a config.yaml")
        info(cfg.task)  # an unknown task fails before any model is loaded
        if dry_run:
            typer.echo(config_mod.to_yaml(cfg), nl=False)
            shown = pipeline.preview(cfg)
            if shown:
                typer.echo(shown)
            raise typer.Exit(0)
        if output:
            check_writable(output)
        base = pipeline.read_baseline(baseline, cfg.task) if baseline else None
        results = pipeline.evaluate(cfg)
        refuse_non_finite(results["metrics"], cfg.model.name_or_path)
        unknown = [m for m, _, _ in bounds if m not in results["metrics"]]
        if unknown:
            raise TlabError(f"--min/--max name metric(s) {', '.join(unknown)} that task {cfg.task} does not report "
                            f"(it reports: {', '.join(results['metrics'])})")
        results["gates"] = gates(results["metrics"], bounds)
        results["passed"] = all(g["passed"] for g in results["gates"])
        if base is not None:
            results["comparison"] = pipeline.compare(cfg, results, base, baseline, tolerances,
                                                     echo=lambda m: typer.echo(m, err=True))
            results["passed"] = results["passed"] and results["comparison"]["passed"]
        artifacts = results.pop("artifacts", {})
        if output:
            outputs.write_json(Path(output), results)
            for name, content in artifacts.items():  # e.g. QA's predictions.json, beside the results
                outputs.write_artifact(Path(output).with_name(name), content)
        typer.echo(f"{cfg.task} on {', '.join(results['splits'])} ({results['examples']} examples, {results['eval_seconds']:.1f} s)")
        for name, value in results["metrics"].items():
            marks = [f"{g['op']} {g['bound']:g} {'ok' if g['passed'] else 'FAILED'}" for g in results["gates"] if g["metric"] == name]
            shown = value if isinstance(value, str) else f"{value:d}" if isinstance(value, int) else f"{value:.4f}"
            typer.echo(f"  {name:24s} {shown:>10s}  {'; '.join(marks)}".rstrip() if not isinstance(value, str) else f"  {name:24s} {shown}")
        if base is not None:
            _show(results["comparison"])
        if not results["passed"]:
            code = FAILED
    raise typer.Exit(code)


def _show(comparison: dict) -> None:
    from tlab import outcomes

    for line in outcomes.lines(comparison):
        typer.echo(line)
