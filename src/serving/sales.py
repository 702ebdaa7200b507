"""B2B scores in the customer profile (issue 15 item 6): the open opportunities and lead
scores of each customer, grouped once from the batch-scored frames so a request only looks
its customer up.

Pure: frames in, a mapping out. ``opportunities`` is the scored open pipeline
(:func:`customer360.training.opportunities.forecast_as_of`: ``opportunity_id``, ``stage``,
``amount``, ``win_probability``, ``expected_close_date``, ``close_date_low``,
``close_date_high``) with the ``customer_id`` of its account; ``leads`` is
:func:`customer360.training.leads.score_open_leads` with the lead's ``customer_id``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from customer360.errors import ModelError, NotFoundError

log = logging.getLogger(__name__)

OPPORTUNITY_FIELDS = ("opportunity_id", "stage", "amount", "win_probability",
                      "expected_close_date", "close_date_low", "close_date_high")
LEAD_FIELDS = ("lead_id", "score", "grade", "trend")


def _grouped(frame: pd.DataFrame | None, fields: tuple[str, ...], what: str,
             order: str) -> dict[str, list[dict]]:
    if frame is None or frame.empty:
        return {}
    missing = [c for c in ("customer_id", *fields) if c not in frame.columns]
    if missing:
        raise ModelError(f"The scored {what} lack the columns {missing}; score them with "
                         f"the current customer360 version.")
    linked = frame[frame["customer_id"].notna()]
    linked = linked.sort_values(["customer_id", order], ascending=[True, False], kind="stable")
    rows = linked[list(fields)].astype(object).where(linked[list(fields)].notna(), None)
    records = rows.to_dict("records")
    out: dict[str, list[dict]] = {}
    for cid, record in zip(linked["customer_id"].astype(str), records, strict=True):
        out.setdefault(cid, []).append(record)
    return out


def b2b_profile_parts(
    opportunities: pd.DataFrame | None, leads: pd.DataFrame | None
) -> dict[str, dict[str, list[dict]]]:
    """``{customer_id: {"open_opportunities": [...], "leads": [...]}}`` for the customers
    with at least one linked open opportunity or scored lead; opportunities by descending
    win probability, leads by descending score. Unlinked rows (no ``customer_id``) are left
    out: they belong to no profile.

    Examples
    --------
    >>> opps = pd.DataFrame({"customer_id": ["c1"], "opportunity_id": ["o1"],
    ...     "stage": ["proposal"], "amount": [10.0], "win_probability": [0.4],
    ...     "expected_close_date": [pd.Timestamp("2026-03-01")],
    ...     "close_date_low": [pd.NaT], "close_date_high": [pd.NaT]})
    >>> b2b_profile_parts(opps, None)["c1"]["open_opportunities"][0]["close_date_low"] is None
    True
    """
    opp = _grouped(opportunities, OPPORTUNITY_FIELDS, "opportunities", "win_probability")
    lead = _grouped(leads, LEAD_FIELDS, "leads", "score")
    return {cid: {"open_opportunities": opp.get(cid, []), "leads": lead.get(cid, [])}
            for cid in sorted(set(opp) | set(lead))}


# --- scoring the sales pipeline once per snapshot (the service at start-up, batch scoring) -----

LEAD_SCORES_TABLE = "lead_scores"
OPPORTUNITY_SCORES_TABLE = "opportunity_scores"
FORECAST_MONTHS = 6
NO_MODEL = ("no {what} model is served: train and promote it (`customer360 train {name}` then "
            "`customer360 promote {name}`) and restart the service.")


@dataclass
class SalesModels:
    """The champions of the lead conversion and opportunity win models (None: not registered,
    those scores are left out) and their versions."""

    leads: Any = None
    opportunities: Any = None
    versions: dict[str, str] = field(default_factory=dict)


def load_sales_models(alias: str = "champion", config: Any = None) -> SalesModels:
    """The ``leads`` and ``opportunities`` champions when registered; B2B scoring is optional,
    so a missing one is logged and left out instead of stopping the service."""
    import mlflow

    from customer360.serving.profile import champion_versions
    from customer360.training.leads import load_leads_config

    config = config or load_leads_config()
    out = SalesModels()
    for attr, name in (("leads", config.model_name),
                       ("opportunities", config.opportunity_model_name)):
        try:
            version = champion_versions([name], alias)[name]
        except ModelError:
            log.info("no %s@%s registered: its B2B scores are left out", name, alias)
            continue
        model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}").unwrap_python_model().model
        setattr(out, attr, model)
        out.versions[name] = version
    return out


def previous_lead_scores(con: Any, as_of: dt.date) -> pd.DataFrame | None:
    """The latest stored scoring (table ``lead_scores``) of a date before ``as_of``: the
    trend's reference. Scoring the same date again compares with the same earlier scoring."""
    from customer360.data.warehouse import table_exists

    if not table_exists(con, LEAD_SCORES_TABLE):
        return None
    frame = con.execute(
        f"SELECT lead_id, score FROM {LEAD_SCORES_TABLE} WHERE as_of = (SELECT max(as_of) "
        f"FROM {LEAD_SCORES_TABLE} WHERE as_of < ?::DATE)", [as_of]).df()
    return frame if len(frame) else None


