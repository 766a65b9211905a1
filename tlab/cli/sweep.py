"""`tlab sweep`: hyperparameter search, each trial a normal run under the sweep folder (tlab.sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, user_errors

Space = Annotated[Optional[list[str]], typer.Option("--space", "-s", help="A searched key (repeatable): key=lo:hi (uniform; ints when both bounds are), key=lo:hi:log, key=a,b,c (categorical). Adds to / replaces the YAML's sweep.space.", rich_help_panel="Sweep")]
Trials = Annotated[Optional[int], typer.Option("--trials", "-n", help="Trials to finish (default 20); with --resume, more extends the sweep.", rich_help_panel="Sweep")]
Keep = Annotated[Optional[str], typer.Option("--keep", help="Models kept: best (default; the others' model/ deleted as they are superseded) | all | none.", rich_help_panel="Sweep")]
Jobs = Annotated[Optional[int], typer.Option("--jobs", "-j", help="Trials run at once, each in its own process (default 1: one at a time).", rich_help_panel="Sweep")]
SamplerSeed = Annotated[Optional[int], typer.Option("--sampler-seed", help="Seed of the TPE sampler (sweep.seed; --seed is the trials' train.seed).", rich_help_panel="Sweep")]
SweepDir = Annotated[Optional[str], typer.Option("--output-dir", "-o", help="The sweep folder: trial-NNN/ run directories, study.db, trials.csv, plots, best.yaml (default sweeps/<task>-<time>).", rich_help_panel="Run")]
SweepResume = Annotated[Optional[bool], typer.Option("--resume", help="Continue the sweep in --output-dir (a trial cut mid-run is run again, from its checkpoint); several processes may share one sweep.", rich_help_panel="Run")]
Worker = Annotated[bool, typer.Option("--worker", hidden=True, help="Run trials of --output-dir's sweep only (what --jobs starts).")]


@app.command()
def sweep(
    task: o.Task = None, model: o.Model = None, data_dir: o.DataDir = None, train_file: o.TrainFile = None,
    validation_file: o.ValidationFile = None, config: o.ConfigFile = None, output_dir: SweepDir = None,
    space: Space = None, trials: Trials = None, keep: Keep = None, jobs: Jobs = None, sampler_seed: SamplerSeed = None,
    resume: SweepResume = None, max_steps: o.MaxSteps = None, epochs: o.Epochs = None, batch_size: o.BatchSize = None,
    lr: o.Lr = None, seed: o.Seed = None, precision: o.Precision = None, eval_every: o.EvalEvery = None,
    report_to: o.ReportTo = None, dry_run: o.DryRun = False, worker: Worker = False, overrides: o.Overrides = None,
) -> None:
    """Search hyperparameters: optuna's TPE sampler (seeded), median pruning on the evaluations during training,
    the task's main metric on its validation split. Every trial is a run directory under the sweep folder; the study
    is SQLite (study.db), so a killed sweep continues with --resume. At the end: a table, trials.csv, plots of the
    scores and of parameter importances, and best.yaml (`tlab finetune --config best.yaml` reruns the best).

    [dim]Examples:[/dim]
      tlab sweep --task sst2 --model $MINILM --data-dir glue/ --trials 20 --space "train.lr=1e-5:2e-4:log" --space "train.epochs=2,3,4" --space "train.warmup=0:0.2" -o sweeps/sst2
      tlab sweep --config configs/sweep/sst2.yaml --model $MINILM train.batch_size=16   # a sweep: block, overrides for all trials
      tlab sweep --resume -o sweeps/sst2 --trials 30 --jobs 2
    """
    with user_errors():
        from tlab.errors import TlabError
        from tlab.sweep import results, study

        flags = o.common_flags(task=task, model=model, data_dir=data_dir, train_file=train_file, validation_file=validation_file,
                               max_steps=max_steps, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                               precision=precision, eval_every=eval_every, report_to=report_to)
        wanted = {"trials": trials, "space": space, "keep": keep, "jobs": jobs, "seed": sampler_seed, "output_dir": output_dir}
        given = config or overrides or space or sampler_seed is not None or any(v is not None for v in flags.values())
        found = _open(config, flags, overrides, wanted, resume, bool(given))
        if dry_run:
            from tlab.sweep import settings

            typer.echo(settings.to_yaml(found.base, found.settings, found.folder), nl=False)
            typer.echo("\n".join(f"# {p.describe()}" for p in found.params))
            return
        if not resume:
            study.create(found)
        try:
            if worker or found.settings.jobs == 1:
                study.optimize(found, typer.echo)
            else:
                study.spawn(found, typer.echo)
        except TlabError:
            if not resume:
                study.discard_if_unused(found)
            raise
        if not worker:
            results.finish(found, typer.echo)


def _open(config_file, flags, overrides, wanted, resume, given):
    """The sweep: a new one from the config, flags and overrides, or the stored one of --output-dir (--resume)."""
    from tlab.errors import TlabError
    from tlab.sweep import settings, space, study

    settings_of = settings.resolve(settings.block_of(config_file), wanted)
    if resume and not (wanted["output_dir"] or settings_of.output_dir):
        raise TlabError("--resume: name the sweep folder with --output-dir")
    if resume:
        folder = Path(wanted["output_dir"] or settings_of.output_dir)
        stored = settings.read(folder)
        if given:  # the command again: it must describe the same sweep (the stored settings fill in what it omits)
            import dataclasses

            again = settings.resolve({**dataclasses.asdict(stored[1]), **settings.block_of(config_file)}, wanted)
            differ = settings.differences(stored, (_base(config_file, flags, overrides, again), again))
            if differ:
                raise TlabError(f"--resume: the sweep in {folder} was started with other settings ({', '.join(differ[:4])}"
                                f"{', ...' if len(differ) > 4 else ''}); a resumed sweep may change only --trials, --jobs and --keep")
        found = study.Sweep.of(folder, *stored)
        return study.with_settings(found, trials=wanted["trials"], jobs=wanted["jobs"], keep=wanted["keep"])
    base = _base(config_file, flags, overrides, settings_of)
    folder = Path(settings_of.output_dir or settings.default_dir(base.task))
    found = study.Sweep.of(folder, base, settings_of)
    space.check(base, found.params)
    return found


def _base(config_file, flags, overrides, sweep_settings):
    """Every trial's base config: the command's defaults < YAML < flags < overrides, none of them a searched key."""
    from tlab import config as config_mod, tasks
    from tlab.cli.defaults import for_command
    from tlab.errors import TlabError
    from tlab.sweep import settings

    searched = {p.key for p in sweep_settings.params()}
    fixed = [k for k, v in flags.items() if v is not None] + [item.partition("=")[0].strip() for item in overrides or []]
    clash = sorted(searched & set(fixed))
    if clash:
        raise TlabError(f"{clash[0]} is both searched (--space) and fixed (a flag or key=value override): drop one")
    first = config_mod.load(config_file, flags, overrides, own_sections=("sweep",), defaults={"task": "sst2"})
    found = for_command(tasks.info(first.task).family.command, flags, config_file, overrides, own_sections=("sweep",))
    cfg = config_mod.load(config_file, flags, overrides, defaults=found, own_sections=("sweep",))
    return settings.base_for_trials(cfg)
