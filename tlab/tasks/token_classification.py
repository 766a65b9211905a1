"""Token classification (named entities: `conll2003`, and `ner` for any CoNLL-format or JSON Lines files) on the
shared loop: a per-token head (AutoModelForTokenClassification), word labels aligned to sub-tokens through the
fast tokenizer's word_ids(), sentences longer than a window cut into overlapping windows and merged back word by
word, and entity-level scores (seqeval, conlleval's reading; strict IOB2 beside it)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from tlab import data, finetuning, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import conll_data, scaffold
from tlab.tasks.contract import Job, PredictRequest, Prepared, TaskInfo
from tlab.tasks.token_windows import IGNORE, WindowMerge, align_labels, first_pieces, inside_of, tokenize

__all__ = ["IGNORE", "WindowMerge", "align_labels", "first_pieces", "inside_of", "prepare", "predict", "save", "tokenize"]
METRIC = "seqeval"


# -- data ------------------------------------------------------------------------------------------------------
def _convert(sentences: conll_data.Sentences, scheme: str, log) -> tuple[list[list[str]], conll_data.Converted]:
    converted = conll_data.convert(sentences, scheme)
    if converted.inconsistent:
        log(f"warning: {converted.inconsistent} inconsistent tag(s) in {sentences.source} ({converted.scheme}), read "
            f"as seqeval does (an I- that continues no entity of its type starts one), e.g. "
            + "; ".join(converted.examples))
    return converted.tags, converted


def load_sentences(info: TaskInfo, cfg: RunConfig, train: bool, log) -> tuple[Optional[dict], dict, dict]:
    """(training sentences or None, {split: validation sentences}, facts) as {"tokens", "tags"} with IOB2 tags.
    conll2003: --data-dir's eng.train / eng.testa (or the Hub; tlab eval --split: any of params["splits"]); files
    given with --train-file / --validation-file replace them. ner: --train-file, and --validation-file or a held-out share of the training sentences."""
    d, scheme = cfg.data, cfg.ner.scheme
    facts: dict[str, Any] = {}

    def read(files: Sequence[str]) -> conll_data.Sentences:
        parts = [conll_data.read_file(f, d.label_column) for f in files]
        if len(parts) == 1:
            return parts[0]
        return conll_data.Sentences([t for p in parts for t in p.tokens], [t for p in parts for t in p.tags],
                                    ", ".join(p.source for p in parts))

    def source(split: str) -> conll_data.Sentences:
        if info.params.get("hub") is None:
            raise TlabError(f"task {info.name} needs --train-file (CoNLL columns or JSON Lines with tokens/ner_tags)")
        if d.data_dir:
            return conll_data.read_file(conll_data.conll2003_file(d.data_dir, split), d.label_column)
        return conll_data.load_hub(split)

    def as_rows(sentences: conll_data.Sentences, split: str) -> dict:
        tags, converted = _convert(sentences, scheme, log)
        facts[f"{split}_scheme"] = converted.scheme
        facts["inconsistent_tags"] = facts.get("inconsistent_tags", 0) + converted.inconsistent
        return {"tokens": sentences.tokens, "tags": tags}

    train_rows = None
    hold_out = not d.validation_file and (info.params.get("hub") is None or bool(d.train_files))
    if train or hold_out:
        train_rows = as_rows(read(d.train_files) if d.train_files else source("train"), "train")
    if d.validation_file:
        evals = {"validation": as_rows(read([d.validation_file]), "validation")}
    elif info.params.get("hub") is not None and not d.train_files:
        # tlab eval --split: any split of the task's table (params["splits"]: name -> the Hub's split), named as asked
        name, splits = (d.eval_split if not train else None) or "validation", info.params.get("splits") or {}
        if name not in splits:
            raise TlabError(f"task {info.name} has no split {name!r} (known: {', '.join(splits)})")
        evals = {name: as_rows(source(splits[name]), name)}
    else:  # hold out sentences of the training data
        if d.validation_fraction <= 0:
            raise TlabError("give --validation-file, or a data.validation_fraction > 0 to hold out training sentences")
        flags = conll_data.held_out(train_rows["tokens"], d.validation_fraction, cfg.train.seed)
        picked = {k: [v for v, f in zip(rows, flags) if f] for k, rows in train_rows.items()}
        rest = {k: [v for v, f in zip(rows, flags) if not f] for k, rows in train_rows.items()}
        if not picked["tokens"] or not rest["tokens"]:
            raise TlabError(f"the training data ({len(flags)} sentences) is too small to hold out "
                            f"data.validation_fraction {d.validation_fraction:g}: give --validation-file")
        evals, train_rows = {"heldout": picked}, rest
        facts["heldout_scheme"] = facts.get("train_scheme")
    return (train_rows if train else None), evals, facts


def clip_rows(rows: Optional[dict], limit: Optional[int]) -> Optional[dict]:
    if rows is None or not limit:
        return rows
    return {k: v[:limit] for k, v in rows.items()}


# -- the model -------------------------------------------------------------------------------------------------
def read_config(path: str, cfg: RunConfig):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None


def check_encoder(path: str, config) -> None:
    """Named entities need an encoder: a sequence-to-sequence or causal language model is refused."""
    arch = list(config.architectures or [])
    if getattr(config, "is_encoder_decoder", False) or any(a.endswith(("ForConditionalGeneration", "MTModel")) for a in arch):
        raise TlabError(f"{path} is a sequence-to-sequence model ({', '.join(arch) or config.model_type}): NER needs an "
                        "encoder checkpoint (BERT, RoBERTa, ...)")
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch) or getattr(config, "is_decoder", False):
        raise TlabError(f"{path} is a causal language model ({', '.join(arch) or config.model_type}): NER needs an "
                        "encoder checkpoint (BERT, RoBERTa, ...)")


def trained_labels(path: str, config) -> list[str]:
    if not any(a.endswith("ForTokenClassification") for a in (config.architectures or [])):
        raise TlabError(f"{path} holds no token classifier (architectures: {config.architectures}); fine-tune it first")
    return [str(config.id2label[k]) for k in sorted(config.id2label, key=int)]


def task_labels(info: TaskInfo, train_rows: Optional[dict]) -> list[str]:
    fixed = info.params.get("labels")
    types = conll_data.entity_types(train_rows["tags"]) if train_rows is not None else []
    if fixed:
        known = {name[2:] for name in fixed if name != "O"}
        unknown = sorted(set(types) - known)
        if unknown:
            raise TlabError(f"training tags of type(s) {', '.join(unknown)} are not {info.name}'s ({', '.join(sorted(known))})")
        return list(fixed)
    if train_rows is not None and not types:
        raise TlabError("the training data has no entity tags (every tag is O)")
    return conll_data.labels_for(types)


def check_known(labels: Sequence[str], evals: dict, what: str) -> None:
    known = set(labels)
    for split, rows in evals.items():
        unseen = sorted({t for row in rows["tags"] for t in row if t not in known})
        if unseen:
            raise TlabError(f"{split} tags {', '.join(unseen[:5])} were never seen in {what} (labels: {', '.join(labels)})")


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, train: bool = True) -> Prepared:
    path = scaffold.require_model(cfg, "named-entity recognition")
    with accelerator.main_process_first():
        train_rows, evals, facts = load_sentences(info, cfg, train, log)
        evals = scaffold.only_split(evals, cfg, info.name) if not train else evals
        train_rows = clip_rows(train_rows, cfg.data.max_train_samples)
        evals = {k: clip_rows(v, cfg.data.max_eval_samples) for k, v in evals.items()}
        config = read_config(path, cfg)
        check_encoder(path, config)
        if train:
            labels = task_labels(info, train_rows)
            check_known(labels, evals, "training")
            model = finetuning.load_model(info.head, path, cfg.model, True, "token-classification head",
                                          num_labels=len(labels), id2label=dict(enumerate(labels)),
                                          label2id={n: i for i, n in enumerate(labels)})
        else:
            labels = trained_labels(path, config)
            check_known(labels, evals, f"the model's labels ({path})")
            model = finetuning.load_model(info.head, path, cfg.model, False, "token-classification head")
        tokenizer = modeling.load_tokenizer(path, cfg.model.trust_remote_code)
        if not getattr(tokenizer, "is_fast", False):
            raise TlabError(f"{path} has no fast tokenizer (tokenizer.json): NER aligns labels through word_ids()")
        label2id = {n: i for i, n in enumerate(labels)}
        max_length = scaffold.input_length(cfg.data.max_length, model.config)
        stride = min(cfg.ner.stride, (max_length - tokenizer.num_special_tokens_to_add()) // 2)
        options = (tokenizer, label2id, max_length, stride, cfg.ner.label_all_subtokens)
        train_tok = tokenize(train_rows, *options) if train_rows is not None else None
        eval_tok = {k: tokenize(v, *options).sort("length") for k, v in evals.items()}
    if train:
        model = finetuning.adapt(model, cfg.model, log, info.peft_task_type)
    split_long = {k: len(v) - len(evals[k]["tokens"]) for k, v in eval_tok.items()}
    if train_tok is not None:
        split_long["train"] = len(train_tok) - len(train_rows["tokens"])
    if any(split_long.values()):
        log(f"sentences longer than {max_length} tokens are cut into windows sharing {stride} tokens "
            f"(extra windows: {', '.join(f'{k} {v}' for k, v in split_long.items())}); predictions are merged per word")
    world = accelerator.num_processes
    collate = data.PadCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    id2label = dict(enumerate(labels))
    primary = next(iter(eval_tok), None)
    outcomes: dict[str, Any] = {}
    job = Job(
        model=model,
        train_data=train_tok.remove_columns(["length", "words", "sentence"]).with_format("python")
        if train_tok is not None else None,
        train_batches=scaffold.train_batches(info, cfg, len(train_tok), world, train_tok["length"])
        if train_tok is not None else None,
        collate=collate,
        eval_loaders=scaffold.eval_loaders(eval_tok, cfg, world, collate, drop=["length", "words", "sentence"]),
        evaluate=lambda m, loaders, acc: evaluate(m, loaders, acc, evals, eval_tok, id2label, primary, outcomes),
        main_metric=info.main_metric,
        greater_is_better=info.greater_is_better,
        outcomes=outcomes,
        loss=token_weighted_loss(train_tok) if train_tok is not None and cfg.ner.token_weighted_loss else None,
    )
    scheme = facts.get("train_scheme") or facts.get(f"{primary}_scheme")
    others = {k[:-7]: v for k, v in facts.items() if k.endswith("_scheme") and v != scheme and v is not None}
    summary = {"train_examples": 0 if train_rows is None else len(train_rows["tokens"]),
               **{f"{k}_examples": len(v["tokens"]) for k, v in evals.items()},
               "tag_scheme": scheme + "".join(f" ({k} {v})" for k, v in others.items()) + (" -> IOB2" if scheme != "IOB2" else ""),
               "inconsistent_tags": facts.get("inconsistent_tags", 0), "labels": labels,
               "max_length": max_length, "stride": stride,
               **({"train_windows": len(train_tok),
                   "loss": "token-weighted" if cfg.ner.token_weighted_loss else "per-batch mean"} if train_tok is not None else {}),
               **{f"{k}_windows": len(v) for k, v in eval_tok.items()}}
    return Prepared(job, tokenizer, summary)


def token_weighted_loss(train_tok):
    """(model, batch) -> summed cross-entropy over the batch's labelled tokens / (rows x the mean labelled tokens of a
    training row): every token weighs the same in every batch, as in random batches on average, whatever lengths a
    length-grouped batch holds; a batch of typical rows gets about the model's own mean loss."""
    labelled = sum(sum(1 for label in labels if label != IGNORE) for labels in train_tok["labels"])
    per_row = max(1.0, labelled / max(1, len(train_tok)))

    def loss(model, batch):
        labels = batch["labels"]  # (B, T), IGNORE where no label
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits  # (B, T, C)
        summed = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                                                   reduction="sum")
        return summed / (labels.shape[0] * per_row)

    return loss


