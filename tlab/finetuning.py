"""Models for fine-tuning: load a sequence classifier from any checkpoint, freeze parts of it, add LoRA."""

from __future__ import annotations

import re

import torch

from tlab import modeling
from tlab.config import ModelConfig
from tlab.errors import TlabError


def load_model(head: str, path: str, cfg: ModelConfig, for_training: bool, trained_only: str, **config_fields):
    """A checkpoint with the task's head (`head`: a transformers Auto class name, the task's `TaskInfo.head`).
    For training, any checkpoint of the right body will do (a new head is initialised, model.overrides and
    `config_fields` set on its config); for evaluation every weight the head needs must be in the checkpoint (`trained_only` names it)."""
    import transformers

    auto_class = getattr(transformers, head)
    if not for_training:
        return modeling.load_pretrained(auto_class, path, cfg.trust_remote_code, trained_only=trained_only)
    overrides = modeling.checkpoint_overrides(path, cfg.overrides, cfg.trust_remote_code)
    return modeling.load_pretrained(auto_class, path, cfg.trust_remote_code, **{**overrides, **config_fields})


MULTI_LABEL = "multi_label_classification"  # transformers' problem_type: sigmoid + BCE per label


def load_classifier(path: str, spec, cfg: ModelConfig, for_training: bool,
                    head: str = "AutoModelForSequenceClassification"):
    """A sequence classifier with the task's labels. For training, any encoder checkpoint will do (a new head
    is initialised); for evaluation the checkpoint must already be a classifier for this task's labels."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except Exception as exc:
        raise TlabError(f"could not read the model config in {path!r}: {str(exc).splitlines()[0][:200]}") from None
    labels, multi = spec.label_names, getattr(spec, "multi_label", False)
    if not for_training:
        if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
            raise TlabError(f"{path} holds no sequence classifier (architectures: {config.architectures}); fine-tune it first")
        if config.num_labels != spec.num_labels:
            raise TlabError(f"{path} predicts {config.num_labels} labels but task {spec.name} has {spec.num_labels}")
        check_problem_type(path, config, multi)
        check_label_names(path, config, spec)
        return load_model(head, path, cfg, False, "classification head")
    problem = "regression" if labels is None else MULTI_LABEL if multi else "single_label_classification"
    extra = {"num_labels": spec.num_labels, "problem_type": problem}
    if labels is not None:
        extra.update(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    return load_model(head, path, cfg, True, "classification head", **extra)


def check_problem_type(path: str, config, multi_label: bool) -> None:
    """A multi-label classifier (sigmoid per label) read as a single-label one (softmax), or the reverse, would
    score nonsense: one error saying which it is."""
    if multi_label != (config.problem_type == MULTI_LABEL):
        raise TlabError(f"{path} is {'a multi-label' if not multi_label else 'a single-label'} classifier: score it "
                        f"with classification.multi_label={str(not multi_label).lower()}")


def check_label_names(path: str, config, spec) -> None:
    """An SST-2 classifier scored on MRPC has as many labels, but its classes mean something else. Generic names
    (LABEL_0, ...: a classifier trained outside tlab) say nothing either way and pass; case is ignored (Hub SST-2
    models say NEGATIVE/POSITIVE)."""
    names = [str(config.id2label[key]) for key in sorted(config.id2label, key=int)]
    if spec.label_names is None or names == [f"LABEL_{i}" for i in range(len(names))]:
        return
    if [n.lower() for n in names] != [n.lower() for n in spec.label_names]:
        raise TlabError(f"model {path} was fine-tuned for labels [{', '.join(names)}] but task {spec.name} has "
                        f"[{', '.join(spec.label_names)}]")


# Sequence classifiers whose head reads only the first position ([CLS] / <s>) of the last layer, and whose layers
# pass (attention output, layer input) positionally to `attention.output` (transformers' BERT-family layout).
FIRST_TOKEN_HEADS = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


def first_token_only_in_last_layer(model) -> bool:
    """Skip what the head never reads: in the last layer only the first position's attention output projection
    and feed-forward block are computed (9 of the layer's 12 hidden^2 matmul units; ~12% of a 6-layer encoder's
    matmuls, forward and backward). Exact for the logits and the gradients. A forward pre-hook slices the inputs
    of the last layer's attention-output module; weights and saved models are unchanged. Returns whether applied."""
    config = model.config
    if (getattr(config, "model_type", None) not in FIRST_TOKEN_HEADS or getattr(config, "is_decoder", False)
            or not type(model).__name__.endswith("ForSequenceClassification")):
        return False
    outputs = {int(m.group(1)): module for name, module in model.named_modules()
               if (m := re.search(r"encoder\.layer\.(\d+)\.attention\.output$", name))}
    if len(outputs) != config.num_hidden_layers:
        return False
    last = outputs[max(outputs)]
    if not getattr(last, "_tlab_first_token_only", False):
        last.register_forward_pre_hook(lambda module, args: tuple(a[:, :1] for a in args) if len(args) == 2 else None)
        last._tlab_first_token_only = True
    return True


