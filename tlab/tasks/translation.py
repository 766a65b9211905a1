"""Machine translation (wmt14-en-de, wmt16-en-ro, their reverses, and `translation` for any pair of parallel files)
on the shared loop: a seq2seq model (from scratch, pretrained, or warm-started from an encoder), label smoothing,
token-budget or length-grouped batches, beam search by transformers' `generate` on length-sorted batches,
sacreBLEU and chrF on detokenized text with their signatures, and checkpoint averaging."""

from __future__ import annotations

from typing import Any, Optional

from tlab import finetuning, modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import scaffold, selection, seq2seq, translation_data
from tlab.tasks.contract import Job, PredictRequest, Prepared, TaskInfo


def _languages(info: TaskInfo, cfg: RunConfig) -> tuple[str, str]:
    t = cfg.translation
    return translation_data.languages(info.name, info.params.get("languages"), t.source_lang, t.target_lang)


def _hub(info: TaskInfo) -> Optional[tuple[str, str]]:
    return (info.params["hub"], info.params["hub_config"]) if "hub" in info.params else None


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, train: bool = True) -> Prepared:
    s = cfg.seq2seq
    src, tgt = _languages(info, cfg)
    seq2seq.check_options(cfg, train, "translation")
    with accelerator.main_process_first():
        train_ds, valid_ds, notes = translation_data.load(cfg, src, tgt, train, log, _hub(info))
        model, tokenizer, built = seq2seq.build(cfg, train_ds, src, tgt, train, log, "translation")
        notes.update(built)
        prefix = seq2seq.source_prefix(model, cfg, src, tgt, log)
        if cfg.model.name_or_path:
            seq2seq.warn_if_lossy(tokenizer, list(valid_ds["target"][:200]), cfg.model.name_or_path, log)
        start = model.generation_config.decoder_start_token_id
        train_feats, valid_ds, valid_feats = seq2seq.features(train_ds, valid_ds, tokenizer, prefix, cfg, start)
    if train:
        model = finetuning.adapt(model, cfg.model, log, info.peft_task_type)
    world = accelerator.num_processes
    collate = seq2seq.Seq2SeqCollator(tokenizer.pad_token_id, start)
    eval_loaders = scaffold.eval_loaders({"validation": valid_feats}, cfg, world, collate)
    artifacts: dict[str, Any] = {}
    outcomes: dict[str, Any] = {}
    gen = seq2seq.model_generation_options(model, cfg)

    def scores(m, loaders, acc):
        return evaluate(m, loaders, acc, tokenizer, valid_ds, gen, tgt, artifacts, outcomes)

    def finish(m, run, acc, loaders, final):
        return seq2seq.average(m, run, acc, loaders, final, s.average_checkpoints, scores, log, *selection(info, cfg))

    job = Job(
        model=model,
        train_data=train_feats.with_format("python") if train_feats is not None else None,
        train_batches=seq2seq.train_batches(info, cfg, train_feats, world, log) if train_feats is not None else None,
        collate=collate,
        eval_loaders=eval_loaders,
        evaluate=scores,
        main_metric=info.main_metric,
        greater_is_better=info.greater_is_better,
        artifacts=artifacts,
        outcomes=outcomes,
        count_tokens=seq2seq.count_tokens,
        loss=seq2seq.label_smoothed_loss(s.label_smoothing),
        finish=finish if s.average_checkpoints else None,
    )
    summary = {"source_lang": src, "target_lang": tgt, "train_examples": 0 if train_ds is None else len(train_ds),
               "validation_examples": len(valid_ds), "vocab_size": len(tokenizer), **notes,
               **({"max_tokens": s.max_tokens} if s.max_tokens and world == 1 else {}),
               **({"source_prefix": prefix} if prefix else {})}
    return Prepared(job, tokenizer, summary)


def evaluate(model, loaders, accelerator, tokenizer, examples, gen: dict, tgt: str, artifacts: dict,
             outcomes: Optional[dict] = None) -> dict:
    """Generate for every validation sentence (each process its share of the batches), put the translations
    back in file order and score them: sacreBLEU and chrF with their signatures."""
    from tlab import metrics
    from tlab import outcomes as oc

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    results: dict[str, Any] = {}
    for split, loader in loaders.items():
        hypotheses, _lengths = seq2seq.generate_in_order(unwrapped, loader, accelerator, tokenizer, gen, len(examples))
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
        if outcomes is not None:  # each sentence's output and reference, for a paired comparison
            outcomes[split] = oc.record("texts", list(examples["line"]), list(examples["source"]), hypotheses, references,
                                        ["bleu", "chrf"], suffix)
    return results


save = finetuning.save  # LoRA merged, safetensors


class Translator:
    """`tlab predict` for a translation model: one translation per input sentence, in input order."""

    def __init__(self, model_path: str, cfg: RunConfig):
        path = modeling.resolve_checkpoint(model_path)
        self.model = seq2seq.load_trained(path, "translation")
        self.tokenizer = modeling.load_tokenizer(path)
        from tlab import tasks

        known = tasks.info(cfg.task)
        src, tgt = _languages(known, cfg) if "languages" in known.params else ("", "")  # else: not a translation run
        if getattr(self.model.config, "model_type", "") in ("mbart", "m2m_100", "nllb-moe") and src:
            seq2seq.set_language_codes(self.model, self.tokenizer, src, tgt, path)
        self.prefix = seq2seq.source_prefix(self.model, cfg, src, tgt, lambda _m: None)
        self.max_source = cfg.seq2seq.max_source_length
        self.options = seq2seq.model_generation_options(self.model, cfg)

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
