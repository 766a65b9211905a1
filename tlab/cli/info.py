"""`tlab tasks` and `tlab presets`: what tlab can train, without loading any model library."""

from __future__ import annotations

import typer

from tlab.cli import app, user_errors


@app.command()
def tasks() -> None:
    """List every task with its data source and metrics."""
    with user_errors():
        from rich.console import Console
        from rich.table import Table

        from tlab.tasks import registry

        table = Table("task", "family", "metrics", "data")
        for item in registry().values():
            table.add_row(item.name, item.family.name, ", ".join(item.metrics), item.source)
        Console().print(table)


@app.command()
def presets() -> None:
    """List the model presets for pretraining from scratch."""
    from tlab.presets import table

    for name, objective, shape in table():
        typer.echo(f"{name:18s} {objective}  {shape}")