def _layers(base, purpose: str = "freeze") -> torch.nn.ModuleList:
    """The encoder's stack of layers (BERT: encoder.layer, ModernBERT/Llama: layers, ...)."""
    wanted = getattr(base.config, "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == wanted:
            return module
    raise TlabError(f"cannot find the layer stack of {type(base).__name__} to {purpose}")


def reinit_top_layers(model, count: int) -> None:
    """Re-initialise the pooler and the top `count` layers of the encoder the way the architecture initialises a new
    model (Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning": the top layers' pretraining specialisation
    hurts small tasks). Draws from torch's seeded generator, so a seed gives the same weights."""
    if count <= 0:
        return
    base = model.base_model
    layers = list(_layers(base, "re-initialise"))
    if count > len(layers):
        raise TlabError(f"model.reinit_layers={count}: the model has {len(layers)} layers")
    modules = layers[-count:] + [m for m in (getattr(base, "pooler", None),) if m is not None]
    for module in modules:
        # transformers skips tensors it marked as loaded from the checkpoint: unmark them, so _init_weights acts
        for sub in module.modules():
            sub._is_hf_initialized = False
        for param in module.parameters():
            param._is_hf_initialized = False
        module.apply(model._init_weights)


def layer_depths(model) -> dict[int, int]:
    """Depth of every parameter (by id) for layer-wise learning-rate decay: 0 for the embeddings, i + 1 for layer i of
    the encoder, the number of layers + 1 for everything above them (pooler, final norm, the task's head)."""
    base = model.base_model
    layers = list(_layers(base, "set per-layer learning rates (train.layer_lr_decay, train.head_lr_scale) of"))
    top = len(layers) + 1
    depths = {id(param): top for param in model.parameters()}
    for module in filter(None, (base.get_input_embeddings(), getattr(base, "embeddings", None))):
        depths.update((id(param), 0) for param in module.parameters())
    for index, layer in enumerate(layers):
        depths.update((id(param), index + 1) for param in layer.parameters())
    return depths


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
            layers, wanted = list(_layers(base)), int(spec.split(":")[1])
            if wanted > len(layers):  # slicing would quietly freeze them all
                raise TlabError(f"--freeze {spec}: the model has {len(layers)} layers (use layers:0 to "
                                f"layers:{len(layers)}, or encoder)")
            modules += layers[:wanted]
    for module in filter(None, modules):
        for param in module.parameters():
            param.requires_grad_(False)


def add_lora(model, cfg: ModelConfig, task_type: str = "SEQ_CLS"):
    """LoRA on the encoder; peft's task type keeps the task's head (classifier, qa_outputs) fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(cfg.lora_target_modules) or None
    lora = LoraConfig(task_type=TaskType[task_type], r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets)
    try:
        return get_peft_model(model, lora)
    except ValueError:
        if targets:
            raise TlabError(f"LoRA target modules {targets} not found in {type(model).__name__}") from None
        # peft has no default targets for this architecture: adapt every linear layer but the head.
        return get_peft_model(model, LoraConfig(task_type=TaskType[task_type], r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                lora_dropout=cfg.lora_dropout, target_modules="all-linear"))


def adapt(model, cfg: ModelConfig, log, peft_task_type: str = "SEQ_CLS"):
    if cfg.reinit_layers:
        reinit_top_layers(model, cfg.reinit_layers)
        log(f"re-initialised the pooler and the top {cfg.reinit_layers} layer(s) of the encoder")
    freeze(model, cfg.freeze)
    if cfg.lora_r > 0:
        model = add_lora(model, cfg, peft_task_type)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def merged(model):
    """LoRA weights folded into the base model, so plain transformers loads the saved checkpoint."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save(model, tokenizer, path, cfg, state_dict=None) -> None:
    """A fine-tuned model/ that plain transformers loads: LoRA merged in, or the gathered full state of a sharded
    (FSDP) model; safetensors only. Every fine-tuning family's `save`."""
    if state_dict is not None and cfg.model.lora_r == 0:
        model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    else:
        merged(model).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
