"""Experiment trackers (`--report-to tensorboard|mlflow|wandb|none`) through accelerate's tracker classes.

Nothing is sent anywhere unless asked: TensorBoard writes RUN/tb/; MLflow logs to the tracking URI the user gives
(train.mlflow_tracking_uri, else MLFLOW_TRACKING_URI) or else to a SQLite store in RUN/mlruns/; W&B runs only when
named, and WANDB_MODE=offline writes RUN/wandb/ without a network. `preflight` checks, before the run directory
exists, that each tracker is installed and its destination usable, so a bad URI never costs a run. The ids of the
MLflow and W&B runs are kept in RUN/trackers.json, so `--resume` continues the same tracker runs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from tlab.errors import PREEMPTED_EXIT, Pruned, TlabError

TRACKERS = ("tensorboard", "mlflow", "wandb", "none")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker -> pip package
IDS_FILE = "trackers.json"
PROBE_SECONDS = 5.0


def selected(report_to) -> list[str]:
    """The trackers asked for, in order, without repeats and without "none"."""
    names: list[str] = []
    for name in report_to:
        if name != "none" and name not in names:
            names.append(name)
    return names


def preflight(cfg, probe: bool = True) -> None:
    """Refuse, before any work, a tracker that is not installed or a destination that cannot be reached.
    `probe`: contact remote servers (rank 0 only; the other ranks log nothing)."""
    for name in selected(cfg.train.report_to):
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise TlabError(f"--report-to {name}: the {PACKAGES[name]} package is not installed "
                            f"(pip install {PACKAGES[name]}, or pip install 'tlab-cli[trackers]')")
    names = selected(cfg.train.report_to)
    if "mlflow" in names and probe:
        uri = cfg.train.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            _probe_mlflow(uri)
    if "wandb" in names and probe:
        _check_wandb()


def _probe_mlflow(uri: str) -> None:
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        # any HTTP answer (even 401 or 404) means a server is there; the client's own retries would take minutes
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            urllib.request.urlopen(url, timeout=PROBE_SECONDS).close()
        except urllib.error.HTTPError:
            pass
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TlabError(f"MLflow tracking server {uri} cannot be reached ({reason}); start it, fix "
                            "train.mlflow_tracking_uri / MLFLOW_TRACKING_URI, or drop mlflow from --report-to") from None
    elif parsed.scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise TlabError(f"MLflow tracking URI {uri} is a folder, which MLflow 3 refuses: use a database such as "
                        f"sqlite:///{os.path.abspath(parsed.path or uri)}/mlflow.db, or a server's http:// URI")
    elif parsed.scheme == "sqlite":
        folder = Path(parsed.path[1:] if parsed.path.startswith("//") else parsed.path).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            raise TlabError(f"MLflow tracking URI {uri}: {folder} is not writable")


def _check_wandb() -> None:
    """W&B online needs credentials, or it would prompt (or fail) only once training is under way."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise TlabError("--report-to wandb: not logged in to W&B (run `wandb login` or set WANDB_API_KEY), or set "
                    "WANDB_MODE=offline to write the run to RUN/wandb/ and `wandb sync` it later")


def known_ids(run_path: Path) -> dict[str, str]:
    path = Path(run_path) / IDS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def build(cfg, project_dir: str) -> Optional[list]:
    """`log_with` for accelerate's Accelerator: "tensorboard" and configured MLflow / W&B tracker objects. Where
    they write is set by `place` once the run directory is known (with --overwrite it is a temporary one)."""
    names = selected(cfg.train.report_to)
    if not names:
        return None
    ids = known_ids(Path(project_dir)) if cfg.resume else {}
    run_name = Path(cfg.output_dir or project_dir).name
    log_with: list[Any] = []
    for name in names:
        if name == "tensorboard":
            log_with.append("tensorboard")
        elif name == "mlflow":
            from accelerate.tracking import MLflowTracker

            class MLflow(MLflowTracker):
                uri = cfg.train.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")

                def start(self):
                    import mlflow

                    if self.uri.startswith("sqlite:///"):  # the local store in RUN/mlruns/ (the run directory exists now)
                        Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
                    mlflow.set_tracking_uri(self.uri)
                    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store set-up chatter
                    super().start()

            log_with.append(MLflow(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "tlab"), run_id=ids.get("mlflow"),
                                   run_name=run_name, tags={"tlab.task": cfg.task}))
        elif name == "wandb":
            from accelerate.tracking import WandBTracker

            extra = {"id": ids["wandb"], "resume": "allow"} if "wandb" in ids else {}
            log_with.append(WandBTracker(os.environ.get("WANDB_PROJECT", "tlab"), name=run_name, dir=str(project_dir),
                                         tags=["tlab", cfg.task], **extra))
    return log_with


