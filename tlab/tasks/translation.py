"""Machine translation (wmt14-en-de, wmt16-en-ro, their reverses, and `translation` for any pair of parallel files)
on the shared loop: a seq2seq model (from scratch, pretrained, or warm-started from an encoder), label smoothing,
token-budget or length-grouped batches, beam search by transformers' `generate` on length-sorted batches,
sacreBLEU and chrF on detokenized text with their signatures, and checkpoint averaging."""

from __future__ import annotations

from typing import Any, Optional

import torch

from tlab import finetuning, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import scaffold, seq2seq, translation_data
from tlab.tasks.contract import Job, PredictRequest, Prepared, TaskInfo

MAIN_METRIC = "bleu"  # what checkpoint averaging compares (the registry's main metric of every translation task)


def _languages(info: TaskInfo, cfg: RunConfig) -> tuple[str, str]:
    t = cfg.translation
    return translation_data.languages(info.name, info.params.get("languages"), t.source_lang, t.target_lang)


def _hub(info: TaskInfo) -> Optional[tuple[str, str]]:
    return (info.params["hub"], info.params["hub_config"]) if "hub" in info.params else None


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, train: bool = True) -> Prepared:
    t, s = cfg.translation, cfg.seq2seq
    src, tgt = _languages(info, cfg)
    if not train and not cfg.model.name_or_path:
        raise TlabError("pass --model: a translation run directory or model to evaluate")
    if t.warm_start and not cfg.model.name_or_path:
        raise TlabError("--warm-start builds on an encoder checkpoint: pass --model (e.g. a BERT directory)")
    if s.average_checkpoints > cfg.train.keep_checkpoints:
        raise TlabError(f"seq2seq.average_checkpoints {s.average_checkpoints} needs train.keep_checkpoints >= "
                        f"{s.average_checkpoints} (it is {cfg.train.keep_checkpoints})")
    with accelerator.main_process_first():
        train_ds, valid_ds, notes = translation_data.load(cfg, src, tgt, train, log, _hub(info))
        if cfg.model.name_or_path:
            model, tokenizer = seq2seq.load(cfg.model.name_or_path, cfg, src, tgt, train, log,
                                            from_encoder=t.warm_start, purpose="translation")
        else:
            tokenizer = seq2seq.shared_tokenizer(train_ds["source"], train_ds["target"], cfg.model.vocab_size)
            model = seq2seq.from_preset(cfg.model.preset, tokenizer, cfg.model.overrides,
                                        max(s.max_source_length, s.max_target_length, s.max_new_tokens))
            notes["preset"] = cfg.model.preset
        prefix = seq2seq.source_prefix(model, cfg, src, tgt, log)
        if cfg.model.name_or_path:
            seq2seq.warn_if_lossy(tokenizer, list(valid_ds["target"][:200]), cfg.model.name_or_path, log)
        start = model.generation_config.decoder_start_token_id
        options = {"tokenizer": tokenizer, "prefix": prefix, "max_source": s.max_source_length, "decoder_start": start}
        train_feats = None
        if train_ds is not None:
            train_feats = train_ds.map(seq2seq.tokenize, batched=True, remove_columns=train_ds.column_names,
                                       fn_kwargs={**options, "max_target": s.max_target_length}, desc="tokenizing")
        # generation batches of similar length, longest first; "index" puts the translations back in file order
        valid_ds = valid_ds.add_column("index", list(range(len(valid_ds))))
        order = sorted(range(len(valid_ds)), key=lambda i: -len(valid_ds[i]["source"]))
        valid_feats = valid_ds.select(order).map(
            lambda rows: {**seq2seq.tokenize(rows, max_target=None, **options), "index": rows["index"]},
            batched=True, remove_columns=valid_ds.column_names, desc="tokenizing")
    if train:
        model = finetuning.adapt(model, cfg.model, log, info.peft_task_type)
    world = accelerator.num_processes
    pad = tokenizer.pad_token_id
    collate = seq2seq.Seq2SeqCollator(pad, start)
    eval_loaders = scaffold.eval_loaders({"validation": valid_feats}, cfg, world, collate)
    artifacts: dict[str, Any] = {}
    gen = {**seq2seq.generation_options(cfg), **({"forced_bos_token_id": model.generation_config.forced_bos_token_id}
                                                 if getattr(model.generation_config, "forced_bos_token_id", None) else {})}
    def scores(m, loaders, acc):
        return evaluate(m, loaders, acc, tokenizer, valid_ds, gen, tgt, artifacts)

    job = Job(
        model=model,
        train_data=train_feats.with_format("python") if train_feats is not None else None,
        train_batches=_batches(info, cfg, train_feats, world, log) if train_feats is not None else None,
        collate=collate,
        eval_loaders=eval_loaders,
        evaluate=scores,
        main_metric=info.main_metric,
        greater_is_better=info.greater_is_better,
        artifacts=artifacts,
        count_tokens=seq2seq.count_tokens,
        loss=seq2seq.label_smoothed_loss(s.label_smoothing),
        finish=(lambda m, run, acc, loaders, final: average(m, run, acc, loaders, final, s.average_checkpoints, scores, log))
        if s.average_checkpoints else None,
    )
    summary = {"source_lang": src, "target_lang": tgt, "train_examples": 0 if train_ds is None else len(train_ds),
               "validation_examples": len(valid_ds), "vocab_size": len(tokenizer), **notes,
               **({"max_tokens": s.max_tokens} if s.max_tokens and world == 1 else {}),
               **({"source_prefix": prefix} if prefix else {})}
    return Prepared(job, tokenizer, summary)


