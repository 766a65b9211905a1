"""Few-shot scoring of a causal LM on a classification task, as lm-evaluation-harness scores multiple choice: each
example becomes a prompt (`fewshot.shots` solved training examples, then the example itself, in the task's template),
each label a continuation of it (its verbaliser, SST-2's " negative" / " positive"), and the prediction is the label
whose continuation tokens have the highest total log-likelihood given the prompt. No training, no new weights: the
glue family hands its evaluation here when fewshot.shots is set (`tlab eval --task sst2 --model runs/gpt --shots 4`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from tlab import modeling
from tlab.config import RunConfig
from tlab.errors import TlabError
from tlab.tasks import scaffold
from tlab.tasks.contract import Job, Prepared, TaskInfo

# task: (template, one verbaliser per label in the spec's label order); mostly lm-evaluation-harness's GLUE prompts
PROMPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sst2": ("Review: {sentence}\nSentiment:", (" negative", " positive")),
    "imdb": ("Review: {text}\nSentiment:", (" negative", " positive")),
    "cola": ("{sentence}\nQuestion: Does this sentence make sense?\nAnswer:", (" no", " yes")),
    "mrpc": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Do both sentences mean the same thing?\nAnswer:",
             (" no", " yes")),
    "qqp": ("Question 1: {question1}\nQuestion 2: {question2}\nQuestion: Do both questions ask the same thing?\nAnswer:",
            (" no", " yes")),
    "mnli": ("{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:", (" True", " Neither", " False")),
    "qnli": ("{question}\n{sentence}\nQuestion: Does this response answer the question?\nAnswer:", (" yes", " no")),
    "rte": ("{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:", (" True", " False")),
    "wnli": ("{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:", (" False", " True")),
}
# a task without a prompt of its own (users' `classification` files): the label names are the continuations
GENERIC_TEMPLATE = "{text_a}\nLabel:"
# logits (rows x tokens x vocabulary, fp32) one forward pass may produce: 2**27 floats = 512 MiB
LOGIT_BUDGET = 2**27


@dataclass(frozen=True)
class Prompt:
    template: str
    verbalizers: tuple[str, ...]
    separator: str

    def render(self, row: dict, spec) -> str:
        """The template filled with one example's text (stripped: SST-2's sentences end in a space)."""
        values = {"text_a": row["text_a"].strip(), "text_b": (row.get("text_b") or "").strip()}
        hub_a, hub_b = spec.hub_text
        values[hub_a] = values["text_a"]
        if hub_b:
            values[hub_b] = values["text_b"]
        try:
            return self.template.format(**values)
        except KeyError as exc:
            raise TlabError(f"fewshot.template names {{{exc.args[0]}}}, which {spec.name} examples lack (fields: "
                            f"{', '.join('{' + k + '}' for k in values)})") from None
        except (IndexError, ValueError) as exc:
            raise TlabError(f"fewshot.template is not a format string with named fields ({exc}); write a literal "
                            "brace as {{ or }}") from None

    def solved(self, row: dict, spec) -> str:
        return self.render(row, spec) + self.verbalizers[row["label"]]


def prompt_for(spec, cfg: RunConfig) -> Prompt:
    """The config's template and verbalisers, else the task's own, checked against the task's labels."""
    f = cfg.fewshot
    if spec.is_regression:
        raise TlabError(f"few-shot scoring (--shots) picks one of a task's labels; {spec.name} is a regression task")
    template, verbalizers = PROMPTS.get(spec.name, (GENERIC_TEMPLATE, tuple(f" {name}" for name in spec.label_names)))
    template = f.template or template
    verbalizers = tuple(f.verbalizers) or verbalizers
    if len(verbalizers) != len(spec.label_names):
        raise TlabError(f"fewshot.verbalizers gives {len(verbalizers)} continuations for the {len(spec.label_names)} "
                        f"labels of {spec.name} ({', '.join(spec.label_names)}): one per label, in that order")
    return Prompt(template, verbalizers, f.separator)


def load_examples(info: TaskInfo, cfg: RunConfig, load: Callable):
    """(spec, training rows or None, {split: validation rows}) through the task's own loader; the training data is
    read when shots are drawn from it (and always for tasks with a loader of their own, whose labels it defines)."""
    shots = cfg.fewshot.shots or 0
    spec, train_ds, evals, _notes = load(info.params["spec"], cfg, cfg.model.name_or_path or "", bool(shots) or "loader" in info.params)
    evals = scaffold.clip_all(evals, cfg.data.max_eval_samples)
    if not evals:
        raise TlabError(f"no {spec.name} validation data to score: give --validation-file or --data-dir")
    pool = [] if train_ds is None else [row for row in train_ds if row["label"] >= 0]
    if shots > len(pool):
        raise TlabError(f"--shots {shots} needs as many labelled training examples; {spec.name}'s training data has "
                        f"{len(pool)}")
    return spec, pool, evals


