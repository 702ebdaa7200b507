"""The ``customer360`` command line: thin typer commands that call the library.

Each command imports what it needs inside its body so ``--help`` stays fast and one room's
optional dependency cannot break another's command.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from customer360.errors import Customer360Error

if TYPE_CHECKING:
    from customer360.identity.unify import IdentityConfig

app = typer.Typer(
    help="customer360: one integrated view of every customer; churn, CLV and next best offer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped output (make demo, CI logs) would otherwise be cut to 80 columns and truncate tables.
console = Console(width=None if sys.stdout.isatty() else 160)


@app.callback()
def _root() -> None:
    """customer360: one integrated view of every customer; churn, CLV and next best offer."""


DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", help="Warehouse file (default: $CUSTOMER360_DB or data/customer360.duckdb)."
    ),
]


def print_table(title: str, rows: list[dict], columns: list[str] | None = None) -> None:
    """Render a list of dicts as a rich table."""
    table = Table(title=title)
    columns = columns or (list(rows[0]) if rows else [])
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    console.print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return "" if value is None else str(value)


# --- warehouse: generate, ingest, counts (issue 2) ---------------------------------------------


# generate (synthetic CRM generator; owner: GEN)
@app.command()
def generate(
    customers: Annotated[int, typer.Option("--customers", help="Number of customers.")] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 42,
    db: DbOption = None,
    today: Annotated[
        str | None,
        typer.Option("--today", help="Synthetic today, YYYY-MM-DD (default 2026-06-30)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing warehouse file.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Generator parameters (default configs/synthetic.yaml)."),
    ] = None,
) -> None:
    """Generate a synthetic CRM warehouse (raw tables + truth_* ground truth)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from customer360.data.synthetic import generate_warehouse, load_synthetic_config
    from customer360.data.warehouse import resolve_db_path

    path = resolve_db_path(db)
    params = load_synthetic_config(config)
    with Progress(
        TextColumn("[bold]generating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"
        " customers"), TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task("generate", total=customers)
        counts = generate_warehouse(
            path,
            n_customers=customers,
            seed=seed,
            today=today,
            overwrite=overwrite,
            config=params,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    print_table(f"Generated {path}", [{"table": t, "rows": n} for t, n in counts.items()])


def _standardise_source_records(warehouse: Path, config: IdentityConfig) -> None:
    """Standardise newly ingested source records at the point of entry (issue 14 item 1).

    The load is committed by then: a failure here is a warning, not a failed ingest, since
    `identity run` standardises whatever is left."""
    from customer360.data.warehouse import connect
    from customer360.identity.store import standardise_new

    console.print("Standardising the new source records ...", markup=False)
    started = time.perf_counter()
    try:
        with connect(warehouse) as con:
            done = standardise_new(con, config)
    except Exception as exc:  # noqa: BLE001 - the ingest itself succeeded
        console.print(f"Warning: the source records are loaded but not standardised yet "
                      f"({type(exc).__name__}: {exc}); `customer360 identity run` standardises "
                      "them.", soft_wrap=True, markup=False)
        return
    console.print(f"Standardised {len(done):,} new source records into identity_records in "
                  f"{time.perf_counter() - started:.1f} s (`customer360 identity run` matches "
                  "them).", soft_wrap=True, markup=False)


# ingest, quarantine (contract-checked loading of real data; owner: INGEST)
@app.command()
def ingest(
    table: Annotated[str, typer.Argument(help="Target table, e.g. customers or transactions.")],
    file: Annotated[Path, typer.Argument(help="A .csv, .csv.gz or .parquet file.")],
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="Rename a file column before checking: FILE_COL=TABLE_COL (repeatable)."
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="The file's customer ids are record ids of this source system (e.g. webshop): "
            "map them to the unified customer_id through identity_crosswalk.",
        ),
    ] = None,
    identity_config: Annotated[
        Path | None,
        typer.Option("--identity-config",
                     help="source_records only: the identity config to standardise the new "
                          "records with (default configs/identity.yaml; use the one `identity "
                          "run --config` uses)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Load FILE into TABLE; rows breaking the table's contract go to the quarantine table.

    The file is loaded atomically (all or nothing) and only once (same content = skipped).
    With --source SYSTEM, customer ids are re-keyed to the unified id; ids unknown in that
    system go to quarantine.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from customer360.data.ingest import ingest_file, parse_column_map
    from customer360.data.warehouse import connect, resolve_db_path

    column_map = parse_column_map(map_)
    identity = None
    if table == "source_records":  # a bad identity config fails before anything is loaded
        from customer360.identity.unify import load_identity_config

        identity = load_identity_config(identity_config)
    warehouse = resolve_db_path(db)
    created = not warehouse.exists()
    if created:
        console.print(f"Creating a new, empty warehouse {warehouse}", markup=False)
    try:
        with connect(warehouse, create=True) as con, Progress(
            TextColumn(f"[bold]ingesting {escape(file.name)}"), BarColumn(),
            TextColumn("step {task.completed}/{task.total}"), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:
            task = progress.add_task("ingest", total=5)
            report = ingest_file(
                con, table, file, column_map,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                source_system=source,
            )
    except BaseException:
        if created:  # a failed ingest leaves no trace, not even a new empty warehouse
            for leftover in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    if report.skipped_duplicate_file:
        console.print(
            f"Skipped {escape(report.file)}: identical content (sha256 {report.file_sha256[:12]}) "
            f"was already ingested into {table}; nothing changed.", soft_wrap=True,
        )
        return
    console.print(
        f"{escape(report.file)} -> {table} in {escape(str(warehouse))}: read "
        f"{report.rows_read:,} = loaded "
        f"{report.rows_loaded:,} + quarantined {report.rows_quarantined:,}", soft_wrap=True,
    )
    if table == "source_records" and report.rows_loaded:
        _standardise_source_records(warehouse, identity)
    if report.ignored_columns:
        console.print(f"Ignored file columns not in {table}: {', '.join(report.ignored_columns)}",
                      soft_wrap=True, markup=False)
    if report.defaulted_columns:
        console.print(f"Optional columns not in the file, loaded as null: "
                      f"{', '.join(report.defaulted_columns)}", soft_wrap=True, markup=False)
    if report.rows_quarantined:
        print_table("Top quarantine reasons",
                    [{"reason": k, "rows": n} for k, n in report.top_reasons[:10]])
        if any(" not found in " in reason for reason in report.reasons):
            from customer360.data.contracts import CONTRACTS

            console.print(
                "Unknown keys: load referenced tables first, in this order: "
                f"{', '.join(CONTRACTS)}.", soft_wrap=True, markup=False,
            )
        import shlex

        quoted = report.file.replace("'", "''")
        console.print(
            f"See the quarantined rows: customer360 quarantine --table {table} --file "
            f"{shlex.quote(report.file)}\n  or in SQL: SELECT * FROM quarantine WHERE "
            f"source_file = '{quoted}' ORDER BY row_number", soft_wrap=True, markup=False,
        )


@app.command()
def quarantine(
    table: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Only rows of this file.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows to show.")] = 20,
    db: DbOption = None,
) -> None:
    """Show quarantined rows (newest first) with the reason each was refused."""
    from customer360.data.ingest import read_quarantine
    from customer360.data.warehouse import connect, require_tables

    with connect(db, read_only=True) as con:
        require_tables(con, "quarantine")
        rows, total = read_quarantine(con, table=table, source_file=file, limit=limit)
    if not rows:
        console.print("No quarantined rows" + (f" for table {table}" if table else "") + ".")
        return
    shown = [
        {**r, "file": Path(r["source_file"]).name, "raw_row": (r["raw_row"] or "")[:60]}
        for r in rows
    ]
    print_table(f"Quarantine: {len(rows)} of {total:,} rows", shown,
                ["table_name", "file", "row_number", "reason", "raw_row"])


@app.command()
def cluster(
    table: Annotated[
        str, typer.Option("--table", help="Table to rewrite in customer and time order.")
    ] = "transactions",
    db: DbOption = None,
) -> None:
    """Store each customer's rows together (run after ingests; speeds up RFM summaries).

    Appended files scatter a customer's orders over the table; `rfm_summary` then falls back
    from its run scan to a hash aggregate. Rows and keys are unchanged.
    """
    from customer360.data.warehouse import cluster_by_customer, connect

    with connect(db) as con, console.status(f"clustering {table} by customer"):
        rows = cluster_by_customer(con, table)
    console.print(f"{table}: {rows:,} rows now stored in customer and time order.",
                  markup=False)


@app.command()
def counts(db: DbOption = None) -> None:
    """Print the row count of every warehouse table."""
    from customer360.data.warehouse import connect, table_counts

    with connect(db, read_only=True) as con:
        rows = [{"table": k, "rows": v} for k, v in table_counts(con).items()]
    print_table("Warehouse tables", rows)

# --- segments: customer classification and Pareto report (issue 4; owner: SEG) ----------------


@app.command()
def segments(
    as_of: Annotated[
        str,
        typer.Option("--as-of", help="Classify as of this date (YYYY-MM-DD); features read "
                     "rows strictly before it."),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", help="Customers file (.parquet or .csv); the report tables, "
                     "the JSON figures and the Pareto chart (PNG) are written next to it."),
    ] = Path("data/segments.parquet"),
    db: DbOption = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Segments config (default: segments.yaml).")
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option("--group-by", help="Segment column of the table, e.g. rfm_segment "
                     "(default: report.group_by of the config)."),
    ] = None,
    clv: Annotated[
        bool,
        typer.Option("--clv/--no-clv", help="Fit the probabilistic CLV models for the mean CLV "
                     "per segment (skipped if they are not installed)."),
    ] = True,
) -> None:
    """Classify every customer (status, RFM, value A-D, lifecycle, lenses...), write them to the
    table customer_segments and --output, and print the segment table and the Pareto figures."""
    import datetime as dt

    from customer360.data.warehouse import connect
    from customer360.models.segments import GROUPABLE, load_segments_config
    from customer360.training.segments import output_paths, run_segments

    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError:
        raise typer.BadParameter(f"{as_of!r} is not a date; use YYYY-MM-DD",
                                 param_hint="--as-of") from None
    cfg = load_segments_config(config)
    if group_by is not None:
        if group_by not in GROUPABLE:
            raise typer.BadParameter(f"{group_by!r} is not one of {', '.join(GROUPABLE)}",
                                     param_hint="--group-by")
        cfg = cfg.model_copy(
            update={"report": cfg.report.model_copy(update={"group_by": group_by})}
        )
    with console.status(f"Classifying customers as of {day}..."), connect(db) as con:
        classified, report = run_segments(con, day, cfg, with_clv=clv, output=output)
    paths = output_paths(output)

    print_table(f"Segments by {report.group_by}, as of {report.as_of}",
                [_segment_row(r) for r in report.segments.to_dict("records")])
    fig = report.summary()
    pct = "n/a" if fig["referral_share_top"] is None else f"{fig['referral_share_top']:.1%}"
    margin = "n/a" if fig["margin_share_top"] is None else f"{fig['margin_share_top']:.1%}"
    console.print(
        f"Pareto: the top {report.top_share:.0%} of {report.buyers:,} buyers bring {margin} of "
        f"the margin; the top {report.top_share:.0%} of {report.referrers:,} referrers bring "
        f"{pct} of the purchasing referrals; {fig['negative_contributors']:,} customers "
        f"contribute negatively (total {fig['negative_contribution_total'] or 0:,.2f})."
    )
    if len(report.negative_contributors):
        print_table("Most negative contributors (first 10)",
                    report.negative_contributors.head(10).to_dict("records"))
    print_table("Cost to acquire by acquisition channel", report.channels.to_dict("records"))
    console.print(
        f"Wrote {len(classified):,} customers to {paths['customers']} and table "
        f"customer_segments; report: {paths['segments']}, {paths['summary']}, chart: "
        f"{paths['chart']}", soft_wrap=True,
    )


def _segment_row(row: dict) -> dict:
    """One row of the segment table with short headings and money rounded to whole units."""
    import math

    def money(x: float) -> str:
        return "" if math.isnan(x) else f"{x:,.0f}"

    return {
        "segment": row["segment"],
        "customers": f"{row['customers']:,}",
        "buyers": f"{row['buyers']:,}",
        "revenue": money(row["revenue"]),
        "margin": money(row["margin"]),
        "profit": money(row["profitability"]),
        "mean CLV": money(row["mean_clv"]),
        # issue 13: the share is named by its definition (inactive buyers or a labelled rate)
        **{
            k.replace("_", " "): "" if math.isnan(v) else f"{v:.0%}"
            for k, v in row.items()
            if k == "inactive_buyer_share" or k.startswith("churn_rate_")
        },
        "serve cost": money(row["cost_to_serve"]),
        "acq. cost": money(row["cost_to_acquire"]),
        "channel": row["preferred_channel"],
    }


# --- serving: serve, score (issue 7; owner: SERVE) ----------------------------------------------


@app.command()
def serve(
    db: DbOption = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 3000,
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind (0.0.0.0 exposes it).")
    ] = "127.0.0.1",
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="Serve a non-loopback --host without CUSTOMER360_API_TOKEN (refused otherwise).",
        ),
    ] = False,
) -> None:
    """Start the BentoML service in the foreground (Ctrl-C stops it).

    Needs the champion models (churn, clv, nbo) in the MLflow registry and a feature snapshot
    in the warehouse; set CUSTOMER360_API_TOKEN to require a bearer token (required for a
    non-loopback --host unless --insecure-no-token).
    """
    import tempfile

    from customer360.data.warehouse import connect, resolve_db_path
    from customer360.serving.profile import champion_versions, latest_as_of
    from customer360.serving.schemas import load_serving_config
    from customer360.serving.service import check_exposure, serve_command

    check_exposure(host, insecure_no_token=insecure_no_token)  # before loading anything
    config = load_serving_config()
    # Refuse early, naming what lacks: the feature snapshot, then the champions.
    if resolve_db_path(db).exists():
        with connect(db, read_only=True) as con:
            latest_as_of(con)
    versions = champion_versions(config.models, config.alias)
    with tempfile.TemporaryDirectory(prefix="customer360-serve-") as tmp:
        error_file = Path(tmp) / "start-error.txt"
        cmd, env = serve_command(
            db, port=port, host=host, start_error_file=error_file,
            insecure_no_token=insecure_no_token,
        )
        console.print(
            f"Serving {', '.join(f'{n} v{v}' for n, v in versions.items())} from "
            f"{env['CUSTOMER360_DB']} on http://{host}:{port} (OpenAPI docs at /, Ctrl-C stops)",
            soft_wrap=True,
        )
        code = _run_foreground(cmd, env)
        cause = error_file.read_text().strip() if error_file.exists() else ""
    if cause:
        # BentoML exits 0 when the failed worker stops it: a supervisor must see the failure.
        raise Customer360Error(f"the service could not start: {cause}")
    raise typer.Exit(code)


