"""``customer360 monitor``: drift and performance of the latest scoring against the champion's
training snapshot, to the warehouse table ``monitor_results`` and an MLflow run.

Checks, one row per ``as_of x check x feature`` in ``monitor_results``:

``psi`` / ``ks`` / ``chi2``
    Every feature of the scored snapshot against the reference snapshot (the churn champion's
    latest training as-of date, tag ``as_of_train``, or ``--reference-as-of``).
``prediction_psi`` / ``prediction_ks``
    The churn probability (needs a churn champion).
``expected_roc_auc`` / ``expected_brier``
    Confidence-based estimates from the calibrated probabilities, before labels exist.
``realised_roc_auc`` / ``realised_brier``
    Once labels mature (``as_of + horizon <= warehouse today``).
``segment_share``
    ``value_segment`` shares of every snapshot up to ``as_of``.

A crossed alert threshold makes :attr:`MonitorReport.alerting` true; the CLI then exits 3 so a
scheduler can run ``train`` + ``promote``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from customer360.config import StrictModel, load_config
from customer360.errors import Customer360Error, WarehouseError
from customer360.monitoring.drift import (
    categorical_drift,
    expected_performance,
    numeric_drift,
    realised_performance,
    segment_shares,
)

log = logging.getLogger(__name__)

RESULTS_TABLE = "monitor_results"
EXPERIMENT = "monitor"
ALERT_EXIT_CODE = 3
PREDICTION = "churn_probability"

RESULTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {RESULTS_TABLE} (
  as_of DATE NOT NULL,
  reference_as_of DATE NOT NULL,
  "check" VARCHAR NOT NULL,
  feature VARCHAR NOT NULL,
  value DOUBLE,
  p_value DOUBLE,
  threshold DOUBLE,
  status VARCHAR NOT NULL,
  model_version VARCHAR,
  computed_at TIMESTAMP NOT NULL
)
"""


class MonitorConfig(StrictModel):
    """Thresholds of ``configs/monitor.yaml``."""

    psi_warn: float = Field(0.1, ge=0)
    psi_alert: float = Field(0.25, ge=0)
    psi_bins: int = Field(10, ge=2)
    test_alpha: float = Field(0.01, gt=0, lt=1)
    ks_statistic_alert: float = Field(0.1, gt=0, le=1)
    cramers_v_alert: float = Field(0.1, gt=0, le=1)
    auc_drop_alert: float = Field(0.05, ge=0)
    realised_auc_drop_alert: float = Field(0.05, ge=0)
    segment_share_alert: float = Field(0.1, gt=0, le=1)
    features: list[str] = []
    exclude_features: list[str] = []


def load_monitor_config(path: str | Path | None = None) -> MonitorConfig:
    """``configs/monitor.yaml`` (or ``path``) as a :class:`MonitorConfig`."""
    return load_config(path or "monitor", MonitorConfig)


@dataclass
class MonitorReport:
    """What one monitor run found."""

    as_of: dt.date
    reference_as_of: dt.date
    results: pd.DataFrame
    run_id: str | None = None
    report_path: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def alerts(self) -> pd.DataFrame:
        """The rows whose status is ``alert``."""
        return self.results[self.results["status"] == "alert"]

    @property
    def alerting(self) -> bool:
        return not self.alerts.empty


# --- pure assembly of result rows ------------------------------------------------------------


def _status(alert: np.ndarray, warn: np.ndarray | None = None) -> np.ndarray:
    out = np.where(alert, "alert", "ok").astype(object)
    if warn is not None:
        out[(~alert) & warn] = "warn"
    return out


