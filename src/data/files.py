"""The one reader of users' CSV / Parquet files (tables, logs, transaction files).

Every command that takes a file reads it here, so suffixes, error messages and the checks
(missing file, unknown format, 0 bytes, header only, corrupt content) agree everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from customer360.errors import ConfigError, Customer360Error

FileFormat = Literal["csv", "tsv", "parquet"]
SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".txt": "csv",
    ".gz": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""File suffix -> format (``.gz``: gzip-compressed CSV)."""


def file_format(
    path: str | Path, *, what: str = "Table file", error: type[Customer360Error] = ConfigError
) -> FileFormat:
    """The format of an existing file from its suffix; ``error`` names ``what`` and the fix.

    Examples
    --------
    >>> file_format("orders.pq", what="Log file")  # doctest: +SKIP
    'parquet'
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; pass the path of a CSV or Parquet file.")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise error(
            f"Cannot read {path}: unknown format {path.suffix!r}; use a .csv, .tsv or .parquet "
            "file."
        )
    return fmt


def duckdb_reader(path: str | Path) -> str:
    """The DuckDB table function that reads ``path`` (``read_parquet`` or ``read_csv``)."""
    return "read_parquet" if SUFFIXES.get(Path(path).suffix.lower()) == "parquet" else "read_csv"


def read_file(
    path: str | Path,
    *,
    what: str = "Table file",
    error: type[Customer360Error] = ConfigError,
    dtype: str | None = None,
    blanks_only: bool = False,
) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file into a frame with at least one row.

    Parameters
    ----------
    path
        The file; its suffix picks the format (:data:`SUFFIXES`).
    what, error
        How messages name the file (``"Log file"``) and the exception raised.
    dtype
        Read every column as this type (e.g. ``"string"``); ``None`` lets pandas type them.
    blanks_only
        CSV / TSV: only an empty field is missing; text such as ``NA`` or ``null`` stays text
        (names and codes of source records can be exactly that).

    Examples
    --------
    >>> read_file("customers.csv")  # doctest: +SKIP
    """
    path = Path(path)
    fmt = file_format(path, what=what, error=error)
    if path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes); pass a file with a header and at least "
                    "one data row.")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
            frame = frame.astype(dtype) if dtype else frame
        else:
            blanks = {"keep_default_na": False, "na_values": [""]} if blanks_only else {}
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=dtype, **blanks)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        # pyarrow's ArrowInvalid and pandas' EmptyDataError / ParserError are ValueErrors.
        reason = " ".join(str(exc).split())[:300]
        raise error(f"Cannot read {what.lower()} {path}: {reason}. Check that it is a valid "
                    f"{fmt.upper()} file.") from exc
    if frame.empty:
        raise error(f"{what} {path} has no data rows (columns: "
                    f"{', '.join(map(str, frame.columns[:10])) or 'none'}); add rows.")
    return frame
