"""The task contract as code: what a family states once (`Family`), what a task adds to it (`TaskInfo`), what a
family's `prepare` returns (`Prepared`, holding the loop's `Job`), and the protocol a family module implements.

Nothing here imports torch or transformers: the registry, `tlab tasks` and `--help` read these objects cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, runtime_checkable


@dataclass(frozen=True)
class Family:
    """A kind of task, stated once: every task of the family shares its module, head and options."""

    name: str  # shown by `tlab tasks` and tagged on model cards: pretraining | glue | qa | translation | ner
    module: str  # the module implementing `TaskModule`
    head: str  # the transformers Auto class of the task's model, e.g. AutoModelForQuestionAnswering
    pipeline_tag: str  # the Hub's pipeline tag (widget and search)
    peft_task_type: Optional[str] = None  # SEQ_CLS / QUESTION_ANS / SEQ_2_SEQ_LM / TOKEN_CLS: the head LoRA keeps trainable
    options: Optional[str] = None  # the RunConfig section of the family's own options (e.g. "qa")
    command: str = "finetune"  # the tlab command that trains it
    # config defaults of the family, below its YAML and flags; `from_scratch_defaults` replace them without --model
    defaults: Mapping[str, Any] = field(default_factory=dict)
    from_scratch_defaults: Mapping[str, Any] = field(default_factory=dict)
    # train.length_bucket when the config leaves it unset (tlab.data.EpochBatches' `bucket`)
    length_bucket: int = 1
    # `tlab predict` picks this family for a model directory (not a run) whose config.json matches
    # (see `tlab.tasks.family_of_model`); the first family whose test passes wins.
    detects: Optional[Callable[[dict], bool]] = None
    # `tlab predict` flags that only this family reads (given, they pick it)
    predict_flags: tuple[str, ...] = ()
    # reads data.long_text mean | max (documents in windows); the other families refuse it (tasks.check_options)
    long_text: bool = False
    # scores a causal LM on its tasks from prompts (fewshot.shots, `tlab eval --shots`); the others refuse it
    few_shot: bool = False


@dataclass(frozen=True)
class TaskInfo:
    """One task: its family plus what the benchmark itself defines (data source, metrics, task parameters)."""

    name: str
    family: Family
    source: str
    metrics: tuple[str, ...]
    main_metric: str = ""
    greater_is_better: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)  # task parameters read by the family (languages, ...)
    head_override: Optional[str] = None  # a task whose head differs from its family's (mlm / clm)
    pipeline_tag_override: Optional[str] = None

    @property
    def head(self) -> str:
        return self.head_override or self.family.head

    @property
    def pipeline_tag(self) -> str:
        return self.pipeline_tag_override or self.family.pipeline_tag

    @property
    def peft_task_type(self) -> Optional[str]:
        return self.family.peft_task_type

    @property
    def options(self) -> Optional[str]:
        return self.family.options


@dataclass
class Job:
    """What a task hands to the loop."""

    model: Any
    train_data: Any
    train_batches: Any  # tlab.data.EpochBatches (set_epoch-able batch sampler)
    collate: Callable
    eval_loaders: dict[str, Any]  # split -> DataLoader (not yet prepared)
    evaluate: Callable  # (model, prepared eval loaders, accelerator) -> {metric: value}
    main_metric: str
    greater_is_better: bool
    restore_best: bool = True  # fine-tuning ends on its best checkpoint; pretraining on its last step
    # Files the evaluation leaves beside its scores (name -> JSON data), e.g. QA's predictions.json: the last
    # evaluation's, written by `tlab eval --output` and into a finished run directory.
    artifacts: dict = field(default_factory=dict)
    # split -> the last evaluation's per-example outcomes (`tlab.outcomes.record`: ids, input digests, predictions,
    # references), from which its metrics can be recomputed: what `tlab eval --baseline` compares example by example.
    # Kept in results.json by `tlab eval --output` and in a finished run's outcomes.json.
    outcomes: dict = field(default_factory=dict)
    # May return a device tensor: the loop sums it there and reads it only when it logs, so that counting tokens
    # does not wait for the GPU at every step.
    count_tokens: Callable = lambda batch: batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
    # (model, batch) -> scalar loss, for losses the model does not compute itself (label smoothing); None = its own
    loss: Optional[Callable] = None
    # (model, run, accelerator, eval loaders, final metrics) -> metrics of a replaced final model, or None: the last
    # word on the weights before they are saved (e.g. averaging the last checkpoints)
    finish: Optional[Callable] = None


@dataclass
class Prepared:
    """What `prepare` returns: the loop's job, the tokenizer saved beside the model, and the facts the start
    summary and metrics.json report (example counts, labels, windows, ...)."""

    job: Job
    tokenizer: Any
    summary: dict[str, Any]


@dataclass(frozen=True)
class PredictRequest:
    """What `tlab predict` was given; the family reads the inputs it understands (texts, a question, stdin)."""

    model: str
    task: Optional[str]
    texts: list[str]
    batch_size: int
    text_b: Optional[str] = None
    question: Optional[str] = None
    context: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    stdin: Callable[[], str] = lambda: ""  # all of stdin, decoded (read only when the family needs it)
    json_lines: bool = False  # --json: one JSON object per input instead of tab-separated text


@runtime_checkable
class TaskModule(Protocol):
    """What a family's module provides.

    `prepare` loads (Hub or files), preprocesses (cached features, side columns kept out of batches), builds the
    model with its head and returns `Prepared`. `predict` answers `tlab predict`, writing one line per input with
    `echo` (with `request.json_lines`, one JSON object per input). `save(model, tokenizer, path, cfg, state_dict)` writes
    model/ (safetensors, loadable by plain transformers). A module may also offer `preview(info, cfg) -> str | None`:
    what `tlab eval --dry-run` shows of the input its evaluation would build (the few-shot prompt of the first
    example), without loading a model."""

    def prepare(self, info: TaskInfo, cfg, accelerator, log: Callable[[str], None], train: bool = True) -> Prepared: ...

    def predict(self, request: PredictRequest, echo: Callable[[str], None]) -> None: ...

    def save(self, model, tokenizer, path, cfg, state_dict=None) -> None: ...