def place(accelerator, run_path: Path) -> None:
    """Point local tracker output into the directory this run writes (RUN/mlruns/, RUN/wandb/)."""
    local = Path(run_path).resolve() / "mlruns"
    for tracker in accelerator.log_with:
        name = getattr(tracker, "name", None)
        if name == "mlflow" and not type(tracker).uri:
            # a SQLite store (MLflow 3 refuses plain-folder stores), artifacts in a folder beside it
            tracker.uri, tracker.logging_dir = f"sqlite:///{local / 'mlflow.db'}", (local / "artifacts").as_uri()
        elif name == "wandb":
            tracker.init_kwargs["dir"] = str(run_path)


def flat(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}; lists and None as text (trackers' parameters are scalars)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def start(accelerator, run, params: dict[str, Any], resumed: bool) -> None:
    """After init_trackers on rank 0: the resolved config as parameters (once: MLflow refuses to change a logged
    parameter, and a resumed run already has them), and the tracker run ids for --resume."""
    ids = {}
    for tracker in accelerator.trackers:
        if tracker.name == "mlflow":
            ids["mlflow"] = tracker.active_run.info.run_id
        elif tracker.name == "wandb":
            ids["wandb"] = tracker.run.id
        if tracker.name != "tensorboard" and not resumed:  # TensorBoard's hparams would add a second event folder
            try:
                tracker.store_init_configuration(params)
            except Exception as exc:  # e.g. MLflow refusing a changed parameter of a restarted run: curves still go
                logging.getLogger(__name__).warning("%s did not take the config as parameters: %s", tracker.name, exc)
    if ids:
        run.write_json(IDS_FILE, ids)


def finish(accelerator, metrics: dict[str, Any], model_dir: Optional[Path], say=print) -> None:
    """Log the saved model's scores as `final/*` and (MLflow) the model folder as the artifact `model/`, then end
    the tracker runs. A tracker failing now costs a warning, never the finished run."""
    final = {f"final/{k}": v for k, v in (metrics.get("final") or {}).items() if _number(v) and k not in ("tokens", "examples")}
    for tracker in list(accelerator.trackers):
        try:
            if tracker.name != "tensorboard" and final:
                tracker.log(final, step=metrics.get("steps"))
            if tracker.name == "mlflow" and model_dir is not None and Path(model_dir).is_dir():
                tracker.log_artifacts(str(model_dir), artifact_path="model")
            tracker.finish()
        except Exception as exc:
            say(f"warning: {tracker.name} could not record the end of the run ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:200]}); the run directory is complete")
    accelerator.trackers = []  # end_training() would finish them a second time


def abort(accelerator, exc: BaseException) -> None:
    """A failed or stopped (preempted, interrupted, pruned) run ends its tracker runs as such (MLflow FAILED / KILLED),
    not as still running."""
    stopped = isinstance(exc, (KeyboardInterrupt, Pruned)) or getattr(exc, "exit_code", None) == PREEMPTED_EXIT
    for tracker in list(getattr(accelerator, "trackers", [])):
        try:
            if tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status="KILLED" if stopped else "FAILED")
            elif tracker.name == "wandb":
                tracker.run.finish(exit_code=1)
            else:
                tracker.finish()
        except Exception:  # the run's own error is the one to report
            pass
    accelerator.trackers = []


def _number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
