"""`--report-to` against the trackers' own readers: TensorBoard's EventAccumulator after a resume, a real MLflow
tracking server (SQLite backend) queried with MlflowClient, W&B's offline run file read with its protobuf schema.
Nothing leaves the machine: the MLflow server listens on 127.0.0.1 and W&B runs offline."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import lm_config
from tlab import config, pipeline
from tlab.cli import app
from tlab.errors import TlabError
from tlab.faults import STOP_AFTER_ENV

quiet = dict(echo=lambda message: None)
TINY = ("train.max_steps=8", "train.eval_every=4", "train.save_every=4")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tensorboard_has_each_step_once_after_a_resume(tmp_path, shakespeare, monkeypatch):
    """Stopped after step 6 with its checkpoint at 4, then resumed: steps 6 (again) and 8 replace the stopped
    process's 6 in TensorBoard and in log.jsonl."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    monkeypatch.setenv(STOP_AFTER_ENV, "6")
    with pytest.raises(TlabError, match="stopped after step 6"):
        pipeline.run(lm_config(run, shakespeare, "mlm", *TINY), **quiet)
    monkeypatch.delenv(STOP_AFTER_ENV)
    pipeline.run(lm_config(run, shakespeare, "mlm", *TINY, resume=True), **quiet)
    (folder,) = {p.parent for p in (run / "tb").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [e.step for e in accumulator.Scalars("eval/perplexity")] == [4, 8]
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in logged if "loss" in r]
    assert train_steps == [2, 4, 6, 8]
    assert accumulator.Scalars("train/loss")[-1].value == pytest.approx([r for r in logged if "loss" in r][-1]["loss"], abs=1e-4)


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a SQLite backend and proxied artifacts, stopped after the test."""
    pytest.importorskip("mlflow")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, 15)  # its own session: the server and the uvicorn worker it started
        server.wait(timeout=30)


@pytest.mark.slow
def test_mlflow_server_receives_params_metrics_and_the_model(tmp_path, shakespeare, mlflow_server):
    from mlflow import MlflowClient

    run = tmp_path / "run"
    metrics = pipeline.run(lm_config(run, shakespeare, "mlm", *TINY, "train.report_to=[tensorboard,mlflow]",
                                     f"train.mlflow_tracking_uri={mlflow_server}"), **quiet)
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(mlflow_server)
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["train.lr"] == "0.002" and found.data.params["task"] == "mlm"
    assert found.data.params["train.report_to"] == '["tensorboard", "mlflow"]'
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [2, 4, 6, 8]
    assert [m.step for m in client.get_metric_history(run_id, "eval/loss")] == [4, 8]
    assert found.data.metrics["final/perplexity"] == pytest.approx(metrics["final"]["perplexity"])
    artifacts = {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"model/model.safetensors", "model/config.json", "model/README.md"} <= artifacts
    assert not (run / "mlruns").exists()  # the server holds it all


def test_unreachable_mlflow_fails_before_the_run_directory_exists(tmp_path, shakespeare):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(app, ["pretrain", "--train-file", str(shakespeare), "--output-dir", str(tmp_path / "run"),
                                      "--report-to", "mlflow", f"train.mlflow_tracking_uri={uri}"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: MLflow tracking server {uri} cannot be reached")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    folder = CliRunner().invoke(app, ["pretrain", "--output-dir", str(tmp_path / "run"), "--report-to", "mlflow",
                                      f"train.mlflow_tracking_uri={tmp_path / 'mlruns'}"])
    assert folder.exit_code == 2 and "MLflow 3 refuses" in folder.stderr and not (tmp_path / "run").exists()


def test_local_mlflow_store_inside_the_run(tmp_path, shakespeare, monkeypatch):
    """No URI given: a SQLite store in RUN/mlruns/, nothing anywhere else."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    pipeline.run(lm_config(run, shakespeare, "clm", "train.max_steps=4", "train.report_to=[mlflow]"), **quiet)
    client = MlflowClient(f"sqlite:///{run / 'mlruns' / 'mlflow.db'}")
    found = client.get_run(json.loads((run / "trackers.json").read_text())["mlflow"])
    assert found.info.status == "FINISHED" and "final/loss" in found.data.metrics
    assert (run / "mlruns" / "artifacts").is_dir() and not (run / "tb").exists()


def wandb_records(run_file: Path) -> list:
    """The records of a W&B run file: a 7-byte header, then LevelDB-log framing (32 KiB blocks of chunks with a
    7-byte header: CRC, length, type 1 full / 2 first / 3 middle / 4 last), each record a wandb protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, chunks, records = run_file.read_bytes(), 7, b"", []
    assert raw.startswith(b":W&B")
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768  # a block's tail too short for a header is padding
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if (length == 0 and kind == 0) or pos + 7 + length > len(raw):
            break  # the end, or a record still being written
        chunks += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def test_wandb_offline_writes_its_run_folder_with_the_metrics(tmp_path, shakespeare, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    metrics = pipeline.run(lm_config(run, shakespeare, "mlm", *TINY, "train.report_to=[wandb]"), **quiet)
    (run_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's service process may still be writing the file when finish() returns (seen once in ~30 runs, under
    # load): read it once its closing `exit` record is there
    deadline, records = time.monotonic() + 60, []
    while not records or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, [r.WhichOneof("record_type") for r in records]
        time.sleep(0.2 if records else 0)
        records = wandb_records(run_file)
    history, config_items = {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(items["_step"], {}).update(items)
        elif kind == "config":
            config_items.update({item.key: json.loads(item.value_json) for item in record.config.update})
    assert json.loads((run / "trackers.json").read_text())["wandb"] in run_file.name
    assert sorted(s for s, items in history.items() if "train/loss" in items) == [2, 4, 6, 8]
    assert history[8]["final/perplexity"] == pytest.approx(metrics["final"]["perplexity"])
    assert config_items["train.lr"] == 0.002


def test_wandb_online_without_a_login_is_refused_before_the_run(tmp_path, shakespeare, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(TlabError, match="not logged in to W&B .* WANDB_MODE=offline"):
        pipeline.run(lm_config(tmp_path / "run", shakespeare, "mlm", "train.report_to=[wandb]"), **quiet)
    assert not (tmp_path / "run").exists()


def test_a_tracker_that_is_not_installed_names_its_package(tmp_path, shakespeare, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an absent package looks like to the import system
    result = CliRunner().invoke(app, ["pretrain", "--output-dir", str(tmp_path / "run"), "--report-to", "tensorboard,wandb"])
    assert result.exit_code == 2 and "pip install wandb" in result.stderr and not (tmp_path / "run").exists()


def test_report_to_flag_and_config(tmp_path):
    shown = CliRunner().invoke(app, ["finetune", "--report-to", "mlflow,tensorboard", "--report-to", "wandb", "--dry-run"])
    assert shown.exit_code == 0 and "report_to:\n  - mlflow\n  - tensorboard\n  - wandb" in shown.output
    assert config.load().train.report_to == ["tensorboard"]
    for bad, message in ((["mlfow"], "unknown tracker 'mlfow'"), (["none", "mlflow"], "none cannot be combined")):
        with pytest.raises(TlabError, match=message):
            config.load(flags={"train.report_to": bad})
    nothing = CliRunner().invoke(app, ["pretrain", "--report-to", "none", "--dry-run"])
    assert nothing.exit_code == 0 and "report_to:\n  - none" in nothing.output
