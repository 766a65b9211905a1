"""The `tlab` command. Start-up imports only typer: torch and transformers load inside the commands."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from tlab import __version__
from tlab.errors import TlabError

app = typer.Typer(
    name="tlab",
    help="Pretrain, fine-tune and evaluate transformer language models, on a laptop CPU or a GPU cluster.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tlab {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """tlab: pretrain (mlm/clm), fine-tune (GLUE) and evaluate transformer models."""


@contextmanager
def user_errors(unexpected_exit: int = 1):
    """Bad input ends in one line on stderr and exit 2; Ctrl-C in exit 130. TLAB_DEBUG=1 shows tracebacks.
    An unexpected exception exits `unexpected_exit`: `tlab eval` passes 2, because its 1 means "a gate failed"."""
    try:
        yield
    except TlabError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: continue with --resume (a run keeps its newest complete checkpoint)", err=True)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        if os.environ.get("TLAB_DEBUG"):
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        typer.echo(f"error: {type(exc).__name__}: {first} (set TLAB_DEBUG=1 for the traceback)", err=True)
        raise typer.Exit(unexpected_exit) from None


def stdin_text() -> str:
    """All of stdin, decoded strictly: the locale's lenient decoding would hand the tokenizer lone surrogates."""
    from tlab.errors import TlabError

    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        return raw.decode("utf-8-sig")  # -sig: a BOM from Windows tools is not part of the first text
    except UnicodeDecodeError as exc:
        raise TlabError(f"stdin is not UTF-8 text (byte {exc.start} cannot be decoded); convert it, e.g. with iconv") from None


def execute(defaults: dict, flags: dict, config_file: Optional[str], overrides: Optional[list[str]], dry_run: bool,
            preprocess_only: bool = False) -> dict:
    """Resolve the config; print it (--dry-run), only fill the data caches (--preprocess-only) or run. --resume
    continues the run as it was set up: its config.yaml lies under the command's YAML, flags and overrides, so a
    default changed since (a task family's head rate) does not change a run midway."""
    from pathlib import Path

    from tlab import config

    cfg = config.load(config_file, flags, overrides, defaults=defaults)
    saved = Path(cfg.output_dir, "config.yaml") if cfg.resume and cfg.output_dir else None
    if saved is not None and saved.is_file():
        cfg = config.load(config_file, flags, overrides, defaults=defaults, run_config=str(saved))
    if dry_run:
        typer.echo(config.to_yaml(cfg), nl=False)
        return {}
    from tlab import pipeline

    if preprocess_only:
        return pipeline.preprocess(cfg, echo=typer.echo)
    return pipeline.run(cfg, echo=lambda msg: typer.echo(msg, err=False), **({"command": list(COMMAND)} if COMMAND else {}))


from tlab.cli import attention, evaluate, export, finetune, generate, info, predict, pretrain, push, report, sweep  # noqa: E402,F401  (commands register on `app`)


# The command line as typed, for the model card (set by the `tlab` entry point; CliRunner in tests leaves it empty).
COMMAND: list[str] = []


def main() -> None:
    COMMAND[:] = ["tlab", *sys.argv[1:]]
    try:
        app(prog_name="tlab")
    finally:
        COMMAND.clear()


if __name__ == "__main__":
    main()
