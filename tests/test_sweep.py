"""`tlab sweep`: the search-space syntax, the sweep block of a YAML file, a real 3-trial sweep on a tiny BERT (run
directories, study.db, trials.csv, best.yaml that `tlab finetune` resolves), --keep, --resume after a kill during
trial 1 (the cut trial counted once and continued from its checkpoint), --jobs workers, and pruning: the loop's
report hook on a real run, optuna's median pruner on a clearly worse trial."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import one_line_error
from tlab import config
from tlab.cli import app
from tlab.errors import Pruned, TlabError
from tlab.sweep import space

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parent.parent
SST2_HEAD = Path(__file__).parent / "data" / "sst2-head" / "train.tsv"
runner = CliRunner()


# -- the search space ------------------------------------------------------------------------------------------
def test_each_form_of_the_space():
    lr = space.parse("train.lr=1e-5:2e-4:log")
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-5, 2e-4, True)
    warmup = space.parse("train.warmup=0:0.2")  # an int bound and a float one: a float range
    assert (warmup.kind, warmup.low, warmup.high, warmup.log) == ("float", 0.0, 0.2, False)
    layers = space.parse("model.lora_r=1:16:log")
    assert (layers.kind, layers.low, layers.high, layers.log) == ("int", 1, 16, True)
    assert space.parse(" train.batch_size = 8:32 ").kind == "int"
    epochs = space.parse("train.epochs=2,3,4")
    assert epochs.kind == "categorical" and epochs.choices == (2, 3, 4) and all(type(c) is int for c in epochs.choices)
    mixed = space.parse("train.length_bucket=null,1,32")
    assert mixed.choices == (None, 1, 32)
    assert space.parse("train.schedule=linear,cosine").choices == ("linear", "cosine")
    assert space.parse("model.freeze=none,layers:2").choices == ("none", "layers:2")  # a comma wins over a colon
    assert space.parse("train.cheap_dropout=true,false").choices == (True, False)
    assert space.parse("train.weight_decay=0,0.01,0.1").choices == (0, 0.01, 0.1)
    assert space.parse("translation.num_beams=1,4").key == "translation.num_beams"  # an old key name still works
    # the YAML block's mapping form reads as the same strings
    assert space.from_yaml({"train.lr": "1e-5:1e-3:log", "train.epochs": [2, 3]}) == ["train.lr=1e-5:1e-3:log", "train.epochs=2,3"]
    # --space on the command line replaces the YAML's entry of the same key
    assert space.merge(["train.lr=1:2", "train.warmup=0:0.1"], ["train.lr=3:4"]) == ["train.warmup=0:0.1", "train.lr=3:4"]


@pytest.mark.parametrize("text, needle", [
    ("train.lr", "expected key=lo:hi"),
    ("=1:2", "expected key=lo:hi"),
    ("train.lr=", "expected key=lo:hi"),
    ("train.lr=3e-5", "a fixed value is an override"),
    ("train.lr=1:2:3", "expected key=lo:hi"),
    ("train.lr=1:2:lin", "expected key=lo:hi"),
    ("train.lr=2e-4:1e-5", "lower bound must be below"),
    ("train.lr=1e-4:1e-4", "lower bound must be below"),
    ("train.warmup=0:0.2:log", "log range needs bounds > 0"),
    ("train.lr=a:b", "'a' is not a number"),
    ("train.lr=1e-5:inf", "'inf' is not a number"),
    ("train.epochs=2,,3", "empty choice"),
    ("train.epochs=2,3,", "empty choice"),
    ("train.epochs=2,3,2", "given twice"),
    ("train.lrr=1e-5:1e-4", "unknown config key 'train.lrr'"),
    ("trian.lr=1e-5:1e-4", "unknown config key 'trian.lr'"),
])
def test_bad_space_strings_are_one_line(text, needle):
    with pytest.raises(TlabError) as caught:
        space.parse(text)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_key_twice_and_values_the_config_refuses():
    with pytest.raises(TlabError, match="train.lr is given twice"):
        space.parse_all(["train.lr=1e-5:1e-4", "train.lr=1,2"])
    base = config.load(flags={"task": "sst2"})
    with pytest.raises(TlabError, match=r"train.lr: 0 is not a valid value \(train.lr must be > 0\)"):
        space.check(base, [space.parse("train.lr=0:1e-3")])
    with pytest.raises(TlabError, match="train.schedule: fancy is not a valid value"):
        space.check(base, [space.parse("train.schedule=linear,fancy")])
    with pytest.raises(TlabError, match="train.batch_size: 0.5 is not a valid value"):
        space.check(base, [space.parse("train.batch_size=0.5,8")])
    with pytest.raises(TlabError, match="needs a search space"):
        space.check(base, [])


def test_cli_refuses_bad_input_in_one_line(tmp_path):
    base = ["sweep", "--task", "sst2", "-o", str(tmp_path / "s"), "--dry-run"]
    for args, needle in [
        (["--space", "train.lr=2:1"], "lower bound"),
        (["--space", "train.lr=1e-5:1e-4", "train.lrr=3"], "unknown config key 'train.lrr'"),
        (["--space", "train.lr=1e-5:1e-4", "--lr", "1e-4"], "train.lr is both searched"),
        (["--space", "train.lr=1e-5:1e-4", "train.lr=1e-4"], "train.lr is both searched"),
        (["--space", "train.lr=1e-5:1e-4", "--keep", "some"], "sweep.keep (--keep) must be one of best | all | none"),
        (["--space", "train.lr=1e-5:1e-4", "--trials", "0"], "sweep.trials (--trials) must be >= 1"),
        ([], "needs a search space"),
        (["--task", "sst22", "--space", "train.lr=1e-5:1e-4"], "unknown task 'sst22'"),
    ]:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        one_line_error(result, needle)
    assert not (tmp_path / "s").exists()
    resumed = runner.invoke(app, ["sweep", "--resume", "-o", str(tmp_path / "nothing")])
    assert resumed.exit_code == 2
    one_line_error(resumed, "holds no sweep")


def test_sweep_block_in_yaml(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("task: mrpc\ntrain:\n  batch_size: 16\nsweep:\n  trials: 7\n  keep: all\n  space:\n"
                    "    train.lr: 1e-5:1e-3:log\n    train.epochs: [2, 3]\n")
    result = runner.invoke(app, ["sweep", "--config", str(path), "--space", "train.warmup=0:0.2", "-o", str(tmp_path / "s"),
                                 "train.weight_decay=0.1", "--dry-run"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["task"] == "mrpc" and shown["train"]["batch_size"] == 16 and shown["train"]["weight_decay"] == 0.1
    assert shown["sweep"]["trials"] == 7 and shown["sweep"]["keep"] == "all"
    assert shown["sweep"]["space"] == ["train.lr=1e-5:1e-3:log", "train.epochs=2,3", "train.warmup=0:0.2"]
    assert "# train.lr: float 1e-05 .. 0.001 (log)" in result.output and "# train.epochs: one of 2, 3" in result.output
    # a sweep file is not a run's config: finetune points to the sweep command
    one_line_error(runner.invoke(app, ["finetune", "--config", str(path), "--dry-run"]), "tlab sweep --config")
    path.write_text("task: sst2\nsweep:\n  trails: 3\n  space: [train.lr=1e-5:1e-3]\n")
    one_line_error(runner.invoke(app, ["sweep", "--config", str(path), "--dry-run"]), "unknown config key 'sweep.trails'")


def test_the_shipped_sweep_config_resolves(monkeypatch):
    """configs/sweep/*.yaml: the commands each opens with dry-run to a valid sweep."""
    import re
    import shlex

    monkeypatch.chdir(ROOT)
    for path in sorted((ROOT / "configs" / "sweep").glob("*.yaml")):
        header = [line.lstrip("# ").strip() for line in path.read_text().split("\ntask:")[0].splitlines() if line.startswith("#   tlab ")]
        assert header, path
        for command in header:
            args = [re.sub(r"^<.*>$|^\$\w+$", "placeholder", a) for a in shlex.split(command.replace("<GLUE root or task folder>", "x"))]
            if "--resume" in args:
                continue
            result = runner.invoke(app, [*args[1:], "--dry-run"])
            assert result.exit_code == 0, (command, result.output)
            shown = yaml.safe_load(result.output)
            written = yaml.safe_load(path.read_text())["sweep"]["space"]
            assert set(written) <= {entry.split("=")[0] for entry in shown["sweep"]["space"]}, path  # the command may add
            assert f"train.lr={written['train.lr']}" in shown["sweep"]["space"], path


# -- real sweeps on a tiny model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-layer hidden-32 BERT with a WordPiece vocabulary trained on the SST-2 rows, and a 96/48-row split of them."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    lines = SST2_HEAD.read_text().splitlines(keepends=True)
    header, rows = lines[0], [r for r in lines[1:] if len(r.split("\t")[0].split()) >= 6]
    data = root / "sst2"
    data.mkdir()
    (data / "train.tsv").write_text(header + "".join(rows[:96]))
    (data / "dev.tsv").write_text(header + "".join(rows[96:144]))
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp.train_from_iterator([r.split("\t")[0] for r in rows], trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[(t, wp.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    model = root / "bert"
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=64)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    return model, data


def sweep_args(tiny, out: Path, *extra: str) -> list[str]:
    model, data = tiny
    return ["sweep", "--task", "sst2", "--model", str(model), "--data-dir", str(data), "-o", str(out), "--max-steps", "4",
            "--eval-every", "2", "--space", "train.lr=1e-4:1e-2:log", "--space", "train.batch_size=8,16",
            "train.log_every=2", "data.max_length=64", "--report-to", "none", *extra]


def load_study(folder: Path):
    return optuna.load_study(study_name="tlab-sweep", storage=f"sqlite:///{folder / 'study.db'}")


def states(folder: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for t in load_study(folder).get_trials():
        found[t.state.name] = found.get(t.state.name, 0) + 1
    return found


@pytest.fixture(scope="module")
def swept(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "sst2"
    result = runner.invoke(app, sweep_args(tiny, out, "--trials", "3", "--sampler-seed", "3"))
    assert result.exit_code == 0, result.output
    return out


def test_bad_input_in_the_first_trial_leaves_no_sweep_behind(tiny, tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(app, sweep_args(tiny, out, "--trials", "2", "--data-dir", str(tmp_path / "missing")))
    assert result.exit_code == 2 and "missing is not a folder" in result.output, result.output
    assert not out.exists()  # the same command, corrected, starts the sweep


@pytest.mark.slow
def test_three_trials_make_run_dirs_a_study_a_table_and_best_yaml(swept):
    runs = sorted(p.name for p in swept.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert runs == ["trial-000", "trial-001", "trial-002"]
    study = load_study(swept)
    assert states(swept) == {"COMPLETE": 3} and study.direction.name == "MAXIMIZE"
    for t in study.trials:
        run = swept / f"trial-{t.number:03d}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["final"]["accuracy"] == t.value and metrics["steps"] == 4
        trial_cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert trial_cfg["train"]["lr"] == t.params["train.lr"] and trial_cfg["train"]["batch_size"] == t.params["train.batch_size"]
        assert trial_cfg["output_dir"] == str(run) and not (run / "checkpoints").exists()  # checkpoints go as trials end
        assert sorted(t.intermediate_values) == [2]  # evaluations at 2 and 4: the last is the result, not a report
    # --keep best: exactly one model/, the best trial's
    assert [p.parent.name for p in swept.glob("trial-*/model")] == [f"trial-{study.best_trial.number:03d}"]
    rows = list(csv.DictReader((swept / "trials.csv").open()))
    assert len(rows) == 3 and {r["state"] for r in rows} == {"complete"}
    assert [float(r["score"]) for r in rows] == sorted((t.value for t in study.trials), reverse=True)
    assert {"train.lr", "train.batch_size", "seconds", "run_dir"} <= set(rows[0])
    assert (swept / "score_over_trials.png").stat().st_size > 1000
    best = yaml.safe_load((swept / "best.yaml").read_text())
    assert best["train"]["lr"] == study.best_params["train.lr"]
    assert best["train"]["batch_size"] == study.best_params["train.batch_size"]
    assert best["output_dir"] == str(swept.parent / "sst2-best") and best["train"]["max_steps"] == 4
    assert (swept / "best.yaml").read_text().startswith(f"# tlab finetune --config {swept / 'best.yaml'}")
    rerun = runner.invoke(app, ["finetune", "--config", str(swept / "best.yaml"), "--dry-run"])
    assert rerun.exit_code == 0, rerun.output
    resolved = config.load(str(swept / "best.yaml"))
    assert yaml.safe_load(rerun.output) == yaml.safe_load(config.to_yaml(resolved))
    assert resolved.train.lr == study.best_params["train.lr"] and resolved.train.batch_size == study.best_params["train.batch_size"]
    assert resolved.model.name_or_path and resolved.data.max_length == 64


