"""`tlab predict`: what the model's task family answers for texts given as arguments or stdin lines (labels,
entities, answers, translations). The family is the run's task, --task, or read off the model's config.json."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, stdin_text, user_errors


@app.command()
def predict(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify; none = read lines from stdin. A tab separates the two sentences of a pair.", show_default=False)] = None,
    model: o.Model = None,
    text_b: Annotated[Optional[str], typer.Option("--text-b", help="Second sentence, paired with every text.")] = None,
    question: Annotated[Optional[str], typer.Option("--question", help="Question answering: the question (with --context).")] = None,
    context: Annotated[Optional[str], typer.Option("--context", help="Question answering: the text holding the answer.")] = None,
    task: o.Task = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")] = 64,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="A config override key=value, e.g. seq2seq.num_beams=1 or classification.threshold=0.3 (repeatable).")] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout instead of tab-separated text: the input and every score (all label probabilities, entities, answer span, translation).")] = False,
) -> None:
    """Print label, probability and text for each input (score and text for regression models); for a question
    answering model, answer, character span in the context and score ("no answer" when a v2 model abstains); for a
    translation model, the translation of each text (beam search as the run was evaluated); for a token classifier
    (NER), each entity with its type, character span and score.

    [dim]Examples:[/dim]
      tlab predict --model runs/sst2 "a gripping, funny film"
      printf 'He sold it.\\tHe bought it.\\n' | tlab predict --model runs/rte
      tlab predict --model runs/squad --question "Who wrote it?" --context "It was written by Ada in 1843."
      tlab predict --model runs/squad < questions.jsonl      # {"question": ..., "context": ...} per line
      tlab predict --model runs/wmt14 "The house is small."  # translation; or one sentence per stdin line
      tlab predict --model runs/ner "Angela Merkel visited Paris."
      tlab predict --model runs/sst2 --json < texts.txt   # {"text", "label", "score", "probabilities"} per line
    """
    with user_errors():
        from tlab.errors import TlabError

        if not model:
            raise TlabError("pass --model (a fine-tuned tlab run directory or model directory)")
        if batch_size < 1:
            raise TlabError(f"--batch-size must be >= 1, got {batch_size}")
        from tlab import tasks

        given = tuple(name for name, value in (("question", question), ("context", context)) if value is not None)
        family = tasks.for_prediction(model, task, given)
        request = tasks.PredictRequest(model=model, task=task, texts=list(texts or []), batch_size=batch_size,
                                       text_b=text_b, question=question, context=context,
                                       overrides=list(overrides or []), stdin=stdin_text, json_lines=json_lines)
        tasks.module_of(family).predict(request, typer.echo)