def contexts(prompt: Prompt, spec, pool: list[dict], rows, shots: int, seed: int) -> list[str]:
    """Each example's prompt: `shots` training examples drawn afresh for it (reproducibly from `seed`), solved,
    then the example itself."""
    rng = random.Random(seed)
    found = []
    for row in rows:
        drawn = [pool[j] for j in rng.sample(range(len(pool)), shots)] if shots else []
        found.append(prompt.separator.join([prompt.solved(r, spec) for r in drawn] + [prompt.render(row, spec)]))
    return found


def preview(info: TaskInfo, cfg: RunConfig, load: Callable) -> str:
    """The first validation example's prompt and its continuations, as `tlab eval --dry-run` shows them."""
    spec, pool, evals = load_examples(info, cfg, load)
    prompt = prompt_for(spec, cfg)
    split, rows = next(iter(evals.items()))
    first = rows.select(range(1))
    context = contexts(prompt, spec, pool, first, cfg.fewshot.shots, cfg.fewshot.seed)[0]
    label = first[0]["label"]
    options = " | ".join(f"{v!r} ({name})" for v, name in zip(prompt.verbalizers, spec.label_names))
    return (f"# few-shot prompt of the first {split} example ({cfg.fewshot.shots} shots, seed {cfg.fewshot.seed}):\n"
            f"{context}\n# continuations scored: {options}; its label: "
            f"{spec.label_names[label] if label >= 0 else 'none'}")


def encode(tokenizer, context: str, continuations, longest: int) -> dict:
    """Token ids of context + each continuation, and how many of them are the continuation's. As in
    lm-evaluation-harness, spaces ending the context move to the continuation, and the continuation is what the
    whole text tokenizes to beyond the context's tokens; a prompt too long for the model loses its start."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuations = context[:-spaces], [context[-spaces:] + c for c in continuations]
    head = len(tokenizer(context)["input_ids"])
    wholes = tokenizer([context + c for c in continuations])["input_ids"]
    counts = [len(ids) - head for ids in wholes]
    if min(counts) < 1 or head < 1:
        raise TlabError(f"the prompt {context[-40:]!r} leaves no tokens to score (or none to score them from)")
    if max(counts) >= longest:
        raise TlabError(f"a continuation is {max(counts)} tokens, as long as the model's {longest} positions")
    return {"candidates": [ids[-longest:] for ids in wholes], "counts": counts, "cut": max(map(len, wholes)) > longest}


@dataclass
class ChoiceCollator:
    """(B, L, T) tensors for B examples of L candidates each, right-padded; `targets` holds each candidate's
    continuation tokens where they stand and -100 elsewhere (context, padding)."""

    pad_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for r in rows for ids in r["candidates"])
        shape = (len(rows), len(rows[0]["candidates"]), width)
        ids, mask = torch.full(shape, self.pad_id, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
        targets = torch.full(shape, -100, dtype=torch.long)
        for b, r in enumerate(rows):
            for c, (row, count) in enumerate(zip(r["candidates"], r["counts"])):
                ids[b, c, : len(row)] = torch.tensor(row)
                mask[b, c, : len(row)] = 1
                targets[b, c, len(row) - count : len(row)] = torch.tensor(row[len(row) - count :])
        return {"input_ids": ids, "attention_mask": mask, "targets": targets,
                "label": torch.tensor([r["label"] for r in rows]), "index": torch.tensor([r["index"] for r in rows])}


def load_causal_lm(cfg: RunConfig):
    from transformers import AutoConfig, AutoModelForCausalLM

    path = scaffold.require_model(cfg, "few-shot scoring")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None
    if not modeling.is_causal_lm(config):
        kind = (config.architectures or [config.model_type])[0]
        raise TlabError(f"few-shot scoring (--shots) needs a causal language model (GPT-2, Llama, a `tlab pretrain "
                        f"--objective clm` run); {path} is a {kind} model: score a fine-tuned classifier without --shots")
    model = modeling.load_pretrained(AutoModelForCausalLM, path, cfg.model.trust_remote_code, trained_only="causal-LM head")
    return model, modeling.load_tokenizer(path, cfg.model.trust_remote_code)


def refuse_causal_lm(path: str, cfg: RunConfig) -> None:
    """A causal LM given to a classification task without --shots: say how it can be scored."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except Exception:
        return  # the classifier's own loading names the problem
    if modeling.is_causal_lm(config):
        raise TlabError(f"{path} is a causal language model ({(config.architectures or [config.model_type])[0]}) "
                        "without a classification head: score it few-shot with --shots N (0 = zero-shot), or fine-tune it")


