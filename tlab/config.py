"""Run configuration: dataclasses are the single source of field names, types, defaults and docs.

Precedence, lowest first: dataclass defaults < `--config file.yaml` < named CLI flags < trailing `key=value`
overrides. OmegaConf does the merging and type checking; errors are turned into one line naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tlab.errors import TlabError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SCHEDULES = ("linear", "cosine", "constant", "inverse_sqrt")
REPORT_TO = ("tensorboard", "mlflow", "wandb", "none")
NER_SCHEMES = ("auto", "IOB1", "IOB2", "IOBES", "BILOU")
LONG_TEXT_MODES = ("truncate", "mean", "max")


@dataclass(frozen=True)
class DataConfig:
    train_files: list[str] = field(default_factory=list)
    """Training text: files or folders (.txt, .jsonl/.json, .csv/.tsv). Empty = the task's default source."""
    validation_file: Optional[str] = None
    """Validation data file; when absent, pretraining holds out `validation_fraction` of the training lines."""
    validation_fraction: float = 0.05
    """Share of training lines held out for validation when no validation file is given (pretraining)."""
    dataset: Optional[str] = None
    """Hugging Face Hub dataset id used instead of local files (needs network)."""
    dataset_config: Optional[str] = None
    """Configuration name of the Hub dataset, e.g. wikitext-103-raw-v1."""
    text_column: str = "text"
    """Text field of .jsonl/.csv corpora and Hub datasets (pretraining)."""
    data_dir: Optional[str] = None
    """GLUE-format folder: the GLUE root (DIR/SST-2/train.tsv) or one task's folder (DIR/train.tsv)."""
    text_a_column: Optional[str] = None
    """First text column of user-supplied fine-tuning files (default: the task's own column name)."""
    text_b_column: Optional[str] = None
    """Second text column of user-supplied sentence-pair files."""
    label_column: Optional[str] = None
    """Label column of user-supplied fine-tuning files (NER's CoNLL files: the tag column's index, default the last)."""
    block_size: int = 128
    """Tokens per packed pretraining block."""
    max_length: int = 128
    """Longest tokenized input for fine-tuning; longer inputs are truncated (sequence classification: see long_text)."""
    long_text: str = "truncate"
    """Sequence classification inputs longer than max_length: truncate (cut off) | mean | max (cut into windows of
    max_length tokens sharing `stride` tokens; each window trains with its document's label, and evaluation and
    `tlab predict` average (mean) or take the per-class maximum (max) of a document's window logits)."""
    stride: int = 32
    """With long_text mean | max: tokens consecutive windows share; below max_length (less the special tokens)."""
    train_windows: str = "every"
    """With long_text mean | max, the training windows of a long document: every (each carries the document's label)
    | first (its first window only, as truncation would train; evaluation still reads every window)."""
    both_orders: bool = False
    """Sentence-pair classification whose label does not depend on the order of the two texts (STS-B, MRPC, QQP):
    train on every pair in both orders, (a, b) and (b, a), so an epoch is twice as long. Evaluation reads the pairs
    as given. sentence-transformers trains its STS-B cross-encoders so."""
    eval_split: Optional[str] = None
    """`tlab eval --split`: the split of the task's data to score instead of its validation split(s), by the name the
    task gives it (conll2003: train, validation or testa, test or testb; a GLUE task: the splits of its files in
    data_dir or of the Hub, e.g. mnli validation_mismatched). A task reading your files (--train-file,
    --validation-file) knows only the split it validates on. Unset = the validation split(s); training always
    validates on those."""
    max_train_samples: Optional[int] = None
    """Use only the first N training examples (quick runs)."""
    max_eval_samples: Optional[int] = None
    """Use only the first N validation examples."""
    num_proc: int = 1
    """Processes for tokenization with datasets.map."""
    num_workers: int = 0
    """DataLoader worker processes (collation off the training process)."""

    def __post_init__(self):
        _check(0.0 <= self.validation_fraction < 1.0, "data.validation_fraction must be in [0, 1)")
        _check(self.block_size >= 8, "data.block_size must be at least 8")
        _check(self.max_length >= 8, "data.max_length must be at least 8")
        _check(self.num_proc >= 1 and self.num_workers >= 0, "data.num_proc must be >= 1, data.num_workers >= 0")
        _check(self.long_text in LONG_TEXT_MODES,
               f"data.long_text (--long-text) must be one of {' | '.join(LONG_TEXT_MODES)}, got {self.long_text!r}")
        _check(self.stride >= 0, f"data.stride (--stride) must be >= 0, got {self.stride}")
        _check(self.train_windows in ("every", "first"), f"data.train_windows must be every | first, got {self.train_windows!r}")
        _check(self.long_text == "truncate" or self.stride < self.max_length,
               f"data.stride (--stride) {self.stride} must be below data.max_length {self.max_length}: consecutive "
               "windows share stride tokens of max_length")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: Optional[str] = None
    """Checkpoint to start from: a tlab run directory, a local Hugging Face model directory or a Hub id.
    Empty for pretraining from scratch from `preset`."""
    preset: str = "mini"
    """Size preset for models built from scratch: tiny|mini|small|base, optionally prefixed by an architecture
    (modernbert-, bert-, roberta- for MLM; gpt2-, llama- for CLM). See `tlab presets`."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Model config fields set on top of the preset, or on a checkpoint's config when it is trained (dropout,
    classifier_dropout), e.g. model.overrides.num_hidden_layers=6."""
    tokenizer: Optional[str] = None
    """Existing tokenizer (directory or Hub id). Empty when pretraining from scratch = train one on the corpus."""
    vocab_size: int = 8192
    """Vocabulary size of a tokenizer trained from scratch."""
    freeze: str = "none"
    """What to freeze when fine-tuning: none | embeddings | layers:N (embeddings + first N layers) | encoder."""
    reinit_layers: int = 0
    """Fine-tuning: re-initialise the pooler and the top N encoder layers before training (0 = keep them all)."""
    lora_r: int = 0
    """LoRA rank (0 = full fine-tuning). The saved model is merged so plain transformers loads it."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_target_modules: list[str] = field(default_factory=list)
    """Module names LoRA adapts; empty = the attention projections peft knows for the architecture."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% more compute."""
    trust_remote_code: bool = False
    """Allow model code from the Hub to run. Off unless you ask for it."""

    def __post_init__(self):
        _check(self.vocab_size >= 100, "model.vocab_size must be at least 100")
        _check(self.lora_r >= 0, "model.lora_r must be >= 0")
        _check(self.reinit_layers >= 0, f"model.reinit_layers must be >= 0, got {self.reinit_layers}")
        _check(
            self.freeze in ("none", "embeddings", "encoder") or _is_layers_spec(self.freeze),
            f"model.freeze must be none, embeddings, encoder or layers:N, got {self.freeze!r}",
        )


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 1.0
    """Passes over the training data (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Optimizer steps to run; > 0 wins over epochs."""
    batch_size: int = 32
    """Examples per device per micro-batch."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 5e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and norms)."""
    layer_lr_decay: float = 1.0
    """Fine-tuning: layer-wise learning-rate decay. The head trains at lr, the top encoder layer at lr x decay, each
    layer below at one more factor, the embeddings at the lowest (1.0 = one rate for all)."""
    head_lr_scale: float = 1.0
    """Fine-tuning: the learning rate of what sits above the encoder's layers (the task's head, and the pooler and
    final norm where the model has them) is lr x this. AdamW moves a weight by about lr a step, so at the encoder's
    rate a new head stays close to its random draw for a short run (1.0 = one rate for all)."""
    warmup: float = 0.05
    """Warm-up: a fraction of all steps when < 1, else a number of steps."""
    schedule: str = "linear"
    """Decay after warm-up: linear | cosine | constant | inverse_sqrt (the Transformer paper's: lr x sqrt(warmup / step))."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    precision: str = "auto"
    """auto | fp32 | bf16 | fp16. auto = bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    seed: int = 42
    """Seed for initialisation, data order and masking."""
    log_every: int = 10
    """Optimizer steps between log lines."""
    eval_every: int = 0
    """Optimizer steps between evaluations; 0 = at the end of each epoch (and at the end)."""
    save_every: int = 0
    """Optimizer steps between checkpoints; 0 = at each evaluation."""
    save_minutes: float = 15.0
    """Also checkpoint when this many minutes passed since the last checkpoint (0 = off), so a killed run loses at
    most this much work whatever save_every says. Checked at each step (at each log step in multi-process runs)."""
    keep_checkpoints: int = 2
    """Newest checkpoints to keep (the best one is kept as well when fine-tuning)."""
    max_bad_steps: int = 3
    """Stop (exit 3) once this many consecutive optimizer steps had a non-finite loss. Counted on the device and read
    at log, evaluation and save steps (a read waits for the GPU), so the run stops at the next of those; weights
    are checked before every save, so nothing non-finite is ever saved."""
    mlm_probability: float = 0.15
    """Share of tokens masked for MLM (80% [MASK], 10% random, 10% unchanged)."""
    patience: int = 0
    """Early stopping: evaluations without improvement of the main metric before stopping (0 = off)."""
    best_metric: Optional[str] = None
    """The validation metric that picks the kept checkpoint, counts for patience, decides whether averaged checkpoints
    replace it and is what `tlab sweep` tunes: one of the task's metrics (or loss, where its evaluation reports one).
    Unset: the task's main metric (accuracy, MCC, F1, BLEU, ...). loss and perplexity are minimised, the rest
    maximised. E.g. chrF for a small translation model, whose BLEU moves by a few 4-gram matches between evaluations."""
    group_by_length: bool = True
    """Fine-tuning: batch examples of similar length together (less padding)."""
    length_group_batches: int = 50
    """With group_by_length: batches per mega-batch sorted by length (transformers' LengthGroupedSampler uses 50);
    fewer keep batches more random, at the cost of more padding."""
    length_bucket: Optional[int] = None
    """With group_by_length: lengths are compared in buckets of this many tokens, examples within a bucket in random
    order, so the windows of one paragraph's questions (almost one length) spread over several batches, at the cost
    of a little padding (BENCHMARKS.md). 1 = exact sorting; unset = the task family's choice (32 for the squad tasks,
    1 for the others)."""
    compile: bool = False
    """torch.compile the model; helps on GPUs. Shapes start static and turn dynamic once they change (torch's own
    rule), so packed pretraining blocks keep fully static kernels."""
    compile_mode: str = "default"
    """torch.compile mode: default | reduce-overhead (CUDA graphs: less host time a step, for static shapes) |
    max-autotune | max-autotune-no-cudagraphs."""
    cheap_dropout: bool = True
    """On CPUs, dropout masks from 16 random bits per element instead of a float (p rounded to 1/65536): faster
    fine-tuning on small CPUs (BENCHMARKS.md). GPUs always use torch's dropout."""
    eval_batch_size: Optional[int] = None
    """Evaluation batch size (default: 2 x batch_size)."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers: tensorboard | mlflow | wandb | none (several allowed). Nothing is sent anywhere unless
    named here: MLflow logs to mlflow_tracking_uri (or MLFLOW_TRACKING_URI) or else RUN/mlruns/; W&B obeys WANDB_MODE
    (offline writes RUN/wandb/ without a network)."""
    mlflow_tracking_uri: Optional[str] = None
    """MLflow tracking server or database (http://host:5000, sqlite:///path.db); default MLFLOW_TRACKING_URI, else a
    SQLite store in RUN/mlruns/. Checked before the run starts."""

    def __post_init__(self):
        _check(self.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(self.compile_mode in COMPILE_MODES,
               f"train.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        _check(self.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "train.batch_size and train.grad_accum must be >= 1")
        _check(self.epochs > 0 or self.max_steps > 0, "give train.epochs > 0 or train.max_steps > 0")
        _check(self.lr > 0, "train.lr must be > 0")
        _check(0 < self.mlm_probability < 1, "train.mlm_probability must be in (0, 1)")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
        _check(self.save_minutes >= 0, "train.save_minutes must be >= 0 (0 = off)")
        _check(self.max_bad_steps >= 1, "train.max_bad_steps must be >= 1")
        # -1 and 0 both mean "not set" (epochs decide); anything lower is a typo, not a choice
        _check(self.max_steps >= -1, f"train.max_steps (--max-steps) must be > 0, or -1 for not set, got {self.max_steps}")
        _check(self.warmup >= 0, f"train.warmup must be >= 0 (a fraction of the steps when < 1, else steps), got {self.warmup}")
        _check(self.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}")
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _check(0 < self.layer_lr_decay <= 1, f"train.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        _check(self.head_lr_scale > 0, f"train.head_lr_scale must be > 0, got {self.head_lr_scale}")
        _check(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")
        for name in ("eval_every", "save_every", "patience"):
            _check(getattr(self, name) >= 0, f"train.{name} must be >= 0 (0 = off / the default), got {getattr(self, name)}")
        unknown = [name for name in self.report_to if name not in REPORT_TO]
        _check(not unknown, f"train.report_to (--report-to): unknown tracker {', '.join(map(repr, unknown))}; use "
               f"{' | '.join(REPORT_TO)}")
        _check("none" not in self.report_to or len(set(self.report_to)) == 1,
               "train.report_to (--report-to): none cannot be combined with a tracker")
        _check(self.length_group_batches >= 1 and (self.length_bucket is None or self.length_bucket >= 1),
               "train.length_group_batches and train.length_bucket must be >= 1")
        _check(self.eval_batch_size is None or self.eval_batch_size >= 1,
               f"train.eval_batch_size (eval --batch-size) must be >= 1, got {self.eval_batch_size}")

    def eval_batch(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size


@dataclass(frozen=True)
class QAConfig:
    """Extractive question answering (squad, squad_v2)."""

    max_seq_length: int = 384
    """Tokens per window of question + context; longer contexts are cut into overlapping windows."""
    doc_stride: int = 128
    """Tokens of context shared by consecutive windows (so an answer at a border is whole in one of them)."""
    n_best: int = 20
    """Start and end candidates searched per window, and the length of the saved n-best lists."""
    max_answer_length: int = 30
    """Longest answer span in tokens."""
    null_threshold: float = 0.0
    """squad_v2: answer "no answer" when the null score beats the best span by more than this (eval reports the
    best threshold found on the validation set as best_f1_thresh)."""

    def __post_init__(self):
        _check(self.max_seq_length >= 32, "qa.max_seq_length must be at least 32")
        _check(0 < self.doc_stride < self.max_seq_length, "qa.doc_stride must be > 0 and below qa.max_seq_length")
        _check(self.n_best >= 1 and self.max_answer_length >= 1, "qa.n_best and qa.max_answer_length must be >= 1")


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Sequence-to-sequence models (translation and summarization): lengths, the loss, batches, generation,
    averaging, warm starts."""

    source_prefix: Optional[str] = None
    """Text put before every source sequence; T5 needs its task prefix ("translate English to German: "), which is
    taken from the model's config when not given."""
    max_source_length: int = 128
    """Source tokens kept per sequence (longer ones are truncated)."""
    max_target_length: int = 128
    """Target tokens kept per sequence for training."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy (0 = off)."""
    max_tokens: int = 0
    """Token-budget batches (fairseq's --max-tokens): pairs of similar length fill a batch up to this many
    padded tokens per side; 0 = train.batch_size pairs a batch, length-grouped."""
    num_beams: int = 4
    """Beam size for evaluation and prediction (1 = greedy)."""
    length_penalty: float = 1.0
    """Beam score = log-probability / length**length_penalty (> 1 favours longer outputs)."""
    max_new_tokens: int = 128
    """Longest generated output sequence, in tokens."""
    max_length_a: float = 1.5
    """With max_length_b, a batch generates at most a x (its longest source, in tokens) + b new tokens (and never
    more than max_new_tokens), as fairseq's --max-len-a/-b: an output that repeats itself stops there instead of
    keeping its whole batch decoding to max_new_tokens. 0 = max_new_tokens alone."""
    max_length_b: int = 10
    """See max_length_a."""
    min_new_tokens: int = 0
    """Shortest generated output, in tokens (the end token is held back until then; 0 = no minimum)."""
    no_repeat_ngram_size: int = 0
    """Generation never repeats an n-gram of this many tokens (3 is usual for summaries; 0 = off)."""
    average_checkpoints: int = 0
    """Average the weights of the last N checkpoints at the end (Vaswani et al.'s recipe; needs
    train.keep_checkpoints >= N); the average is evaluated and saved when it scores at least as well."""
    warm_start: bool = False
    """Build an encoder-decoder from an encoder-only checkpoint (--model, e.g. a BERT): both halves start from it,
    cross-attention from scratch (EncoderDecoderModel, Rothe et al. 2020)."""

    def __post_init__(self):
        _check(self.max_source_length >= 4 and self.max_target_length >= 4,
               "seq2seq.max_source_length and max_target_length must be at least 4")
        _check(0 <= self.label_smoothing < 1, "seq2seq.label_smoothing must be in [0, 1)")
        _check(self.max_tokens >= 0, "seq2seq.max_tokens must be >= 0 (0 = batches of train.batch_size)")
        _check(self.num_beams >= 1 and self.max_new_tokens >= 1, "seq2seq.num_beams and max_new_tokens must be >= 1")
        _check(0 <= self.min_new_tokens <= self.max_new_tokens,
               f"seq2seq.min_new_tokens must be in [0, max_new_tokens {self.max_new_tokens}], got {self.min_new_tokens}")
        _check(self.no_repeat_ngram_size >= 0, "seq2seq.no_repeat_ngram_size must be >= 0 (0 = off)")
        _check(self.max_length_a >= 0 and self.max_length_b >= 1,
               "seq2seq.max_length_a must be >= 0 (0 = off) and max_length_b >= 1")
        _check(self.average_checkpoints >= 0 and self.average_checkpoints != 1,
               "seq2seq.average_checkpoints must be 0 (off) or at least 2")


@dataclass(frozen=True)
class TranslationConfig:
    """Machine translation (wmt14-en-de, wmt16-en-ro, their reverses, and the generic `translation`); its model,
    batch and generation options are the `seq2seq` section's."""

    source_lang: Optional[str] = None
    """Source language code (the suffix of the files, e.g. en in train.en); set by the WMT tasks."""
    target_lang: Optional[str] = None
    """Target language code; set by the WMT tasks."""
    detokenize: str = "auto"
    """auto | moses | none: Moses-tokenized files (WMT's, with &apos; escapes) are detokenized and unescaped
    (sacremoses) for training and scoring; auto detects them."""

    def __post_init__(self):
        _check(self.detokenize in ("auto", "moses", "none"), "translation.detokenize must be auto, moses or none")


@dataclass(frozen=True)
class SummarizationConfig:
    """Summarization (samsum, xsum, cnn_dailymail, and the generic `summarization`): which field holds the summary.
    The document's field is the generic data.text_a_column (--text-column); model, batch and generation options
    (lengths, beams, min/max new tokens, no_repeat_ngram_size) are the `seq2seq` section's."""

    summary_column: Optional[str] = None
    """Field (JSON) or column (CSV/TSV) of the reference summary in --train-file / --validation-file and Hub data;
    default the task's own (summary for samsum, xsum and summarization; highlights for cnn_dailymail)."""

    def __post_init__(self):
        _check(self.summary_column is None or bool(self.summary_column.strip()),
               "summarization.summary_column (--summary-column) must not be empty")


@dataclass(frozen=True)
class NERConfig:
    """Token classification (conll2003, ner): the tag scheme of the files, which sub-tokens carry a label, windows."""

    scheme: str = "auto"
    """Tag scheme of the data files: auto (detected per file) | IOB1 (CoNLL-2003's original files) | IOB2 | IOBES |
    BILOU. Tags are converted to IOB2 for training and scoring."""
    label_all_subtokens: bool = False
    """Train on every sub-token of a word (B- becoming I- after the first) instead of its first sub-token only
    (the others are -100). Predictions and scores read each word's first sub-token either way."""
    stride: int = 32
    """Sentences longer than data.max_length tokens are cut into windows that share this many tokens; each word is
    predicted in the window where it has the most context on both sides. At most half a window."""
    token_weighted_loss: bool = True
    """Weigh every labelled token alike across batches: a batch's summed cross-entropy over the mean labelled tokens
    of a training batch, instead of the model's per-batch mean (false). Length-grouped batches of short sentences
    otherwise give each of their few tokens many times the weight of a token in a long sentence; on by default since it
    gained F1 at every seed measured (BENCHMARKS.md, issue #21)."""

    def __post_init__(self):
        _check(self.scheme in NER_SCHEMES, f"ner.scheme must be one of {', '.join(NER_SCHEMES)}")
        _check(self.stride >= 0, "ner.stride must be >= 0")


@dataclass(frozen=True)
class ClassificationConfig:
    """Sequence classification of your own labelled files (--task classification): several labels per text."""

    multi_label: bool = False
    """Each text has a set of labels, none, one or several (--multi-label): the label column holds a list per row
    (JSON Lines ["sports", "politics"] or [0, 3]) or, in CSV/TSV, the names joined by label_separator
    ("sports|politics", "" for none). Trained with a sigmoid and binary cross-entropy per label, scored by micro-
    and macro-averaged F1 and subset accuracy (every label right); `tlab predict` prints every label above threshold."""
    label_separator: str = "|"
    """With multi_label: what separates the labels of one row in a text field (a CSV/TSV cell, a JSON string)."""
    threshold: float = 0.5
    """With multi_label: a label is predicted when its probability (sigmoid) is above this, in evaluation and
    `tlab predict` (`tlab predict --set classification.threshold=0.3`, `tlab eval classification.threshold=0.3`)."""
    average_orders: bool = False
    """Sentence pairs whose label does not depend on the order of the two texts (STS-B, MRPC, QQP): evaluation and
    `tlab predict` run every pair as (a, b) and as (b, a) and average the two outputs (logits), at twice the
    inference cost. A run keeps the setting in its config.yaml, so `tlab eval` and `tlab predict` of it do the same."""

    def __post_init__(self):
        _check(0 < self.threshold < 1, f"classification.threshold must be between 0 and 1, got {self.threshold}")
        _check(bool(self.label_separator.strip()),
               f"classification.label_separator must be visible text such as | or , (got {self.label_separator!r})")


@dataclass(frozen=True)
class FewShotConfig:
    """A causal LM scored on a classification task without training, lm-evaluation-harness style
    (`tlab eval --task sst2 --model runs/gpt --shots 4`): each label's verbalisation is scored as the continuation of
    a prompt, and the most likely one is the prediction."""

    shots: Optional[int] = None
    """Solved training examples put before each example (0 = zero-shot); unset = no few-shot scoring (a fine-tuned
    classifier is evaluated as usual)."""
    template: Optional[str] = None
    """One example's prompt, its fields in braces: the task's columns as the Hub names them ({sentence},
    {sentence1} / {sentence2}, {question}, {premise} / {hypothesis}, {text}) or {text_a} / {text_b}. Unset = the
    task's own (SST-2: "Review: {sentence}\\nSentiment:"). As a key=value override, quote it YAML's way:
    'fewshot.template="Review: {sentence}\\nSentiment:"'."""
    verbalizers: list[str] = field(default_factory=list)
    """The continuation scored for each label, in label order (SST-2: " negative", " positive"); empty = the task's own."""
    separator: str = "\n\n"
    """Text between the shots, and between the last shot and the example."""
    seed: int = 1234
    """Seed of the shots drawn for each example (`tlab eval --seed`); the held-out validation split stays train.seed's."""

    def __post_init__(self):
        _check(self.shots is None or self.shots >= 0, f"fewshot.shots (--shots) must be >= 0 (0 = zero-shot), got {self.shots}")
        _check(all(self.verbalizers) and len(set(self.verbalizers)) == len(self.verbalizers),
               "fewshot.verbalizers must be distinct and non-empty (one continuation per label)")
        _check(self.template is None or bool(self.template.strip()), "fewshot.template must not be empty")


@dataclass(frozen=True)
class RunConfig:
    task: str = "mlm"
    """mlm | clm (pretraining) or a fine-tuning task such as sst2 (see `tlab tasks`)."""
    output_dir: Optional[str] = None
    """Run directory; default runs/<task>-<date>-<time>. Never overwritten unless `overwrite` is set."""
    overwrite: bool = False
    """Replace an existing run directory (the old one is removed only after the new run succeeds)."""
    resume: bool = False
    """Continue the run in output_dir from its newest complete checkpoint."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    seq2seq: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    summarization: SummarizationConfig = field(default_factory=SummarizationConfig)
    ner: NERConfig = field(default_factory=NERConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)

    def global_batch(self, world_size: int) -> int:
        """Examples per optimizer step: per-device batch x processes x accumulation."""
        return self.train.batch_size * world_size * self.train.grad_accum


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TlabError(message)


def _is_layers_spec(text: str) -> bool:
    return text.startswith("layers:") and text[7:].isdigit()


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"train.lr": 1e-4} -> {"train": {"lr": 1e-4}}; None values (flags not given) are dropped."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load(
    config_file: Optional[str] = None,
    flags: Optional[dict[str, Any]] = None,
    overrides: Optional[list[str]] = None,
    defaults: Optional[dict[str, Any]] = None,
    run_config: Optional[str] = None,
    own_sections: tuple[str, ...] = (),
) -> RunConfig:
    """Merge defaults < command defaults < a run's config.yaml < YAML < flags < key=value overrides into a
    validated RunConfig. `run_config` (tlab eval of a run) contributes how the run was trained, not where it wrote.
    `own_sections`: top-level keys of the YAML file that the calling command reads itself (tlab sweep's `sweep:`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.structured(RunConfig)
        layers = [_nest(defaults or {})]
        if run_config:
            trained = OmegaConf.load(run_config)
            for key in ("output_dir", "overwrite", "resume"):
                trained.pop(key, None)
            layers.append(trained)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise TlabError(f"config file not found: {config_file}")
            loaded = OmegaConf.load(path)
            if not isinstance(loaded, type(merged)) and loaded is not None:
                raise TlabError(f"config file {config_file} must hold a mapping of keys to values")
            for key in own_sections:
                loaded.pop(key, None)
            if loaded is not None and "sweep" in loaded:
                raise TlabError(f"config file {config_file} has a sweep: block: run it with `tlab sweep --config {config_file}`")
            layers.append(loaded or {})
        layers.append(_nest(flags or {}))
        for item in overrides or []:
            if "=" not in item:
                raise TlabError(f"override {item!r} is not of the form key=value (e.g. train.lr=3e-5)")
            _check_key(_moved_key(item.split("=", 1)[0]))
        layers.append(OmegaConf.from_dotlist(list(overrides or [])))
        for layer in layers:
            _check_sections(layer)
            merged = OmegaConf.merge(merged, _move_keys(layer))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise TlabError(_explain(exc)) from None
    except Exception as exc:
        if isinstance(exc, TlabError):
            raise
        if exc.__class__.__name__ in ("ScannerError", "ParserError", "YAMLError"):
            raise TlabError(f"config file {config_file} is not valid YAML: {str(exc).splitlines()[0]}") from None
        raise


# Options that moved from the translation section to seq2seq (their names unchanged): run directories written before
# keep `translation.num_beams` etc. in their config.yaml, and YAML files, flags and overrides may still say so.
MOVED_TO_SEQ2SEQ = ("source_prefix", "max_source_length", "max_target_length", "label_smoothing", "max_tokens",
                    "num_beams", "length_penalty", "max_new_tokens", "max_length_a", "max_length_b",
                    "average_checkpoints", "warm_start")


def _moved_key(dotted: str) -> str:
    """translation.num_beams -> seq2seq.num_beams (the key's name today); any other key as it is."""
    section, _, rest = dotted.partition(".")
    return f"seq2seq.{rest}" if section == "translation" and rest.split(".")[0] in MOVED_TO_SEQ2SEQ else dotted


def _move_keys(layer: Any) -> Any:
    """One layer (a mapping of sections) with the old-style translation.<key> of MOVED_TO_SEQ2SEQ moved to
    seq2seq.<key>, in place; where a layer gives both, the seq2seq one wins."""
    from collections.abc import Mapping

    old = layer.get("translation") if isinstance(layer, Mapping) else None
    found = [key for key in MOVED_TO_SEQ2SEQ if isinstance(old, Mapping) and key in old]
    if not found:
        return layer
    moved = {key: old.pop(key) for key in found}
    new = layer.get("seq2seq")
    if isinstance(new, Mapping):
        for key, value in moved.items():
            if key not in new:
                new[key] = value
    elif new is None:
        layer["seq2seq"] = moved
    return layer  # seq2seq given a plain value: _check_sections has refused it already


def check_key(dotted: str) -> None:
    """Refuse an unknown dotted key with one line naming it (tlab sweep checks its search space with it)."""
    _check_key(_moved_key(dotted))


def _check_key(dotted: str) -> None:
    """Name the whole dotted key when it is unknown (OmegaConf reports only the first unknown part)."""
    node: Any = RunConfig
    for part in dotted.split("."):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else None
        if fields is None:
            return  # inside a free-form mapping such as model.overrides
        if part not in fields:
            raise TlabError(f"unknown config key {dotted!r} (see `tlab <command> --dry-run` for the valid keys)")
        node = fields[part].default_factory if fields[part].default_factory is not dataclasses.MISSING else None
        node = node if dataclasses.is_dataclass(node) else None


def _check_sections(layer: Any) -> None:
    """`train: 3` or `train=1`: OmegaConf's merge error for a section given a plain value names no key."""
    from collections.abc import Mapping

    for f in dataclasses.fields(RunConfig):
        value = layer.get(f.name) if isinstance(layer, Mapping) else None
        if dataclasses.is_dataclass(f.default_factory) and value is not None and not isinstance(value, Mapping):
            raise TlabError(f"invalid value for {f.name}: expected a mapping of {f.name}.* keys, got {value!r}")


def _explain(exc: Exception) -> str:
    key = getattr(exc, "full_key", None) or ""
    text = str(exc).splitlines()[0]
    if exc.__class__.__name__ in ("ConfigKeyError", "ConfigAttributeError"):
        return f"unknown config key {key!r} (see `tlab <command> --dry-run` for the valid keys)"
    return f"invalid value for {key}: {text}" if key else f"invalid configuration: {text}"


def with_values(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """`cfg` with dotted keys set to `values` (None included), checked as `load` checks an override: how tlab sweep
    makes a trial's config from its base config and the trial's parameters."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    nested: dict[str, Any] = {}
    for key, value in values.items():
        check_key(key)
        node = nested
        *parents, leaf = _moved_key(key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg), nested))
    except OmegaConfBaseException as exc:
        raise TlabError(_explain(exc)) from None


def to_yaml(cfg: RunConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