def _batches(info: TaskInfo, cfg: RunConfig, feats, world: int, log):
    sources = [len(ids) for ids in feats["input_ids"]]
    if cfg.seq2seq.max_tokens and world > 1:
        log(f"token-budget batches (seq2seq.max_tokens) are single-process for now: with {world} processes, "
            f"batches of train.batch_size {cfg.train.batch_size} sentences per process, length-grouped")
    elif cfg.seq2seq.max_tokens:
        targets = [len(ids) for ids in feats["labels"]]
        return seq2seq.TokenBatches(sources, targets, cfg.seq2seq.max_tokens, cfg.train.seed)
    return scaffold.train_batches(info, cfg, len(feats), world, sources)


def evaluate(model, loaders, accelerator, tokenizer, examples, gen: dict, tgt: str, artifacts: dict) -> dict:
    """Generate for every validation sentence (each process its share of the batches), put the translations
    back in file order and score them: sacreBLEU and chrF with their signatures."""
    from tlab import metrics

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    pad = tokenizer.pad_token_id
    results: dict[str, Any] = {}
    for split, loader in loaders.items():
        found: dict[int, str] = {}
        with torch.no_grad():
            for batch in loader:
                out = unwrapped.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                         **seq2seq.batch_options(gen, batch["input_ids"]))
                out = accelerator.pad_across_processes(out, dim=1, pad_index=pad)
                out, index = accelerator.gather_for_metrics((out, batch["index"]))
                for i, text in zip(index.tolist(), tokenizer.batch_decode(out, skip_special_tokens=True)):
                    found[i] = text.strip()
        if len(found) != len(examples):
            raise RuntimeError(f"evaluation translated {len(found)} of {len(examples)} sentences")
        hypotheses = [found[i] for i in range(len(examples))]
        references = list(examples["target"])
        bleu = metrics.load("sacrebleu").compute(predictions=hypotheses, references=references)
        chrf = metrics.load("chrf").compute(predictions=hypotheses, references=references)
        suffix = scaffold.suffix(split, list(loaders))
        results.update({f"bleu{suffix}": round(bleu["bleu"], 4), f"chrf{suffix}": round(chrf["chrf"], 4),
                        f"examples{suffix}": len(hypotheses), f"bleu_signature{suffix}": bleu["signature"],
                        f"chrf_signature{suffix}": chrf["signature"]})
        artifacts[f"translations{suffix}.{tgt}"] = "".join(h + "\n" for h in hypotheses)
        artifacts[f"translations{suffix}.jsonl"] = [
            {"line": line, "source": s, "reference": r, "translation": h}
            for line, s, r, h in zip(examples["line"], examples["source"], references, hypotheses)]
    return results