def prepare(info: TaskInfo, cfg: RunConfig, accelerator, log, load: Callable, train: bool = False) -> Prepared:
    if train:
        raise TlabError("fewshot.shots (--shots) is for tlab eval: it scores a causal LM without training it")
    shots = cfg.fewshot.shots
    with accelerator.main_process_first():
        spec, pool, evals = load_examples(info, cfg, load)
        prompt = prompt_for(spec, cfg)
        model, tokenizer = load_causal_lm(cfg)
        longest = modeling.max_positions(model.config) or 2048
        prompts = {split: contexts(prompt, spec, pool, rows, shots, cfg.fewshot.seed) for split, rows in evals.items()}
        encoded = {split: [{**encode(tokenizer, context, prompt.verbalizers, longest), "label": row["label"], "index": i}
                           for i, (context, row) in enumerate(zip(prompts[split], rows))]
                   for split, rows in evals.items()}
    cut = sum(any(e["cut"] for e in examples) for examples in encoded.values())
    if cut:
        log(f"{cut} prompt(s) longer than the model's {longest} positions lost their start (fewer shots there)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    collate = ChoiceCollator(pad)
    artifacts: dict = {}
    outcomes: dict = {}  # per example, its text (not its prompt): a 0-shot and a 4-shot evaluation are comparable
    examples = {split: (None, scaffold.texts_of(rows)) for split, rows in evals.items()}
    job = Job(
        model=model, train_data=None, train_batches=None, collate=collate,
        eval_loaders=scaffold.eval_loaders(encoded, cfg, accelerator.num_processes, collate),
        evaluate=lambda m, loaders, acc: evaluate(m, loaders, acc, spec, prompts, artifacts, examples, outcomes),
        main_metric=info.main_metric, greater_is_better=info.greater_is_better, artifacts=artifacts, outcomes=outcomes,
    )
    summary = {**{f"{split}_examples": len(rows) for split, rows in evals.items()}, "shots": shots, "cut_prompts": cut,
               "shot_pool": len(pool), "labels": list(spec.label_names),
               "template": prompt.template, "verbalizers": list(prompt.verbalizers)}
    return Prepared(job, tokenizer, summary)


def loglikelihoods(model, batch: dict) -> torch.Tensor:
    """(B, L): the summed log-probability of each candidate's continuation tokens given what precedes them."""
    ids, mask, targets = (batch[k].flatten(0, 1) for k in ("input_ids", "attention_mask", "targets"))  # (B*L, T)
    scores = []
    rows: Optional[int] = None
    start = 0
    while start < len(ids):
        step = rows or 1  # the first forward (one row) tells the vocabulary size, and so how many rows fit
        logits = model(input_ids=ids[start : start + step], attention_mask=mask[start : start + step], use_cache=False).logits
        token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2),
                                                       targets[start : start + step, 1:], reduction="none")  # -100: 0
        scores.append(-token_loss.sum(1))
        rows = rows or max(1, LOGIT_BUDGET // (logits.shape[1] * logits.shape[2]))
        start += step
    return torch.cat(scores).view(batch["input_ids"].shape[:2])


def evaluate(model, loaders, accelerator, spec, prompts: dict[str, list[str]], artifacts: dict,
             examples: Optional[dict] = None, outcomes: Optional[dict] = None) -> dict:
    """The task's metrics on the most likely label of each example; every example's prompt, scores and
    prediction go into fewshot[_<split>].jsonl (written beside `tlab eval --output`)."""
    from tlab import metrics

    model.eval()
    results: dict = {}
    for split, loader in loaders.items():
        found: dict[int, tuple[int, list[float]]] = {}
        with torch.no_grad():
            for batch in loader:
                scores = loglikelihoods(model, batch)
                index, label, scores = accelerator.gather_for_metrics((batch["index"], batch["label"], scores))
                for i, y, s in zip(index.tolist(), label.tolist(), scores.tolist()):
                    found[i] = (y, s)
        order = sorted(found)
        references = [found[i][0] for i in order]
        predictions = [max(range(len(found[i][1])), key=found[i][1].__getitem__) for i in order]
        scores = metrics.compute(list(spec.metrics), predictions, references)
        suffix = scaffold.suffix(split, list(loaders), primary=spec.validation_splits[0])
        results.update({f"{k}{suffix}": float(v) for k, v in scores.items()})
        results[f"examples{suffix}"] = len(order)
        scaffold.keep_outcomes(outcomes, examples, split, "labels", predictions, references, spec.metrics, suffix)
        names = spec.label_names
        artifacts[f"fewshot{suffix}.jsonl"] = [
            {"index": i, "prompt": prompts[split][i], "label": names[y] if y >= 0 else None, "prediction": names[p],
             "loglikelihoods": dict(zip(names, found[i][1]))}
            for i, y, p in zip(order, references, predictions)]
    return results
