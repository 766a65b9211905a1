"""`tlab export`: a fine-tuned classifier, QA or NER model as an int8 (or fp32) ONNX folder for CPU inference,
which `tlab eval` and `tlab predict` take as --model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, user_errors


@app.command("export")
def export_command(
    model: o.Model = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="The export folder to write (new or empty; --overwrite replaces an earlier export).", show_default=False)] = None,
    quantize: Annotated[str, typer.Option("--quantize", help="int8: dynamic int8 quantisation of the linear layers and embeddings (ONNX Runtime); none: fp32 ONNX.")] = "int8",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier export in --output once the new one is complete.")] = False,
) -> None:
    """Export a fine-tuned sequence classifier (GLUE, classification, imdb), extractive QA (squad) or token
    classifier (conll2003, ner) to ONNX for CPU inference with ONNX Runtime, int8 by default. The folder holds
    model.onnx, the tokenizer, config.json, the run's config.yaml, export.json and a model card; `tlab eval` and
    `tlab predict` accept it as --model, so CI can gate the artefact that ships. Needs `pip install "tlab-cli[export]"`.

    [dim]Examples:[/dim]
      tlab export --model runs/sst2 --quantize int8 --output exported/sst2
      tlab eval --model exported/sst2 --min accuracy=0.85        # scored the way the run was trained
      tlab predict --model exported/sst2 "a gripping, funny film"
    """
    with user_errors():
        from tlab.errors import TlabError

        if not model:
            raise TlabError("pass --model (a fine-tuned tlab run directory or model folder)")
        if not output:
            raise TlabError("pass --output (the export folder to write)")
        from tlab import export

        export.export(model, output, quantize, overwrite, echo=typer.echo)