def average(model, run, accelerator, loaders, final: dict, n: int, evaluate_fn, log) -> Optional[dict]:
    """Average the last `n` checkpoints' weights; keep the average when it scores at least as well as the model
    the loop ended with (the best checkpoint), else put that model back."""
    checkpoints = run.checkpoints()[-n:]
    if len(checkpoints) < 2:
        log(f"checkpoint averaging: only {len(checkpoints)} checkpoint(s), nothing to average")
        return None
    unwrapped = accelerator.unwrap_model(model)
    kept = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
    averaged = seq2seq.averaged_weights(checkpoints)
    missing, unexpected = unwrapped.load_state_dict(averaged, strict=False)
    if unexpected or any(k in kept and not _tied(unwrapped, k) for k in missing):
        raise TlabError(f"checkpoint averaging: the checkpoints do not match the model ({(unexpected or missing)[0]})")
    unwrapped.tie_weights()
    scores = evaluate_fn(model, loaders, accelerator)
    names = [c.name for c in checkpoints]
    main, before = scores.get(MAIN_METRIC), (final or {}).get(MAIN_METRIC)
    if before is not None and main is not None and main < before:
        log(f"averaging {', '.join(names)} scored {MAIN_METRIC} {main:.2f} < {before:.2f}: keeping the model as it was")
        unwrapped.load_state_dict(kept)
        evaluate_fn(model, loaders, accelerator)  # the artifacts belong to the saved model
        return None
    log(f"averaged {', '.join(names)}: {MAIN_METRIC} {main:.2f}" + (f" (was {before:.2f})" if before is not None else ""))
    return {**scores, "averaged_checkpoints": names}


def _tied(model, name: str) -> bool:
    """Weights that safetensors stores once (tied embeddings) come back through tie_weights."""
    return "embed" in name or "lm_head" in name or "shared" in name


save = finetuning.save  # LoRA merged, safetensors


class Translator:
    """`tlab predict` for a translation model: one translation per input sentence, in input order."""

    def __init__(self, model_path: str, cfg: RunConfig):
        from transformers import AutoModelForSeq2SeqLM

        path = modeling.resolve_checkpoint(model_path)
        self.model = modeling.load_pretrained(AutoModelForSeq2SeqLM, path, trained_only="translation model").eval()
        self.tokenizer = modeling.load_tokenizer(path)
        from tlab import tasks

        known = tasks.info(cfg.task)
        src, tgt = _languages(known, cfg) if "languages" in known.params else ("", "")  # else: not a translation run
        if getattr(self.model.config, "model_type", "") in ("mbart", "m2m_100", "nllb-moe") and src:
            seq2seq.set_language_codes(self.model, self.tokenizer, src, tgt, path)
        self.prefix = seq2seq.source_prefix(self.model, cfg, src, tgt, lambda _m: None)
        self.max_source = cfg.seq2seq.max_source_length
        self.options = seq2seq.generation_options(cfg)
        forced = getattr(self.model.generation_config, "forced_bos_token_id", None)
        if forced:
            self.options["forced_bos_token_id"] = forced

    @classmethod
    def for_model(cls, model: str, task: Optional[str] = None, overrides: Optional[list[str]] = None) -> "Translator":
        """Options (languages, prefix, beams) from the run's config.yaml when `model` is a tlab run."""
        from tlab import outputs
        from tlab.runtime import quiet_libraries

        quiet_libraries()
        cfg = scaffold.run_config(model, task, overrides)
        if not outputs.run_config_of(model) and not task:
            raise TlabError("pass --task (e.g. wmt14-en-de) for a model that is not a tlab run directory")
        return cls(model, cfg)

    def __call__(self, sentences: list[str], batch_size: int = 32) -> list[str]:
        return seq2seq.translate(self.model, self.tokenizer, sentences, self.prefix, self.max_source, batch_size,
                                 self.options)


def predict(request: PredictRequest, echo) -> None:
    """One translation per line, in input order: texts as arguments, or one sentence per stdin line (empty lines
    stay empty, so the output lines up with the input). --json: {"text", "translation"} per input line."""
    import json

    lines = list(request.texts) if request.texts else request.stdin().split("\n")
    if not request.texts and lines and lines[-1] == "":
        lines.pop()
    lines = [line.rstrip("\r") for line in lines]
    if not any(line.strip() for line in lines):
        raise TlabError("no text to translate: give sentences as arguments or lines on stdin")
    translator = Translator.for_model(request.model, request.task, request.overrides)
    wanted = [i for i, line in enumerate(lines) if line.strip()]
    done = dict(zip(wanted, translator([lines[i] for i in wanted], request.batch_size)))
    for i in range(len(lines)):
        if request.json_lines:
            echo(json.dumps({"text": lines[i], "translation": done.get(i, "")}, ensure_ascii=False))
        else:
            echo(done.get(i, ""))
