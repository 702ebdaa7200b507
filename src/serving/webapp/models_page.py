"""What ``/app/models`` shows: the champion and challenger of each registered model, read from
the MLflow registry the service loads its models from.

Per version: its test metrics next to the baselines the training job logged on the same test
rows (``test_<metric>`` beside ``baseline_<name>_<metric>``), when it was trained, on what data
(the run's tags: as-of dates, row counts, test snapshot, feature-set version, git commit) and
links into the MLflow UI (``$CUSTOMER360_MLFLOW_UI``, default ``http://127.0.0.1:5000``, the
address of ``mlflow ui``). Read at most every ``TTL_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from typing import Any
from urllib.parse import quote

MLFLOW_UI_ENV = "CUSTOMER360_MLFLOW_UI"
ROLES = ("champion", "challenger")
TTL_SECONDS = 30.0
_HIDDEN_TAGS = {"model_name", "primary_metric_greater_is_better", "became_champion"}


def mlflow_ui_url() -> str:
    return os.environ.get(MLFLOW_UI_ENV, "http://127.0.0.1:5000").rstrip("/")


def metric_table(metrics: dict[str, float]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows ``{"metric", "model", <baseline>: value}`` for every ``test_<m>`` metric, and the
    baseline names (columns) found as ``baseline_<name>_<m>`` (``baseline_<m>``: "baseline").

    Examples
    --------
    >>> metric_table({"test_auc": 0.8, "baseline_lr_auc": 0.7, "baseline_auc": 0.6})
    (['baseline', 'lr'], [{'metric': 'auc', 'model': 0.8, 'lr': 0.7, 'baseline': 0.6}])
    """
    tests = sorted(k.removeprefix("test_") for k in metrics if k.startswith("test_"))
    names: set[str] = set()
    rows = []
    for m in tests:
        row: dict[str, Any] = {"metric": m, "model": metrics[f"test_{m}"]}
        for key, value in metrics.items():
            if key == f"baseline_{m}":
                row["baseline"] = value
                names.add("baseline")
            elif key.startswith("baseline_") and key.endswith(f"_{m}"):
                name = key.removeprefix("baseline_").removesuffix(f"_{m}")
                if name and not any(key.endswith(f"_{other}") and len(other) > len(m)
                                    for other in tests):
                    row[name] = value
                    names.add(name)
        rows.append(row)
    return sorted(names), rows


def _version_card(client: Any, name: str, role: str, ui: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, role)
    except MlflowException:
        return None
    run = client.get_run(version.run_id) if version.run_id else None
    metrics = run.data.metrics if run else {}
    tags = {k: v for k, v in (run.data.tags if run else {}).items()
            if not k.startswith("mlflow.") and k not in _HIDDEN_TAGS}
    baselines, rows = metric_table(metrics)
    primary = tags.get("primary_metric")
    trained = dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.UTC)
    return {
        "role": role, "version": version.version, "trained": trained,
        "run_id": version.run_id, "baselines": baselines, "metrics": rows, "primary": primary,
        "tags": dict(sorted(tags.items())),
        "version_url": f"{ui}/#/models/{quote(name)}/versions/{version.version}",
        "run_url": (f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
                    if run else None),
    }


def _read_cards() -> list[dict[str, Any]]:
    import mlflow

    from customer360.training.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    ui = mlflow_ui_url()
    cards = []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        versions = [c for role in ROLES if (c := _version_card(client, model.name, role, ui))]
        cards.append({"name": model.name, "versions": versions,
                      "url": f"{ui}/#/models/{quote(model.name)}"})
    return cards


_cache: dict[str, Any] = {}
_lock = threading.Lock()


def model_cards() -> list[dict[str, Any]]:
    """One card per registered model (name, MLflow UI link, its champion / challenger)."""
    with _lock:
        if _cache.get("at", -TTL_SECONDS) + TTL_SECONDS < time.monotonic():
            _cache.update(cards=_read_cards(), at=time.monotonic())
        return _cache["cards"]