def feature_drift_rows(
    reference: pd.DataFrame, current: pd.DataFrame, config: MonitorConfig
) -> pd.DataFrame:
    """PSI and distribution-test rows (``check, feature, value, p_value, threshold, status``)
    for every shared column of two snapshots (numeric: KS, otherwise chi-square)."""
    numeric = [
        c for c in reference.columns
        if pd.api.types.is_numeric_dtype(reference[c]) or pd.api.types.is_bool_dtype(reference[c])
    ]
    categorical = [c for c in reference.columns if c not in numeric]
    num = numeric_drift(reference[numeric], current[numeric], bins=config.psi_bins)
    cat = categorical_drift(reference[categorical], current[categorical])
    both = pd.concat([num.assign(test="ks"), cat.assign(test="chi2")], ignore_index=True)
    psi = both["psi"].to_numpy(dtype=float)
    psi_rows = pd.DataFrame(
        {
            "check": "psi", "feature": both["feature"], "value": psi, "p_value": np.nan,
            "threshold": config.psi_alert,
            "status": _status(psi >= config.psi_alert, psi >= config.psi_warn),
        }
    )
    limit = np.where(both["test"] == "ks", config.ks_statistic_alert, config.cramers_v_alert)
    stat = both["statistic"].to_numpy(dtype=float)
    pval = both["p_value"].to_numpy(dtype=float)
    test_rows = pd.DataFrame(
        {
            "check": both["test"], "feature": both["feature"], "value": stat, "p_value": pval,
            "threshold": limit,
            "status": _status((pval < config.test_alpha) & (stat >= limit)),
        }
    )
    return pd.concat([psi_rows, test_rows], ignore_index=True)


def performance_rows(
    kind: str, metrics: dict[str, float], baseline_auc: float | None, drop: float
) -> pd.DataFrame:
    """``{kind}_roc_auc`` (alerting below ``baseline_auc - drop``) and ``{kind}_brier``."""
    auc = metrics["roc_auc"]
    threshold = np.nan if baseline_auc is None else baseline_auc - drop
    alert = baseline_auc is not None and np.isfinite(auc) and auc < threshold
    return pd.DataFrame(
        {
            "check": [f"{kind}_roc_auc", f"{kind}_brier", f"{kind}_positive_rate"],
            "feature": PREDICTION,
            "value": [auc, metrics["brier"], metrics["positive_rate"]],
            "p_value": np.nan,
            "threshold": [threshold, np.nan, np.nan],
            "status": ["alert" if alert else "ok", "ok", "ok"],
        }
    )


def segment_rows(shares: pd.DataFrame, reference_as_of: dt.date, as_of: dt.date,
                 limit: float) -> pd.DataFrame:
    """``segment_share`` rows per as-of; the current as-of alerts where a share moved more
    than ``limit`` from the reference's."""
    shares = shares.copy()
    shares["as_of"] = pd.to_datetime(shares["as_of"]).dt.date
    ref = shares[shares["as_of"] == reference_as_of].set_index("segment")["share"]
    moved = (shares["share"] - shares["segment"].map(ref).fillna(0.0)).abs()
    alert = (shares["as_of"] == as_of) & (moved > limit)
    return pd.DataFrame(
        {
            "as_of": shares["as_of"], "check": "segment_share",
            "feature": shares["segment"].astype(str), "value": shares["share"],
            "p_value": np.nan, "threshold": limit,
            "status": np.where(alert, "alert", "ok"),
        }
    )


# --- wiring ----------------------------------------------------------------------------------


