"""Running a sweep's trials against its study (SWEEP/study.db), one process or several.

Each process takes a trial under the sweep lock (SWEEP/.sweep.lock): it fails the trials left RUNNING by dead
processes, queues their re-runs, counts what is done or under way against --trials and asks optuna for the next
trial, whose claim (a flock on SWEEP/.claims/trial-NNN/, dropped by the kernel however the process dies) tells the
other processes it is alive. A re-run continues its cut trial's run directory from its newest checkpoint.

What counts toward --trials: complete and pruned trials, trials failed by their parameters (diverged, out of
memory) and those running or queued. A trial cut by a kill, Ctrl-C or an unexpected error is failed without
counting and run again, once, with the same parameters.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tlab import config, faults, tasks
from tlab.errors import Diverged, Pruned, TlabError
from tlab.outputs import CHECKPOINTS, RunDir
from tlab.runlock import RunLock, held_by_another
from tlab.sweep import settings as st
from tlab.sweep.space import Param

STUDY_FILE = "study.db"
STUDY_NAME = "tlab-sweep"
CLAIMS = ".claims"
LOCK = ".sweep.lock"


@dataclass
class Sweep:
    """A sweep folder and what its sweep.yaml says."""

    folder: Path
    base: config.RunConfig
    settings: st.SweepConfig
    params: list[Param] = field(default_factory=list)
    metric: str = ""  # the score: train.best_metric, else the task's main metric
    greater: bool = True  # maximise it (minimise a loss)

    @classmethod
    def of(cls, folder: Path, base: config.RunConfig, sweep: st.SweepConfig) -> "Sweep":
        info = tasks.info(base.task)
        if not info.main_metric:
            raise TlabError(f"task {base.task} has no main metric to tune")
        tasks.check_options(info, base)
        return cls(Path(folder), base, sweep, sweep.params(), *tasks.selection(info, base))

    def run_dir(self, number: int) -> Path:
        return self.folder / f"trial-{number:03d}"

    def claim_dir(self, number: int) -> Path:
        return self.folder / CLAIMS / f"trial-{number:03d}"


def create(sweep: Sweep) -> None:
    """A new sweep folder with its sweep.yaml and study; refused where one exists (continue it with --resume)."""
    folder = sweep.folder
    if (folder / STUDY_FILE).exists() or (folder / st.SWEEP_FILE).exists():
        raise TlabError(f"sweep folder {folder} already holds a sweep: continue it with --resume, or pick another --output-dir")
    if folder.exists() and any(folder.iterdir()):
        raise TlabError(f"output directory {folder} exists and is not empty: pick another --output-dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlabError(f"cannot create sweep folder {folder}: {exc.strerror}") from None
    st.write(folder, sweep.base, sweep.settings)
    open_study(sweep)


def discard_if_unused(sweep: Sweep) -> None:
    """A new sweep whose trials all failed on bad input (a missing --data-dir) leaves nothing behind: the same
    command, corrected, starts it again."""
    from optuna.trial import TrialState as S

    trials = open_study(sweep).get_trials(deepcopy=False)
    if all(t.state == S.FAIL and not t.user_attrs.get("counted") for t in trials):
        shutil.rmtree(sweep.folder, ignore_errors=True)


def open_study(sweep: Sweep):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = sweep.settings
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials, n_warmup_steps=s.pruner_warmup_steps)
              if s.pruner == "median" else optuna.pruners.NopPruner())
    # several processes share one SQLite file: a writer waits for another's transaction instead of failing
    storage = optuna.storages.RDBStorage(f"sqlite:///{(sweep.folder / STUDY_FILE).resolve()}",
                                         engine_kwargs={"connect_args": {"timeout": 300}})
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, load_if_exists=True, pruner=pruner,
                               direction="maximize" if sweep.greater else "minimize")


@contextmanager
def locked(folder: Path):
    """The sweep lock (blocking): one process at a time takes a trial or tidies the run directories."""
    import fcntl

    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def counted(trials) -> int:
    from optuna.trial import TrialState as S

    return sum(t.state in (S.COMPLETE, S.PRUNED, S.RUNNING, S.WAITING) or (t.state == S.FAIL and bool(t.user_attrs.get("counted")))
               for t in trials)


def optimize(sweep: Sweep, echo: Callable[[str], None]) -> None:
    """Run trials in this process until the sweep has its --trials (the others' included)."""
    study = open_study(sweep)
    while True:
        taken = _take(sweep, study, echo)
        if taken is None:
            return
        trial, params, run_dir, resume, claim = taken
        try:
            outcome = _run(sweep, trial, params, run_dir, resume, echo)
            with locked(sweep.folder):
                for key, value in outcome.attrs.items():
                    trial.set_user_attr(key, value)
                study.tell(trial, outcome.value, state=outcome.state)
                tidy(sweep, study)
        finally:
            # only once the outcome is recorded: a claim dropped earlier lets another worker's _take see the
            # trial RUNNING without a live process, fail it as cut, and make this tell raise
            claim.release()
            shutil.rmtree(claim.directory, ignore_errors=True)
        echo(f"trial {trial.number}: {outcome.line}")
        if outcome.error is not None:
            raise outcome.error


def _take(sweep: Sweep, study, echo: Callable[[str], None]):
    """Under the sweep lock: fail dead trials, queue their re-runs, and claim the next trial (None: enough)."""
    from optuna.samplers import TPESampler
    from optuna.trial import TrialState as S

    with locked(sweep.folder):
        for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
            if not held_by_another(sweep.claim_dir(t.number)):
                echo(f"trial {t.number} was cut (its process is gone): failed, to be run again")
                study.tell(t.number, state=S.FAIL, skip_if_finished=True)
                shutil.rmtree(sweep.claim_dir(t.number), ignore_errors=True)
        _queue_reruns(sweep, study)
        trials = study.get_trials(deepcopy=False)
        if counted(trials) >= sweep.settings.trials:
            return None
        # seeded by the number of trials so far: reproducible one at a time, and a resumed sweep draws afresh
        study.sampler = TPESampler(seed=sweep.settings.seed + len(trials))
        trial = study.ask()
        done = counted(study.get_trials(deepcopy=False))  # this one included (a queued re-run was counted already)
        claim_dir = sweep.claim_dir(trial.number)
        claim_dir.mkdir(parents=True, exist_ok=True)
        claim = RunLock.acquire(claim_dir, f"running trial {trial.number}")
        params = {p.key: p.suggest(trial) for p in sweep.params}
        run_dir, resume = _place(sweep, trial)
        for key, value in {"run_dir": run_dir.name, "pid": os.getpid(), "host": socket.gethostname()}.items():
            trial.set_user_attr(key, value)
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in params.items())
    echo(f"trial {trial.number} ({done}/{sweep.settings.trials}{', resumed' if resume else ''}): {shown}")
    return trial, params, run_dir, resume, claim