@dataclass
class SalesScores:
    """Every open lead and open opportunity scored as of one date, the pipeline forecast and
    what a payload request needs (models, time-to-close model); see :func:`score_sales`."""

    as_of: dt.date
    leads: pd.DataFrame | None
    opportunities: pd.DataFrame | None
    forecast: pd.DataFrame | None
    models: SalesModels
    ttc: Any = None
    config: Any = None
    attribution: Any = None

    def __post_init__(self) -> None:
        self.parts = b2b_profile_parts(self.opportunities, self.leads)
        self._lead_row = (pd.Index(self.leads["lead_id"].astype(str))
                          if self.leads is not None else pd.Index([]))
        self._opp_row = (pd.Index(self.opportunities["opportunity_id"].astype(str))
                         if self.opportunities is not None else pd.Index([]))

    def profile_parts(self, customer_id: str | None) -> dict[str, list[dict]]:
        """``open_opportunities`` and ``leads`` of a customer (empty lists when it has none)."""
        return self.parts.get(str(customer_id), {"open_opportunities": [], "leads": []})

    def lead(self, lead_id: str | None = None, features: dict | None = None) -> dict[str, Any]:
        """A lead's score by id (the start-up scoring) or from a feature payload."""
        from customer360.models.leads import LEAD_FEATURES, score_leads

        model, name = self.models.leads, self.config.model_name
        if model is None:
            raise NotFoundError(NO_MODEL.format(what="lead conversion", name="leads"))
        if lead_id is not None:
            row = self._lead_row.get_indexer([lead_id])[0]
            if row < 0:
                raise NotFoundError(
                    f"Lead {lead_id!r} is not an open lead as of {self.as_of} (unknown, or "
                    "already converted or disqualified); send its features instead.")
            rec = self.leads.iloc[row]
        else:
            frame = sales_payload_frame(features, model, LEAD_FEATURES, "lead")
            rec = score_leads(model, frame, self.config.grades.model_dump(),
                              k=self.config.reasons, attribution=self.attribution).iloc[0]
            rec = pd.concat([rec, pd.Series({"lead_id": None, "customer_id": None,
                                             "trend": None})])
        k = self.config.reasons
        return {
            "lead_id": rec["lead_id"], "customer_id": _none(rec["customer_id"]),
            "as_of": self.as_of, "probability": float(rec["probability"]),
            "score": int(rec["score"]), "grade": str(rec["grade"]), "trend": _none(rec["trend"]),
            "reasons_for": _present(rec, "reason_positive", k),
            "reasons_against": _present(rec, "reason_negative", k),
            "model_version": self.models.versions[name],
        }

    def opportunity(self, opportunity_id: str | None = None,
                    features: dict | None = None) -> dict[str, Any]:
        """An open opportunity's win probability and close date by id or from a payload."""
        from customer360.models.opportunities import OPPORTUNITY_FEATURES
        from customer360.training.opportunities import close_dates

        model, name = self.models.opportunities, self.config.opportunity_model_name
        if model is None or self.ttc is None:
            raise NotFoundError(NO_MODEL.format(what="opportunity win", name="opportunities"))
        if opportunity_id is not None:
            row = self._opp_row.get_indexer([opportunity_id])[0]
            if row < 0:
                raise NotFoundError(
                    f"Opportunity {opportunity_id!r} is not open as of {self.as_of} (unknown, "
                    "or already won or lost); send its features instead.")
            rec = self.opportunities.iloc[row].to_dict()
        else:
            frame = sales_payload_frame(features, model, OPPORTUNITY_FEATURES, "opportunity")
            lo = (1 - self.config.interval) / 2
            q = self.ttc.close_quantiles(frame, [lo, 0.5, 1 - lo])
            dates = {k: v[0] for k, v in close_dates(pd.Timestamp(self.as_of), q).items()}
            rec = {"opportunity_id": None, "customer_id": None,
                   "stage": str(frame["opp__stage"].iloc[0]), "amount": None,
                   "win_probability": float(model.predict_proba(frame)[0]), **dates}
        return {
            "opportunity_id": rec["opportunity_id"], "customer_id": _none(rec["customer_id"]),
            "as_of": self.as_of, "stage": rec["stage"], "amount": _none(rec["amount"]),
            "win_probability": float(rec["win_probability"]),
            **{c: _date(rec[c]) for c in ("expected_close_date", "close_date_low",
                                          "close_date_high")},
            "interval": self.config.interval,
            "model_version": self.models.versions[name],
        }


