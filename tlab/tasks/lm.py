"""Pretraining tasks: masked LM (`mlm`, BERT-style) and causal LM (`clm`, GPT-style) on packed token blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tlab import data, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import scaffold
from tlab.tasks.contract import Job, PredictRequest, Prepared, TaskInfo

CORPUS_DIR = Path(__file__).resolve().parent.parent / "corpus"
# The embedded default: WikiText-2 (CC BY-SA 3.0), its test part to train on and its validation part to evaluate.
DEFAULT_TRAIN = CORPUS_DIR / "wikitext2-test.txt"
DEFAULT_VALIDATION = CORPUS_DIR / "wikitext2-valid.txt"


def load_texts(cfg: RunConfig):
    """(train, validation) datasets with a `text` column; validation may be None."""
    d = cfg.data
    if d.dataset:
        train = data.load_hub_corpus(d.dataset, d.dataset_config, "train", d.text_column)
        validation = data.load_hub_corpus(d.dataset, d.dataset_config, "validation", d.text_column) if not d.validation_file else None
    else:
        use_default = not d.train_files
        files = data.expand_files(d.train_files) if d.train_files else [DEFAULT_TRAIN]
        train = data.load_corpus(files, d.text_column)
        validation = None
        if use_default and not d.validation_file:
            validation = data.load_corpus([DEFAULT_VALIDATION], "text")
    if d.validation_file:
        validation = data.load_corpus(data.expand_files([d.validation_file]), d.text_column)
    if validation is None and d.validation_fraction > 0:
        # train_test_split rounds the held-out part up: 3 lines at 5% would hold out a third of the corpus
        if len(train) * d.validation_fraction < 1:
            raise TlabError(f"the training data is too small to hold out validation ({len(train)} lines x "
                            f"data.validation_fraction {d.validation_fraction:g} < 1): give --validation-file "
                            "(or set data.validation_fraction=0)")
        split = train.train_test_split(test_size=d.validation_fraction, seed=cfg.train.seed)
        train, validation = split["train"], split["test"]
    return scaffold.clip(train, d.max_train_samples), scaffold.clip(validation, d.max_eval_samples)


def get_tokenizer(cfg: RunConfig, train, mlm: bool):
    m = cfg.model
    if m.tokenizer or m.name_or_path:
        name = m.tokenizer or modeling.resolve_checkpoint(m.name_or_path)
        tokenizer = modeling.load_tokenizer(name, m.trust_remote_code)
    else:
        def texts():
            return (t for i in range(0, len(train), 1000) for t in train[i : i + 1000]["text"])

        tokenizer = modeling.train_tokenizer(texts, cfg.task, m.vocab_size, train._fingerprint)
    if mlm and tokenizer.mask_token_id is None:
        raise TlabError(f"tokenizer {m.tokenizer or m.name_or_path} has no mask token, which MLM needs")
    if not mlm and tokenizer.eos_token_id is None:
        raise TlabError(f"tokenizer {m.tokenizer or m.name_or_path} has no end-of-text token, which CLM needs")
    return tokenizer


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, train: bool = True) -> Prepared:
    """Corpus -> tokenizer -> packed blocks -> model.
    With train=False (tlab eval) only the validation text of a trained model is prepared."""
    mlm = info.params["mlm"]
    block = cfg.data.block_size
    if not train and not cfg.model.name_or_path:
        raise TlabError("tlab eval needs --model (a tlab run directory or a model directory)")
    with accelerator.main_process_first():  # rank 0 tokenizes and caches; the others then read the cache
        if train:
            train_texts, validation = load_texts(cfg)
        else:
            validation_file = cfg.data.validation_file
            train_texts, validation = None, data.load_corpus(
                data.expand_files([validation_file]) if validation_file else [DEFAULT_VALIDATION], cfg.data.text_column)
            if cfg.data.max_eval_samples:
                validation = validation.select(range(min(cfg.data.max_eval_samples, len(validation))))
        tokenizer = get_tokenizer(cfg, train_texts, mlm)
        model = modeling.build_lm(cfg.model, cfg.task, tokenizer, block, for_training=train)

        def blocks_of(ds):
            tokenized = data.tokenize_corpus(ds, tokenizer, add_special_tokens=mlm, append_eos=not mlm, num_proc=cfg.data.num_proc)
            return data.packed_blocks(tokenized, block)

        train_blocks = blocks_of(train_texts) if train else np.zeros((1, block), dtype=np.int32)
        eval_blocks = blocks_of(validation) if validation is not None else None
    if len(train_blocks) == 0:
        raise TlabError(f"the training corpus holds fewer tokens than one block of {block}: lower --block-size or add text")
    if eval_blocks is not None and len(eval_blocks) == 0:
        raise TlabError(f"the validation text holds fewer tokens than one block of {block}")
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    skip_padding_probe(model)

    world = accelerator.num_processes  # loaders yield global batches; accelerate splits them across ranks
    collate = data.LMCollator(tokenizer, mlm=mlm, mlm_probability=cfg.train.mlm_probability, seed=cfg.train.seed)
    eval_loaders = scaffold.eval_loaders({"validation": data.Blocks(eval_blocks)} if eval_blocks is not None else {},
                                         cfg, world, collate)
    job = Job(
        model=model,
        train_data=data.Blocks(train_blocks),
        train_batches=data.EpochBatches(len(train_blocks), cfg.train.batch_size * world, cfg.train.seed, keyed=mlm),
        collate=collate,
        eval_loaders=eval_loaders,
        evaluate=lambda m, loaders, acc: evaluate(m, loaders, acc, mlm=mlm, seed=cfg.train.seed),
        main_metric=info.main_metric if eval_loaders else "",
        greater_is_better=info.greater_is_better,
        restore_best=False,
    )
    summary = {
        "train_blocks": len(train_blocks) if train else 0,
        "train_tokens": int(len(train_blocks) * block),
        "validation_examples": 0 if eval_blocks is None else len(eval_blocks),
        "vocab_size": len(tokenizer),
        "model_type": model.config.model_type,
    }
    return Prepared(job, tokenizer, summary)


def save(model, tokenizer, path, cfg, state_dict=None) -> None:
    """model/ as transformers saves it (safetensors); a sharded (FSDP) model from its gathered full state."""
    model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(path)


def predict(request: PredictRequest, echo) -> None:
    raise TlabError(f"{request.model} is a pretrained language model ({request.task or 'mlm/clm'}) and holds no "
                    "sequence classifier: `tlab predict` serves fine-tuned classifiers, QA and translation models; "
                    "fine-tune it first (tlab finetune --model ...), or continue text with a causal LM: tlab generate "
                    f"--model {request.model} \"...\"")


def skip_padding_probe(model) -> None:
    """Packed blocks hold no padding, so transformers' probe for padded inputs given without an attention mask
    (`pad_token_id in input_ids[:, [-1, 0]]`, in GPT-2 and others) has nothing to find; it reads a value back from the
    device at every forward, which on a GPU stops the host from queueing the step ahead."""
    for module in model.modules():
        if hasattr(module, "warn_if_padding_and_no_attention_mask"):
            module.warn_if_padding_and_no_attention_mask = _no_padding_probe


def _no_padding_probe(input_ids, attention_mask) -> None:
    return None


def evaluate(model, loaders, accelerator, mlm: bool, seed: int) -> dict[str, float]:
    """Token-weighted loss, perplexity and (MLM) masked-token accuracy over the whole validation set.

    Per-example sums are gathered with gather_for_metrics, so the duplicates that pad the last batch of a
    distributed run are dropped and every example counts once. Masks come from a fixed seed, so evaluations
    are comparable across steps and do not move the training RNG."""
    if not loaders:
        return {}
    model.eval()
    # Read once at the end, not per batch (each read waits for the GPU). float64 keeps token counts exact; MPS has none.
    totals = torch.zeros(3, dtype=torch.float32 if accelerator.device.type == "mps" else torch.float64, device=accelerator.device)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in loaders["validation"]:
            logits = model(**batch).logits
            labels = batch["labels"]
            if not mlm:  # position t predicts token t+1
                logits, labels = logits[:, :-1], labels[:, 1:]
            mask = labels != -100  # (B, T)
            if logits.dim() == 3:
                # Ignored positions get a loss of 0 and no hit, so per-example sums need no (syncing) boolean indexing.
                token_loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
                loss_rows, hit_rows = token_loss.sum(1), ((logits.argmax(-1) == labels) & mask).sum(1).float()
            else:  # ModernBERT's sparse prediction returns logits only at masked positions, in row-major order.
                targets, rows = labels[mask], mask.nonzero()[:, 0]
                token_loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
                zeros = torch.zeros(len(labels), device=labels.device)
                loss_rows = zeros.index_add(0, rows, token_loss)
                hit_rows = zeros.index_add(0, rows, (logits.argmax(-1) == targets).float())
            per_example = torch.stack([loss_rows, mask.sum(1).float(), hit_rows], dim=1)  # loss sum, tokens, correct
            totals += accelerator.gather_for_metrics(per_example).sum(0)
    loss_sum, count, correct = totals.tolist()
    count, correct = round(count), round(correct)
    mean = loss_sum / max(count, 1)
    metrics = {"loss": mean, "perplexity": float(torch.exp(torch.tensor(min(mean, 50.0))))}
    if mlm:
        metrics["accuracy"] = correct / max(count, 1)
    metrics["tokens"] = count
    return metrics