def _queue_reruns(sweep: Sweep, study) -> None:
    """A failed trial that does not count (cut) is queued once more with its parameters."""
    from optuna.trial import TrialState as S

    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("retry_of") for t in trials}
    keys = {p.key for p in sweep.params}
    for t in trials:
        if t.state == S.FAIL and not t.user_attrs.get("counted") and t.number not in rerun and set(t.params) == keys:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})


def _place(sweep: Sweep, trial) -> tuple[Path, bool]:
    """The trial's run directory, and whether it resumes: a re-run takes over its cut trial's directory when that
    holds a complete checkpoint (and removes it otherwise)."""
    run_dir = sweep.run_dir(trial.number)
    cut = trial.user_attrs.get("retry_of")
    if cut is None:
        return run_dir, False
    old = sweep.run_dir(int(cut))
    if old.is_dir() and RunDir(old, old, created=False).checkpoints():
        os.replace(old, run_dir)
        return run_dir, True
    shutil.rmtree(old, ignore_errors=True)
    return run_dir, False


@dataclass
class Outcome:
    state: Any  # optuna TrialState
    value: Optional[float] = None
    attrs: dict = field(default_factory=dict)
    line: str = ""
    error: Optional[BaseException] = None  # raised once the trial is recorded: it stops the sweep


class Reporter:
    """The loop's `report` hook for one trial: each evaluation's main metric goes to optuna, and the pruner may stop
    the run there (tlab.errors.Pruned)."""

    def __init__(self, trial):
        self.trial = trial

    def __call__(self, step: int, metrics: dict, main_metric: str) -> None:
        value = metrics.get(main_metric)
        if not _finite(value):
            return
        self.trial.report(float(value), step)
        faults.fault("kill-in-trial", self.trial.number)  # tests: SIGKILL at trial N's first report
        if self.trial.should_prune():
            raise Pruned(step, metrics)