# -- scoring ---------------------------------------------------------------------------------------------------
def evaluate(model, loaders, accelerator, examples: dict, features: dict, id2label: dict, primary,
             outcomes: Optional[dict] = None) -> dict[str, float]:
    """Entity precision/recall/F1 (conlleval and strict), per type, token accuracy and the loss per validation
    split, on words: each word's tag is read at its first sub-token, in its most central window. Each sentence's
    predicted and gold tags go to `outcomes`."""
    from tlab import metrics

    model.eval()
    results: dict[str, float] = {}
    for split, loader in loaders.items():
        merge, side, row, loss_sum = WindowMerge(), features[split], 0, 0.0
        with torch.no_grad():
            for batch in loader:
                out = model(**batch)
                pred = accelerator.pad_across_processes(out.logits.argmax(-1), dim=1, pad_index=0)
                loss = torch.full((len(pred),), out.loss.item(), device=pred.device)
                pred, loss = accelerator.gather_for_metrics((pred, loss))
                loss_sum += float(loss.sum())
                pred = pred.cpu().tolist()
                rows = side[row : row + len(pred)]
                for i, values in enumerate(pred):
                    merge.add(rows["sentence"][i], rows["words"][i], values)
                row += len(pred)
        if row != len(side):
            raise RuntimeError(f"evaluation saw {row} windows of {len(side)}")
        references = examples[split]["tags"]
        predictions = [[id2label[i] for i in merge.words(s, len(tags), 0)] for s, tags in enumerate(references)]
        scores = metrics.compute([METRIC], predictions, references)
        scores["loss"] = loss_sum / max(1, len(side))
        suffix = scaffold.suffix(split, list(loaders), primary=primary)
        results.update({f"{k}{suffix}": float(v) for k, v in scores.items()})
        results[f"examples{suffix}"] = len(references)
        scaffold.keep_outcomes(outcomes, {split: (None, examples[split]["tokens"])}, split, "tags", predictions,
                               references, [k for k in scores if k != "loss"], suffix)
    return results


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of each entity in IOB2 tags, read as conlleval reads them."""
    found: list[tuple[str, int, int]] = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, this = tag.partition("-")
        if kind is not None and (prefix != "I" or this != kind):
            found.append((kind, start, i - 1))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = this, i
    return found


save = finetuning.save  # LoRA merged, safetensors; config.json carries id2label / label2id


# -- prediction ------------------------------------------------------------------------------------------------
class Tagger:
    """`tlab predict` for a token classifier: the entities of raw texts, with type, character span and score."""

    def __init__(self, model_path: str, max_length: int = 128, stride: int = 32, trust_remote_code: bool = False):
        from transformers import AutoModelForTokenClassification

        from tlab.runtime import quiet_libraries

        quiet_libraries()
        path = modeling.resolve_checkpoint(model_path)
        self.model = modeling.load_pretrained(AutoModelForTokenClassification, path, trust_remote_code,
                                              trained_only="token-classification head").eval()
        self.labels = trained_labels(path, self.model.config)
        self.tokenizer = modeling.load_tokenizer(path, trust_remote_code)
        if not getattr(self.tokenizer, "is_fast", False):
            raise TlabError(f"{path} has no fast tokenizer (tokenizer.json): NER needs word_ids() and offsets")
        self.max_length = scaffold.input_length(max_length, self.model.config)
        self.stride = min(stride, (self.max_length - self.tokenizer.num_special_tokens_to_add()) // 2)

    @classmethod
    def for_model(cls, model: str, task: Optional[str] = None, overrides: Optional[list[str]] = None) -> "Tagger":
        from transformers import AutoConfig

        cfg = scaffold.run_config(model, task, overrides)
        path = modeling.resolve_checkpoint(model)
        trained_labels(path, AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code))
        return cls(model, cfg.data.max_length, cfg.ner.stride, cfg.model.trust_remote_code)

    def __call__(self, texts: list[str]) -> list[list[dict]]:
        """One list of {"entity", "type", "start", "end", "score"} per text (character offsets into the text)."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, stride=self.stride,
                             return_overflowing_tokens=True, return_offsets_mapping=True)
        sample = enc.pop("overflow_to_sample_mapping")
        offsets = enc.pop("offset_mapping")
        rows = [{k: enc[k][i] for k in enc.keys()} for i in range(len(sample))]
        batch = data.PadCollator(self.tokenizer.pad_token_id or 0)(rows)
        with torch.no_grad():
            logits = self.model(**batch).logits.float()
        if not torch.isfinite(logits).all():
            raise TlabError("model outputs are not finite (NaN/inf logits): the model is broken (diverged training?)")
        probs, best = logits.softmax(-1).max(-1)
        merge = WindowMerge()
        spans: dict[int, dict[int, list[int]]] = {}
        for i, s in enumerate(sample):
            words = [-1 if w is None else w for w in enc.word_ids(i)]
            merge.add(s, words, list(zip(best[i].tolist(), probs[i].tolist())))
            for t, w in enumerate(words):
                if w >= 0:
                    span = spans.setdefault(s, {}).setdefault(w, [offsets[i][t][0], offsets[i][t][1]])
                    span[0], span[1] = min(span[0], offsets[i][t][0]), max(span[1], offsets[i][t][1])
        found: list[list[dict]] = []
        for s, text in enumerate(texts):
            n = max(spans[s]) + 1 if spans.get(s) else 0
            picked = merge.words(s, n, (0, 1.0))
            tags = [self.labels[label] for label, _ in picked]
            out = []
            for kind, first, last in entities(tags):
                start, end = spans[s][first][0], spans[s][last][1]
                score = sum(p for _, p in picked[first : last + 1]) / (last - first + 1)
                out.append({"entity": text[start:end], "type": kind, "start": start, "end": end, "score": score})
            found.append(out)
        return found


