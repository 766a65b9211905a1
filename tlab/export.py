"""`tlab export`: a fine-tuned encoder as an ONNX model for CPU inference, its linear layers (and embedding table)
quantised to int8 dynamically by ONNX Runtime, in a folder that `tlab eval` and `tlab predict` take as --model
(tlab.exported runs it behind the torch interface the task code calls).

The folder: model.onnx, the tokenizer, config.json (labels), the run's config.yaml (so `tlab eval` scores it the way
the run was trained), export.json (backend, versions, quantisation, source, a torch-vs-ONNX check) and README.md
(the run's model card plus a quantisation section). Written next to --output under a temporary name and renamed
into place: a failed export leaves nothing, an existing folder is never damaged (--overwrite replaces an earlier
export only). Why ONNX Runtime int8 and not torch's quantisers: BENCHMARKS.md, "Export (issue #23)"."""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Callable

from tlab import modeling, outputs
from tlab.errors import TlabError
from tlab.exported import INSTALL_HINT, MODEL_FILE, OUTPUTS, head_of

QUANTIZE = ("int8", "none")
BACKEND = "onnxruntime"
OPSET = 18  # the dynamo exporter's default; onnxruntime >= 1.17 runs it
# sentence pairs for tracing and the torch-vs-ONNX check: two lengths (padding in the batch), both segments
PROBES = [("a gripping, funny and touching film", "Who made it?"),
          ("the plot drags", "It was written by Ada Lovelace in 1843, in London, and it was never published.")]
HEAD_NAMES = {"ForSequenceClassification": "classification head", "ForTokenClassification": "token-classification head",
              "ForQuestionAnswering": "question-answering head"}
WHY_NOT = {  # architectures the exporter refuses, and why, in one line
    "seq2seq": "sequence-to-sequence generation (translation, summarisation) runs the decoder once per token with a "
               "key/value cache and beam search: one ONNX graph holds none of that (BENCHMARKS.md, Export); "
               "serve it with torch (`tlab predict`)",
    "lm": "language models are not exported (tlab export handles sequence classifiers, extractive QA and token "
          "classifiers)",
}