def _none(value: Any) -> Any:
    return None if value is None or value is pd.NaT or (
        isinstance(value, float) and np.isnan(value)) else value


def _date(value: Any) -> dt.date | None:
    value = _none(value)
    return None if value is None or pd.isna(value) else pd.Timestamp(value).date()


def _present(rec: pd.Series, prefix: str, k: int) -> list[str]:
    values = (rec.get(f"{prefix}_{j + 1}") for j in range(k))
    return [str(v) for v in values if _none(v) is not None]


def sales_payload_frame(features: dict | None, model: Any, names: tuple[str, ...],
                        what: str) -> pd.DataFrame:
    """One payload as a one-row frame of ``names``, refusing (:class:`PayloadError`, naming
    the field) a missing or unknown field, a category the model does not know and a number
    that is not a finite number."""
    from customer360.serving.profile import PayloadError

    features = features or {}
    missing = [n for n in names if n not in features]
    unknown = [n for n in features if n not in names]
    if missing or unknown:
        parts = ([f"missing {', '.join(missing[:8])}"] if missing else []) + (
            [f"unknown {', '.join(map(repr, unknown[:8]))}"] if unknown else [])
        raise PayloadError(
            f"The {what} payload's fields do not match: {'; '.join(parts)}. Send exactly the "
            f"{len(names)} fields {', '.join(names)}.")
    levels = model.schema_.categories
    row: dict[str, Any] = {}
    for name in names:
        value = features[name]
        if name in levels:
            if not isinstance(value, str) or value not in levels[name]:
                raise PayloadError(
                    f"features.{name}: {value!r} is not a known value; use one of "
                    f"{', '.join(levels[name][:20])}.")
            row[name] = value
        elif value is None:
            row[name] = np.nan
        elif isinstance(value, bool) or not isinstance(value, int | float) or not (
                np.isfinite(value) and abs(value) <= 1e12):
            raise PayloadError(
                f"features.{name}: {value!r} is not a number; send a finite number (or null "
                "where unknown).")
        else:
            row[name] = float(value)
    return pd.DataFrame([row], columns=list(names))


