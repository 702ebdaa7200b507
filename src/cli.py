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
) -> None:
    """Generate a synthetic CRM warehouse (raw tables + truth_* ground truth)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from customer360.data.synthetic import generate_warehouse
    from customer360.data.warehouse import resolve_db_path

    path = resolve_db_path(db)
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
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    print_table(f"Generated {path}", [{"table": t, "rows": n} for t, n in counts.items()])



@app.command()
def counts(db: DbOption = None) -> None:
    """Print the row count of every warehouse table."""
    from customer360.data.warehouse import connect, table_counts

    with connect(db, read_only=True) as con:
        rows = [{"table": k, "rows": v} for k, v in table_counts(con).items()]
    print_table("Warehouse tables", rows)


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
