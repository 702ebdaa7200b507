"""Render the table contracts as markdown (the committed ``docs/data-contracts.md``).

Regenerate the page after changing a contract::

    .venv/bin/python -m customer360.data.contract_docs > docs/data-contracts.md
"""

from __future__ import annotations

from collections.abc import Mapping

from customer360.data.contracts import CONTRACTS, Column, TableContract, date_plausibility
from customer360.data.ingest import format_bound

HEADER = """\
# Data contracts

Generated from `customer360.data.contracts.CONTRACTS`; do not edit by hand. Regenerate with
`.venv/bin/python -m customer360.data.contract_docs > docs/data-contracts.md`.

`customer360 ingest TABLE FILE [--map file_col=table_col ...]` checks every row of a CSV or
Parquet file against its table's contract. A row that breaks a rule goes to the `quarantine`
table (`table_name, source_file, row_number, reason, raw_row, ingested_at`) with the first
rule it breaks, in this order: per column (in the order below) type, null in a required column,
allowed values, minimum, maximum, length, dates (thresholds in `configs/contracts.yaml`);
then the table checks; then foreign keys; then "primary key
already in the warehouse"; then duplicate primary keys within the file (the first valid
occurrence is loaded). A table check that evaluates to null passes (SQL `CHECK` semantics).
Types: an empty CSV field is null; `DOUBLE` values must be finite numbers; `INTEGER` values
must be whole (`1.5` is refused, not rounded); a timestamp with a UTC offset is converted to
naive UTC. In a file of 100 rows or more, a required column that is empty throughout, or a
column in which no value has the right type, refuses the whole file (a wrong column or format,
e.g. decimal commas) instead of quarantining every row.
A CSV line that does not parse (an unbalanced double quote, more or fewer fields than the
header) goes to `quarantine` with reason `line N: <problem>` and its text in `raw_row`
(`{"_line": ...}`), and the rest of the file loads; a file of which no line parses is refused.
Tables are listed in load order: load referenced tables first.
"""


def _rule_text(col: Column) -> str:
    parts = []
    if col.allowed is not None:
        parts.append("one of " + ", ".join(f"`{v}`" for v in col.allowed))
    if col.min is not None:
        parts.append(f">= {format_bound(col.min)}")
    if col.max is not None:
        parts.append(f"<= {format_bound(col.max)}")
    if col.max_length is not None:
        parts.append(f"at most {col.max_length} characters")
    if col.dtype.upper() in ("DATE", "TIMESTAMP"):
        dates = date_plausibility()
        parts.append(f"from {dates.earliest_date}")
        parts.append(f"until {dates.latest_planned_date}" if col.planned else
                     f"at most {dates.future_tolerance_days} day(s) after now")
    if col.references:
        parts.append(f"references `{col.references}`")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(contract: TableContract) -> str:
    """Markdown section of one table contract."""
    lines = [
        f"## `{contract.name}`",
        "",
        contract.description,
        "",
        f"Primary key: `{contract.primary_key}`."
        + (f" Time column: `{contract.time_column}`." if contract.time_column else ""),
        "",
        "| column | type | required | rule | description |",
        "|---|---|---|---|---|",
    ]
    for col in contract.columns:
        lines.append(
            f"| `{col.name}` | {col.dtype} | {'no' if col.nullable else 'yes'} | "
            f"{_cell(_rule_text(col))} | {_cell(col.description)} |"
        )
    if contract.checks:
        lines += ["", "Row checks (must hold):", ""]
        lines += [f"- `{name}`: `{_cell(expr)}`" for name, expr in contract.checks]
    return "\n".join(lines) + "\n"


def render_contracts_markdown(contracts: Mapping[str, TableContract] = CONTRACTS) -> str:
    """The whole ``docs/data-contracts.md`` page.

    Examples
    --------
    >>> page = render_contracts_markdown()
    >>> page.startswith("# Data contracts") and "## `transactions`" in page
    True
    """
    return HEADER + "".join("\n" + render_table(c) for c in contracts.values())


if __name__ == "__main__":
    print(render_contracts_markdown(), end="")
