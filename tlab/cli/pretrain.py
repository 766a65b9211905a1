"""`tlab pretrain`: masked-LM (BERT-style) or causal-LM (GPT-style) pretraining."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlab.cli import app, execute, options as o, user_errors
from tlab.cli.defaults import PRETRAIN_DEFAULTS


@app.command(context_settings={"allow_extra_args": False})
def pretrain(
    objective: Annotated[Optional[str], typer.Option("--objective", help="mlm (masked, BERT-style) or clm (causal, GPT-style).", rich_help_panel="Model")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model size for training from scratch: tiny|mini|small|base, optionally arch-size (bert-mini, gpt2-small, llama-tiny; see `tlab presets`).", rich_help_panel="Model")] = None,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="Tokens per packed training block.", rich_help_panel="Data")] = None,
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="Vocabulary of a tokenizer trained on the corpus.", rich_help_panel="Model")] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Use this tokenizer (directory or Hub id) instead of training one.", rich_help_panel="Model")] = None,
    model: o.Model = None,
    train_file: o.TrainFile = None,
    validation_file: o.ValidationFile = None,
    config: o.ConfigFile = None,
    output_dir: o.OutputDir = None,
    max_steps: o.MaxSteps = None,
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = None,
    grad_accum: o.GradAccum = None,
    lr: o.Lr = None,
    seed: o.Seed = None,
    precision: o.Precision = None,
    eval_every: o.EvalEvery = None,
    save_every: o.SaveEvery = None,
    gradient_checkpointing: o.GradientCheckpointing = None,
    compile: o.Compile = None,
    report_to: o.ReportTo = None,
    resume: o.Resume = None,
    overwrite: o.Overwrite = None,
    dry_run: o.DryRun = False,
    preprocess_only: Annotated[bool, typer.Option("--preprocess-only", help="Train the tokenizer, tokenize and pack the corpus into the cache, then exit: run once before a multi-node launch so ranks do not wait on tokenization.", rich_help_panel="Run")] = False,
    overrides: o.Overrides = None,
) -> None:
    """Pretrain a language model on unlabeled text. With no flags: a small ModernBERT-style masked LM on the
    embedded WikiText-2 sample (about 2 minutes on 2 CPU cores).

    [dim]Examples:[/dim]
      tlab pretrain
      tlab pretrain --objective clm --train-file corpus/ --preset gpt2-small --max-steps 2000
      accelerate launch -m tlab pretrain --config configs/pretrain/bert-mini-mlm.yaml --precision bf16
    """
    with user_errors():
        if objective is not None:
            from tlab.errors import TlabError
            from tlab.tasks import registry

            objectives = [name for name, item in registry().items() if item.family.command == "pretrain"]
            if objective not in objectives:
                raise TlabError(f"unknown objective {objective!r}: use {' or '.join(objectives)}")
        flags = o.common_flags(**{k: v for k, v in locals().items() if k not in ("objective", "preset", "block_size", "vocab_size", "tokenizer", "config", "dry_run", "overrides", "preprocess_only")})
        flags.update({"task": objective, "model.preset": preset, "data.block_size": block_size,
                      "model.vocab_size": vocab_size, "model.tokenizer": tokenizer})
        execute(PRETRAIN_DEFAULTS, flags, config, overrides, dry_run, preprocess_only)