def predict(request: PredictRequest, echo) -> None:
    """One line per entity: text, type, character span in the input (start-end) and score (the mean probability
    of its words' tags). Texts as arguments, else one text per stdin line; with several inputs each line starts
    with the input's number (1-based), and an input without entities prints nothing. --json: one object per
    (non-blank) input, {"line", "text", "entities": [{"text", "type", "start", "end", "score"}]}, entities or not."""
    import json

    lines = list(request.texts) if request.texts else [line.rstrip("\r") for line in request.stdin().split("\n")]
    if not request.texts and lines and lines[-1] == "":
        lines.pop()
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise TlabError("no text to tag: give texts as arguments or lines on stdin")
    tagger = Tagger.for_model(request.model, request.task, request.overrides)
    several = len(lines) > 1
    for start in range(0, len(numbered), request.batch_size):
        chunk = numbered[start : start + request.batch_size]
        for (number, text), found in zip(chunk, tagger([t for _, t in chunk])):
            if request.json_lines:
                entities = [{"text": e["entity"], **{k: e[k] for k in ("type", "start", "end", "score")}} for e in found]
                echo(json.dumps({"line": number, "text": text, "entities": entities}, ensure_ascii=False))
                continue
            for e in found:
                prefix = f"{number}\t" if several else ""
                echo(f"{prefix}{e['entity']}\t{e['type']}\t{e['start']}-{e['end']}\t{e['score']:.4f}")