@pytest.mark.slow
def test_resume_extends_the_sweep_and_refuses_other_settings(swept, tiny):
    other = runner.invoke(app, sweep_args(tiny, swept, "--resume", "--space", "train.warmup=0:0.1"))
    assert other.exit_code == 2
    one_line_error(other, "was started with other settings", "sweep.space")
    again = runner.invoke(app, ["sweep", "--resume", "-o", str(swept)])  # nothing to do: the report again
    assert again.exit_code == 0 and "trial 3" not in again.output and "best: trial" in again.output
    more = runner.invoke(app, sweep_args(tiny, swept, "--resume", "--trials", "4", "--keep", "all"))
    assert more.exit_code == 0, more.output
    assert states(swept) == {"COMPLETE": 4} and "trial 3 (4/4)" in more.output
    assert yaml.safe_load((swept / "sweep.yaml").read_text())["sweep"]["trials"] == 4
    assert (swept / "trial-003" / "model").is_dir()  # --keep all from now on


@pytest.mark.slow
def test_resume_after_a_kill_during_trial_1(tiny, tmp_path):
    out = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TLAB_FAULT": "kill-in-trial:1", "TQDM_DISABLE": "1"}
    killed = subprocess.run([sys.executable, "-m", "tlab", *sweep_args(tiny, out, "--trials", "3")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert states(out) == {"COMPLETE": 1, "RUNNING": 1}
    assert (out / "trial-001" / "checkpoints" / "step-2").is_dir()  # killed at its first report, checkpoint saved

    resumed = runner.invoke(app, ["sweep", "--resume", "-o", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "trial 1 was cut" in resumed.output and "trial 2 (2/3, resumed)" in resumed.output
    study = load_study(out)
    assert states(out) == {"COMPLETE": 3, "FAIL": 1}  # the cut trial is not counted: 3 complete ones, no fourth
    cut, rerun = study.trials[1], study.trials[2]
    assert cut.state.name == "FAIL" and rerun.user_attrs["retry_of"] == 1 and rerun.params == cut.params
    # the re-run continued the cut trial's run directory from its step-2 checkpoint
    log = [json.loads(line) for line in (out / "trial-002" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log if r.get("event") in ("start", "resume")] == ["start", "resume"]
    assert json.loads((out / "trial-002" / "metrics.json").read_text())["steps"] == 4
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-000", "trial-002", "trial-003"]
    assert not list((out / ".claims").iterdir())
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "complete", "complete", "failed"]
    assert "re-run as trial 2" in rows[-1]["note"]


@pytest.mark.slow
def test_two_jobs_share_the_study(tiny, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "s"
    done = subprocess.run([sys.executable, "-m", "tlab", *sweep_args(tiny, out, "--trials", "3", "--jobs", "2", "--keep", "none")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = load_study(out)
    assert states(out) == {"COMPLETE": 3}
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2  # both workers ran trials
    assert not list(out.glob("trial-*/model"))  # --keep none
    assert (out / "best.yaml").is_file() and "2 worker processes" in done.stdout


# -- pruning ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_pruned_run_stops_at_the_report_and_its_run_dir_says_so(tiny, tmp_path):
    """The loop's hook on a real run: evaluations at steps 2 and 4 of 6 are reported (not the last one); raising
    Pruned at step 4 stops the run there."""
    from tlab import pipeline

    model, data = tiny
    cfg = config.load(flags={"task": "sst2", "model.name_or_path": str(model), "data.data_dir": str(data),
                             "output_dir": str(tmp_path / "run")},
                      overrides=["train.max_steps=6", "train.eval_every=2", "train.batch_size=8", "data.max_length=64",
                                 "train.report_to=[none]"])
    seen = []

    def report(step, metrics, main_metric):
        seen.append((step, main_metric, sorted(metrics)))
        if step == 4:
            raise Pruned(step, metrics)

    with pytest.raises(Pruned):
        pipeline.run(cfg, echo=lambda m: None, report=report)
    assert [s[:2] for s in seen] == [(2, "accuracy"), (4, "accuracy")] and "accuracy" in seen[0][2]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["state"] == "pruned" and metrics["pruned_at_step"] == 4 and "accuracy" in metrics["final"]
    assert not (run / "checkpoints").exists() and not (run / "model").exists()
    events = [json.loads(line).get("event") for line in (run / "log.jsonl").read_text().splitlines()]
    assert events[-1] == "pruned"
    report_cli = runner.invoke(app, ["report", str(run), "--markdown"])
    assert report_cli.exit_code == 0 and "pruned" in report_cli.output, report_cli.output

    finished = []
    cfg = config.load(flags={"task": "sst2", "model.name_or_path": str(model), "data.data_dir": str(data),
                             "output_dir": str(tmp_path / "whole")},
                      overrides=["train.max_steps=4", "train.eval_every=2", "train.batch_size=8", "data.max_length=64",
                                 "train.report_to=[none]"])
    pipeline.run(cfg, echo=lambda m: None, report=lambda step, metrics, main: finished.append(step))
    assert finished == [2]  # the last evaluation is the run's result, never pruned


def test_median_pruner_prunes_a_clearly_worse_trial():
    """Our reporter on optuna's median pruner: the second trial reports far below the first at the same step."""
    from tlab.sweep.study import Reporter

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    for step in (2, 4):
        Reporter(good)(step, {"accuracy": 0.9, "loss": 0.3}, "accuracy")
    study.tell(good, 0.9)
    worse = study.ask()
    Reporter(worse)(2, {"accuracy": float("nan")}, "accuracy")  # not finite: not reported
    assert study.trials[1].intermediate_values == {}
    with pytest.raises(Pruned) as caught:
        Reporter(worse)(2, {"accuracy": 0.2, "loss": 1.1}, "accuracy")
    assert caught.value.step == 2 and caught.value.metrics["accuracy"] == 0.2
    close = study.ask()
    Reporter(close)(2, {"accuracy": 0.95}, "accuracy")  # better than the median: runs on


def test_the_sweep_records_pruned_trials_and_counts_them(tmp_path, monkeypatch):
    """The whole loop with a fast fake run in place of training: the first trial scores 0.9 at each evaluation, the
    others 0.2 (clearly worse), so the median pruner stops them at their first report; pruned trials count toward
    --trials and the table and trials.csv say so."""
    from tlab import pipeline

    calls = []

    def fake_run(cfg, echo=print, command=None, report=None):
        score = 0.9 if not calls else 0.2
        calls.append(cfg.output_dir)
        Path(cfg.output_dir).mkdir(parents=True)
        for step in (2, 4):
            report(step, {"accuracy": score}, "accuracy")
        return {"final": {"accuracy": score}, "best": {"checkpoint": "step-6", "accuracy": score}, "steps": 6, "train_seconds": 0.1}

    monkeypatch.setattr(pipeline, "run", fake_run)
    out = tmp_path / "s"
    result = runner.invoke(app, ["sweep", "--task", "sst2", "--model", "some-model", "-o", str(out), "--trials", "3",
                                 "--space", "train.lr=1e-5:1e-3:log", "--space", "train.warmup=0:0.2"])
    assert result.exit_code == 0, result.output
    assert states(out) == {"COMPLETE": 3}  # the median pruner prunes nothing before its 5 startup trials (the default)
    calls.clear()
    path = tmp_path / "sweep.yaml"
    path.write_text("task: sst2\nmodel:\n  name_or_path: some-model\nsweep:\n  trials: 3\n  pruner_startup_trials: 1\n"
                    "  space: [train.lr=1e-5:1e-3:log]\n")
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["sweep", "--config", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert states(out) == {"COMPLETE": 1, "PRUNED": 2} and len(calls) == 3
    assert "trial 1: pruned at step 2" in result.output
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "pruned", "pruned"]
    assert rows[1]["note"] == "pruned at step 2" and float(rows[1]["last_eval"]) == 0.2
    assert "parameter importances: skipped (1 complete trial(s)" in result.output


def test_a_finished_trial_keeps_its_claim_until_its_outcome_is_recorded(tmp_path, monkeypatch):
    """With --jobs, another worker that takes the sweep lock fails every RUNNING trial whose claim no live process
    holds. So each time the lock is taken, every RUNNING trial's claim must still be held: a worker that dropped its
    claim before recording the outcome let the other fail its trial, and its own tell then raised (a CI failure)."""
    from contextlib import contextmanager

    from optuna.trial import TrialState as S

    from tlab import pipeline
    from tlab.runlock import held_by_another
    from tlab.sweep import study as study_mod

    def fake_run(cfg, echo=print, command=None, report=None):
        Path(cfg.output_dir).mkdir(parents=True)
        return {"final": {"accuracy": 0.5}, "best": {"checkpoint": "step-2", "accuracy": 0.5}, "steps": 2, "train_seconds": 0.1}

    seen = []
    real_locked = study_mod.locked

    @contextmanager
    def probing(folder):
        with real_locked(folder):
            study = optuna.load_study(study_name=study_mod.STUDY_NAME, storage=f"sqlite:///{folder / study_mod.STUDY_FILE}")
            for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
                seen.append((t.number, held_by_another(folder / study_mod.CLAIMS / f"trial-{t.number:03d}")))
            yield

    monkeypatch.setattr(pipeline, "run", fake_run)
    monkeypatch.setattr(study_mod, "locked", probing)
    out = tmp_path / "s"
    result = runner.invoke(app, ["sweep", "--task", "sst2", "--model", "some-model", "-o", str(out), "--trials", "2",
                                 "--space", "train.lr=1e-5:1e-3:log"])
    assert result.exit_code == 0, result.output
    assert states(out) == {"COMPLETE": 2}
    assert [n for n, _ in seen] == [0, 1]  # each trial was RUNNING when its outcome was recorded
    assert all(held for _, held in seen), seen
    assert not list((out / ".claims").iterdir())
