"""`tlab predict`: label and probability for texts (classifiers), answer, span and score for questions about a
context (question answering), or translations (translation models), given as arguments or as lines on stdin."""

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
    question: Annotated[Optional[str], typer.Option("--question", help="Question answering: the question (with --context).")] = None,
    context: Annotated[Optional[str], typer.Option("--context", help="Question answering: the text holding the answer.")] = None,
    task: o.Task = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")] = 64,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Translation: a config override key=value, e.g. seq2seq.num_beams=1 (repeatable).")] = None,
) -> None:
    """Print label, probability and text for each input (score and text for regression models); for a question
    answering model, answer, character span in the context and score ("no answer" when a v2 model abstains); for a
    translation model, the translation of each text (beam search as the run was evaluated).

    [dim]Examples:[/dim]
      tlab predict --model runs/sst2 "a gripping, funny film"
      printf 'He sold it.\\tHe bought it.\\n' | tlab predict --model runs/rte
      tlab predict --model runs/squad --question "Who wrote it?" --context "It was written by Ada in 1843."
      tlab predict --model runs/squad < questions.jsonl      # {"question": ..., "context": ...} per line
      tlab predict --model runs/wmt14 "The house is small."  # translation; or one sentence per stdin line
    """
    with user_errors():
        from tlab.errors import TlabError

        if not model:
            raise TlabError("pass --model (a fine-tuned tlab run directory or model directory)")
        if batch_size < 1:
            raise TlabError(f"--batch-size must be >= 1, got {batch_size}")
        family = _family(model, task)
        if question is not None or context is not None or family == "qa":
            return _answer(model, task, question, context, texts, batch_size)
        if family == "translation":
            return _translate(model, task, texts, batch_size, overrides)
        lines = texts or [line.rstrip("\r") for line in stdin_text().split("\n") if line.strip()]
        if not lines:
            raise TlabError("no text to classify: give texts as arguments or lines on stdin")
        pairs = [(line, text_b) if text_b is not None else tuple((line.split("\t", 1) + [None])[:2]) for line in lines]
        from tlab.inference import Classifier

        classifier = Classifier.load(model)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            for (a, b), (label, score) in zip(chunk, classifier(chunk)):
                shown = a if b is None else f"{a}\t{b}"
                typer.echo(f"{label}\t{score:.4f}\t{shown}" if label is not None else f"{score:.4f}\t{shown}")


def _family(model: str, task: Optional[str]) -> str:
    """The task family: from --task, else the run's config.yaml, else the model's architecture."""
    import json
    from pathlib import Path

    from tlab.tasks import info

    if task:
        return info(task).family
    run_config = Path(model) / "config.yaml"
    if run_config.is_file() and (Path(model) / "model").is_dir():
        import yaml

        return info((yaml.safe_load(run_config.read_text()) or {}).get("task", "sst2")).family
    config = Path(model) / "config.json"
    if config.is_file():
        found = json.loads(config.read_text())
        architectures = found.get("architectures") or []
        if found.get("is_encoder_decoder") or any(a.endswith("ForConditionalGeneration") or a.endswith("MTModel")
                                                  or a == "EncoderDecoderModel" for a in architectures):
            return "translation"
        return "qa" if any(a.endswith("ForQuestionAnswering") for a in architectures) else "glue"
    return "glue"


def _answer(model: str, task: Optional[str], question, context, texts, batch_size: int) -> None:
    """Question answering: --question/--context, or JSON Lines {"question", "context"[, "id"]} on stdin."""
    import json

    from tlab.errors import TlabError

    if texts:
        raise TlabError("a question answering model takes --question and --context (or JSON Lines on stdin), not texts")
    if (question is None) != (context is None):
        raise TlabError("give both --question and --context")
    if question is not None:
        rows = [{"question": question, "context": context}]
    else:
        rows = []
        for number, line in enumerate(stdin_text().split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise TlabError(f"stdin line {number} is not JSON (one {{\"question\": ..., \"context\": ...}} per line)") from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("context"), str):
                raise TlabError(f"stdin line {number} needs string fields \"question\" and \"context\"")
            rows.append(row)
        if not rows:
            raise TlabError("no question: give --question and --context, or JSON Lines on stdin")
    from tlab.tasks import squad

    answerer = squad.Answerer.for_model(model, task)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        for row, answer in zip(chunk, answerer(chunk)):
            span = f"{answer.start}-{answer.start + len(answer.text)}" if answer.text else "-"
            prefix = f"{row['id']}\t" if "id" in row else ""
            typer.echo(f"{prefix}{answer.text or 'no answer'}\t{span}\t{answer.score:.4f}")


def _translate(model: str, task: Optional[str], texts, batch_size: int, overrides) -> None:
    """One translation per line, in input order: texts as arguments, or one sentence per stdin line (empty lines
    stay empty, so the output lines up with the input)."""
    from tlab.errors import TlabError
    from tlab.tasks.translation import Translator

    lines = list(texts) if texts else stdin_text().split("\n")
    if not texts and lines and lines[-1] == "":
        lines.pop()
    lines = [line.rstrip("\r") for line in lines]
    if not any(line.strip() for line in lines):
        raise TlabError("no text to translate: give sentences as arguments or lines on stdin")
    translator = Translator.for_model(model, task, overrides)
    wanted = [i for i, line in enumerate(lines) if line.strip()]
    done = dict(zip(wanted, translator([lines[i] for i in wanted], batch_size)))
    for i in range(len(lines)):
        typer.echo(done.get(i, ""))
