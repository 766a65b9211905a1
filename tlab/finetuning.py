"""Models for fine-tuning: load a sequence classifier from any checkpoint, freeze parts of it, add LoRA."""

from __future__ import annotations

import torch

from tlab import modeling
from tlab.config import ModelConfig
from tlab.errors import TlabError


def load_classifier(path: str, spec, cfg: ModelConfig, for_training: bool):
    """A sequence classifier with the task's labels. For training, any encoder checkpoint will do (a new head
    is initialised); for evaluation the checkpoint must already be a classifier for this task's labels."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None
    labels = spec.label_names
    if not for_training:
        if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
            raise TlabError(f"{path} holds no sequence classifier (architectures: {config.architectures}); fine-tune it first")
        if config.num_labels != spec.num_labels:
            raise TlabError(f"{path} predicts {config.num_labels} labels but task {spec.name} has {spec.num_labels}")
        return modeling.load_pretrained(AutoModelForSequenceClassification, path, cfg.trust_remote_code)
    extra = {"num_labels": spec.num_labels, "problem_type": "regression" if labels is None else "single_label_classification"}
    if labels is not None:
        extra.update(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    return modeling.load_pretrained(AutoModelForSequenceClassification, path, cfg.trust_remote_code, **extra)


def _layers(base) -> torch.nn.ModuleList:
    """The encoder's stack of layers (BERT: encoder.layer, ModernBERT/Llama: layers, ...)."""
    wanted = getattr(base.config, "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == wanted:
            return module
    raise TlabError(f"cannot find the layer stack of {type(base).__name__} to freeze")


def freeze(model, spec: str) -> None:
    """none | embeddings | layers:N (embeddings and the first N layers) | encoder (only the head trains)."""
    if spec == "none":
        return
    base = model.base_model
    if spec == "encoder":
        modules = [base]
    else:
        modules = [base.get_input_embeddings(), getattr(base, "embeddings", None)]
        if spec.startswith("layers:"):
            modules += list(_layers(base))[: int(spec.split(":")[1])]
    for module in filter(None, modules):
        for param in module.parameters():
            param.requires_grad_(False)


def add_lora(model, cfg: ModelConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(cfg.lora_target_modules) or None
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets)
    try:
        return get_peft_model(model, lora)
    except ValueError:
        if targets:
            raise TlabError(f"LoRA target modules {targets} not found in {type(model).__name__}") from None
        # peft has no default targets for this architecture: adapt every linear layer but the head.
        return get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                lora_dropout=cfg.lora_dropout, target_modules="all-linear"))


def adapt(model, cfg: ModelConfig, log):
    freeze(model, cfg.freeze)
    if cfg.lora_r > 0:
        model = add_lora(model, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def merged(model):
    """LoRA weights folded into the base model, so plain transformers loads the saved checkpoint."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
