"""`tlab report` on real tiny runs: one table per task, one PNG per quantity with one line per run, a
self-contained HTML page, a compact Markdown table; interrupted, resumed, killed-mid-line and translation-style runs;
bad input in one line with exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import lm_config
from tlab import pipeline, report
from tlab.cli import app
from tlab.errors import TlabError
from tlab.faults import STOP_AFTER_ENV

quiet = dict(echo=lambda message: None)
TINY = ("train.max_steps=12", "train.eval_every=6", "train.save_every=4")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shakespeare) -> dict[str, Path]:
    """Two MLM runs (different learning rates), a CLM run and an MLM run stopped after step 6 (not resumed)."""
    tmp = tmp_path_factory.mktemp("report")
    found = {}
    for name, objective, extra in (("mlm-a", "mlm", ()), ("mlm-b", "mlm", ("train.lr=5e-3",)), ("clm-a", "clm", ())):
        pipeline.run(lm_config(tmp / name, shakespeare, objective, *TINY, *extra), **quiet)
        found[name] = tmp / name
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(STOP_AFTER_ENV, "6")
        with pytest.raises(TlabError, match="stopped after step 6"):
            pipeline.run(lm_config(tmp / "mlm-cut", shakespeare, "mlm", *TINY), **quiet)
    found["mlm-cut"] = tmp / "mlm-cut"
    return found


def test_tables_group_by_task_and_plots_draw_one_line_per_run(runs, tmp_path):
    made = report.build([str(runs["mlm-a"]), str(runs["mlm-b"]), str(runs["clm-a"])], str(tmp_path / "out"))
    assert [t.task for t in made.tables] == ["mlm", "clm"]
    mlm = made.tables[0]
    assert [row[0] for row in mlm.rows] == ["mlm-a", "mlm-b"]
    metrics = json.loads((runs["mlm-b"] / "metrics.json").read_text())
    row = dict(zip(mlm.columns, mlm.rows[1]))
    assert row["status"] == "finished" and row["steps"] == "12" and row["precision"] == "fp32" and row["world"] == "1"
    assert row["loss"] == f"{metrics['final']['loss']:.4g}" and "tokens/s" in mlm.columns
    assert "tokens" not in mlm.columns  # an evaluation size, not a score

    by_name = {(p.task, p.quantity): p for p in made.plots}
    assert {q for t, q in by_name if t == "mlm"} == {"train/loss", "train/lr", "eval/loss", "eval/perplexity", "eval/accuracy"}
    assert by_name["mlm", "train/loss"].lines == ["mlm-a", "mlm-b"]
    assert by_name["clm", "eval/perplexity"].lines == ["clm-a"]
    for plot in made.plots:
        with Image.open(plot.path) as image:
            image.verify()
        with Image.open(plot.path) as image:
            assert image.format == "PNG" and image.size == plot.size == (640, 400)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "### mlm" in text and "### clm" in text and "(mlm_train_loss.png)" in text


def test_html_page_is_self_contained(runs, tmp_path):
    made = report.build([str(runs["mlm-a"]), str(runs["mlm-b"])], str(tmp_path), html_page=True)
    page = (tmp_path / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(made.plots) == 5
    assert ".png'" not in page and "<table>" in page and "mlm-b" in page


def test_cli_prints_the_table_and_a_compact_markdown_one(runs):
    result = CliRunner().invoke(app, ["report", str(runs["mlm-a"]), str(runs["clm-a"])])
    assert result.exit_code == 0, result.output
    assert "mlm-a" in result.output and "best loss (step)" in result.output
    assert (runs["mlm-a"] / "report" / "report.md").is_file()  # default: the first run's report/
    compact = CliRunner().invoke(app, ["report", str(runs["mlm-a"]), str(runs["clm-a"]), "--markdown", "-o", str(runs["mlm-a"] / "r2")])
    assert compact.exit_code == 0, compact.output
    lines = compact.stdout.splitlines()
    assert lines[0] == "**mlm**" and lines[2].startswith("| run | status | steps | time | tokens/s | loss |")
    assert "**clm**" in lines and "model" not in lines[2]


def test_interrupted_runs_are_reported_as_incomplete(runs, tmp_path):
    made = report.build([str(runs["mlm-a"]), str(runs["mlm-cut"])], str(tmp_path))
    row = dict(zip(made.tables[0].columns, made.tables[0].rows[1]))
    assert row["status"] == "interrupted (no metrics.json)" and row["steps"] == "6"
    cut_eval = [json.loads(line) for line in (runs["mlm-cut"] / "log.jsonl").read_text().splitlines() if "eval_loss" in line]
    assert row["loss"] == f"{cut_eval[-1]['eval_loss']:.4g}"  # the latest evaluation
    assert any("incomplete" in note and "mlm-cut (interrupted, step 6)" in note for note in made.notes)


def test_cut_off_last_line_and_repeated_steps_are_handled(runs, tmp_path):
    """A killed run's partial last line is skipped and said; a step logged twice (a resumed run whose log was not
    rewound) is drawn once, with its last value."""
    run = tmp_path / "killed"
    shutil.copytree(runs["mlm-cut"], run, ignore=shutil.ignore_patterns(".tlab.lock"))
    lines = (run / "log.jsonl").read_text().splitlines()
    step4 = json.loads(next(line for line in lines if '"step": 4,' in line and '"loss"' in line))
    again = {**step4, "loss": 1.5}
    (run / "log.jsonl").write_text("\n".join(lines + [json.dumps(again), '{"step": 8, "epoch": 0.2, "lo']) + "\n")
    loaded = report.load(str(run))
    assert loaded.notes == [f"log.jsonl line {len(lines) + 2} is cut off (the run was killed while writing it): skipped"]
    steps = [s for s, _v in loaded.series()["train/loss"]]
    assert steps == sorted(set(steps)) and dict(loaded.series()["train/loss"])[4] == 1.5
    result = CliRunner().invoke(app, ["report", str(run), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0 and "cut off" in result.stderr


def test_translation_metrics_plot_numbers_and_skip_the_signature(tmp_path):
    """A run written the way the loop writes one (log.jsonl, config.yaml), with sacreBLEU's signature string."""
    run = tmp_path / "wmt"
    run.mkdir()
    (run / "config.yaml").write_text("task: translation\n")
    sig = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3"
    records = [{"event": "start", "time": 1.0, "task": "translation", "model": "t5-tiny", "parameters": 1000}]
    for step in (10, 20):
        records.append({"step": step, "epoch": step / 20, "loss": 5.0 - step / 10, "lr": 1e-3, "tokens_per_s": 100.0})
        records.append({"step": step, "eval_bleu": step / 2, "eval_chrf": step, "eval_signature": sig, "eval_examples": 50})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    made = report.build([str(run)], str(tmp_path / "out"))
    assert {p.quantity for p in made.plots} == {"train/loss", "train/lr", "eval/bleu", "eval/chrf"}
    table = made.tables[0]
    assert table.task == "translation" and "samples/s" in table.columns and "signature" not in table.columns
    row = dict(zip(table.columns, table.rows[0]))
    assert row["bleu"] == "10" and row["best bleu (step)"] == "10 (20)"


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty-folder", "is not a tlab run directory"),
    ("parent-folder", "holds run directories"),
    ("empty-log", "nothing to report"),
    ("not-json", "not valid JSON"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case, message):
    target = tmp_path / case
    if case == "empty-folder":
        target.mkdir()
    elif case == "parent-folder":
        (target / "run-1").mkdir(parents=True)
        (target / "run-1" / "log.jsonl").write_text("")
    elif case == "empty-log":
        target.mkdir()
        (target / "log.jsonl").write_text("")
        (target / "config.yaml").write_text("task: mlm\n")
    elif case == "not-json":
        target = tmp_path / "results.json"
        target.write_text("{not json")
    result = CliRunner().invoke(app, ["report", str(target)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_eval_results_files_join_the_table(runs, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"task": "mlm", "metrics": {"loss": 6.5, "perplexity": 665.1}, "model": "runs/x",
                                   "eval_seconds": 1.5, "samples_per_s": 40.0, "precision": "fp32"}))
    made = report.build([str(runs["mlm-a"]), str(results)], str(tmp_path / "out"))
    row = dict(zip(made.tables[0].columns, made.tables[0].rows[1]))
    assert row["status"] == "eval" and row["loss"] == "6.5" and row["model"] == "runs/x"
    assert all(p.lines == ["mlm-a"] for p in made.plots)