def _run(sweep: Sweep, trial, params: dict, run_dir: Path, resume: bool, echo: Callable[[str], None]) -> Outcome:
    from optuna.trial import TrialState as S

    from tlab import pipeline

    cfg = st.trial_config(sweep.base, params, run_dir, resume)
    try:
        metrics = pipeline.run(cfg, echo=lambda msg: echo(f"  {run_dir.name}: {msg}"), report=Reporter(trial))
    except Pruned as exc:
        return Outcome(S.PRUNED, attrs={"pruned_at_step": exc.step}, line=f"pruned at step {exc.step}")
    except Diverged as exc:
        return Outcome(S.FAIL, attrs={"counted": True, "error": _first(exc)}, line=f"failed: {_first(exc)}")
    except KeyboardInterrupt as exc:
        return Outcome(S.FAIL, attrs={"error": "interrupted"}, line="interrupted", error=exc)
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():  # torch's, on a device
            return Outcome(S.FAIL, attrs={"counted": True, "error": _first(exc)}, line=f"failed: {_first(exc)}")
        return Outcome(S.FAIL, attrs={"error": _first(exc)}, line=f"failed: {_first(exc)} (the sweep stops here)", error=exc)
    finally:
        _free_memory()
    metric = next((k for k in metrics.get("best", {}) if k != "checkpoint"), sweep.metric)
    value = (metrics.get("final") or {}).get(metric)
    if not _finite(value):
        return Outcome(S.FAIL, attrs={"counted": True, "error": f"no finite {metric}"}, line=f"failed: no finite {metric}")
    return Outcome(S.COMPLETE, float(value), {"metric": metric, "steps": metrics.get("steps")},
                   line=f"{metric} {value:.4g} ({metrics.get('steps')} steps, {metrics.get('train_seconds', 0):.0f} s)")


def tidy(sweep: Sweep, study) -> None:
    """Checkpoints of the trials that ended go (nobody resumes them); so do the models --keep does not keep."""
    from optuna.trial import TrialState as S

    try:
        best = study.best_trial.number
    except ValueError:  # no complete trial yet
        best = None
    for t in study.get_trials(deepcopy=False):
        if not (t.state in (S.COMPLETE, S.PRUNED) or (t.state == S.FAIL and t.user_attrs.get("counted"))):
            continue
        run = sweep.folder / t.user_attrs.get("run_dir", sweep.run_dir(t.number).name)
        shutil.rmtree(run / CHECKPOINTS, ignore_errors=True)
        if sweep.settings.keep == "none" or (sweep.settings.keep == "best" and t.number != best):
            shutil.rmtree(run / "model", ignore_errors=True)


def spawn(sweep: Sweep, echo: Callable[[str], None]) -> None:
    """--jobs N: N worker processes (`tlab sweep --resume --worker`) share the study until it has its trials."""
    import signal

    from tlab import pipeline

    # the data caches are filled once, here, rather than by N workers at once (the base config's: a searched data
    # key, such as data.max_length, still makes each trial tokenize its own)
    pipeline.preprocess(st.trial_config(sweep.base, {}, sweep.folder / ".preprocess", False), echo=echo)
    _free_memory()
    command = [sys.executable, "-m", "tlab", "sweep", "--resume", "--output-dir", str(sweep.folder), "--worker"]
    env = {**os.environ, "TQDM_DISABLE": "1"}  # N progress bars on one terminal are noise
    echo(f"{sweep.settings.jobs} worker processes")
    workers = [subprocess.Popen(command, env=env) for _ in range(sweep.settings.jobs)]
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
        for w in workers:
            w.wait()
        raise
    failed = [c for c in codes if c != 0]
    if failed:
        raise TlabError(f"{len(failed)} of {len(workers)} worker processes failed (exit {failed[0]}; see their lines "
                        "above); continue with --resume")


def with_settings(sweep: Sweep, **changes: Any) -> Sweep:
    """The sweep with --trials / --jobs / --keep changed (a resumed sweep may change those), stored in sweep.yaml."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return sweep
    settings = dataclasses.replace(sweep.settings, **changes)
    with locked(sweep.folder):
        st.write(sweep.folder, sweep.base, settings)
    return dataclasses.replace(sweep, settings=settings)


def _free_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _first(exc: BaseException) -> str:
    return ((str(exc).splitlines() or [type(exc).__name__])[0])[:300]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
