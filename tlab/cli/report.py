"""`tlab report`: compare runs in a table (terminal and Markdown), with plots, optionally as one HTML page."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlab.cli import app, user_errors


@app.command()
def report(
    runs: Annotated[list[str], typer.Argument(help="Run directories (finished, running or interrupted) or `tlab eval --output` JSON files.", show_default=False)],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Folder for report.md, the PNG plots and report.html (default: the first run's report/).")] = None,
    html: Annotated[bool, typer.Option("--html", help="Also write report.html: the tables and plots in one self-contained page.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a compact Markdown table (for a pull-request comment) instead of the terminal table.")] = False,
) -> None:
    """Compare runs: one table per task (model, size, steps, time, throughput, final and best scores), a PNG per
    logged quantity (training loss, learning rate, every validation metric) with one line per run. Runs of one task
    with per-example outcomes (a run's outcomes.json, `tlab eval --output` files) are also compared example by
    example against the first: delta, 95% paired-bootstrap interval, p-value, verdict.

    [dim]Examples:[/dim]
      tlab report runs/mlm-a runs/mlm-b --html
      tlab report runs/sst2-* --markdown > comment.md
    """
    with user_errors():
        from tlab import outcomes, report as rep

        made = rep.build(runs, output, html)
        for note in made.notes:
            typer.echo(f"note: {note}", err=True)
        if markdown:
            typer.echo(rep.to_markdown(made, compact=True), nl=False)
        else:
            from rich.console import Console
            from rich.table import Table

            console = Console()
            for table in made.tables:
                if len(table.rows) <= 5:  # a few runs side by side: one column each (a row per run would not fit)
                    shown = Table("", *[row[0] for row in table.rows], title=table.task, title_justify="left")
                    for i, column in enumerate(table.columns[1:], 1):
                        shown.add_row(column, *[row[i] for row in table.rows])
                else:
                    shown = Table(*table.columns, title=table.task, title_justify="left")
                    for row in table.rows:
                        shown.add_row(*row)
                console.print(shown)
                for comparison in (c for c in made.comparisons if c.task == table.task):
                    rows = outcomes.table(comparison.result)
                    paired = Table(*rows[0], title=f"paired comparison, {rep.comparison_title(comparison)}", title_justify="left")
                    for row in rows[1:]:
                        paired.add_row(*row)
                    console.print(paired)
        where = made.files[0].parent
        typer.echo(f"wrote {len(made.files)} files to {where}: " + ", ".join(p.name for p in made.files),
                   err=markdown)
