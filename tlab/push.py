"""`tlab push`: a run's model/ (safetensors weights, tokenizer, model card) to a Hugging Face Hub model repository
in one commit (`HfApi().upload_folder`), with the run's evaluation results under results/ when asked. Everything
that can be checked locally is checked first, and offline (HF_HUB_OFFLINE=1) or without a token nothing is sent:
one line says why. The files are staged as symbolic links in a temporary folder, so the run is never touched and
nothing is copied."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tlab.errors import TlabError

RESULTS_FOLDER = "results"  # where --with-results puts the run's evaluation files in the repository
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_NOT_RESULTS = ("log.jsonl",)  # the training log stays home; config.yaml's settings are in the card


@dataclass
class Plan:
    run: Path
    repo_id: str
    files: list[tuple[str, Path]]  # (path in the repository, local file)
    card: dict  # the model card's YAML metadata
    private: bool = False
    revision: Optional[str] = None

    def size(self) -> int:
        return sum(local.stat().st_size for _name, local in self.files)


def card_metadata(readme: Path) -> dict:
    """The YAML block that opens a model card (between --- lines), {} without one."""
    import yaml

    if not readme.is_file():
        return {}
    text = readme.read_text(errors="replace")
    found = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not found:
        return {}
    try:
        data = yaml.safe_load(found.group(1))
    except yaml.YAMLError as exc:
        raise TlabError(f"{readme}: the model card's metadata is not valid YAML ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def result_files(run: Path) -> list[Path]:
    """The run's evaluation files: metrics.json, outcomes.json and what its evaluation wrote beside them
    (predictions, translations, summaries, few-shot prompts), top level only."""
    wanted = []
    for path in sorted(run.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name in _NOT_RESULTS:
            continue
        if path.suffix in (".json", ".jsonl") or path.name.startswith(("translations", "summaries")):
            wanted.append(path)
    return wanted


def plan(run: str, repo_id: str, with_results: bool = False, private: bool = False,
         revision: Optional[str] = None) -> Plan:
    """What would be pushed; TlabError for a run without a saved model or a malformed repository id."""
    folder = Path(run)
    model = folder / "model"
    if not (model / "config.json").is_file():
        hint = " (a finished tlab run directory has one; this looks like a model folder: pass its run)" if (
            folder / "config.json").is_file() else ""
        raise TlabError(f"{run} has no model/ to push{hint}")
    if not _REPO_ID.fullmatch(repo_id or ""):
        raise TlabError(f"--repo-id {repo_id!r}: give the repository as user/name (or organisation/name)")
    if revision is not None and not revision.strip():
        raise TlabError("--revision is empty: give a branch name, or leave it out for main")
    files = [(p.relative_to(model).as_posix(), p) for p in sorted(model.rglob("*")) if p.is_file()]
    if with_results:
        found = result_files(folder)
        if not found:
            raise TlabError(f"--with-results: {run} holds no evaluation results (metrics.json) to push")
        files += [(f"{RESULTS_FOLDER}/{p.name}", p) for p in found]
    return Plan(folder, repo_id, files, card_metadata(model / "README.md"), private, revision)


def credentials() -> str:
    """The Hub token, after checking the Hub can be reached at all; one TlabError line otherwise."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise TlabError("cannot push: the Hub is offline here (HF_HUB_OFFLINE=1); unset it and log in "
                        "(`hf auth login` or HF_TOKEN); nothing was sent")
    token = get_token()
    if not token:
        raise TlabError("cannot push: no Hugging Face token; log in with `hf auth login` or set HF_TOKEN (a token "
                        "with write access); nothing was sent")
    return token


def push(p: Plan, token: str) -> str:
    """Create the repository if needed (private with --private) and the branch --revision names, then upload
    every file in one commit. Returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(p.repo_id, private=p.private or None, exist_ok=True)  # None: the owner's default
        if p.revision:
            api.create_branch(p.repo_id, branch=p.revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tlab-push-") as staging:
            for name, local in p.files:
                link = Path(staging) / name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(local.resolve())
            done = api.upload_folder(repo_id=p.repo_id, folder_path=staging, revision=p.revision,
                                     commit_message=f"tlab push: {p.run.resolve().name}")
    except HfHubHTTPError as exc:
        raise TlabError(f"the Hub refused the push to {p.repo_id}: {str(exc).splitlines()[0][:240]}") from None
    return str(getattr(done, "commit_url", None) or f"https://huggingface.co/{p.repo_id}")