def snapshot_dates(con: Any) -> list[dt.date]:
    from customer360.data.warehouse import table_exists
    from customer360.serving.profile import SNAPSHOT_TABLE

    if not table_exists(con, SNAPSHOT_TABLE):
        raise WarehouseError(
            f"The warehouse has no {SNAPSHOT_TABLE} table. Run `customer360 features build "
            "--as-of DATE` for the reference and the scored dates first."
        )
    rows = con.execute(
        f"SELECT DISTINCT CAST(as_of AS DATE) FROM {SNAPSHOT_TABLE} ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def _scored_as_of(con: Any) -> dt.date | None:
    from customer360.data.warehouse import table_exists
    from customer360.serving.batch import SCORES_TABLE

    if not table_exists(con, SCORES_TABLE):
        return None
    return con.execute(f"SELECT max(CAST(as_of AS DATE)) FROM {SCORES_TABLE}").fetchone()[0]


def default_reference(model_name: str = "churn", alias: str = "champion") -> dt.date | None:
    """The snapshot ``monitor`` compares against by default: the latest as-of date the
    registered ``model_name@alias`` was trained on (None when there is none).

    The daily job builds that snapshot's features before monitoring, since training keeps its
    snapshots in memory and the warehouse may not hold them.
    """
    champion = _champion_info(model_name, alias)
    return max(champion["as_of_train"]) if champion and champion["as_of_train"] else None


def _champion_info(model_name: str, alias: str) -> dict[str, Any] | None:
    """Version, run tags and test ROC-AUC of ``models:/<name>@<alias>`` (None if unregistered)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from customer360.training.tracking import tracking_uri

    # the same store load_champions reads, not whatever mlflow's process-wide URI is
    uri = tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    run = client.get_run(mv.run_id) if mv.run_id else None
    tags = run.data.tags if run else {}
    metrics = run.data.metrics if run else {}
    return {
        "version": str(mv.version),
        "as_of_train": [
            dt.date.fromisoformat(d) for d in tags.get("as_of_train", "").split(",") if d
        ],
        "horizon_days": int(tags["horizon_days"]) if tags.get("horizon_days") else None,
        "test_roc_auc": metrics.get("test_roc_auc"),
    }


def _champion_probability(con: Any, as_of: dt.date, alias: str, model_name: str) -> pd.DataFrame:
    """``customer_id, churn_probability`` of the churn champion on one snapshot."""
    from customer360.serving.profile import (
        conform,
        load_champions,
        load_snapshot,
        prob_horizons,
        probabilistic_frame,
    )

    champions = load_champions([model_name], alias)
    champ = champions[model_name]
    features = load_snapshot(con, as_of)
    horizons = prob_horizons(champions)
    if horizons or any(c.startswith("prob__") for c in champ.input_columns):
        prob = probabilistic_frame(con, as_of, horizons)
        features = features.merge(prob, on="customer_id", how="left")
    frame = conform(features, [champ])
    out = champ.predict(frame)
    col = PREDICTION if PREDICTION in out.columns else out.columns[0]
    return pd.DataFrame(
        {"customer_id": features["customer_id"].to_numpy(),
         PREDICTION: out[col].to_numpy(dtype=float)}
    )


def _current_probability(con: Any, as_of: dt.date, alias: str, model_name: str) -> pd.DataFrame:
    """The scored churn probabilities of ``as_of`` (``customer_scores``), else the champion's."""
    from customer360.serving.batch import SCORES_TABLE

    if _scored_as_of(con) == as_of:
        cols = {r[0] for r in con.execute(f"DESCRIBE {SCORES_TABLE}").fetchall()}
        if PREDICTION in cols:
            return con.execute(
                f"SELECT customer_id, {PREDICTION} FROM {SCORES_TABLE} "
                "WHERE CAST(as_of AS DATE) = ?", [as_of]
            ).df()
    return _champion_probability(con, as_of, alias, model_name)


def _snapshot(con: Any, as_of: dt.date, columns: list[str] | None = None) -> pd.DataFrame:
    from customer360.serving.profile import SNAPSHOT_TABLE

    select = "*" if columns is None else ", ".join(f'"{c}"' for c in columns)
    return con.execute(
        f"SELECT {select} FROM {SNAPSHOT_TABLE} WHERE CAST(as_of AS DATE) = ?", [as_of]
    ).df()


def _segment_frame(con: Any, dates: list[dt.date]) -> pd.DataFrame:
    from customer360.models.segments import classify, load_segments_config, required_features

    seg_config = load_segments_config()
    cols = list(dict.fromkeys(["customer_id", "as_of", *required_features(seg_config)]))
    parts = []
    for day in dates:
        feats = _snapshot(con, day, cols)
        seg = classify(feats, seg_config)[["value_segment"]]
        parts.append(seg.assign(as_of=day))
    return pd.concat(parts, ignore_index=True)


def _labels(con: Any, as_of: dt.date, horizon: int) -> pd.DataFrame | None:
    """Churn labels of ``as_of`` if its horizon has passed, else None."""
    from customer360.features.assembler import build_labels, label_names
    from customer360.training.common import warehouse_today

    if as_of + dt.timedelta(days=horizon) > warehouse_today(con):
        return None
    labels = build_labels(con, as_of, horizon)
    return labels[["customer_id", label_names(horizon)[0]]].rename(
        columns={label_names(horizon)[0]: "label"}
    )


def run_monitor(
    *,
    db: str | Path | None = None,
    as_of: dt.date | str | None = None,
    reference_as_of: dt.date | str | None = None,
    config: MonitorConfig | None = None,
    model_name: str = "churn",
    alias: str = "champion",
    horizon_days: int | None = None,
    log_mlflow: bool = True,
) -> MonitorReport:
    """Monitor the scored snapshot ``as_of`` against the reference snapshot.

    Parameters
    ----------
    db
        Warehouse file (default ``$CUSTOMER360_DB``).
    as_of
        Snapshot to check (default: the as-of of ``customer_scores``, else the latest
        ``feature_snapshots`` date).
    reference_as_of
        Reference snapshot (default: the churn champion's latest training as-of date).
    config
        Thresholds (default ``configs/monitor.yaml``).
    horizon_days
        Label horizon for realised performance (default: the champion's ``horizon_days`` tag).
    log_mlflow
        Log a run with metrics, the PSI bar plot and the HTML report to experiment ``monitor``.

    Examples
    --------
    >>> report = run_monitor(reference_as_of="2025-12-31")  # doctest: +SKIP
    >>> report.alerting                                     # doctest: +SKIP
    False
    """
    from customer360.data.warehouse import connect, transaction

    started = time.perf_counter()
    config = config or load_monitor_config()
    champion = _champion_info(model_name, alias)
    notes: list[str] = []
    with connect(db) as con:
        dates = snapshot_dates(con)
        if not dates:
            raise WarehouseError("feature_snapshots is empty; run `customer360 features build`.")
        current = pd.Timestamp(as_of).date() if as_of else (_scored_as_of(con) or dates[-1])
        if reference_as_of is not None:
            reference = pd.Timestamp(reference_as_of).date()
        elif champion and champion["as_of_train"]:
            reference = max(champion["as_of_train"])
        else:
            raise Customer360Error(
                f"No reference snapshot: no registered {model_name}@{alias} with an as_of_train "
                "tag. Pass --reference-as-of YYYY-MM-DD (e.g. the earliest of "
                f"{', '.join(map(str, dates[:3]))}) or train and promote a churn model."
            )
        for label, day in (("--as-of", current), ("reference", reference)):
            if day not in dates:
                raise WarehouseError(
                    f"feature_snapshots has no rows for the {label} date {day} (it has "
                    f"{', '.join(map(str, dates))}). Run `customer360 features build --as-of "
                    f"{day}` first."
                )
        ref_frame = _snapshot(con, reference)
        cur_frame = _snapshot(con, current)
        skip = {"customer_id", "as_of", *config.exclude_features}
        features = config.features or [c for c in ref_frame.columns if c not in skip]
        missing = [c for c in features if c not in cur_frame.columns]
        if missing:
            raise WarehouseError(
                f"The {current} snapshot lacks features {missing[:5]} of the {reference} "
                "reference; rebuild both with the same feature-set version."
            )
        parts = [feature_drift_rows(ref_frame[features], cur_frame[features], config)]
        del ref_frame, cur_frame

        version = champion["version"] if champion else None
        if champion is not None:
            p_ref = _champion_probability(con, reference, alias, model_name)
            p_cur = _current_probability(con, current, alias, model_name)
            pred = feature_drift_rows(
                p_ref[[PREDICTION]], p_cur[[PREDICTION]], config
            ).replace({"check": {"psi": "prediction_psi", "ks": "prediction_ks"}})
            parts.append(pred)
            baseline = champion["test_roc_auc"]
            if baseline is None:
                baseline = expected_performance(p_ref[PREDICTION].to_numpy())["roc_auc"]
            parts.append(
                performance_rows(
                    "expected", expected_performance(p_cur[PREDICTION].to_numpy()),
                    baseline, config.auc_drop_alert,
                )
            )
            horizon = horizon_days or champion["horizon_days"]
            labels = _labels(con, current, horizon) if horizon else None
            if labels is not None:
                joined = p_cur.merge(labels, on="customer_id", how="inner")
                parts.append(
                    performance_rows(
                        "realised",
                        realised_performance(joined[PREDICTION], joined["label"]),
                        baseline, config.realised_auc_drop_alert,
                    )
                )
            else:
                notes.append(f"labels of {current} not mature yet (horizon {horizon} days)")
        else:
            notes.append(
                f"no {model_name}@{alias} registered: prediction drift and performance skipped"
            )
        results = pd.concat(parts, ignore_index=True).assign(as_of=current)
        seg_dates = sorted({d for d in dates if d <= current} | {reference})
        shares = segment_shares(_segment_frame(con, seg_dates))
        results = pd.concat(
            [results, segment_rows(shares, reference, current, config.segment_share_alert)],
            ignore_index=True,
        )
        results = results.assign(
            reference_as_of=reference, model_version=version,
            computed_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
        )[["as_of", "reference_as_of", "check", "feature", "value", "p_value", "threshold",
           "status", "model_version", "computed_at"]]
        results["status"] = results["status"].astype(str)
        with transaction(con):
            write_results(con, results)
    report = MonitorReport(
        as_of=current, reference_as_of=reference, results=results, notes=notes,
        seconds=time.perf_counter() - started,
    )
    if log_mlflow:
        log_report(report)
    return report


def write_results(con: Any, results: pd.DataFrame) -> None:
    """Replace the rows of the same ``(as_of, reference_as_of, check)`` in ``monitor_results``."""
    from customer360.data.warehouse import registered

    con.execute(RESULTS_DDL)
    with registered(con, results, "_monitor_rows") as name:
        con.execute(
            f'DELETE FROM {RESULTS_TABLE} WHERE (as_of, reference_as_of, "check") IN '
            f'(SELECT DISTINCT as_of, reference_as_of, "check" FROM {name})'
        )
        con.execute(f"INSERT INTO {RESULTS_TABLE} SELECT * FROM {name}")


# --- MLflow ----------------------------------------------------------------------------------


def psi_figure(results: pd.DataFrame, config: MonitorConfig, top: int = 30):
    """Horizontal bar plot of the ``top`` largest feature PSIs with the warn/alert lines."""
    from customer360.figures import new_figure

    psi = results[results["check"].isin(["psi", "prediction_psi"])].nlargest(top, "value")
    fig, ax = new_figure((8, max(3, 0.25 * len(psi) + 1)))
    colours = psi["status"].map({"alert": "tab:red", "warn": "tab:orange"}).fillna("tab:blue")
    ax.barh(psi["feature"][::-1], psi["value"][::-1], color=colours[::-1])
    ax.axvline(config.psi_warn, color="tab:orange", ls="--", lw=1, label="warn")
    ax.axvline(config.psi_alert, color="tab:red", ls="--", lw=1, label="alert")
    ax.set_xlabel("population stability index")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def html_report(report: MonitorReport) -> str:
    """A self-contained HTML page: alerts first, then every check."""
    res = report.results
    order = {"alert": 0, "warn": 1, "ok": 2}
    body = res.sort_values(["status", "check", "value"], key=lambda s: s.map(order)
                           if s.name == "status" else s, ascending=[True, True, False])
    notes = "".join(f"<li>{n}</li>" for n in report.notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>customer360 monitor</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px}"
        "tr.alert{background:#fdd}tr.warn{background:#ffe8c0}</style></head><body>"
        f"<h1>Monitor {report.as_of} vs reference {report.reference_as_of}</h1>"
        f"<p>{len(report.alerts)} alert(s) over {len(res)} checks.</p><ul>{notes}</ul>"
        + body.drop(columns=["computed_at"]).to_html(index=False, float_format="%.4f",
                                                    na_rep="")
        + "</body></html>"
    )