def _run_foreground(cmd: list[str], env: dict[str, str]) -> int:
    import subprocess

    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


@app.command()
def score(
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot date to score (YYYY-MM-DD).")],
    output: Annotated[Path, typer.Option("--output", help="Parquet file to write.")],
    db: DbOption = None,
    chunk_size: Annotated[
        int | None,
        typer.Option("--chunk-size", help="Customers per chunk (default: configs/serving.yaml)."),
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="duckdb (default) or spark (local mode; the output "
                          "is a Parquet folder, see docs/spark.md).")
    ] = "duckdb",
) -> None:
    """Score every customer (segments, churn + reasons, CLV, top offers) into a Parquet file
    and the DuckDB table customer_scores; with the leads / opportunities models registered,
    also the open leads and opportunities and the pipeline forecast (OUTPUT_leads.parquet,
    OUTPUT_opportunities.parquet, OUTPUT_forecast.parquet; tables lead_scores and
    opportunity_scores, one scoring per as-of date)."""
    import datetime as dt

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from customer360.serving.batch import score_customers

    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError:
        raise typer.BadParameter(f"{as_of!r} is not a date; use YYYY-MM-DD",
                                 param_hint="--as-of") from None
    if engine not in ("duckdb", "spark"):
        raise typer.BadParameter(f"{engine!r} is not an engine; use duckdb or spark",
                                 param_hint="--engine")
    if engine == "spark":  # issue 17: the whole job on Spark
        from customer360.serving.batch_spark import score_customers_spark

        with console.status("scoring on Spark (local mode)"):
            report = score_customers_spark(day, output, db=db)
    else:
        with Progress(
            TextColumn("[bold]scoring"), BarColumn(),
            TextColumn("{task.completed:,} customers"), TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("score", total=None)
            report = score_customers(
                day, output, db=db, chunk_size=chunk_size,
                on_progress=lambda done, total: progress.update(task, completed=done,
                                                                total=total),
            )
    console.print(
        f"Scored {report.rows:,} customers as of {report.as_of} in {report.seconds:.1f} s "
        f"({report.chunks} chunks) -> {report.output} and table {report.table}; models "
        f"{report.model_versions}", soft_wrap=True,
    )
    for path in report.sales_outputs:  # issue 15: leads, opportunities, pipeline forecast
        console.print(f"B2B scores -> {path}", soft_wrap=True)
    _refresh_search_index(db)


def _refresh_search_index(db: Path | None) -> None:
    """Rebuild the web app's search index (customers and identities) after a job changed them."""
    from customer360.data.warehouse import connect
    from customer360.serving.webapp.search import build_search_index

    with connect(db) as con, console.status("indexing customers for search"):
        keys = build_search_index(con)
    console.print(f"Search index: {keys:,} keys (ids, names, emails, phones, places).")


# --- clv: probabilistic CLV, BG/NBD, Pareto/NBD, Gamma-Gamma (issue 4; owner: PROB) -----------

clv_app = typer.Typer(
    help="Probabilistic CLV (BG/NBD, Pareto/NBD, Gamma-Gamma) on any transaction log or the "
    "warehouse.",
    no_args_is_help=True,
)
app.add_typer(clv_app, name="clv")


@clv_app.command("fit")
def clv_fit(
    transactions: Annotated[
        Path, typer.Option("--transactions", help="CSV or Parquet file, one row per transaction.")
    ],
    customer_col: Annotated[str, typer.Option("--customer-col", help="Customer id column.")],
    date_col: Annotated[str, typer.Option("--date-col", help="Date column (ISO or YYYYMMDD).")],
    output: Annotated[Path, typer.Option("--output", help="Folder for params.json, "
                                         "customers.parquet and the plots.")],
    amount_col: Annotated[  # issue 13: optional (a log without amounts: no spend model)
        str | None, typer.Option("--amount-col", help="Amount column; negative rows are "
                                 "returns. Without it only the purchase models are fitted.")
    ] = None,
    calibration_end: Annotated[str | None, typer.Option(
        "--calibration-end", help="Last calibration day, YYYY-MM-DD (default: last date).")] = None,
    holdout_end: Annotated[str | None, typer.Option(
        "--holdout-end", help="Last holdout day, YYYY-MM-DD: evaluates on the holdout.")] = None,
    time_unit: Annotated[str, typer.Option(
        "--time-unit", help="days or weeks (weeks = days / 7).")] = "weeks",
    discount_rate: Annotated[float | None, typer.Option(
        "--discount-rate", help="Annual CLV discount rate (default from "
        "configs/clv_probabilistic.yaml).")] = None,
    margin_rate: Annotated[float, typer.Option(
        "--margin-rate", help="Margin share of revenue used in CLV.")] = 1.0,
    mlflow: Annotated[bool, typer.Option(
        "--mlflow/--no-mlflow", help="Also log the run to MLflow (experiment clv_probabilistic).")
    ] = False,
) -> None:
    """Fit BG/NBD, Pareto/NBD, Gamma-Gamma and an ML-CLV stacked on BG/NBD (trained by
    backtesting inside the calibration period) on your own transactions (no warehouse)."""
    from customer360.training.probabilistic import run_transactions

    report = run_transactions(
        transactions, customer_col=customer_col, date_col=date_col, amount_col=amount_col,
        output_dir=output, calibration_end=calibration_end, holdout_end=holdout_end,
        time_unit=time_unit, discount_rate=discount_rate, margin_rate=margin_rate,
        mlflow_log=mlflow,
    )
    _print_clv_report(report)


@clv_app.command("warehouse")
def clv_warehouse(
    as_of: Annotated[str, typer.Option("--as-of", help="Evaluate as of this date (YYYY-MM-DD); "
                                       "only purchases strictly before it are read.")],
    output: Annotated[Path, typer.Option("--output", help="Output folder.")] = Path(
        "out/clv_probabilistic"),
    holdout_days: Annotated[int | None, typer.Option(
        "--holdout-days", help="Days before as-of held out (default from config).")] = None,
    discount_rate: Annotated[float | None, typer.Option(
        "--discount-rate", help="Annual CLV discount rate.")] = None,
    db: DbOption = None,
) -> None:
    """Calibration/holdout evaluation of the probabilistic models on the warehouse (MLflow)."""
    from customer360.data.warehouse import connect
    from customer360.training.probabilistic import run_warehouse

    with connect(db, read_only=True) as con:
        report = run_warehouse(con, as_of, output, holdout_days=holdout_days,
                               discount_rate=discount_rate)
    _print_clv_report(report)
    console.print(f"MLflow run {report.run_id} (experiment clv_probabilistic)")


def _stacked_row(name: str, backtest: dict) -> dict:  # issue 13: the stacked ML-CLV
    return {"model": name, "parameters": (
        f"LightGBM x BG/NBD, {backtest['rounds']} rounds; backtest: features as of "
        f"{backtest['cutoff']}, targets over the next {backtest['window']:.4g} units "
        f"({backtest['customers']:,} customers)"
        + (f"; backtest picks {backtest['selected']}" if "selected" in backtest else ""))}


def _print_clv_report(report) -> None:
    rows = [
        {"model": name, "parameters": ", ".join(f"{k}={v:.4g}" for k, v in m["params"].items()),
         "log-lik": m["log_likelihood"], "penalizer": m["penalizer_used"]}
        if "params" in m else {"model": name, "parameters": f"not fitted: {m['error']}"}
        if "error" in m or "backtest" not in m else _stacked_row(name, m["backtest"])
        for name, m in report.params["models"].items()
    ]
    print_table("Fitted models", rows)
    hold = report.params.get("holdout")
    if hold:
        print_table(
            f"Holdout ({hold['duration']:.4g} {report.params['time_unit']}): actual "
            f"{hold['actual_total_repeat_purchases']:,.0f} repeat purchases",
            [{"model": k + (" (backtest pick)" if k == hold.get("selected_by_backtest") else ""),
              "predicted total": v["predicted_total_repeat_purchases"],
              "MAE / customer": v["mae_per_customer"],
              "Poisson deviance": v.get("poisson_deviance_per_customer", float("nan"))}
             for k, v in hold.items() if isinstance(v, dict)]
            + [{"model": "(no purchase at all)", "predicted total": 0.0,
                "MAE / customer": hold.get("zero_forecast_mae", float("nan")),
                "Poisson deviance": None}],
        )
    console.print(f"Wrote {report.output_dir}/params.json, customers.parquet "
                  f"({len(report.customers):,} customers) and {len(report.plots)} plots.",
                  soft_wrap=True)


# --- nbo: next best offer (issue 6; owner: NBO) -------------------------------------------------

nbo_app = typer.Typer(
    help="Next best offer: train the propensity model, evaluate policies off-policy, recommend, "
    "simulate the Thompson-sampling layer, record feedback.",
    no_args_is_help=True,
)
app.add_typer(nbo_app, name="nbo")

NboConfigOption = Annotated[
    Path | None, typer.Option("--config", help="NBO config (default configs/nbo.yaml).")
]


def _nbo_config(path: Path | None):
    from customer360.models.nbo import load_nbo_config

    return load_nbo_config(str(path) if path else "nbo")


def _print_policy_values(table) -> None:
    t = table.copy()
    t["DR 95% CI"] = [f"{lo:.2f}..{hi:.2f}" for lo, hi in zip(t["dr_low"], t["dr_high"],
                                                             strict=True)]
    names = {"dr": "DR", "ips": "IPS", "snips": "SNIPS", "ess": "ESS",
             "acceptance_rate": "accept", "true_value": "true", "true_acceptance_rate":
             "true accept"}
    t = t.rename(columns=names)
    cols = ["policy", "DR", "DR 95% CI", "IPS", "SNIPS", "ESS", "accept"]
    cols += [c for c in ("true", "true accept") if c in t.columns]
    print_table(
        "Value per decision (reward = accepted x margin) on held-out logged offers",
        t[cols].to_dict("records"), cols,
    )


def _print_recommendations(recs, title: str) -> None:
    rows = recs[recs["status"] == "recommended"].rename(
        columns={"customer_id": "customer", "offer_id": "offer", "expected_value": "EV"})
    print_table(title, rows.to_dict("records"),
                ["customer", "offer", "rank", "p_accept", "margin", "EV", "score", "kind",
                 "channel"])


@nbo_app.command("train")
def nbo_train(
    db: DbOption = None,
    config: NboConfigOption = None,
    trials: Annotated[int | None, typer.Option(
        "--trials", help="Optuna trials (default: propensity.trials in the config).")] = None,
    register: Annotated[bool, typer.Option(
        "--register/--no-register", help="Register as `nbo` @challenger.")] = True,
    show: Annotated[int, typer.Option(
        "--show", help="Print the top offers of this many customers.")] = 3,
    output: Annotated[Path | None, typer.Option(
        "--output", help="Also write policy_values.csv and metrics.json here.")] = None,
) -> None:
    """Train P(accept) on the warehouse's offer events; print the policy value table
    (logging, learned, oracle) and top offers for a few customers."""
    import json

    from rich.progress import Progress

    from customer360.data.warehouse import connect
    from customer360.models.bandit import store_segments
    from customer360.training.nbo import current_customers, recommend_for, train_nbo

    cfg = _nbo_config(config)
    with connect(db) as con, Progress(console=console, transient=True) as bar:
        task = bar.add_task("nbo train", total=4)
        result = train_nbo(con, cfg, trials=trials, register=register,
                           on_progress=lambda d, t: bar.update(task, completed=d, total=t))
        snaps = current_customers(con)
        store_segments(con, snaps, snaps["as_of"].max())
        bar.stop()
        _print_policy_values(result.policy_values)
        m = result.metrics
        console.print(
            f"Held-out P(accept): AUC {m['test_auc']:.3f} (offer-rate baseline "
            f"{m['baseline_auc']:.3f}), Brier {m['test_brier']:.4f} "
            f"(baseline {m['baseline_brier']:.4f}), calibration gap "
            f"{m['test_calibration_gap']:.4f}", soft_wrap=True,
        )
        if "learned_over_logging" in m:
            console.print(
                f"True value: learned = {m['learned_over_logging']:.2f} x logging, "
                f"{m['learned_over_oracle']:.2f} x oracle", soft_wrap=True,
            )
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
        if show > 0:
            ids = snaps["customer_id"].sample(n=min(show, len(snaps)), random_state=0).tolist()
            recs = recommend_for(con, ids, config=cfg, model=result.model, use_bandit=False)
            _print_recommendations(recs, f"Top offers for {len(ids)} customers")
    console.print(
        f"MLflow run {result.run_id}; model {result.model_uri}"
        + (f" registered as nbo v{result.version} @challenger" if result.version else ""),
        soft_wrap=True,
    )
    if output:
        output.mkdir(parents=True, exist_ok=True)
        result.policy_values.to_csv(output / "policy_values.csv", index=False)
        (output / "metrics.json").write_text(json.dumps(result.metrics, indent=2))
        console.print(f"Wrote {output}/policy_values.csv and metrics.json")


@nbo_app.command("evaluate")
def nbo_evaluate(
    logs: Annotated[Path, typer.Option("--logs", help="CSV or Parquet bandit log.")],
    action_col: Annotated[str, typer.Option("--action-col", help="Chosen action column.")],
    reward_col: Annotated[str, typer.Option("--reward-col", help="Reward column.")],
    propensity_col: Annotated[str, typer.Option(
        "--propensity-col", help="Logging policy's probability of the chosen action.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for ope.json.")],
    policy: Annotated[str, typer.Option(
        "--policy", help="uniform | logging | model.")] = "uniform",
    context_cols: Annotated[str | None, typer.Option(
        "--context-cols", help="Comma-separated context columns.")] = None,
    context_prefix: Annotated[str | None, typer.Option(
        "--context-prefix", help="Use every column starting with this prefix as context.")
    ] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Registered model (name or URI) scoring context + action for "
        "--policy model (default: a cross-fitted reward model learned on the logs).")] = None,
    config: NboConfigOption = None,
) -> None:
    """Off-policy value (IPS, SNIPS, DR + 95% intervals, ESS, warnings) of a policy on your
    own logs; writes OUTPUT/ope.json."""
    import json

    from customer360.training.nbo import evaluate_logs, read_logs

    result = evaluate_logs(
        read_logs(logs), action_col=action_col, reward_col=reward_col,
        propensity_col=propensity_col,
        context_cols=[c.strip() for c in context_cols.split(",")] if context_cols else None,
        context_prefix=context_prefix, policy=policy, model=model, config=_nbo_config(config),
    )
    output.mkdir(parents=True, exist_ok=True)
    (output / "ope.json").write_text(json.dumps(result, indent=2))
    print_table(
        f"Policy '{policy}' on {result['n_used']:,} logged decisions "
        f"(ESS {result['ess']:,.1f})",
        [{"estimator": k, **v} for k, v in result["estimates"].items()],
    )
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
    console.print(f"Wrote {output / 'ope.json'}")


