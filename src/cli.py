"""The ``customer360`` command line: thin typer commands that call the library.

Each command imports what it needs inside its body so ``--help`` stays fast and one room's
optional dependency cannot break another's command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from customer360.errors import Customer360Error

app = typer.Typer(
    help="customer360: one integrated view of every customer; churn, CLV and next best offer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """customer360: one integrated view of every customer; churn, CLV and next best offer."""

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Warehouse file (default: $CUSTOMER360_DB or data/customer360.duckdb)."),
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
    db: DbOption = None,
) -> None:
    """Load FILE into TABLE; rows breaking the table's contract go to the quarantine table.

    The file is loaded atomically (all or nothing) and only once (same content = skipped).
    """
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from customer360.data.ingest import ingest_file, parse_column_map
    from customer360.data.warehouse import connect

    column_map = parse_column_map(map_)
    with connect(db, create=True) as con, Progress(
        TextColumn(f"[bold]ingesting {escape(file.name)}"), BarColumn(),
        TextColumn("step {task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("ingest", total=5)
        report = ingest_file(
            con, table, file, column_map,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if report.skipped_duplicate_file:
        console.print(
            f"Skipped {escape(report.file)}: identical content (sha256 {report.file_sha256[:12]}) "
            f"was already ingested into {table}; nothing changed.", soft_wrap=True,
        )
        return
    console.print(
        f"{escape(report.file)} -> {table}: read {report.rows_read:,} = loaded "
        f"{report.rows_loaded:,} + quarantined {report.rows_quarantined:,}", soft_wrap=True,
    )
    if report.ignored_columns:
        console.print(f"Ignored file columns not in {table}: {', '.join(report.ignored_columns)}",
                      soft_wrap=True, markup=False)
    if report.defaulted_columns:
        console.print(f"Optional columns not in the file, loaded as null: "
                      f"{', '.join(report.defaulted_columns)}", soft_wrap=True, markup=False)
    if report.rows_quarantined:
        print_table("Top quarantine reasons",
                    [{"reason": k, "rows": n} for k, n in report.top_reasons[:10]])
        quoted = report.file.replace("'", "''")
        console.print(
            f"See the quarantined rows: customer360 quarantine --table {table} --file "
            f"{report.file}\n  or in SQL: SELECT * FROM quarantine WHERE source_file = "
            f"'{quoted}' ORDER BY row_number", soft_wrap=True, markup=False,
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
        "churn": "" if math.isnan(row["churn_rate"]) else f"{row['churn_rate']:.0%}",
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
) -> None:
    """Start the BentoML service in the foreground (Ctrl-C stops it).

    Needs the champion models (churn, clv, nbo) in the MLflow registry and a feature snapshot
    in the warehouse; set CUSTOMER360_API_TOKEN to require a bearer token.
    """
    from customer360.serving.profile import champion_versions
    from customer360.serving.schemas import load_serving_config
    from customer360.serving.service import serve_command

    config = load_serving_config()
    versions = champion_versions(config.models, config.alias)  # refuse early, naming what lacks
    cmd, env = serve_command(db, port=port, host=host)
    console.print(
        f"Serving {', '.join(f'{n} v{v}' for n, v in versions.items())} from "
        f"{env['CUSTOMER360_DB']} on http://{host}:{port} (OpenAPI docs at /, Ctrl-C stops)",
        soft_wrap=True,
    )
    raise typer.Exit(_run_foreground(cmd, env))


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
) -> None:
    """Score every customer (segments, churn + reasons, CLV, top offers) into a Parquet file
    and the DuckDB table customer_scores."""
    import datetime as dt

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from customer360.serving.batch import score_customers

    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError:
        raise typer.BadParameter(f"{as_of!r} is not a date; use YYYY-MM-DD",
                                 param_hint="--as-of") from None
    with Progress(
        TextColumn("[bold]scoring"), BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} customers"), TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("score", total=None)
        report = score_customers(
            day, output, db=db, chunk_size=chunk_size,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    console.print(
        f"Scored {report.rows:,} customers as of {report.as_of} in {report.seconds:.1f} s "
        f"({report.chunks} chunks) -> {report.output} and table {report.table}; models "
        f"{report.model_versions}", soft_wrap=True,
    )


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
    amount_col: Annotated[
        str, typer.Option("--amount-col", help="Amount column; negative rows are returns.")
    ],
    output: Annotated[Path, typer.Option("--output", help="Folder for params.json, "
                                         "customers.parquet and the plots.")],
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
    """Fit BG/NBD, Pareto/NBD and Gamma-Gamma on your own transactions (no warehouse needed)."""
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
        "outputs/clv_probabilistic"),
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


def _print_clv_report(report) -> None:
    rows = [
        {"model": name, "parameters": ", ".join(f"{k}={v:.4g}" for k, v in m["params"].items()),
         "log-lik": m["log_likelihood"], "penalizer": m["penalizer_used"]}
        for name, m in report.params["models"].items()
    ]
    print_table("Fitted models", rows)
    hold = report.params.get("holdout")
    if hold:
        print_table(
            f"Holdout ({hold['duration']:.4g} {report.params['time_unit']}): actual "
            f"{hold['actual_total_repeat_purchases']:,.0f} repeat purchases",
            [{"model": k, "predicted total": v["predicted_total_repeat_purchases"],
              "MAE / customer": v["mae_per_customer"]}
             for k, v in hold.items() if isinstance(v, dict)],
        )
    console.print(f"Wrote {report.output_dir}/params.json, customers.parquet "
                  f"({len(report.customers):,} customers) and {len(report.plots)} plots.",
                  soft_wrap=True)


def main() -> None:
    """Entry point: run the app and turn our own errors into one clear line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except Customer360Error as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