def log_report(report: MonitorReport) -> None:
    """One MLflow run in experiment ``monitor``: metrics, PSI plot, HTML report."""
    import re

    import mlflow

    from customer360.training.tracking import setup_mlflow

    setup_mlflow(EXPERIMENT)
    res = report.results
    now = res[res["as_of"] == report.as_of]
    metrics = {"alerts": float(len(report.alerts)), "seconds": report.seconds}
    for row in now.itertuples(index=False):
        if row.value is not None and np.isfinite(row.value):
            name = re.sub(r"[^0-9A-Za-z_\-./ ]", "_", f"{row.check}.{row.feature}")
            metrics[name] = float(row.value)
    with mlflow.start_run(run_name=f"monitor {report.as_of}") as run:
        mlflow.set_tags({
            "as_of": str(report.as_of), "reference_as_of": str(report.reference_as_of),
            "alerting": str(report.alerting).lower(),
            "model_version": str(now["model_version"].iloc[0]) if len(now) else "",
        })
        mlflow.log_metrics(metrics)
        fig = psi_figure(now, load_monitor_config())
        mlflow.log_figure(fig, "psi.png")
        mlflow.log_text(html_report(report), "monitor_report.html")
        report.run_id = run.info.run_id
        report.report_path = f"{run.info.artifact_uri}/monitor_report.html"
