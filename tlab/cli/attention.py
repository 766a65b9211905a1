"""`tlab attention`: a heat map of a model's attention weights for one text (one head, or every head of a layer)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, user_errors


@app.command()
def attention(
    text: Annotated[str, typer.Argument(help="The text whose attention to show.", show_default=False)],
    model: o.Model = None,
    layer: Annotated[Optional[int], typer.Option("--layer", help="Layer, from 0 (default: the last).")] = None,
    head: Annotated[Optional[int], typer.Option("--head", help="Head, from 0 (default: every head of the layer, as a grid).")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="An encoder-decoder's encoder (default), decoder or cross attention.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Decoder and cross attention: the output text (default: the model's own greedy output).")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="PNG file (default: RUN/attention/<kind>-layer<L>[-head<H>].png).")] = None,
) -> None:
    """Draw attention weights as a heat map: rows are the tokens attending, columns the tokens attended to, each
    row summing to one. One head with --head, else a grid of every head of the layer.

    [dim]Examples:[/dim]
      tlab attention --model runs/sst2 "a gorgeous, witty, seductive movie" --layer 5 --head 3
      tlab attention --model runs/wmt-en-de "The house is small." --kind cross --target "Das Haus ist klein."
    """
    with user_errors():
        from tlab.errors import TlabError

        if not model:
            raise TlabError("pass --model (a tlab run directory, a model folder or a Hub id)")
        from tlab import attention as att

        path, weights, _figure = att.draw(model, text, layer, head, kind, target, output)
        shown = "every head" if head is None else f"head {head}"
        typer.echo(f"wrote {path}: {weights.kind} attention, layer {layer if layer is not None else weights.layers - 1}, "
                   f"{shown}, {len(weights.queries)} x {len(weights.keys)} tokens")
        if max(len(weights.queries), len(weights.keys)) > att.READABLE:
            typer.echo(f"note: over {att.READABLE} tokens: the labels are small; a shorter text reads better", err=True)
