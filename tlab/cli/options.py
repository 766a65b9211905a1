"""Typer options shared by every command, with their help written once. Each maps onto a config key."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ConfigFile = Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config file (its keys as in --dry-run).", rich_help_panel="Run")]
OutputDir = Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Run directory (default runs/<task>-<time>). Never overwritten unless --overwrite.", rich_help_panel="Run")]
Overwrite = Annotated[Optional[bool], typer.Option("--overwrite", help="Replace an existing run directory once the new run succeeds.", rich_help_panel="Run")]
Resume = Annotated[Optional[bool], typer.Option("--resume", help="Continue the run in --output-dir from its newest complete checkpoint.", rich_help_panel="Run")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.", rich_help_panel="Run")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Config overrides key=value, e.g. train.lr=3e-5 model.overrides.num_hidden_layers=6.", show_default=False)]

TrainFile = Annotated[Optional[list[str]], typer.Option("--train-file", help="Training data: a file or a folder (repeatable).", rich_help_panel="Data")]
ValidationFile = Annotated[Optional[str], typer.Option("--validation-file", help="Validation data file.", rich_help_panel="Data")]

MaxSteps = Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps to run (wins over --epochs).", rich_help_panel="Training")]
Epochs = Annotated[Optional[float], typer.Option("--epochs", help="Passes over the training data.", rich_help_panel="Training")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Examples per device per step.", rich_help_panel="Training")]
GradAccum = Annotated[Optional[int], typer.Option("--grad-accum", help="Micro-batches accumulated per optimizer step.", rich_help_panel="Training")]
Lr = Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel="Training")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed (init, data order, masking).", rich_help_panel="Training")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="auto | bf16 | fp16 | fp32 (wins over an accelerate config file).", rich_help_panel="Training")]
EvalEvery = Annotated[Optional[int], typer.Option("--eval-every", help="Evaluate every N steps (default: each epoch).", rich_help_panel="Training")]
SaveEvery = Annotated[Optional[int], typer.Option("--save-every", help="Checkpoint every N steps (default: at each evaluation).", rich_help_panel="Training")]
GradientCheckpointing = Annotated[Optional[bool], typer.Option("--gradient-checkpointing", help="Recompute activations to save memory.", rich_help_panel="Training")]
ReportTo = Annotated[Optional[list[str]], typer.Option("--report-to", help="Experiment trackers: tensorboard (default) | mlflow | wandb | none; repeat or comma-separate for several. MLflow logs to train.mlflow_tracking_uri / MLFLOW_TRACKING_URI, else RUN/mlruns/; W&B obeys WANDB_MODE (offline works without a network).", rich_help_panel="Run")]
Compile = Annotated[Optional[bool], typer.Option("--compile", help="torch.compile the model (dynamic shapes).", rich_help_panel="Training")]

Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Checkpoint: a tlab run directory, a local model directory or a Hub id.", rich_help_panel="Model")]
Task = Annotated[Optional[str], typer.Option("--task", "-t", help="Task name (see `tlab tasks`).", rich_help_panel="Data")]
DataDir = Annotated[Optional[str], typer.Option("--data-dir", help="GLUE-format TSVs: the GLUE root or one task's folder.", rich_help_panel="Data")]


def common_flags(**values) -> dict:
    """Named flags -> dotted config keys (flags not given are None and are dropped by the config loader)."""
    keys = {
        "output_dir": "output_dir", "overwrite": "overwrite", "resume": "resume",
        "train_file": "data.train_files", "validation_file": "data.validation_file", "data_dir": "data.data_dir",
        "max_steps": "train.max_steps", "epochs": "train.epochs", "batch_size": "train.batch_size",
        "grad_accum": "train.grad_accum", "lr": "train.lr", "seed": "train.seed", "precision": "train.precision",
        "eval_every": "train.eval_every", "save_every": "train.save_every", "compile": "train.compile",
        "gradient_checkpointing": "model.gradient_checkpointing", "model": "model.name_or_path", "task": "task",
        "report_to": "train.report_to",
    }
    if values.get("report_to"):  # --report-to mlflow,tensorboard as well as --report-to mlflow --report-to tensorboard
        values["report_to"] = [name.strip() for item in values["report_to"] for name in item.split(",") if name.strip()]
    return {keys[name]: value for name, value in values.items() if name in keys}