@nbo_app.command("recommend")
def nbo_recommend(
    customer: Annotated[list[str], typer.Option("--customer", help="Customer id (repeatable).")],
    k: Annotated[int | None, typer.Option("--k", help="Offers per customer.")] = None,
    bandit: Annotated[bool, typer.Option(
        "--bandit/--no-bandit", help="Thompson-sample from the feedback-learned state.")] = True,
    show_excluded: Annotated[bool, typer.Option(
        "--show-excluded", help="Also list excluded offers with their reasons.")] = False,
    db: DbOption = None,
    config: NboConfigOption = None,
) -> None:
    """Top offers for customers (registered nbo@challenger model, eligibility, bandit)."""
    from customer360.data.warehouse import connect
    from customer360.training.nbo import recommend_for

    with connect(db, read_only=True) as con:
        recs = recommend_for(con, customer, config=_nbo_config(config), k=k, use_bandit=bandit)
    _print_recommendations(recs, "Next best offers")
    if show_excluded:
        ex = recs[recs["status"] == "excluded"]
        print_table("Excluded offers", ex[["customer_id", "offer_id", "kind", "channel",
                                           "reasons"]].to_dict("records"))


@nbo_app.command("simulate")
def nbo_simulate(
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of decisions.")] = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Decisions per round.")] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    persist: Annotated[bool, typer.Option(
        "--persist/--no-persist", help="Append every simulated answer to nbo_feedback.")
    ] = False,
    db: DbOption = None,
    config: NboConfigOption = None,
) -> None:
    """Thompson sampling against the synthetic truth: regret per round falls as it learns."""
    from customer360.data.warehouse import connect
    from customer360.training.nbo import simulate_bandit

    with connect(db, read_only=not persist) as con:
        out = simulate_bandit(con, _nbo_config(config), rounds=rounds, batch_size=batch_size,
                              seed=seed, persist=persist)
    step = max(1, rounds // 8)
    print_table(
        "Thompson sampling per value segment x offer (regret vs the customer-level oracle)",
        out.iloc[::step].to_dict("records"),
        ["round", "regret", "cumulative_regret", "expected_reward", "oracle_reward",
         "acceptance_rate"],
    )
    tenth = max(1, rounds // 10)
    console.print(
        f"Mean regret per decision: first {tenth} rounds {out['regret'].head(tenth).mean():.3f}"
        f", last {tenth} rounds {out['regret'].tail(tenth).mean():.3f}", soft_wrap=True,
    )


@nbo_app.command("feedback")
def nbo_feedback(
    customer: Annotated[str, typer.Option("--customer", help="Customer id.")],
    offer: Annotated[str, typer.Option("--offer", help="Offer id.")],
    accepted: Annotated[bool, typer.Option("--accepted/--rejected", help="The answer.")],
    segment: Annotated[str | None, typer.Option(
        "--segment", help="Value segment (default: the one stored by `nbo train`).")] = None,
    db: DbOption = None,
) -> None:
    """Record one acceptance or rejection in the durable feedback log."""
    from customer360.data.warehouse import resolve_db_path
    from customer360.models.bandit import BanditState, connect_with_retry, record_feedback

    con = connect_with_retry(resolve_db_path(db))
    try:
        fid = record_feedback(con, customer, offer, accepted, segment=segment)
        total = BanditState.load(con).total
    finally:
        con.close()
    console.print(f"Recorded feedback {fid}; the log now holds {total:,} answers.")


# --- train / promote / predict: churn and ML-CLV (issue 5; owner: ML) ---------------------------

train_app = typer.Typer(
    help="Train a model: Optuna-tuned LightGBM, tracked and registered in MLflow as @challenger "
    "(a model's first version also becomes @champion).",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

TrialsOption = Annotated[
    int | None, typer.Option("--trials", help="Optuna trials (default: the config's).", min=0)
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Config YAML (default: configs/<model>.yaml).")
]
NoRegisterOption = Annotated[
    bool, typer.Option("--no-register", help="Log the run but do not register the model.")
]
# The bring-your-own-table options of `train churn` and `train leads` (review 6).
TableOption = Annotated[
    Path | None,
    typer.Option("--table", help="Train on your own CSV/Parquet table, not the warehouse."),
]
LabelOption = Annotated[
    str | None, typer.Option("--label", help="Label column of --table (two values).")
]
PositiveLabelOption = Annotated[
    str | None,
    typer.Option("--positive-label", help="Value of --label that means the event (churned, "
                 "converted)."),
]
IdColOption = Annotated[
    str | None, typer.Option("--id-col", help="Id column of --table (customer or lead; not a "
                             "feature).")
]
ModelNameOption = Annotated[
    str | None, typer.Option("--model-name", help="Registered model name (default: config's).")
]
SnapshotsOption = Annotated[
    int | None,
    typer.Option("--snapshots", help="Number of as-of snapshots (default: the config's).", min=3),
]
StepOption = Annotated[
    int | None,
    typer.Option("--step-days", help="Days between snapshots (default: the config's).", min=1),
]


def _with_snapshots(cfg, snapshots: int | None, step_days: int | None):
    """The config with the snapshot plan overridden from the command line."""
    if snapshots is None and step_days is None:
        return cfg
    plan = cfg.snapshots.model_copy(
        update={
            k: v for k, v in (("count", snapshots), ("step_days", step_days)) if v is not None
        }
    )
    return cfg.model_copy(update={"snapshots": type(plan).model_validate(plan.model_dump())})


def _quiet_mlflow() -> None:
    """MLflow's INFO lines and download bars drown the table; keep warnings and errors."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run_with_trial_bar(label: str, job):
    """Run ``job(on_progress)`` under a rich progress bar of the Optuna trials."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    _quiet_mlflow()
    with Progress(
        TextColumn(f"[bold]{label}[/] trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return job(on_progress)


def _print_training_result(title: str, result, metrics: list[str]) -> None:
    from customer360.training.common import mlflow_ui_command

    table = Table(title=f"{title}: test metrics vs baselines (same rows)")
    table.add_column("model", no_wrap=True)
    short = {"roc_auc": "AUC", "pr_auc": "PR-AUC", "log_loss": "logloss", "lift_at_10": "lift@10",
             "normalized_gini": "gini", "decile_mape": "dec.MAPE", "total_error": "tot.err"}
    for metric in metrics:
        table.add_column(short.get(metric, metric), justify="right", no_wrap=True)
    for name, values in [(result.model_label, result.metrics), *result.baselines.items()]:
        table.add_row(name, *(_fmt(values.get(m)) for m in metrics))
    console.print(table)
    for name in ("roc_auc_vs_oracle", "gini_vs_oracle"):
        if name in result.metrics:
            console.print(f"{name.replace('_', ' ')}: {result.metrics[name]:.3f}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    where = f"model {result.model_uri} (not registered)"
    if result.version:
        where = f"registered version {result.version} as @challenger"
        if result.became_champion:
            where += " and @champion (the model had no champion yet)"
    console.print(f"MLflow run {result.run_id}: {where}; test data {result.test_snapshot}")
    if result.rows:
        console.print(
            f"rows: test metrics from a model fitted on {result.rows['rows_fit_evaluated_model']:,}"
            f" training rows; the logged model learned from "
            f"{result.rows['rows_registered_model']:,} rows"
        )
    if result.version and result.model_name:
        console.print(
            f"Score a table: customer360 predict --model {result.model_name}"
            f"{'' if result.became_champion else '@challenger'} --table FILE --output FILE"
        )
    console.print(f"Browse the runs: {mlflow_ui_command()}  (then http://127.0.0.1:5000)")


@train_app.command("churn")
def train_churn_cmd(
    db: DbOption = None,
    trials: TrialsOption = None,
    config: ConfigOption = None,
    table: TableOption = None,
    label: LabelOption = None,
    positive_label: PositiveLabelOption = None,
    id_col: IdColOption = None,
    model_name: ModelNameOption = None,
    snapshots: SnapshotsOption = None,
    step_days: StepOption = None,
    no_register: NoRegisterOption = False,
    time_col: Annotated[  # issue 13: time-ordered selection on a BYO table
        str | None,
        typer.Option(
            "--time-col",
            help="Date column of --table that orders rows in time (default: the one date "
            "column found): the latest rows are the test part, the CV folds are time-ordered.",
        ),
    ] = None,
) -> None:
    """Train the churn model (calibrated LightGBM + reason codes) on the warehouse or a table."""
    from customer360.errors import ConfigError
    from customer360.training.churn import load_churn_config, train_churn, train_churn_table

    cfg = _with_snapshots(load_churn_config(config), snapshots, step_days)
    if table is None:
        if label or positive_label or id_col or time_col:
            raise ConfigError(
                "--label, --positive-label, --id-col and --time-col go with --table FILE."
            )
        if model_name:
            cfg = cfg.model_copy(update={"model_name": model_name})
        from customer360.data.warehouse import connect

        with connect(db, read_only=True) as con:
            result = _run_with_trial_bar(
                "churn",
                lambda cb: train_churn(
                    con, cfg, trials=trials, register=not no_register, on_progress=cb
                ),
            )
    else:
        if not label:
            raise ConfigError("--table needs --label COLUMN (the churn flag column).")
        result = _run_with_trial_bar(
            "churn",
            lambda cb: train_churn_table(
                table,
                label,
                positive_label=positive_label,
                id_col=id_col,
                model_name=model_name,
                trials=trials,
                config=cfg,
                register=not no_register,
                on_progress=cb,
                time_col=time_col,
            ),
        )
    _print_training_result(
        "Churn", result, ["roc_auc", "pr_auc", "brier", "log_loss", "lift_at_10", "ece"]
    )


@train_app.command("clv")
def train_clv_cmd(
    db: DbOption = None,
    trials: TrialsOption = None,
    config: ConfigOption = None,
    snapshots: SnapshotsOption = None,
    step_days: StepOption = None,
    no_register: NoRegisterOption = False,
) -> None:
    """Train the ML-CLV model (margin within the horizon; Tweedie LightGBM on BG/NBD + GG)."""
    from customer360.data.warehouse import connect
    from customer360.training.clv import load_clv_ml_config, train_clv

    cfg = _with_snapshots(load_clv_ml_config(config), snapshots, step_days)
    with connect(db, read_only=True) as con:
        result = _run_with_trial_bar(
            "clv",
            lambda cb: train_clv(con, cfg, trials=trials, register=not no_register, on_progress=cb),
        )
    _print_training_result(
        "ML-CLV", result, ["normalized_gini", "spearman", "decile_mape", "total_error"]
    )


@app.command()
def promote(
    model: Annotated[
        str, typer.Argument(help="Registered model NAME, e.g. churn, clv or churn_byo.")
    ],
) -> None:
    """Point @champion at the @challenger version if it beats the champion on the same test data."""
    from customer360.training.promote import promote as promote_model

    _quiet_mlflow()
    decision = promote_model(model)
    if decision.promoted or decision.champion_version == decision.challenger_version:
        console.print(f"[green]{decision.message}[/]")  # already champion is not a failure
        return
    console.print(f"[bold red]not promoted:[/] {decision.message}")
    raise typer.Exit(1)


@app.command()
def predict(
    model: Annotated[
        str, typer.Option("--model", help="NAME[@ALIAS] (default alias: champion) or NAME/VERSION.")
    ],
    table: Annotated[Path, typer.Option("--table", help="CSV/Parquet table to score.")],
    output: Annotated[Path, typer.Option("--output", help="Where to write (.csv or .parquet).")],
    id_col: Annotated[
        str | None, typer.Option("--id-col", help="Id column to copy to the output.")
    ] = None,
) -> None:
    """Score a table with a registered model: id, probability (or value) and reason codes."""
    from customer360.training.churn import read_table
    from customer360.training.leads import predict_leads_or_any  # issue 15: lead scores

    _quiet_mlflow()
    scored = predict_leads_or_any(model, read_table(table), id_col=id_col)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() in {".parquet", ".pq"}:
        scored.to_parquet(output, index=False)
    else:
        scored.to_csv(output, index=False)
    console.print(f"Wrote {len(scored):,} scored rows to {output}")


# --- features: catalogue and point-in-time builds (issue 3; owner: FEAT) ------------------------

features_app = typer.Typer(
    help="Feature catalogue and point-in-time feature builds (DuckDB or Spark).",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")


@features_app.command("list")
def features_list(
    family: Annotated[
        str | None, typer.Option("--family", help="Only this family: demo, txn, tp, beh, ...")
    ] = None,
) -> None:
    """Print the feature catalogue (name, dtype, default, description)."""
    from customer360.features.registry import FEATURE_SET_VERSION, FEATURES, feature_names

    names = set(feature_names(family))
    rows = [
        {
            "feature": f.name,
            "dtype": f.dtype,
            "default": "null" if f.default is None else f.default,
            "description": f.description,
        }
        for f in FEATURES
        if f.name in names
    ]
    print_table(f"{len(rows)} features (feature-set version {FEATURE_SET_VERSION})", rows)


@features_app.command("docs")
def features_docs(
    output: Annotated[
        Path, typer.Option("--output", help="Where to write the catalogue.")
    ] = Path("docs/features.md"),
) -> None:
    """Regenerate docs/features.md from the feature declarations."""
    from customer360.features.registry import catalogue_markdown

    output.write_text(catalogue_markdown())
    console.print(f"wrote {output}", markup=False)


@features_app.command("build")
def features_build(
    as_of: Annotated[
        list[str] | None,
        typer.Option(
            "--as-of",
            help="As-of date YYYY-MM-DD (repeatable). Default: the warehouse's 'today'.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Also write the frame to this Parquet file (+ manifest)."),
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option(
            "--horizon",
            help="Also build labels over this many days after each as-of date (training set "
            "in table training_set).",
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="duckdb (default) or spark (local mode).")
    ] = "duckdb",
    db: DbOption = None,
) -> None:
    """Build features as of each date and write them to the table feature_snapshots."""
    from datetime import date

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from customer360.data.warehouse import connect
    from customer360.features.assembler import build_and_write, data_end

    with connect(db) as con:
        dates = as_of or [str(data_end(con) or date.today())]
        with Progress(
            TextColumn("[bold]building features"), BarColumn(),
            TextColumn("{task.completed}/{task.total} as-of dates"), TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("features", total=len(dates))
            info = build_and_write(
                con, dates, horizon_days=horizon, output=output, engine=engine,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    rows = [{"as_of": d, "customers": n} for d, n in info["rows_per_as_of"].items()]
    print_table("Feature build", rows)
    console.print(
        f"{info['n_features']} features, version {info['feature_set_version']} -> table "
        f"{info['table']}{' and ' + str(output) if output else ''}",
        markup=False,
    )


# --- identity: unify source records from files (issue 14; owner: identity) ---------------------


@app.command()
def unify(
    records: Annotated[
        list[Path], typer.Option("--records", help="CSV or Parquet of source records; repeat.")
    ],
    id_col: Annotated[str, typer.Option("--id-col", help="Column holding each record's id.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for clusters, pairs, report.")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="ROLE=COLUMN, overrides the inferred role; repeat."),
    ] = None,
    link_only: Annotated[
        bool, typer.Option("--link-only", help="Only match across files, not within one.")
    ] = False,
    truth_col: Annotated[
        str | None, typer.Option("--truth-col", help="True entity id: report precision/recall.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Match probability to cluster at (configs/identity)."),
    ] = None,
    settings: Annotated[
        Path | None, typer.Option("--settings", help="Expert: a Splink settings JSON to use.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Identity config (configs/identity.yaml).")
    ] = None,
) -> None:
    """Decide which records are the same customer (Splink on DuckDB); no warehouse needed."""
    from customer360.errors import IdentityError
    from customer360.identity.unify import load_identity_config, unify_files

    mapping: dict[str, str] = {}
    for item in map_ or []:
        role, sep, column = item.partition("=")
        if not sep or not role or not column:
            raise IdentityError(f"--map {item!r}: write ROLE=COLUMN, e.g. --map surname=last_nm.")
        mapping[role.strip()] = column.strip()
    # Splink's training notes (untrained levels, sample sizes) are for experts; errors still show.
    logging.getLogger("splink").setLevel(logging.ERROR)
    report = unify_files(
        records, id_col=id_col, output=output, mapping=mapping, link_only=link_only,
        truth_col=truth_col, threshold=threshold, settings_path=settings,
        config=load_identity_config(config),
    )
    rows = [{"records": report["records"], "candidate pairs": report["candidate_pairs"],
             "matched pairs": report["matched_pairs"], "customers": report["clusters"],
             "seconds": report["seconds"]["total"]}]
    print_table(f"Unified -> {output}", rows)
    for kind, m in report.get("quality", {}).items():
        console.print(
            f"{kind}: precision {m['precision']:.4f} recall {m['recall']:.4f} F1 {m['f1']:.4f}",
            markup=False,
        )
# --- monitor: drift and performance of the latest scoring (issue 16) --------------------------


@app.command()
def monitor(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Snapshot to check (default: the scored as-of)."),
    ] = None,
    reference_as_of: Annotated[
        str | None,
        typer.Option(
            "--reference-as-of",
            help="Reference snapshot (default: the churn champion's latest training as-of).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Thresholds (default configs/monitor.yaml).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Feature and prediction drift, estimated and realised performance and the segment mix of
    the scored snapshot; rows to table monitor_results and an MLflow run. Exits 3 when a
    threshold is crossed (retrain: `train` + `promote`)."""
    from customer360.monitoring.monitor import ALERT_EXIT_CODE, load_monitor_config, run_monitor

    report = run_monitor(
        db=db, as_of=as_of, reference_as_of=reference_as_of,
        config=load_monitor_config(config) if config else None,
    )
    flagged = report.results[report.results["status"] != "ok"]
    flagged = flagged[flagged["as_of"] == report.as_of]
    print_table(
        f"Monitor {report.as_of} vs {report.reference_as_of}: not ok",
        flagged[["check", "feature", "value", "threshold", "status"]].round(4).to_dict("records"),
    )
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    console.print(
        f"{len(report.results)} checks, {len(report.alerts)} alert(s) in {report.seconds:.1f} s "
        f"-> table monitor_results, MLflow run {report.run_id}", markup=False, soft_wrap=True,
    )
    if report.alerting:
        console.print(f"[bold red]drift alert:[/] exit {ALERT_EXIT_CODE}; retrain and promote.")
        raise typer.Exit(ALERT_EXIT_CODE)


# --- issue 15: leads and opportunities (owner: leads15) ------------------------------------------


@train_app.command("leads")
def train_leads_cmd(
    db: DbOption = None,
    trials: TrialsOption = None,
    config: ConfigOption = None,
    table: TableOption = None,
    label: LabelOption = None,
    positive_label: PositiveLabelOption = None,
    id_col: IdColOption = None,
    model_name: ModelNameOption = None,
    no_register: NoRegisterOption = False,
) -> None:
    """Train the lead conversion model (score 1-100, grade A-D, reasons) on the warehouse or a
    table."""
    from customer360.errors import ConfigError
    from customer360.training.leads import load_leads_config, train_leads, train_leads_table

    cfg = load_leads_config(config)
    if table is None:
        if label or positive_label or id_col:
            raise ConfigError("--label, --positive-label and --id-col go with --table FILE.")
        if model_name:
            cfg = cfg.model_copy(update={"model_name": model_name})
        from customer360.data.warehouse import connect

        with connect(db, read_only=True) as con:
            result = _run_with_trial_bar("leads", lambda cb: train_leads(
                con, cfg, trials=trials, register=not no_register, on_progress=cb))
    else:
        if not label:
            raise ConfigError("--table needs --label COLUMN (the converted flag column).")
        result = _run_with_trial_bar("leads", lambda cb: train_leads_table(
            table, label, positive_label=positive_label, id_col=id_col, model_name=model_name,
            trials=trials, config=cfg, register=not no_register, on_progress=cb))
    _print_training_result("Leads", result, ["roc_auc", "pr_auc", "brier", "log_loss", "ece"])


@train_app.command("opportunities")
def train_opportunities_cmd(
    db: DbOption = None,
    trials: TrialsOption = None,
    config: ConfigOption = None,
    no_register: NoRegisterOption = False,
) -> None:
    """Train the win-probability model per stage, fit time to close (survival, open deals
    censored), and forecast and backtest the pipeline."""
    from customer360.data.warehouse import connect
    from customer360.training.leads import load_leads_config
    from customer360.training.opportunities import train_opportunities

    cfg = load_leads_config(config)
    with connect(db, read_only=True) as con:
        out = _run_with_trial_bar("opportunities", lambda cb: train_opportunities(
            con, cfg, trials=trials, register=not no_register, on_progress=cb))
    _print_training_result("Opportunities (win)", out.train,
                           ["roc_auc", "pr_auc", "brier", "log_loss", "ece"])
    print_table("Pipeline forecast (open opportunities)", out.forecast.to_dict("records"))
    print_table("Forecast backtest", out.backtest.to_dict("records"),
                ["month", "expected_won", "low", "high", "actual_won", "within_interval"])
# --- campaign: randomised campaigns, uplift and the campaign planner (issue 16) ---------------

campaign_app = typer.Typer(
    help="Campaigns: simulate randomised campaigns with a holdout; plan who to contact by uplift.",
    no_args_is_help=True,
)
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("simulate")
def campaign_simulate(
    db: DbOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    waves: Annotated[int, typer.Option("--waves", help="Campaign waves (quarterly).")] = 4,
) -> None:
    """Add randomised retention / cross-sell / up-sell campaigns with a control group and their
    true effects (truth_campaign_effects) to a synthetic warehouse."""
    from customer360.data.campaigns import CampaignConfig, generate_campaigns
    from customer360.data.warehouse import connect

    with connect(db) as con:
        counts = generate_campaigns(con, seed=seed, config=CampaignConfig(waves=waves))
    print_table("Campaign tables written", [{"table": k, "rows": v} for k, v in counts.items()])


@campaign_app.command("plan")
def campaign_plan(
    budget: Annotated[float, typer.Option("--budget", help="Total contact budget.")],
    cost_per_contact: Annotated[float, typer.Option(
        "--cost-per-contact", help="Cost of one contact, at least 0.01 (a cent).")],
    action: Annotated[str, typer.Option(
        "--action", help="retention | cross_sell | up_sell.")] = "retention",
    segments: Annotated[list[str] | None, typer.Option(
        "--segments", help="Only these value segments (repeat: --segments B --segments C).")
    ] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", help="Write contacts.csv, strategies.csv and the plots here.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Uplift config (default configs/campaigns.yaml).")] = None,
    strategy: Annotated[str, typer.Option(
        "--strategy", help="Whom the contact list follows: top_uplift (the uplift model's "
        "ranking, as /campaign_plan), best_backtest (the strategy with the highest DR estimate "
        "on the held-out campaign), mass_D, focused_BC, top_churn_risk or top_propensity.")
    ] = "top_uplift",
    db: DbOption = None,
) -> None:
    """Fit uplift on the logged campaigns, check the strategies on the latest (held-out)
    campaign, and list who to contact today within the budget (by the uplift model unless
    --strategy says otherwise; the output names the strategy the backtest favours); logged to
    MLflow and kept in table campaign_scores for the service's /campaign_plan."""
    from rich.progress import Progress

    from customer360.data.warehouse import connect
    from customer360.training.uplift import (
        check_plan_inputs,
        check_strategy,
        load_uplift_config,
        run_campaign_plan,
    )

    # fail fast (review 10): nothing is read or fitted for inputs that cannot be planned
    check_plan_inputs(action=action, budget=budget, cost=cost_per_contact, segments=segments)
    check_strategy(strategy)
    cfg = load_uplift_config(str(config) if config else None)
    with connect(db) as con, Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"campaign plan ({action})", total=4)
        report = run_campaign_plan(
            con, action=action, budget=budget, cost=cost_per_contact, segments=segments,
            output=str(output) if output else None, config=cfg, store=True,
            on_progress=lambda d, t: bar.update(task, completed=d, total=t), strategy=strategy,
        )
    t = report.strategies
    rows = []
    for r in t.to_dict("records"):
        rows.append({
            "strategy": r["strategy"], "contacts": r["contacts"],
            "model": r["predicted_incremental_margin"],
            "DR backtest": r["backtest_incremental_margin"],
            "95% interval": f"{r['ci_low']:,.0f}..{r['ci_high']:,.0f}",
            "true": r.get("true_incremental_margin"),
        })
    print_table(
        f"Incremental margin net of cost, {action}, budget {budget:g} at {cost_per_contact:g} "
        "per contact (held-out campaign)", rows,
    )
    m = report.metrics
    console.print(
        f"Held-out Qini: uplift {m['qini__uplift']:.3f}, churn risk {m['qini__churn_risk']:.3f}, "
        f"propensity {m['qini__propensity']:.3f}", soft_wrap=True, markup=False,
    )
    c = report.contacts
    used = t.loc[t["chosen"]].iloc[0]
    best = t.loc[t["best_backtest"]].iloc[0]
    console.print(
        f"Contact today: {len(c)} customers as {report.strategy} would (DR backtest "
        f"{used['backtest_incremental_margin']:,.0f}, interval {used['ci_low']:,.0f}.."
        f"{used['ci_high']:,.0f}); expected incremental margin net of cost "
        f"{c['expected_net_margin'].sum():,.0f} (model); MLflow run {report.run_id}",
        soft_wrap=True, markup=False,
    )
    if best["strategy"] != report.strategy:
        console.print(
            f"The backtest favours {best['strategy']} "
            f"(DR {best['backtest_incremental_margin']:,.0f}, interval "
            f"{best['ci_low']:,.0f}..{best['ci_high']:,.0f}): rerun with --strategy "
            f"{best['strategy']} (or best_backtest) to contact as it would.",
            soft_wrap=True, markup=False)
    if best["ci_high"] < 0:
        console.print(
            "Warning: no strategy is shown to pay at this cost per contact (even the best "
            "backtest's whole interval is below 0).", soft_wrap=True, markup=False)
    for f in report.files:
        console.print(f"wrote {f}", markup=False)
# --- issue 14: identity resolution inside the warehouse -------------------------------------
identity_app = typer.Typer(
    help="Identity resolution over source_records: crosswalk, stable ids, golden records, "
    "review queue.", no_args_is_help=True,
)


@identity_app.command("run")
def identity_run(
    config: Annotated[
        Path | None, typer.Option("--config", help="Identity config (configs/identity.yaml).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Link new source records (all of them the first time) and update the crosswalk, aliases,
    suspected splits, golden records and review queue; a rerun on the same input changes
    nothing."""
    from customer360.data.warehouse import connect
    from customer360.identity.store import resolve
    from customer360.identity.unify import load_identity_config

    logging.getLogger("splink").setLevel(logging.ERROR)
    with connect(db) as con, console.status("resolving identities"):
        summary = resolve(con, config=load_identity_config(config))
    print_table("identity run", [{"what": k, "value": str(v)} for k, v in summary.items()])
    _refresh_search_index(db)


@identity_app.command("review")
def identity_review(
    left: Annotated[
        str | None, typer.Argument(help="Record key (system:id) of one record.")
    ] = None,
    right: Annotated[str | None, typer.Argument(help="Record key of the other.")] = None,
    accept: Annotated[bool, typer.Option("--accept", help="Same customer: link them.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Different: never link them.")] = False,
    steward: Annotated[str, typer.Option("--steward", help="Who decided.")] = "steward",
    note: Annotated[str | None, typer.Option("--note", help="Why.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Queue rows to show.", min=1)] = 20,
    db: DbOption = None,
) -> None:
    """Without a pair: show the review queue (uncertain pairs, with their match weights). With
    a pair and --accept or --reject: store the decision; every later `identity run` keeps it."""
    from customer360.data.warehouse import connect, require_tables
    from customer360.errors import IdentityError
    from customer360.identity.store import record_decision

    if left is None:
        with connect(db, read_only=True) as con:
            require_tables(con, "identity_review")
            rows = con.execute(
                "SELECT record_key_l, record_key_r, round(match_probability, 3) AS p, "
                "match_weights FROM identity_review LIMIT ?", [limit]).df()
        print_table("identity review queue", rows.to_dict("records"))
        return
    if right is None or accept == reject:
        raise IdentityError(
            "identity review LEFT RIGHT needs two record keys and exactly one of --accept or "
            "--reject, e.g. `customer360 identity review crm:C1 pos:L9 --reject`.")
    with connect(db) as con:
        record_decision(con, left, right, "accept" if accept else "reject", steward=steward,
                        note=note)
    console.print(f"stored: {left} / {right} {'accept' if accept else 'reject'}; "
                  "run `customer360 identity run` to apply it.", markup=False)


app.add_typer(identity_app, name="identity")


def main() -> None:
    """Entry point: run the app and turn our own errors into one clear line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except Customer360Error as exc:
        from rich.markup import escape

        # One line (no wrapping at the console width), so a supervisor's log keeps the cause.
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
