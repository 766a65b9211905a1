"""`tlab push`: the files of a run's model/ (and its results with --with-results) go to the Hub in one
upload_folder call; --dry-run lists exactly them and the model card's metadata; offline or without a token it is
one line, exit 2, and nothing is sent or changed. The Hub itself is replaced by a recorder (tests run offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from tlab.cli import app

runner = CliRunner()
CARD = """---
library_name: transformers
pipeline_tag: text-classification
tags:
- tlab
---
# tiny

A card.
"""


@pytest.fixture
def run(tmp_path) -> Path:
    """A run directory as tlab leaves it: model/ (weights, tokenizer, card), metrics, outcomes, the log."""
    folder = tmp_path / "run"
    model = folder / "model"
    model.mkdir(parents=True)
    for name, text in (("config.json", '{"architectures": ["BertForSequenceClassification"]}'), ("model.safetensors", "w" * 100),
                       ("tokenizer.json", "{}"), ("tokenizer_config.json", "{}"), ("README.md", CARD)):
        (model / name).write_text(text)
    (folder / "metrics.json").write_text(json.dumps({"task": "sst2", "final": {"accuracy": 0.9}}))
    (folder / "outcomes.json").write_text(json.dumps({"task": "sst2", "outcomes": {}}))
    (folder / "log.jsonl").write_text("{}\n")
    (folder / "config.yaml").write_text("task: sst2\n")
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_lists_the_files_of_model_and_the_card_metadata(run):
    result = runner.invoke(app, ["push", str(run), "--repo-id", "me/tiny", "--dry-run"])
    assert result.exit_code == 0, result.output
    listed = [line.split("\t")[0].strip() for line in result.output.splitlines() if line.startswith("  ") and "\t" in line]
    assert listed == sorted(p.name for p in (run / "model").iterdir())
    assert "would upload 5 files" in result.output and "me/tiny" in result.output
    assert "pipeline_tag: text-classification" in result.output and "library_name: transformers" in result.output
    with_results = runner.invoke(app, ["push", str(run), "--repo-id", "me/tiny", "--dry-run", "--with-results"])
    listed = [line.split("\t")[0].strip() for line in with_results.output.splitlines() if "\t" in line]
    assert listed[5:] == ["results/metrics.json", "results/outcomes.json"]  # not the log, not config.yaml


def test_offline_or_without_a_token_is_one_line_and_nothing_changes(run, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kw: calls.append(kw))
    before = snapshot(run)
    assert constants.HF_HUB_OFFLINE  # conftest: HF_HUB_OFFLINE=1
    offline = runner.invoke(app, ["push", str(run), "--repo-id", "me/tiny"])
    assert offline.exit_code == 2
    one_line_error(offline, "offline", "HF_HUB_OFFLINE=1", "nothing was sent")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    no_token = runner.invoke(app, ["push", str(run), "--repo-id", "me/tiny"])
    assert no_token.exit_code == 2
    one_line_error(no_token, "no Hugging Face token", "hf auth login")
    assert calls == [] and snapshot(run) == before


@pytest.mark.parametrize("args,needle", [
    (["--repo-id", "tiny"], "user/name"),
    ([], "pass --repo-id"),
    (["--repo-id", "me/tiny", "--revision", " "], "--revision is empty"),
])
def test_bad_input_is_one_line(run, args, needle):
    result = runner.invoke(app, ["push", str(run), *args])
    assert result.exit_code == 2
    one_line_error(result, needle)


def test_a_folder_without_model_is_refused(run, tmp_path):
    result = runner.invoke(app, ["push", str(run / "model"), "--repo-id", "me/tiny"])
    assert result.exit_code == 2
    one_line_error(result, "has no model/", "pass its run")


class RecordingApi:
    """HfApi's calls and, at upload time, the folder's files (path in repo -> bytes)."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))

    def create_branch(self, repo_id, branch, exist_ok=False):
        self.calls.append(("create_branch", repo_id, branch))

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None):
        files = {p.relative_to(folder_path).as_posix(): p.read_bytes() for p in sorted(Path(folder_path).rglob("*")) if p.is_file()}
        self.calls.append(("upload_folder", repo_id, revision, files, folder_path))

        class Done:
            commit_url = f"https://huggingface.co/{repo_id}/commit/abc"

        return Done()


def test_one_upload_of_model_and_results(run, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    result = runner.invoke(app, ["push", str(run), "--repo-id", "me/tiny", "--private", "--revision", "v1", "--with-results"])
    assert result.exit_code == 0, result.output
    uploads = [c for c in RecordingApi.calls if c[0] == "upload_folder"]
    assert len(uploads) == 1 and ("create_repo", "me/tiny", True, True) in RecordingApi.calls
    assert ("create_branch", "me/tiny", "v1") in RecordingApi.calls and RecordingApi.calls[0] == ("init", "hf_test")
    _name, repo, revision, files, staging = uploads[0]
    expected = {p.name: p.read_bytes() for p in (run / "model").iterdir()}
    expected.update({f"results/{n}": (run / n).read_bytes() for n in ("metrics.json", "outcomes.json")})
    assert (repo, revision) == ("me/tiny", "v1") and files == expected
    assert not Path(staging).exists() and "pushed 7 files" in result.output and "commit/abc" in result.output
