"""Wiring of the customer classification: warehouse -> features as of a date -> (optional)
probabilistic CLV -> :func:`~customer360.models.segments.classify` -> Pareto report -> the
DuckDB table ``customer_segments`` and output files.

The logic lives in :mod:`customer360.models.segments`; this module only reads and writes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import duckdb
import pandas as pd

from customer360.data.warehouse import registered, transaction
from customer360.errors import Customer360Error, WarehouseError
from customer360.models.segments import (
    ParetoReport,
    SalesCycleConfig,
    SegmentsConfig,
    classify,
    load_segments_config,
    pareto_report,
)

log = logging.getLogger(__name__)

SEGMENTS_TABLE = "customer_segments"
OUTPUT_SUFFIXES = (".parquet", ".csv")


def probabilistic_clv(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pd.DataFrame | None:
    """``customer_id, prob__clv, ...`` from the probabilistic models (horizon, margin and
    discount rate from ``configs/clv_probabilistic.yaml``), or None when unavailable.

    None when :mod:`customer360.models.clv` is not installed, or when its fit fails with one of
    our own errors (logged as a warning: the report then shows no mean CLV).
    """
    try:
        from customer360.training.probabilistic import probabilistic_scores
    except ImportError as exc:
        log.info("probabilistic CLV not available (%s); segments without CLV", exc)
        return None
    try:
        return probabilistic_scores(con, as_of)
    except Customer360Error as exc:
        log.warning("probabilistic CLV failed, segments without CLV: %s", exc)
        return None


def observed_sales_cycles(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, limits: SalesCycleConfig | None = None
) -> pd.DataFrame | None:
    """Sales cycles of the customers with an opportunity won by ``as_of`` (created to close,
    :func:`~customer360.models.opportunities.sales_cycle_classes` with ``limits``), or None when
    the warehouse has no opportunities table or no such deal. Point in time: later closes are
    not seen."""
    from customer360.data.warehouse import table_exists
    from customer360.models.opportunities import sales_cycle_classes

    if not table_exists(con, "opportunities"):
        return None
    opps = con.execute(
        "SELECT opportunity_id, customer_id, created_at, closed_at, outcome FROM opportunities "
        "WHERE customer_id IS NOT NULL AND outcome = 'won' AND closed_at IS NOT NULL "
        "AND CAST(closed_at AS DATE) <= ?", [as_of]).df()
    if opps.empty:
        return None
    opps["created_at"] = pd.to_datetime(opps["created_at"])
    opps["closed_at"] = pd.to_datetime(opps["closed_at"])
    return sales_cycle_classes(opps, limits=limits)


def run_segments(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date,
    config: SegmentsConfig | None = None,
    *,
    with_clv: bool = True,
    write_table: bool = True,
    output: Path | None = None,
) -> tuple[pd.DataFrame, ParetoReport]:
    """Classify every customer as of ``as_of`` and build the Pareto report.

    Parameters
    ----------
    con
        Open warehouse (writable when ``write_table``).
    as_of
        Features are computed from rows strictly before this date.
    config
        Parsed ``configs/segments.yaml``; loaded when None.
    with_clv
        Fit the probabilistic CLV models (if available) for the ``clv`` column and mean CLV.
    write_table
        Replace this as-of date's rows of the table ``customer_segments``.
    output
        Also write the customers file and the report files there (see :func:`write_outputs`).

    Returns
    -------
    (classified, report)
        :func:`~customer360.models.segments.classify` output and its
        :class:`~customer360.models.segments.ParetoReport`.
    """
    from customer360.features import build_features

    if output is not None:
        output_paths(Path(output))  # a bad suffix fails before the work
    config = config or load_segments_config()
    features = build_features(con, as_of)
    if features.empty:
        raise WarehouseError(
            f"no customers signed up before {as_of}; pick a later --as-of or load customers"
        )
    clv = probabilistic_clv(con, as_of) if with_clv else None
    cycles = observed_sales_cycles(con, as_of, config.sales_cycle)
    classified = classify(features, config, clv=clv, cycles=cycles)
    if "as_of" not in classified.columns:
        classified.insert(1, "as_of", pd.Timestamp(as_of))
    report = pareto_report(classified, features, config, clv=clv)
    if write_table:
        rows = write_segments_table(con, classified, as_of)
        log.info("wrote %d rows to %s for as_of %s", rows, SEGMENTS_TABLE, as_of)
    if output is not None:
        write_outputs(classified, report, output)
    return classified, report


def write_segments_table(
    con: duckdb.DuckDBPyConnection, classified: pd.DataFrame, as_of: dt.date
) -> int:
    """Replace the rows of ``as_of`` in ``customer_segments`` (other dates are kept)."""
    try:
        with registered(con, classified, "_segments_new") as new, transaction(con):
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {SEGMENTS_TABLE} AS SELECT * FROM {new} LIMIT 0"
            )
            con.execute(f"DELETE FROM {SEGMENTS_TABLE} WHERE CAST(as_of AS DATE) = ?", [as_of])
            con.execute(f"INSERT INTO {SEGMENTS_TABLE} BY NAME SELECT * FROM {new}")
    except duckdb.Error as exc:
        raise WarehouseError(
            f"cannot write table {SEGMENTS_TABLE}: {exc}. If its columns are from an older "
            f"version, drop it (DROP TABLE {SEGMENTS_TABLE}) and rerun"
        ) from exc
    return len(classified)


def output_paths(output: Path) -> dict[str, Path]:
    """Where :func:`write_outputs` puts each file: the customers file and its siblings."""
    if output.suffix not in OUTPUT_SUFFIXES:
        raise Customer360Error(
            f"output {output} must end in one of {list(OUTPUT_SUFFIXES)} (Parquet or CSV)"
        )
    stem = output.with_suffix("")
    return {
        "customers": output,
        "segments": Path(f"{stem}_segments.csv"),
        "channels": Path(f"{stem}_channels.csv"),
        "negative_contributors": Path(f"{stem}_negative_contributors.csv"),
        "summary": Path(f"{stem}_pareto.json"),
        "chart": Path(f"{stem}_pareto.png"),
    }


def write_outputs(classified: pd.DataFrame, report: ParetoReport, output: Path) -> dict[str, Path]:
    """Write the classified customers (Parquet or CSV by suffix), the report tables, the
    headline figures (JSON) and the Pareto chart (PNG) next to ``output``."""
    paths = output_paths(Path(output))
    paths["customers"].parent.mkdir(parents=True, exist_ok=True)
    if paths["customers"].suffix == ".parquet":
        classified.to_parquet(paths["customers"], index=False)
    else:
        classified.to_csv(paths["customers"], index=False)
    report.segments.to_csv(paths["segments"], index=False)
    report.channels.to_csv(paths["channels"], index=False)
    report.negative_contributors.to_csv(paths["negative_contributors"], index=False)
    paths["summary"].write_text(json.dumps(report.summary(), indent=2) + "\n")
    plot_pareto(report, paths["chart"])
    return paths


def plot_pareto(report: ParetoReport, path: Path) -> Path:
    """Cumulative margin share against customer share (buyers sorted by margin, best first)."""
    from customer360.figures import new_figure

    fig, ax = new_figure((6, 4.5))
    curve = report.curve
    ax.plot(curve["customer_share"], curve["margin_share"], label="cumulative margin share")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="equal contribution")
    ax.axvline(report.top_share, color="tab:red", linestyle=":")
    ax.axhline(1.0, color="black", linewidth=0.5)
    if report.margin_share_top == report.margin_share_top:  # not NaN
        ax.annotate(
            f"top {report.top_share:.0%}: {report.margin_share_top:.0%} of margin",
            (report.top_share, report.margin_share_top),
            textcoords="offset points",
            xytext=(8, -14),
        )
    ax.set_xlabel("share of buyers (sorted by margin, best first)")
    ax.set_ylabel("cumulative share of margin")
    ax.set_title(f"Pareto of margin, as of {report.as_of or '?'} ({report.buyers} buyers)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
