"""`tlab finetune`: fine-tune a checkpoint on any task of the registry (`tlab tasks`); the task's family does the
rest (a family with a from-scratch recipe, such as translation, also trains without --model)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlab.cli import app, execute, options as o, user_errors
from tlab.cli.defaults import FINETUNE_DEFAULTS, finetune_defaults as defaults  # noqa: F401  (kept importable from here)


@app.command()
def finetune(
    task: o.Task = None,
    model: o.Model = None,
    data_dir: o.DataDir = None,
    train_file: o.TrainFile = None,
    validation_file: o.ValidationFile = None,
    text_a: Annotated[Optional[str], typer.Option("--text-a", "--text-column", help="(First) text column of --train-file/--validation-file (data.text_a_column).", rich_help_panel="Data")] = None,
    text_b: Annotated[Optional[str], typer.Option("--text-b", help="Second text column (sentence pairs).", rich_help_panel="Data")] = None,
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="Label column of your files.", rich_help_panel="Data")] = None,
    multi_label: Annotated[Optional[bool], typer.Option("--multi-label", help="--task classification: a set of labels per text (a JSON Lines list, or a|b in CSV/TSV); sigmoid per label, micro/macro F1 (classification.multi_label; classification.threshold, default 0.5).", rich_help_panel="Data")] = None,
    label_separator: Annotated[Optional[str], typer.Option("--label-separator", help="With --multi-label: what joins the labels of a CSV/TSV field (default |; classification.label_separator).", rich_help_panel="Data")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Truncate inputs to this many tokens.", rich_help_panel="Data")] = None,
    long_text: Annotated[Optional[str], typer.Option("--long-text", help="Sequence classification, inputs over --max-length: truncate (default) | mean | max (windows of --max-length tokens, their logits averaged or max-pooled per document).", rich_help_panel="Data")] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="With --long-text mean|max: tokens consecutive windows share (data.stride).", rich_help_panel="Data")] = None,
    freeze: Annotated[Optional[str], typer.Option("--freeze", help="none | embeddings | layers:N | encoder (only the head trains).", rich_help_panel="Model")] = None,
    lora_r: Annotated[Optional[int], typer.Option("--lora-r", help="LoRA rank (0 = full fine-tuning); the saved model is merged.", rich_help_panel="Model")] = None,
    lora_alpha: Annotated[Optional[int], typer.Option("--lora-alpha", help="LoRA alpha.", rich_help_panel="Model")] = None,
    lora_targets: Annotated[Optional[list[str]], typer.Option("--lora-target", help="Module name LoRA adapts (repeatable).", rich_help_panel="Model")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Early stopping after N evaluations without gain.", rich_help_panel="Training")] = None,
    source_lang: Annotated[Optional[str], typer.Option("--source-lang", help="Translation: source language code (file suffix, e.g. en).", rich_help_panel="Translation")] = None,
    target_lang: Annotated[Optional[str], typer.Option("--target-lang", help="Translation: target language code (e.g. de).", rich_help_panel="Translation")] = None,
    warm_start: Annotated[Optional[bool], typer.Option("--warm-start", help="Translation, summarization: build an encoder-decoder from the encoder --model (BERT2BERT).", rich_help_panel="Translation")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Translation: token-budget batches of this many padded tokens (0 = --batch-size sentences).", rich_help_panel="Translation")] = None,
    num_beams: Annotated[Optional[int], typer.Option("--num-beams", help="Translation, summarization: beam size for evaluation (1 = greedy).", rich_help_panel="Translation")] = None,
    summary_column: Annotated[Optional[str], typer.Option("--summary-column", help="Summarization: the reference summary's field of your files (the document's: --text-column).", rich_help_panel="Data")] = None,
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
    overrides: o.Overrides = None,
) -> None:
    """Fine-tune a checkpoint on a task (see `tlab tasks`: GLUE, IMDB, classification of your own labelled files,
    SQuAD, CoNLL-2003 NER, translation; translation also from scratch, without --model), evaluate it, keep the best
    checkpoint and save it.

    [dim]Examples:[/dim]
      tlab finetune --task sst2 --model runs/mlm-.../ --data-dir glue/ --epochs 3
      tlab finetune --task squad --model $MINILM --train-file squad.json qa.max_seq_length=256
      tlab finetune --task mrpc --model bert-base-uncased --lora-r 8
      tlab finetune --task wmt14-en-de --data-dir wmt14_en_de/      # train.en/train.de/valid.en/valid.de, from scratch
      tlab finetune --task conll2003 --model $MINILM --data-dir conll2003/   # eng.train / eng.testa
      tlab finetune --task classification --model $MINILM --train-file reviews.jsonl --text-column text --label-column label
      tlab finetune --task classification --model $MINILM --train-file topics.jsonl --multi-label   # ["sports", "politics"]
      accelerate launch -m tlab finetune --task mnli --model roberta-base --precision bf16
    """
    with user_errors():
        flags = o.common_flags(task=task, model=model, data_dir=data_dir, train_file=train_file,
                               validation_file=validation_file, output_dir=output_dir, max_steps=max_steps, epochs=epochs,
                               batch_size=batch_size, grad_accum=grad_accum, lr=lr, seed=seed, precision=precision,
                               eval_every=eval_every, save_every=save_every, gradient_checkpointing=gradient_checkpointing,
                               compile=compile, resume=resume, overwrite=overwrite, report_to=report_to)
        flags.update({"data.text_a_column": text_a, "data.text_b_column": text_b, "data.label_column": label_column,
                      "classification.multi_label": multi_label, "classification.label_separator": label_separator,
                      "data.max_length": max_length, "data.long_text": long_text, "data.stride": stride,
                      "model.freeze": freeze, "model.lora_r": lora_r,
                      "model.lora_alpha": lora_alpha, "model.lora_target_modules": lora_targets, "train.patience": patience,
                      "translation.source_lang": source_lang, "translation.target_lang": target_lang,
                      "seq2seq.warm_start": warm_start, "seq2seq.max_tokens": max_tokens,
                      "seq2seq.num_beams": num_beams, "summarization.summary_column": summary_column})
        if task is not None:
            from tlab.tasks import info

            if info(task).family.command != "finetune":
                from tlab.errors import TlabError

                raise TlabError(f"{task} is a pretraining objective: use `tlab pretrain --objective {task}`")
        execute(defaults(flags, config, overrides), flags, config, overrides, dry_run)
