"""`tlab predict`: label and probability for texts given as arguments or as lines on stdin."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, user_errors


def stdin_text() -> str:
    """All of stdin, decoded strictly: the locale's lenient decoding would hand the tokenizer lone surrogates."""
    from tlab.errors import TlabError

    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        return raw.decode("utf-8-sig")  # -sig: a BOM from Windows tools is not part of the first text
    except UnicodeDecodeError as exc:
        raise TlabError(f"stdin is not UTF-8 text (byte {exc.start} cannot be decoded); convert it, e.g. with iconv") from None


@app.command()
def predict(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify; none = read lines from stdin. A tab separates the two sentences of a pair.", show_default=False)] = None,
    model: o.Model = None,
    text_b: Annotated[Optional[str], typer.Option("--text-b", help="Second sentence, paired with every text.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")] = 64,
) -> None:
    """Print label, probability and text for each input (score and text for regression models).

    [dim]Examples:[/dim]
      tlab predict --model runs/sst2 "a gripping, funny film"
      printf 'He sold it.\\tHe bought it.\\n' | tlab predict --model runs/rte
    """
    with user_errors():
        from tlab.errors import TlabError
        from tlab.inference import Classifier

        if not model:
            raise TlabError("pass --model (a fine-tuned tlab run directory or classifier directory)")
        if batch_size < 1:
            raise TlabError(f"--batch-size must be >= 1, got {batch_size}")
        lines = texts or [line.rstrip("\r") for line in stdin_text().split("\n") if line.strip()]
        if not lines:
            raise TlabError("no text to classify: give texts as arguments or lines on stdin")
        pairs = [(line, text_b) if text_b is not None else tuple((line.split("\t", 1) + [None])[:2]) for line in lines]
        classifier = Classifier.load(model)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            for (a, b), (label, score) in zip(chunk, classifier(chunk)):
                shown = a if b is None else f"{a}\t{b}"
                typer.echo(f"{label}\t{score:.4f}\t{shown}" if label is not None else f"{score:.4f}\t{shown}")
