"""`tlab push`: a run's model (and optionally its evaluation results) to the Hugging Face Hub, in one commit."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlab.cli import app, user_errors


@app.command()
def push(
    run: Annotated[str, typer.Argument(help="The run directory whose model/ to push.", show_default=False)],
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", help="The Hub model repository, user/name (created if missing).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Push to this branch (created if missing; default main).")] = None,
    with_results: Annotated[bool, typer.Option("--with-results", help="Also push the run's evaluation results (metrics.json, outcomes.json, predictions) under results/.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the files it would upload and the model card's metadata; send nothing.")] = False,
) -> None:
    """Upload a run's model/ (safetensors weights, tokenizer, model card) to the Hub with huggingface_hub, in one
    commit. Needs a token (`hf auth login` or HF_TOKEN) and the network; offline (HF_HUB_OFFLINE=1) it stops
    with one line and sends nothing.

    [dim]Examples:[/dim]
      tlab push runs/sst2 --repo-id me/minilm-sst2 --dry-run
      tlab push runs/sst2 --repo-id me/minilm-sst2 --private --with-results
    """
    with user_errors():
        from tlab import push as hub
        from tlab.errors import TlabError

        if not repo_id:
            raise TlabError("pass --repo-id user/name: the Hub repository to push to")
        plan = hub.plan(run, repo_id, with_results, private, revision)
        where = f"{plan.repo_id}{' (private)' if private else ''}{f' revision {revision}' if revision else ''}"
        if dry_run:
            typer.echo(f"would upload {len(plan.files)} files ({plan.size():,} bytes) to {where} in one commit:")
            for name, local in plan.files:
                typer.echo(f"  {name}\t{local.stat().st_size:,}")
            typer.echo("model card metadata:" if plan.card else "model card metadata: none (model/README.md has no YAML block)")
            import yaml

            for line in yaml.safe_dump(plan.card, sort_keys=False, allow_unicode=True).splitlines() if plan.card else []:
                typer.echo(f"  {line}")
            return
        token = hub.credentials()
        url = hub.push(plan, token)
        typer.echo(f"pushed {len(plan.files)} files ({plan.size():,} bytes) to {where}: {url}")