def check_backend() -> None:
    """onnx, onnxruntime and onnxscript (the dynamo exporter's) importable, or one line saying what to install."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise TlabError(f"tlab export needs {', '.join(missing)}: {INSTALL_HINT}")


def exportable(path: str, config: dict) -> str:
    """The exportable head of the model in `path` (its config.json as a dict), or one error naming its type."""
    arch = config.get("architectures") or []
    kind = f"{', '.join(arch) or 'no architecture'} ({config.get('model_type', 'unknown type')})"
    if config.get("is_encoder_decoder") or any(a.endswith(("ForConditionalGeneration", "MTModel")) for a in arch):
        raise TlabError(f"cannot export {path}, a {kind} model: {WHY_NOT['seq2seq']}")
    head = head_of(arch)
    if head is None:
        raise TlabError(f"cannot export {path}, a {kind} model: {WHY_NOT['lm']}")
    return head


def check_output(output: str, source: Path, overwrite: bool) -> Path:
    """The folder to write: new, empty, or (with --overwrite) an earlier export; never the model's own folder."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise TlabError(f"--output {output} is a file, not a folder")
    resolved = out.resolve()
    if resolved == source.resolve() or resolved in source.resolve().parents:
        raise TlabError(f"--output {output} would replace the model being exported: pick a new folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise TlabError(f"--output {output} already exists and is not empty (pass --overwrite to replace an earlier export)")
        if not outputs.is_export_dir(out):
            raise TlabError(f"--overwrite replaces an earlier export only: {output} holds no {outputs.EXPORT_FILE} "
                            "(a run directory?)")
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise TlabError(f"--output {output} is not writable")
    return out


def export(model: str, output: str, quantize: str = "int8", overwrite: bool = False,
           echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Export `model` (a run directory or model folder) to `output`; returns export.json's facts."""
    if quantize not in QUANTIZE:
        raise TlabError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE)} (int8: dynamic int8 weights "
                        "and activations; none: fp32 ONNX)")
    source = Path(modeling.resolve_checkpoint(model))
    if not source.is_dir():
        raise TlabError(f"--model {model}: no such run directory or model folder")
    if outputs.is_export_dir(source):
        raise TlabError(f"{model} is already an export: export the run it came from")
    config = json.loads((source / "config.json").read_text())
    head = exportable(model, config)
    out = check_output(output, source, overwrite)
    check_backend()
    from tlab.runtime import quiet_libraries

    quiet_libraries()
    import transformers

    torch_model = modeling.load_pretrained(getattr(transformers, "AutoModel" + head), str(source),
                                           trained_only=HEAD_NAMES[head]).eval()
    tokenizer = modeling.load_tokenizer(str(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        start = time.perf_counter()
        fp32 = tmp / ("model.fp32.onnx" if quantize == "int8" else MODEL_FILE)
        names = to_onnx(torch_model, tokenizer, head, fp32)
        if quantize == "int8":
            int8(fp32, tmp / MODEL_FILE)
            fp32_bytes = fp32.stat().st_size
            fp32.unlink()
        else:
            fp32_bytes = fp32.stat().st_size
        check = compare(torch_model, tokenizer, tmp / MODEL_FILE, head)
        torch_model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # a run directory, or its model/ folder: the run's config.yaml either way
        run_config = outputs.run_config_of(model) or (outputs.run_config_of(str(source.parent)) if source.name == "model" else None)
        if run_config:
            shutil.copyfile(run_config, tmp / "config.yaml")
        facts = {"backend": BACKEND, "format": "onnx", "opset": OPSET, "file": MODEL_FILE, "head": head,
                 "model_type": config.get("model_type"), "inputs": names,
                 "outputs": list(OUTPUTS[head]), "quantization": quantization(quantize),
                 "source": str(Path(model).resolve()), "task": task_of(run_config),
                 "bytes": (tmp / MODEL_FILE).stat().st_size, "fp32_bytes": fp32_bytes, "check": check,
                 "export_seconds": round(time.perf_counter() - start, 1), "versions": versions(),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        outputs.write_json(tmp / outputs.EXPORT_FILE, facts)
        outputs.write_atomic(tmp / "README.md", card(source, facts))
        place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    echo(f"exported {model} to {out}: {MODEL_FILE} {facts['bytes'] / 1e6:.1f} MB ({quantize}; fp32 "
         f"{fp32_bytes / 1e6:.1f} MB), torch vs ONNX on {check['inputs']} probes: max |logit diff| "
         f"{check['max_abs_diff']:.3g}, same argmax {check['same_argmax']:.0%}")
    return facts


def to_onnx(model, tokenizer, head: str, path: Path) -> list[str]:
    """The model as an fp32 ONNX graph (torch.export-based exporter, batch and sequence length dynamic); returns
    the graph's input names."""
    import torch

    enc = tokenizer([a for a, _ in PROBES], [b for _, b in PROBES], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    fields = OUTPUTS[head]

    class Outputs(torch.nn.Module):  # plain tensors out, in the order the graph names them
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return tuple(getattr(out, f) for f in fields)

    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence", max=modeling.max_positions(model.config) or 512)
    try:
        with quiet():
            program = torch.onnx.export(Outputs(model).eval(), (), kwargs={n: enc[n] for n in names}, input_names=names,
                                        output_names=list(fields), opset_version=OPSET, dynamo=True, verbose=False,
                                        dynamic_shapes={n: {0: batch, 1: length} for n in names})
    except Exception as exc:
        kind = getattr(model.config, "model_type", type(model).__name__)
        raise TlabError(f"cannot export this {kind} model to ONNX: {type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:200]}") from None
    program.save(str(path))
    return names


@contextmanager
def quiet():
    """The exporter's progress prints, its warnings (axis renames, missing torchvision) and log lines: off."""
    import io
    import logging
    import warnings

    # the root logger too: onnxruntime.quantization logs its "consider pre-processing" advice there
    loggers = [logging.getLogger(n) for n in ("", "torch.onnx", "torch.export", "torch._dynamo", "torch.utils._pytree",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def int8(fp32: Path, path: Path) -> None:
    """Dynamic int8: weights of every MatMul/Gemm (and the embedding Gathers) int8 per tensor, activations
    quantised per batch at run time (uint8 activations x int8 weights: the kernel VNNI runs; see BENCHMARKS.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=False)


def quantization(quantize: str) -> dict:
    if quantize == "none":
        return {"mode": "none", "dtype": "float32"}
    return {"mode": "dynamic", "dtype": "int8", "weights": "int8 per tensor (symmetric)",
            "activations": "uint8, scale computed per batch", "ops": "MatMul, Gemm, Gather (embeddings)",
            "tool": "onnxruntime.quantization.quantize_dynamic"}


def compare(model, tokenizer, path: Path, head: str) -> dict:
    """The torch model and the ONNX one on the probe pairs: largest logit difference, share of equal argmaxes."""
    import torch

    from tlab.exported import session

    enc = tokenizer([a for a, _ in PROBES], [b for _, b in PROBES], padding=True, return_tensors="pt")
    run = session(path)
    feeds = {i.name: enc[i.name].numpy() for i in run.get_inputs()}
    found = run.run(list(OUTPUTS[head]), feeds)
    with torch.no_grad():
        out = model(**enc)
    diffs, same = [], []
    for field, onnx_values in zip(OUTPUTS[head], found):
        ref = getattr(out, field).float()
        got = torch.from_numpy(onnx_values)
        diffs.append(float((ref - got).abs().max()))
        same.append(float((ref.argmax(-1) == got.argmax(-1)).float().mean()))
    return {"inputs": len(PROBES), "max_abs_diff": max(diffs), "same_argmax": min(same)}


def task_of(run_config) -> Any:
    return outputs.task_of_run(run_config) if run_config else None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    from tlab import __version__

    found = {"tlab": __version__}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def place(tmp: Path, out: Path) -> None:
    """Rename the finished export into place; an earlier one (--overwrite) is removed only after that."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def card(source: Path, facts: dict) -> str:
    """The source's model card (a run's model/README.md) with a quantisation section, or a short card."""
    from tlab.model_card import export_section

    from huggingface_hub import ModelCard

    readme = source / "README.md"
    base = readme.read_text() if readme.is_file() else f"# {source.name}\n\nExported with tlab from `{facts['source']}`.\n"
    card = ModelCard(base.rstrip() + "\n\n" + export_section(facts))
    card.data.tags = [*(card.data.tags or []), "onnx", facts["quantization"]["dtype"]]  # int8 | float32
    return card.content
