"""`tlab generate`: text from a causal LM continuing each prompt (or an encoder-decoder's output for each input)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from tlab.cli import app, options as o, stdin_text, user_errors


@app.command()
def generate(
    prompts: Annotated[Optional[list[str]], typer.Argument(help="Prompts; none = one per line of stdin.", show_default=False)] = None,
    model: o.Model = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Longest continuation, in tokens (default 64; an encoder-decoder run: its own).")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding (implied by --temperature, --top-k, --top-p).", rich_help_panel="Sampling")] = False,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature (> 0; below 1 sharper, above 1 flatter).", rich_help_panel="Sampling")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample from the k most likely tokens only.", rich_help_panel="Sampling")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling: the smallest set of tokens holding this probability, in (0, 1].", rich_help_panel="Sampling")] = None,
    repetition_penalty: Annotated[Optional[float], typer.Option("--repetition-penalty", help="Penalise tokens already present (> 1 discourages repeats; CTRL's penalty).", rich_help_panel="Sampling")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the sampling: the same seed, prompts and batch size give the same text.", rich_help_panel="Sampling")] = None,
    num_return_sequences: Annotated[int, typer.Option("--num-return-sequences", "-n", help="Sequences per prompt (with sampling, or beams >= n).")] = 1,
    num_beams: Annotated[Optional[int], typer.Option("--num-beams", help="Beam search with this many beams (default 1; an encoder-decoder run: its own).")] = None,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help=r"Stop at this string, which is cut off with what follows (repeatable; \n is a newline).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generate() call (left-padded).")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per output: prompt, text, prompt_tokens, new_tokens, finish_reason, sequence.")] = False,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Show a single prompt's text as it is produced.")] = True,
) -> None:
    """Continue each prompt with a causal LM (a `tlab pretrain --objective clm` run, a model folder, a Hub id):
    greedy unless sampling is asked for. An encoder-decoder (T5, BART, a translation run) writes its output for
    each input, as `tlab predict` does. One prompt's text is streamed; several are generated in batches.

    [dim]Examples:[/dim]
      tlab generate --model runs/gpt "Once upon a time"
      tlab generate --model runs/gpt --temperature 0.8 --top-p 0.95 --seed 1 -n 3 --stop '\\n' "To be"
      cat prompts.txt | tlab generate --model gpt2 --json --max-new-tokens 32
    """
    with user_errors():
        from tlab import generation
        from tlab.errors import TlabError

        if not model:
            raise TlabError("pass --model (a causal LM: a tlab clm run directory, a model folder or a Hub id)")
        settings = generation.Settings(max_new_tokens, sample, temperature, top_k, top_p, repetition_penalty, num_beams,
                                       num_return_sequences, seed, tuple(generation.unescape(s) for s in stop or []),
                                       batch_size)
        if not prompts and sys.stdin.isatty():
            raise TlabError("no prompt: give prompts as arguments or one per line on stdin")
        texts = list(prompts or []) or [line.rstrip("\r") for line in stdin_text().split("\n") if line.strip()]
        generation.run(model, texts, settings, typer.echo, as_json=as_json, stream=stream)
