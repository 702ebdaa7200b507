"""MLflow wiring shared by every training entry point: store location, run tags, experiments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = Path("mlruns/artifacts")


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the project store ``sqlite:///mlruns/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def setup_mlflow(experiment: str) -> str:
    """Point MLflow at the project store and select (or create) ``experiment``.

    A sqlite store needs its folder to exist; artifacts go beside it under ``artifacts/`` so one
    folder holds the whole store. Returns the experiment id.
    """
    import mlflow

    uri = tracking_uri()
    artifact_location = None
    if uri.startswith("sqlite:///"):
        db_file = Path(uri.removeprefix("sqlite:///"))
        db_file.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (db_file.parent / "artifacts" / experiment).resolve().as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        exp_id = existing.experiment_id
    else:
        exp_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str:
    """The checked-out commit, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(**extra: object) -> dict[str, str]:
    """Tags every run carries: git commit plus whatever the caller adds (feature-set version,
    as-of dates, row counts, ...), stringified."""
    tags = {"git_commit": git_commit()}
    tags.update({k: str(v) for k, v in extra.items()})
    return tags
