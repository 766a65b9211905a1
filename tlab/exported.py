"""An export folder (`tlab export`) at inference: an ONNX Runtime session behind the torch module interface the
task code calls, so `tlab eval` and `tlab predict` score and serve the artefact that ships with the family's own
pre- and post-processing (windows, span search, entity merging, metrics) unchanged.

`modeling.load_pretrained` hands out an `OnnxModel` for a folder holding `export.json`; training refuses it (it
holds no torch weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from tlab.errors import TlabError
from tlab.outputs import EXPORT_FILE, is_export_dir

MODEL_FILE = "model.onnx"
# the heads an export can hold: architecture suffix -> the ONNX graph's outputs (the transformers output's fields)
OUTPUTS = {
    "ForSequenceClassification": ("logits",),
    "ForTokenClassification": ("logits",),
    "ForQuestionAnswering": ("start_logits", "end_logits"),
}
INSTALL_HINT = 'pip install "tlab-cli[export]"'


def head_of(architectures) -> Optional[str]:
    """The exportable head an architecture list names (e.g. "ForQuestionAnswering"), or None."""
    return next((suffix for suffix in OUTPUTS for a in architectures or [] if a.endswith(suffix)), None)


def session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session; `threads` 0 = its default (one per physical core)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TlabError(f"{path.parent} is an ONNX export: running it needs onnxruntime ({INSTALL_HINT})") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(torch.nn.Module):
    """model(**batch) -> the transformers output object of the exported head (logits, or start/end logits), with
    the loss transformers computes when `labels` are given. Inputs may sit on any device; outputs come back on it."""

    def __init__(self, path: str, config, threads: int = 0):
        super().__init__()
        self.path, self.config = Path(path), config
        self.head = head_of(config.architectures)
        self.session = session(self.path / MODEL_FILE, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, start_positions=None,
                end_positions=None, **_unused):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["attention_mask"] is None:
            given["attention_mask"] = torch.ones_like(input_ids)
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feeds = {name: given[name].detach().cpu().to(torch.int64).numpy() for name in self.input_names}
        found = dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        device = input_ids.device
        out = {name: torch.from_numpy(found[name]).to(device) for name in OUTPUTS[self.head]}
        from transformers import modeling_outputs as mo
        from transformers.loss import loss_utils

        if self.head == "ForQuestionAnswering":
            loss = (loss_utils.ForQuestionAnsweringLoss(out["start_logits"], out["end_logits"], start_positions, end_positions)
                    if start_positions is not None and end_positions is not None else None)
            return mo.QuestionAnsweringModelOutput(loss=loss, **out)
        if self.head == "ForTokenClassification":
            loss = loss_utils.ForTokenClassification(out["logits"], labels, self.config) if labels is not None else None
            return mo.TokenClassifierOutput(loss=loss, **out)
        loss = loss_utils.ForSequenceClassificationLoss(labels, out["logits"], self.config) if labels is not None else None
        return mo.SequenceClassifierOutput(loss=loss, **out)


def read_facts(path: str) -> dict:
    return json.loads((Path(path) / EXPORT_FILE).read_text())


def load(auto_class, path: str, trained_only: Optional[str]) -> OnnxModel:
    """The export in `path` as a model for `auto_class` (e.g. AutoModelForQuestionAnswering). For training
    (`trained_only` None: a new head may be initialised) it is refused: an export holds no torch weights."""
    from transformers import AutoConfig

    if trained_only is None:
        source = read_facts(path).get("source") or "the run it was exported from"
        raise TlabError(f"{path} is a tlab export (ONNX, for tlab eval and tlab predict): it holds no torch weights, "
                        f"which training (and attention maps) need; start from {source} instead")
    config = AutoConfig.from_pretrained(path)
    head = head_of(config.architectures)
    wanted = getattr(auto_class, "__name__", str(auto_class)).replace("AutoModel", "")
    if head is None or wanted != head:
        raise TlabError(f"{path} is an export of a {head or config.architectures} model, not of a "
                        f"{wanted.replace('For', '', 1) or 'base'} model")
    if not (Path(path) / MODEL_FILE).is_file():
        raise TlabError(f"export {path} holds no {MODEL_FILE}: export it again")
    return OnnxModel(path, config).eval()


__all__ = ["MODEL_FILE", "OUTPUTS", "OnnxModel", "head_of", "is_export_dir", "load", "read_facts", "session"]
