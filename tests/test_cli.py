"""The command line through CliRunner: help, dry runs, start-up cost, the YAML headers. Bad input: test_bad_input.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlab import __version__
from tlab.cli import app

runner = CliRunner()


def test_help_version_tasks_presets():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "pretrain" in result.output and "finetune" in result.output
    assert runner.invoke(app, ["--version"]).output.strip() == f"tlab {__version__}"
    tasks = runner.invoke(app, ["tasks"])
    assert tasks.exit_code == 0
    for name in ("mlm", "clm", "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "matthews_corre"):
        assert name in tasks.output
    presets = runner.invoke(app, ["presets"])
    assert "modernbert-mini" in presets.output and "gpt2-base" in presets.output and "llama-tiny" in presets.output


def test_pretrain_help_lists_the_common_flags():
    result = runner.invoke(app, ["pretrain", "--help"], terminal_width=200)
    for flag in ("--config", "--output-dir", "--train-file", "--validation-file", "--max-steps", "--epochs",
                 "--batch-size", "--lr", "--seed", "--precision", "--resume", "--dry-run", "--objective", "--preset",
                 "--block-size", "--vocab-size"):
        assert flag in result.output, flag


def test_dry_run_prints_the_resolved_config(tmp_path):
    import yaml

    from tlab import config

    result = runner.invoke(app, ["pretrain", "--objective", "clm", "--lr", "0.002", "--dry-run", "train.batch_size=7",
                                 "--output-dir", str(tmp_path / "never")])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["task"] == "clm" and printed["output_dir"] == str(tmp_path / "never")
    assert printed["train"]["lr"] == 0.002  # flag
    assert printed["train"]["batch_size"] == 7  # key=value override
    assert printed["train"]["epochs"] == 2.0  # the pretrain command's own default
    assert set(printed) == {"task", "output_dir", "overwrite", "resume", "data", "model", "train", "qa", "seq2seq", "translation",
                            "summarization", "ner", "classification", "fewshot"}
    # The printed config is a valid --config file that resolves to the same run.
    saved = tmp_path / "dry.yaml"
    saved.write_text(result.output)
    again = runner.invoke(app, ["pretrain", "--config", str(saved), "--dry-run"])
    assert again.exit_code == 0 and again.output == result.output
    assert config.load(str(saved)).train.batch_size == 7
    assert not (tmp_path / "never").exists()


def test_cli_import_stays_light():
    code = ("import sys, tlab.cli; print(','.join(m for m in ('torch', 'transformers', 'datasets', 'accelerate', "
            "'matplotlib', 'mlflow', 'wandb', 'optuna', 'sqlalchemy') if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert heavy == ""


ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted(ROOT.glob("configs/pretrain/*.yaml")) + sorted(ROOT.glob("configs/finetune/*.yaml"))
HEADER_COMMANDS = [
    (path, line.lstrip("# ").strip())
    for path in SHIPPED_CONFIGS
    for line in path.read_text().split("\n\n")[0].splitlines()
    if line.startswith("#   tlab ")
]


def test_every_yaml_header_shows_a_command_with_its_own_file():
    import shlex

    for path in SHIPPED_CONFIGS:
        own = f"configs/{path.parent.name}/{path.name}"
        assert any(own in shlex.split(command) for p, command in HEADER_COMMANDS if p == path), path.name


@pytest.mark.parametrize("path,command", HEADER_COMMANDS, ids=lambda v: v.name if isinstance(v, Path) else "")
def test_yaml_header_commands_resolve(path, command, monkeypatch):
    """The command a YAML opens with, and its override example, resolve (--dry-run) to a valid config."""
    import shlex

    import yaml

    from tlab import presets

    monkeypatch.chdir(ROOT)  # the commands name their config relative to the repository root
    args = [re.sub(r"^<.*>$|^\$\w+$", "placeholder", arg) for arg in shlex.split(command.replace("<GLUE root or task folder>", "x"))]
    # a header may show a stage before its own (RTE's intermediate training on QNLI) with another shipped config
    assert args[0] == "tlab" and any(re.fullmatch(r"configs/(pretrain|finetune)/[\w.-]+\.yaml", a) for a in args)
    result = runner.invoke(app, [*args[1:], "--dry-run"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    if printed["task"] in ("mlm", "clm"):
        presets.resolve(printed["model"]["preset"], printed["task"])  # raises for a preset that does not exist