def score_sales(con: Any, as_of: dt.date, models: SalesModels,
                config: Any = None) -> SalesScores:
    """Score every lead and opportunity open as of ``as_of`` with ``models`` (the trend
    against :func:`previous_lead_scores`), and forecast the pipeline; each part only where
    its model and tables exist. One function for the service's start-up and batch scoring,
    so both give the same numbers.

    Examples
    --------
    >>> scores = score_sales(con, dt.date(2026, 6, 30), load_sales_models())  # doctest: +SKIP
    >>> scores.lead(lead_id="L00000042")["grade"]                             # doctest: +SKIP
    'B'
    """
    from customer360.data.warehouse import table_exists
    from customer360.training.leads import load_leads_config, score_open_leads

    config = config or load_leads_config()
    leads = opps = forecast = ttc = attribution = None
    if models.leads is not None and table_exists(con, "leads"):
        attribution = lead_attribution(models.leads)
        previous = previous_lead_scores(con, as_of)
        leads = score_open_leads(con, models.leads, config, as_of=as_of, previous=previous,
                                 attribution=attribution)
        owners = con.execute("SELECT lead_id, customer_id FROM leads").df()
        leads = leads.merge(owners, on="lead_id", how="left")
        log.info("scored %d open leads as of %s", len(leads), as_of)
    if models.opportunities is not None and table_exists(con, "opportunities"):
        from customer360.training.opportunities import (
            fit_time_to_close,
            forecast_as_of,
            read_opportunity_tables,
        )

        tables = read_opportunity_tables(con)
        ts = pd.Timestamp(as_of)
        ttc = fit_time_to_close(tables, ts, config.survival_max_rows)
        opps, forecast = forecast_as_of(tables, ts, FORECAST_MONTHS, config,
                                        win_model=models.opportunities, ttc=ttc)
        owners = tables.opportunities[["opportunity_id", "customer_id"]]
        opps = opps.merge(owners, on="opportunity_id", how="left")
        opps.insert(1, "as_of", ts)
        log.info("scored %d open opportunities as of %s", len(opps), as_of)
    return SalesScores(as_of, leads, opps, forecast, models, ttc, config, attribution)


def lead_attribution(model: Any) -> Any:
    """The lead reasons' attribution: ``reasons`` of ``configs/serving.yaml`` as for churn
    ("path": :class:`~customer360.serving.reasons.PathAttribution`, about 100x faster than
    exact TreeSHAP; "exact": None, LightGBM's TreeSHAP)."""
    from customer360.serving.reasons import PathAttribution
    from customer360.serving.schemas import load_serving_config

    return PathAttribution(model.booster_) if load_serving_config().reasons == "path" else None


def store_sales_scores(con: Any, scores: SalesScores, output: Path) -> list[str]:
    """Write the lead and opportunity scores next to the customer scores (``<stem>_leads``,
    ``<stem>_opportunities`` and ``<stem>_forecast`` Parquet files) and keep each scoring in
    the warehouse tables ``lead_scores`` / ``opportunity_scores`` (the date's rows replaced,
    earlier dates kept, with ``scored_at``), so the next scoring's trend has its reference.
    Returns the files written."""
    from customer360.data.warehouse import registered, table_exists

    written = []
    scored_at = pd.Timestamp.now(tz="UTC").tz_localize(None)
    for frame, suffix, table in ((scores.leads, "leads", LEAD_SCORES_TABLE),
                                 (scores.opportunities, "opportunities",
                                  OPPORTUNITY_SCORES_TABLE),
                                 (scores.forecast, "forecast", None)):
        if frame is None:
            continue
        path = output.with_name(f"{output.stem}_{suffix}.parquet")
        frame.to_parquet(path, index=False)
        written.append(str(path))
        if table is None:
            continue
        rows = frame.assign(as_of=pd.Timestamp(scores.as_of).date(), scored_at=scored_at)
        with registered(con, rows, "_c360_sales_scores") as view:
            if table_exists(con, table):
                con.execute(f"DELETE FROM {table} WHERE as_of = ?::DATE", [scores.as_of])
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
            else:
                con.execute(f"CREATE TABLE {table} AS SELECT * FROM {view}")
    return written
