"""Ingest real CSV / Parquet files into the warehouse, checking every row against its contract.

The work happens in DuckDB, not in Python row loops:

1. The file is read into one temporary relation: CSV with every column as ``VARCHAR`` (so a bad
   value becomes a row-level problem instead of a crash), Parquet with its own types. Each row
   keeps its 1-based data row number in the file.
2. Every contract column gets a typed value (``TRY_CAST``) and every row gets the number of the
   first rule it breaks, in this order: per column (in contract order) type, null in a
   required column, allowed values, minimum, maximum; then the table checks; then foreign keys
   to other tables; then "primary key already in the warehouse"; then self-referencing foreign
   keys (resolved against the warehouse and the file's own valid rows); then duplicate primary
   keys within the file (the first valid occurrence is kept).
3. Valid rows go into the table, broken rows into ``quarantine`` with their reason and the raw
   row as JSON, and the file into ``ingest_log`` -- all in one transaction, so a crash or an
   error leaves the warehouse as it was.

In a file of at least :data:`WHOLE_COLUMN_MIN_VALUES` rows, a required column that is empty
throughout, or a column in which no value has the right type, is a file-level error (a wrong
column or format, e.g. decimal commas), not that many bad rows. A file already in
``ingest_log`` (same SHA-256 of its content, same table) is skipped, so loading the same file
twice adds nothing. A CSV line that does not parse (unbalanced double quote, wrong number of
fields) is found with DuckDB's reject tables and quarantined with its line number and text; the
other rows are read from a copy without those lines (see :func:`_salvage_csv`). Table checks
follow SQL ``CHECK`` semantics: a check that evaluates to null (because an optional column is
null) passes.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import gzip
import hashlib
import logging
import re
import shlex
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from customer360.data.contracts import (
    CONTRACTS,
    Column,
    DatePlausibility,
    TableContract,
    date_plausibility,
)
from customer360.data.warehouse import create_schema
from customer360.errors import IngestError

logger = logging.getLogger(__name__)

CHECKED = "_c360_checked"
ROW = "_c360_row"
RULE = "_c360_rule"
RAW_PREFIX = "_c360_raw_"
IDMAP = "_c360_idmap"
CUSTOMER_KEY = "customers.customer_id"

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet")
WHOLE_COLUMN_MIN_VALUES = 100
"""From this many rows on, a column that is wholly empty (required) or wholly of the wrong type
fails the file instead of quarantining every row."""
_STEPS = 5

# CSV dialect is fixed, not sniffed: the sniffer can silently treat lines starting with '#' as
# comments or skip "preamble" rows, which would drop data without a trace.
_CSV_OPTIONS = (
    "header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', "
    "comment = '', skip = 0, encoding = 'utf-8'"
)

# A timestamp text carrying an explicit UTC offset; DuckDB's cast to TIMESTAMP would ignore the
# offset, so such values are read as TIMESTAMPTZ and converted to naive UTC instead.
_OFFSET_PATTERN = r"\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$"

_INTEGER_TYPES = frozenset(
    {
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
        "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
    }
)

# Which Parquet type families can feed which contract type (values are then checked per row).
_ACCEPTS: dict[str, frozenset[str]] = {
    "VARCHAR": frozenset({"string", "integer"}),
    "DOUBLE": frozenset({"string", "integer", "number"}),
    "INTEGER": frozenset({"string", "integer", "number"}),
    "BIGINT": frozenset({"string", "integer", "number"}),
    "BOOLEAN": frozenset({"string", "boolean", "integer"}),
    "DATE": frozenset({"string", "date", "timestamp"}),
    "TIMESTAMP": frozenset({"string", "date", "timestamp"}),
}


@dataclass(frozen=True)
class IngestReport:
    """What one :func:`ingest_file` call did.

    ``rows_read == rows_loaded + rows_quarantined`` always. ``reasons`` counts quarantined rows
    per broken rule (e.g. ``"amount: not a valid DOUBLE"``); the per-row reason with the bad
    value is in the ``quarantine`` table.
    """

    table: str
    file: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    reasons: dict[str, int]
    skipped_duplicate_file: bool
    file_sha256: str = ""
    ignored_columns: tuple[str, ...] = ()
    """File columns that are not in the contract (kept only in quarantined rows' raw JSON)."""
    defaulted_columns: tuple[str, ...] = ()
    """Optional contract columns absent from the file, loaded as null."""
    top_reasons: list[tuple[str, int]] = field(default_factory=list)
    """``reasons`` sorted by count, largest first."""


@dataclass(frozen=True)
class _Rule:
    key: str
    """Short rule name, the key of :attr:`IngestReport.reasons`."""
    fails: str
    """SQL boolean over the checked relation: true when the row breaks the rule."""
    detail: str
    """SQL VARCHAR expression over the checked relation: the quarantine reason."""
    type_of: tuple[str, str, str] | None = None
    """For a type rule: (file column, raw column, contract type)."""


@dataclass(frozen=True)
class _Rekey:
    """Re-keyed ingest: ``columns`` hold record ids of source ``system``, mapped via IDMAP."""

    system: str
    columns: frozenset[str]


def _prepare_rekey(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    source_system: str | None,
    source_file: str,
) -> _Rekey | None:
    """Check that ``contract`` can be re-keyed from ``source_system`` and build the temporary
    map ``source_record_id -> customer_id`` (aliases followed to the surviving id)."""
    if source_system is None:
        return None
    columns = frozenset(
        c.name for c in contract.columns
        if c.references == CUSTOMER_KEY and c.name != contract.primary_key
    )
    if not columns:
        raise IngestError(
            f"--source {source_system} for {source_file}: table {contract.name} has no column "
            "referencing customers.customer_id, so there is nothing to re-key. Drop --source "
            "(customers get their rows from the golden records, source_records are ingested "
            "as they are)."
        )
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'identity_crosswalk' "
        "AND schema_name = current_schema()"
    ).fetchone()[0]
    if not exists:
        raise IngestError(
            f"--source {source_system} for {source_file}: the warehouse has no identity "
            "crosswalk yet. Ingest the source records (`customer360 ingest source_records "
            "FILE`) and run `customer360 identity run` first; nothing was ingested."
        )
    systems = [r[0] for r in con.execute(
        "SELECT DISTINCT source_system FROM identity_crosswalk ORDER BY 1").fetchall()]
    if source_system not in systems:
        raise IngestError(
            f"--source {source_system} for {source_file}: no record of source system "
            f"{source_system!r} is in identity_crosswalk (known systems: "
            f"{', '.join(systems) or 'none'}). Check the name, or ingest that system's "
            "source records and run `customer360 identity run`; nothing was ingested."
        )
    aliases = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'identity_aliases' "
        "AND schema_name = current_schema()"
    ).fetchone()[0]
    follow = (
        "coalesce((SELECT a.customer_id FROM identity_aliases a "
        "WHERE a.alias_id = c.customer_id), c.customer_id)" if aliases else "c.customer_id"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {IDMAP} AS SELECT c.source_record_id, "
        f"{follow} AS customer_id FROM identity_crosswalk c WHERE c.source_system = ?",
        [source_system],
    )
    return _Rekey(source_system, columns)


def _crash_point(step: str) -> None:
    """Called between the write steps of an ingest; does nothing.

    It exists so tests can simulate a crash half-way through (after the insert, before the
    quarantine and the log) and check that the transaction leaves the warehouse unchanged.
    """


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    table: str | TableContract,
    file: str | Path,
    column_map: Mapping[str, str] | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    source_system: str | None = None,
) -> IngestReport:
    """Load a CSV (``.csv``, ``.csv.gz``) or Parquet file into a warehouse table.

    Rows breaking the table's contract go to ``quarantine`` with their 1-based data row number
    and the reason; the rest are inserted. The whole file is one transaction (the function
    opens and commits it itself, so ``con`` must not be inside a transaction). A file whose
    content was already ingested into ``table`` is skipped.

    Parameters
    ----------
    con
        Writable warehouse connection (:func:`customer360.data.warehouse.connect`).
    table
        A raw table of :data:`customer360.data.contracts.CONTRACTS`, or a ``TableContract`` of
        a table outside that set (the caller creates that table first).
    file
        The CSV (comma-separated, UTF-8, header row) or Parquet file.
    column_map
        ``{file column: table column}`` renames applied before validation.
    on_progress
        Optional ``callback(done_steps, total_steps)``.
    source_system
        Re-keyed ingest (issue 14): the file's customer id columns (those referencing
        ``customers.customer_id``) hold this source system's record ids; each is mapped through
        ``identity_crosswalk`` (and ``identity_aliases``) to the unified ``customer_id``. A row
        whose id is not a record of that system goes to quarantine with a reason naming the
        system and the id.

    Raises
    ------
    IngestError
        For file-level problems (unknown table, unreadable / corrupt / empty file, missing
        required column, bad column map, Parquet column of an incompatible type). The warehouse
        is then unchanged.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from customer360.data.warehouse import connect
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "offers.csv").write_text(
    ...     "offer_id,product,category,kind,margin,channel,eligible_segments\\n"
    ...     "O1,Gold card,services,sales,12.5,email,A|B\\n"
    ...     "O2,Bad,services,sales,oops,email,A\\n")
    >>> con = connect(tmp / "w.duckdb", create=True)
    >>> r = ingest_file(con, "offers", tmp / "offers.csv")
    >>> (r.rows_read, r.rows_loaded, r.rows_quarantined, r.reasons)
    (2, 1, 1, {'margin: not a valid DOUBLE': 1})
    """
    contract = table if isinstance(table, TableContract) else _contract(table)
    table = contract.name
    path = _check_path(Path(file))
    source_file = str(path.resolve())
    column_map = dict(column_map or {})
    sha = _sha256(path)

    def progress(done: int) -> None:
        if on_progress is not None:
            on_progress(done, _STEPS)

    try:
        con.begin()
    except duckdb.Error as exc:
        raise IngestError(
            f"Cannot start the ingest transaction for {source_file}: {exc}. ingest_file manages "
            "its own transaction; commit or roll back the connection's open transaction first."
        ) from exc
    try:
        try:
            create_schema(con)
        except duckdb.Error as exc:
            raise IngestError(
                f"Cannot write to the warehouse to ingest {source_file}: {exc}. Open it "
                "writable (connect(path), not read_only) and make sure no other process holds it."
            ) from exc
        if _already_ingested(con, sha, table):
            con.rollback()
            logger.info("%s already ingested into %s; skipped", source_file, table)
            progress(_STEPS)
            return IngestReport(table, source_file, 0, 0, 0, {}, True, sha)
        rekeyed = _prepare_rekey(con, contract, source_system, source_file)
        report = _ingest_in_transaction(
            con, contract, path, source_file, sha, column_map, progress, rekeyed
        )
        con.commit()
    except BaseException:
        try:
            con.rollback()
        except duckdb.Error:  # keep the original error; the transaction is gone either way
            logger.exception("rollback of the ingest of %s failed", source_file)
        raise
    logger.info(
        "%s -> %s: read %d = loaded %d + quarantined %d",
        source_file, table, report.rows_read, report.rows_loaded, report.rows_quarantined,
    )
    return report


def _ingest_in_transaction(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    path: Path,
    source_file: str,
    sha: str,
    column_map: dict[str, str],
    progress: Callable[[int], None],
    rekeyed: _Rekey | None = None,
) -> IngestReport:
    reader = _reader_sql(path)
    with tempfile.TemporaryDirectory(prefix="c360-ingest-") as tmp:
        bad_lines: list[_BadLine] = []
        salvaged = None
        if _suffix(path) != ".parquet":
            # Probe on a connection of its own: a failed read aborts the ingest transaction.
            probe = duckdb.connect()
            try:
                probe.execute(f"SELECT count(*) FROM {reader}").fetchall()
            except duckdb.Error:
                salvaged = _salvage_csv(probe, path, Path(tmp))
            finally:
                probe.close()
        if salvaged is not None:
            clean, bad_lines = salvaged
            reader = _reader_sql(clean)
            file_columns = _describe(con, reader, source_file, clean)
        else:
            file_columns = _describe(con, reader, source_file, path)
        return _ingest_rows(
            con, contract, path, source_file, sha, column_map, progress, reader, file_columns,
            bad_lines, rekeyed,
        )


def _ingest_rows(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    path: Path,
    source_file: str,
    sha: str,
    column_map: dict[str, str],
    progress: Callable[[int], None],
    reader: str,
    file_columns: list[tuple[str, str]],
    bad_lines: list[_BadLine],
    rekeyed: _Rekey | None = None,
) -> IngestReport:
    try:
        sources, ignored, defaulted = _plan_columns(
            contract, file_columns, column_map, source_file
        )
    except IngestError:
        # An empty CSV reads as one made-up column; say "empty", not "missing columns".
        if con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {reader} LIMIT 1)").fetchone()[0]:
            raise
        raise _empty_error(source_file) from None
    file_types = dict(file_columns)
    if _suffix(path) == ".parquet":
        _check_parquet_types(contract, sources, file_types, source_file)
    raw_index = {name: i for i, (name, _) in enumerate(file_columns)}

    rules = _rules(contract, sources, raw_index, rekeyed)
    _build_checked(con, reader, contract, file_columns, sources, rules, source_file, rekeyed)
    rows_read = con.execute(f"SELECT count(*) FROM {CHECKED}").fetchone()[0]
    if rows_read == 0 and bad_lines:
        raise IngestError(
            f"Cannot read {source_file}: no line parses as CSV ({bad_lines[0].problem}, line "
            f"{bad_lines[0].line}). Nothing was ingested; check that it is a UTF-8, "
            "comma-separated CSV with a header row."
        )
    if rows_read == 0:
        raise _empty_error(source_file)
    if bad_lines:
        _renumber_around(con, bad_lines)
        rows_read += len(bad_lines)
    _check_whole_columns(con, contract, sources, raw_index, rules, rows_read, source_file)
    progress(1)
    _apply_late_rules(con, contract, rules)
    progress(2)

    cols = ", ".join(_q(c) for c in contract.column_names)
    rows_loaded = _count(
        con.execute(
            f"INSERT INTO {_q(contract.name)} ({cols}) "
            f"SELECT {cols} FROM {CHECKED} WHERE {RULE} IS NULL"
        )
    )
    _crash_point("after_insert")
    progress(3)

    now = datetime.now(UTC).replace(tzinfo=None)
    raw_json = "to_json(struct_pack({}))".format(
        ", ".join(f"{_q(name)} := {_raw(i)}" for i, (name, _) in enumerate(file_columns))
    )
    reason = "CASE {} {} END".format(
        RULE, " ".join(f"WHEN {i} THEN {r.detail}" for i, r in enumerate(rules))
    )
    rows_quarantined = _count(
        con.execute(
            f"INSERT INTO quarantine (table_name, source_file, row_number, reason, raw_row, "
            f"ingested_at) SELECT ?, ?, {ROW}, {reason}, {raw_json}, ? "
            f"FROM {CHECKED} WHERE {RULE} IS NOT NULL ORDER BY {ROW}",
            [contract.name, source_file, now],
        )
    )
    if bad_lines:
        con.executemany(
            "INSERT INTO quarantine (table_name, source_file, row_number, reason, raw_row, "
            "ingested_at) VALUES (?, ?, ?, ?, to_json(struct_pack(_line := ?)), ?)",
            [
                [contract.name, source_file, b.row, f"line {b.line}: {b.problem}", b.text, now]
                for b in bad_lines
            ],
        )
        rows_quarantined += len(bad_lines)
    _crash_point("after_quarantine")
    progress(4)

    counts = con.execute(
        f"SELECT {RULE}, count(*) FROM {CHECKED} WHERE {RULE} IS NOT NULL GROUP BY {RULE}"
    ).fetchall()
    reasons: dict[str, int] = {}
    for rule_index, n in counts:
        key = rules[rule_index].key
        reasons[key] = reasons.get(key, 0) + n
    if bad_lines:
        reasons[MALFORMED_LINE] = len(bad_lines)
    if rows_read != rows_loaded + rows_quarantined or sum(reasons.values()) != rows_quarantined:
        raise IngestError(
            f"Internal accounting error ingesting {source_file}: read {rows_read} != loaded "
            f"{rows_loaded} + quarantined {rows_quarantined}. Nothing was ingested; please "
            "report this."
        )
    con.execute(
        "INSERT INTO ingest_log (file_sha256, table_name, source_file, rows_read, rows_loaded, "
        "rows_quarantined, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [sha, contract.name, source_file, rows_read, rows_loaded, rows_quarantined, now],
    )
    _crash_point("after_log")
    con.execute(f"DROP TABLE {CHECKED}")
    if rekeyed is not None:
        con.execute(f"DROP TABLE {IDMAP}")
    progress(5)
    return IngestReport(
        table=contract.name,
        file=source_file,
        rows_read=rows_read,
        rows_loaded=rows_loaded,
        rows_quarantined=rows_quarantined,
        reasons=reasons,
        skipped_duplicate_file=False,
        file_sha256=sha,
        ignored_columns=tuple(ignored),
        defaulted_columns=tuple(defaulted),
        top_reasons=sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
    )


# --- file-level checks --------------------------------------------------------------------------


def _contract(table: str) -> TableContract:
    if table not in CONTRACTS:
        raise IngestError(
            f"Unknown table {table!r}. Valid tables: {', '.join(CONTRACTS)}."
        )
    return CONTRACTS[table]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def _check_path(path: Path) -> Path:
    if not path.exists():
        raise IngestError(f"File {path} does not exist. Check the path.")
    if not path.is_file():
        raise IngestError(f"{path} is not a file. Pass a .csv, .csv.gz or .parquet file.")
    if not _suffix(path):
        raise IngestError(
            f"Cannot ingest {path}: unsupported file type. Use a .csv, .csv.gz or .parquet file."
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise IngestError(f"Cannot read {path}: {exc.strerror or exc}. Check permissions.") from exc
    return digest.hexdigest()


def _already_ingested(con: duckdb.DuckDBPyConnection, sha: str, table: str) -> bool:
    return (
        con.execute(
            "SELECT count(*) FROM ingest_log WHERE file_sha256 = ? AND table_name = ?",
            [sha, table],
        ).fetchone()[0]
        > 0
    )


def _reader_sql(path: Path) -> str:
    literal = _lit(str(path.resolve()))
    if _suffix(path) == ".parquet":
        return f"read_parquet({literal})"
    return f"read_csv({literal}, {_CSV_OPTIONS})"


def _empty_error(source_file: str) -> IngestError:
    return IngestError(
        f"{source_file} has no data rows (it is empty or has only a header). Nothing was "
        "ingested; check that you exported the right file."
    )


def _read_error(source_file: str, exc: Exception) -> IngestError:
    """Turn DuckDB's long reader error into one line: what is wrong, where, how to fix it."""
    text = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    fields = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    original = re.search(r"Original Line: ?(.*)", text)
    if fields and line:
        detail = (
            f"line {line.group(1)} has {fields.group(2)} fields but the header has "
            f"{fields.group(1)}" + (f" ({original.group(1)[:100]!r})" if original else "")
        )
    elif "Invalid unicode" in text:
        detail = "it is not UTF-8 encoded" + (f" (near line {line.group(1)})" if line else "")
    elif "Error when sniffing file" in text:
        detail = (
            "it cannot be parsed as CSV (lines with different numbers of fields, unbalanced "
            "quotes, or not text at all)"
        )
    else:
        first = text.splitlines()[0] if text else type(exc).__name__
        detail = re.sub(r"^[A-Za-z ]*Error: ", "", first).rstrip(".")
    if source_file.lower().endswith(".parquet"):
        hint = "Check that it is a complete, uncorrupted Parquet file."
    else:
        hint = (
            "It must be a UTF-8, comma-separated CSV with a header row, balanced double quotes "
            "and the same number of fields on every line (gzip-compressed if it ends in .gz)."
        )
    return IngestError(f"Cannot read {source_file}: {detail}. {hint}")


def _csv_lines(path: Path):
    opener = gzip.open if _suffix(path) == ".csv.gz" else open
    return opener(path, "rt", encoding="utf-8", newline="")


def _csv_header(path: Path) -> list[str]:
    """The CSV's header fields as written (DuckDB renames a duplicate ``a`` to ``a_1``)."""
    try:
        with _csv_lines(path) as fh:
            return next(csv.reader(fh), [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return []  # DuckDB's reader reports an unreadable file with its own message


def _first_malformed_line(path: Path) -> str | None:
    """Where a CSV stops being well formed: the 1-based physical line of the first record
    whose field count differs from the header's, or that a never-closed quote runs on from.
    Only read on the error path (DuckDB's sniffer names no line for these)."""
    try:
        with _csv_lines(path) as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None)
            if header is None:
                return None
            start = reader.line_num + 1
            try:
                for record in reader:
                    end = reader.line_num
                    if len(record) != len(header):
                        spans = (
                            f"; a double quote opened on line {start} is not closed before "
                            f"line {end}" if end > start else ""
                        )
                        return (
                            f"line {start} has {len(record)} fields but the header has "
                            f"{len(header)}{spans}"
                        )
                    start = end + 1
            except csv.Error as exc:
                return f"line {start} is malformed ({exc}; an unbalanced double quote?)"
    except (OSError, EOFError, UnicodeDecodeError):
        return None  # not UTF-8 text at all: DuckDB's own message says so
    return None


MALFORMED_LINE = "malformed CSV line"
"""Key in :attr:`IngestReport.reasons` of lines quarantined because they do not parse as CSV."""
_MAX_SALVAGE_SCANS = 50


@dataclass(frozen=True)
class _BadLine:
    line: int
    """1-based physical line of the file (the header is line 1)."""
    row: int
    """1-based data row it would have been (``line - 1`` unless a quoted field before it spans
    lines); the salvaged rows are renumbered around it (:func:`_renumber_around`)."""
    problem: str
    text: str


def _salvage_csv(
    con: duckdb.DuckDBPyConnection, path: Path, tmp: Path
) -> tuple[Path, list[_BadLine]] | None:
    """Find the lines that break a CSV with DuckDB's reject tables (``store_rejects``) and
    write the file without them to ``tmp``; ``None`` when the file is not salvageable (no
    header, not UTF-8, or too many unterminated quotes).

    The header fixes the columns (the sniffer is what fails on these files). A field-count
    error rejects one line and the scan goes on; an unterminated quote swallows the rest of the
    file, so its line is dropped and the file scanned again (at most ``_MAX_SALVAGE_SCANS``)."""
    header = _csv_header(path)
    if not header or len(set(header)) != len(header):
        return None
    try:
        with _csv_lines(path) as fh:
            lines = fh.readlines()
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    columns = "{" + ", ".join(f"{_lit(h)}: 'VARCHAR'" for h in header) + "}"
    clean = tmp / "salvaged.csv"
    bad: dict[int, tuple[int, str]] = {}  # 0-based index into lines -> (data row, problem)
    for _ in range(_MAX_SALVAGE_SCANS):
        kept = [i for i in range(len(lines)) if i not in bad]
        starts = [0]  # byte offset of each kept line in the salvaged copy
        for i in kept:
            starts.append(starts[-1] + len(lines[i].encode("utf-8")))
        clean.write_text("".join(lines[i] for i in kept), encoding="utf-8")
        con.execute("DROP TABLE IF EXISTS _c360_rejects")
        con.execute("DROP TABLE IF EXISTS _c360_reject_scans")
        try:
            con.execute(
                f"SELECT count(*) FROM read_csv({_lit(str(clean))}, {_CSV_OPTIONS}, "
                f"auto_detect = false, columns = {columns}, store_rejects = true, "
                "rejects_table = '_c360_rejects', rejects_scan = '_c360_reject_scans')"
            ).fetchall()
            rejects = con.execute(
                "SELECT line, line_byte_position, CAST(error_type AS VARCHAR), error_message, "
                "contains(csv_line, chr(10)) FROM _c360_rejects ORDER BY line"
            ).fetchall()
        except duckdb.Error:
            return None
        finally:
            con.execute("DROP TABLE IF EXISTS _c360_rejects")
            con.execute("DROP TABLE IF EXISTS _c360_reject_scans")
        if not rejects:
            break
        rescan = False
        for record, offset, kind, message, spans in rejects:
            # ``line`` counts records (a quoted field may span lines); the byte offset finds
            # the physical line.
            at = bisect.bisect_right(starts, offset or 0) - 1
            if kind == "INVALID ENCODING" or not 0 < at < len(kept) or record < 2:
                return None
            line = at + 1
            if kind == "UNQUOTED VALUE" or spans:
                problem, rescan = "a double quote is opened and never closed", True
            elif kind in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
                found = len(next(csv.reader([lines[kept[line - 1]]]), []))
                problem = f"{found} fields but the header has {len(header)}"
            else:
                problem = (message or kind).rstrip(".")
            index = kept[line - 1]
            row = record - 1 + index - at  # plus the bad lines left out of this copy before it
            bad[index] = (row, problem)
            if rescan:
                break  # the rest of the file was read as part of that quote: scan again
    else:
        return None
    return clean, [
        _BadLine(i + 1, row, problem, lines[i].rstrip("\r\n"))
        for i, (row, problem) in sorted(bad.items())
    ]


def _renumber_around(con: duckdb.DuckDBPyConnection, bad_lines: list[_BadLine]) -> None:
    """Give the rows read from the salvaged copy their data row number in the original file."""
    # The k-th bad row (1-based, sorted) has row - k good rows before it; a salvaged row r
    # moves down by the number of bad rows with fewer than r good rows before them.
    before = [b.row - k for k, b in enumerate(bad_lines, start=1)]
    con.execute(
        f"UPDATE {CHECKED} SET {ROW} = {ROW} + (SELECT count(*) FROM "
        f"(SELECT unnest(?::BIGINT[]) AS g) WHERE g < {CHECKED}.{ROW})",
        [before],
    )


def _describe(
    con: duckdb.DuckDBPyConnection, reader: str, source_file: str, path: Path | None = None
) -> list[tuple[str, str]]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    except duckdb.Error as exc:
        error = _read_error(source_file, exc)
        named = re.search(r"line \d", str(error))
        if path is not None and _suffix(path) != ".parquet" and not named:
            where = _first_malformed_line(path)
            if where:
                raise IngestError(f"Cannot read {source_file}: {where}. Fix that line (or "
                                  "quote its fields) and ingest again.") from exc
        raise error from exc
    if path is not None and _suffix(path) != ".parquet":
        header = _csv_header(path)
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise IngestError(
                f"{source_file}: the header names column(s) {', '.join(map(repr, twice))} more "
                "than once, so it is ambiguous which one to load. Rename or drop the "
                "duplicates and ingest again."
            )
    return [(row[0], row[1]) for row in rows]


def _plan_columns(
    contract: TableContract,
    file_columns: list[tuple[str, str]],
    column_map: dict[str, str],
    source_file: str,
) -> tuple[dict[str, str | None], list[str], list[str]]:
    """Map each contract column to the file column feeding it (``None``: absent, nullable)."""
    names = [name for name, _ in file_columns]
    listed = ", ".join(names)
    for src, dst in column_map.items():
        if src not in names:
            raise IngestError(
                f"--map {src}={dst}: {source_file} has no column {src!r}. Its columns are: "
                f"{listed}."
            )
        if dst not in contract.column_names:
            raise IngestError(
                f"--map {src}={dst}: table {contract.name} has no column {dst!r}. Its columns "
                f"are: {', '.join(contract.column_names)}."
            )
    feeding: dict[str, str] = {}
    ignored: list[str] = []
    for name in names:
        target = column_map.get(name, name)
        if target not in contract.column_names:
            ignored.append(name)
            continue
        if target in feeding:
            raise IngestError(
                f"{source_file}: both columns {feeding[target]!r} and {name!r} would load into "
                f"{contract.name}.{target}. Drop one or map it elsewhere with --map."
            )
        feeding[target] = name
    missing = [c for c in contract.required_columns if c not in feeding]
    if missing:
        suggestions = [
            "--map " + shlex.quote(f"{name}={col}")
            for col in missing
            for name in ignored
            if name.strip().lower().replace(" ", "_") == col
        ] or [f"--map FILE_COLUMN={missing[0]}"]
        raise IngestError(
            f"{source_file} lacks required column(s) {', '.join(missing)} of table "
            f"{contract.name}. The file has columns: {listed}. Rename the column(s) in the file "
            f"or map them, e.g. {' '.join(suggestions)}."
        )
    sources = {c: feeding.get(c) for c in contract.column_names}
    defaulted = [c for c, src in sources.items() if src is None]
    if ignored:
        logger.info(
            "%s: columns not in table %s are ignored: %s", source_file, contract.name, ignored
        )
    return sources, ignored, defaulted


def _family(duckdb_type: str) -> str:
    t = duckdb_type.upper()
    if t.endswith("]") or t.startswith(("STRUCT", "MAP", "UNION")):
        return "nested"
    if t == "VARCHAR":
        return "string"
    if t in _INTEGER_TYPES:
        return "integer"
    if t in ("FLOAT", "DOUBLE") or t.startswith("DECIMAL"):
        return "number"
    if t == "BOOLEAN":
        return "boolean"
    if t == "DATE":
        return "date"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    return "other"


def _check_parquet_types(
    contract: TableContract,
    sources: dict[str, str | None],
    file_types: dict[str, str],
    source_file: str,
) -> None:
    for target, src in sources.items():
        if src is None:
            continue
        dtype = contract.column(target).dtype.upper()
        family = _family(file_types[src])
        if family not in _ACCEPTS.get(dtype, frozenset({"string", family})):
            raise IngestError(
                f"{source_file}: column {src!r} (loading into {contract.name}.{target}) has "
                f"Parquet type {file_types[src]}, which cannot be converted to {dtype}. Fix the "
                "file's schema (or export it as CSV) or map another column with --map."
            )


# --- row-level rules ----------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _raw(i: int) -> str:
    return _q(f"{RAW_PREFIX}{i}")


def format_bound(x: float) -> str:
    """A contract bound as written in reasons and docs: ``1`` not ``1.0``, ``1e-09`` as is."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _shown(expr: str) -> str:
    """SQL rendering of a value inside a reason: quoted, at most 80 characters."""
    return f"'''' || left(CAST({expr} AS VARCHAR), 80) || ''''"


def _typed_expr(col: Column, raw: str | None, raw_type: str | None) -> str:
    dtype = col.dtype.upper()
    if raw is None:
        return f"CAST(NULL AS {dtype})"
    family = _family(raw_type or "VARCHAR")
    if dtype == "VARCHAR":
        return raw if family == "string" else f"CAST({raw} AS VARCHAR)"
    if dtype == "TIMESTAMP" and family == "string":
        return (
            f"CASE WHEN regexp_matches({raw}, {_lit(_OFFSET_PATTERN)}) "
            f"THEN timezone('UTC', TRY_CAST({raw} AS TIMESTAMPTZ)) "
            f"ELSE TRY_CAST({raw} AS TIMESTAMP) END"
        )
    if dtype == "TIMESTAMP" and (raw_type or "").upper() == "TIMESTAMP WITH TIME ZONE":
        return f"timezone('UTC', {raw})"
    return f"TRY_CAST({raw} AS {dtype})"


def _type_ok(col: Column, raw: str, typed: str) -> str | None:
    """SQL boolean: the non-null raw value converted faithfully (``None``: cannot fail)."""
    dtype = col.dtype.upper()
    if dtype == "VARCHAR":
        return None
    if dtype in ("DOUBLE", "FLOAT"):
        return f"isfinite({typed})"
    if dtype in _INTEGER_TYPES:
        # DuckDB rounds '1.5' to 2 when casting to an integer; refuse instead of altering data.
        return f"{typed} IS NOT NULL AND TRY_CAST({raw} AS DOUBLE) = {typed}"
    return f"{typed} IS NOT NULL"


def _rules(
    contract: TableContract,
    sources: dict[str, str | None],
    raw_index: dict[str, int],
    rekeyed: _Rekey | None = None,
) -> list[_Rule]:
    """Every row rule of the contract, in the order the first failure is reported."""
    dates = date_plausibility()
    rules: list[_Rule] = []
    for col in contract.columns:
        src = sources[col.name]
        value = _q(col.name)
        raw = _raw(raw_index[src]) if src is not None else None
        prefix = f"'column {col.name}: '"
        if rekeyed is not None and col.name in rekeyed.columns and raw is not None:
            system = rekeyed.system
            rules.append(
                _Rule(
                    key=f"{col.name}: unknown record id of source system {system}",
                    fails=f"{raw} IS NOT NULL AND {value} IS NULL",
                    detail=(
                        f"{prefix} || {_shown(raw)} || "
                        + _lit(
                            f" is not a known record id of source system {system} "
                            "(identity_crosswalk); ingest that record into source_records "
                            "and run `customer360 identity run`, then ingest this row again"
                        )
                    ),
                )
            )
        if raw is not None:
            ok = _type_ok(col, raw, value)
            if ok is not None:
                rules.append(
                    _Rule(
                        key=f"{col.name}: not a valid {col.dtype}",
                        fails=f"{raw} IS NOT NULL AND NOT coalesce({ok}, false)",
                        detail=f"{prefix} || {_shown(raw)} || ' is not a valid {col.dtype}'",
                        type_of=(src, raw, col.dtype),
                    )
                )
        if not col.nullable:
            rules.append(
                _Rule(
                    key=f"{col.name}: null in a required column",
                    fails=f"{value} IS NULL",
                    detail=f"{prefix} || 'null in a required column'",
                )
            )
        if col.allowed is not None:
            allowed = ", ".join(_lit(v) for v in col.allowed)
            listing = _lit(f" is not an allowed value (allowed: {', '.join(col.allowed)})")
            rules.append(
                _Rule(
                    key=f"{col.name}: value not allowed",
                    fails=f"CAST({value} AS VARCHAR) NOT IN ({allowed})",
                    detail=f"{prefix} || {_shown(value)} || {listing}",
                )
            )
        for bound, op, side in ((col.min, "<", "below"), (col.max, ">", "above")):
            if bound is None:
                continue
            limit = f"{'minimum' if side == 'below' else 'maximum'} {format_bound(bound)}"
            rules.append(
                _Rule(
                    key=f"{col.name}: {side} {limit}",
                    fails=f"{value} {op} {format_bound(bound)}",
                    detail=(
                        f"{prefix} || CAST({value} AS VARCHAR) || "
                        f"{_lit(f' is {side} the {limit}')}"
                    ),
                )
            )
        rules.extend(_plausibility_rules(col, value, prefix, dates))
    for name, expr in contract.checks:
        rules.append(
            _Rule(
                key=f"check {name} failed",
                fails=f"NOT coalesce(({expr}), true)",
                detail=_lit(f"check {name} failed: {expr}"),
            )
        )
    for col in contract.columns:
        if col.references and _ref(col)[0] != contract.name:
            ref_table, ref_col = _ref(col)
            rules.append(
                _Rule(
                    key=f"{col.name}: not found in {col.references}",
                    fails=(
                        f"{_q(col.name)} IS NOT NULL AND {_q(col.name)} NOT IN "
                        f"(SELECT {_q(ref_col)} FROM {_q(ref_table)})"
                    ),
                    detail=(
                        f"'column {col.name}: ' || {_shown(_q(col.name))} || "
                        f"{_lit(f' not found in {col.references}')}"
                    ),
                )
            )
    pk = _q(contract.primary_key)
    rules.append(
        _Rule(
            key=f"duplicate primary key {contract.primary_key} already in warehouse",
            fails=f"{pk} IN (SELECT {pk} FROM {_q(contract.name)})",
            detail=(
                f"'duplicate primary key {contract.primary_key}=' || {_shown(pk)} || "
                "' already in warehouse'"
            ),
        )
    )
    return rules + _late_rules(contract)


def _plausibility_rules(
    col: Column, value: str, prefix: str, dates: DatePlausibility
) -> list[_Rule]:
    """Length of a text, and dates between the earliest date and now (plus the tolerance),
    or the latest planned date for a planned column."""
    rules = []
    dtype = col.dtype.upper()
    if col.max_length is not None:
        limit = f"longer than {col.max_length} characters"
        rules.append(_Rule(
            key=f"{col.name}: {limit}",
            fails=f"length({value}) > {col.max_length}",
            detail=f"{prefix} || 'a value of ' || CAST(length({value}) AS VARCHAR) || "
                   f"{_lit(f' characters is {limit}')}",
        ))
    if dtype in ("DATE", "TIMESTAMP"):
        earliest = dates.earliest_date.isoformat()
        rules.append(_Rule(
            key=f"{col.name}: before the earliest date {earliest}",
            fails=f"{value} < DATE {_lit(earliest)}",
            detail=f"{prefix} || {_shown(value)} || {_lit(f' is before {earliest}')}",
        ))
        if col.planned:
            latest = dates.latest_planned_date.isoformat()
            key, bound = f"after the latest planned date {latest}", f"DATE {_lit(latest)}"
        else:
            days = dates.future_tolerance_days
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=days)
            key = f"more than {days} day(s) in the future"
            bound = f"TIMESTAMP {_lit(now.isoformat(sep=' ', timespec='seconds'))}"
        rules.append(_Rule(
            key=f"{col.name}: {key}",
            fails=f"{value} > {bound}",
            detail=f"{prefix} || {_shown(value)} || {_lit(f' is {key}')}",
        ))
    return rules


def _late_rules(contract: TableContract) -> list[_Rule]:
    """Rules that need the other rows of the file; applied by :func:`_apply_late_rules`."""
    rules = []
    for col in contract.columns:
        if col.references and _ref(col)[0] == contract.name:
            rules.append(
                _Rule(
                    key=f"{col.name}: not found in {col.references}",
                    fails="",
                    detail=(
                        f"'column {col.name}: ' || {_shown(_q(col.name))} || "
                        + _lit(
                            f" not found in {col.references} "
                            "(nor among the valid rows of this file)"
                        )
                    ),
                )
            )
    pk = _q(contract.primary_key)
    rules.append(
        _Rule(
            key=f"duplicate primary key {contract.primary_key} within the file",
            fails="",
            detail=(
                f"'duplicate primary key {contract.primary_key}=' || {_shown(pk)} || "
                f"' within the file (first at row ' || CAST((SELECT min(d.{ROW}) FROM {CHECKED} d "
                f"WHERE d.{pk} = {CHECKED}.{pk} AND d.{RULE} IS NULL) AS VARCHAR) || ')'"
            ),
        )
    )
    return rules


def _ref(col: Column) -> tuple[str, str]:
    table, _, column = (col.references or "").partition(".")
    return table, column


def _build_checked(
    con: duckdb.DuckDBPyConnection,
    reader: str,
    contract: TableContract,
    file_columns: list[tuple[str, str]],
    sources: dict[str, str | None],
    rules: list[_Rule],
    source_file: str,
    rekeyed: _Rekey | None = None,
) -> None:
    """Materialise the file once: row number, raw columns, typed columns, first broken rule."""
    raw_select = ", ".join(
        f"{_q(name)} AS {_raw(i)}" for i, (name, _) in enumerate(file_columns)
    )
    index = {name: i for i, (name, _) in enumerate(file_columns)}
    types = dict(file_columns)
    def typed(col: Column, src: str | None) -> str:
        expr = _typed_expr(col, _raw(index[src]) if src else None, types.get(src) if src else None)
        if rekeyed is not None and col.name in rekeyed.columns and src is not None:
            # The source system's record id -> the unified id (null when unknown).
            raw = _raw(index[src])
            expr = (f"(SELECT m.customer_id FROM {IDMAP} m "
                    f"WHERE m.source_record_id = CAST({raw} AS VARCHAR))")
        return expr

    typed_select = ", ".join(
        f"{typed(col, sources[col.name])} AS {_q(col.name)}" for col in contract.columns
    )
    eager = [(i, r) for i, r in enumerate(rules) if r.fails]
    case = "CASE {} END".format(" ".join(f"WHEN {r.fails} THEN {i}" for i, r in eager))
    sql = (
        f"CREATE OR REPLACE TEMP TABLE {CHECKED} AS "
        f"WITH src AS (SELECT row_number() OVER () AS {ROW}, {raw_select} FROM {reader}), "
        f"typed AS (SELECT *, {typed_select} FROM src) "
        f"SELECT *, {case} AS {RULE} FROM typed"
    )
    try:
        con.execute(sql)
    except (duckdb.InvalidInputException, duckdb.IOException, duckdb.ConversionException) as exc:
        raise _read_error(source_file, exc) from exc


def _check_whole_columns(
    con: duckdb.DuckDBPyConnection,
    contract: TableContract,
    sources: dict[str, str | None],
    raw_index: dict[str, int],
    rules: list[_Rule],
    rows_read: int,
    source_file: str,
) -> None:
    """Refuse the file when a whole column is wrong rather than some rows: a required column
    that is empty in every row, or a column in which every value has the wrong type (the wrong
    column, or a format such as decimal commas). Only for files of at least
    :data:`WHOLE_COLUMN_MIN_VALUES` rows, so small files still quarantine row by row."""
    if rows_read < WHOLE_COLUMN_MIN_VALUES:
        return
    required = [c for c in contract.required_columns if sources[c] is not None]
    typed = [r for r in rules if r.type_of is not None]
    aggregates = [f"count({_raw(raw_index[sources[c]])})" for c in required] + [
        f"count({raw}), count(*) FILTER (WHERE {r.fails}), "
        f"arg_min({raw}, {ROW}) FILTER (WHERE {r.fails}), min({ROW}) FILTER (WHERE {r.fails})"
        for r in typed
        for raw in [r.type_of[1]]
    ]
    stats = con.execute(f"SELECT {', '.join(aggregates)} FROM {CHECKED}").fetchone()
    for col, present in zip(required, stats, strict=False):
        if present == 0:
            raise IngestError(
                f"{source_file}: column {sources[col]!r} (loading into {contract.name}.{col}, "
                f"which is required) is empty in all {rows_read:,} rows. Fill it, or map the "
                "right column with --map; nothing was ingested."
            )
    for i, rule in enumerate(typed):
        present, bad, example, row = stats[len(required) + 4 * i : len(required) + 4 * i + 4]
        if present >= WHOLE_COLUMN_MIN_VALUES and bad == present:
            src, _, dtype = rule.type_of
            target = rule.key.split(":")[0]
            raise IngestError(
                f"{source_file}: column {src!r} (loading into {contract.name}.{target}) has no "
                f"valid {dtype} value: all {present:,} non-empty values fail, e.g. "
                f"{str(example)[:80]!r} at row {row}. Check the file's number/date format or "
                "the --map; nothing was ingested."
            )


def _apply_late_rules(
    con: duckdb.DuckDBPyConnection, contract: TableContract, rules: list[_Rule]
) -> None:
    """Self-referencing foreign keys (to a fixpoint) and in-file duplicate primary keys."""
    index = {r.key: i for i, r in enumerate(rules) if not r.fails}
    for col in contract.columns:
        if not (col.references and _ref(col)[0] == contract.name):
            continue
        ref_col = _q(_ref(col)[1])
        rule = index[f"{col.name}: not found in {col.references}"]
        value = _q(col.name)
        # A row may reference another row of the same file, but only one that is itself loaded;
        # repeat until no more rows lose their reference.
        while _count(
            con.execute(
                f"UPDATE {CHECKED} SET {RULE} = {rule} WHERE {RULE} IS NULL "
                f"AND {value} IS NOT NULL AND {value} NOT IN "
                f"(SELECT {ref_col} FROM {_q(contract.name)} UNION ALL "
                f"SELECT {ref_col} FROM {CHECKED} WHERE {RULE} IS NULL AND {ref_col} IS NOT NULL)"
            )
        ):
            pass
    pk = _q(contract.primary_key)
    rule = index[f"duplicate primary key {contract.primary_key} within the file"]
    con.execute(
        f"UPDATE {CHECKED} SET {RULE} = {rule} WHERE {ROW} IN ("
        f"SELECT {ROW} FROM (SELECT {ROW}, row_number() OVER (PARTITION BY {pk} ORDER BY {ROW}) "
        f"AS k FROM {CHECKED} WHERE {RULE} IS NULL) WHERE k > 1)"
    )


def _count(result: duckdb.DuckDBPyConnection) -> int:
    row = result.fetchone()
    return int(row[0]) if row else 0


# --- helpers for the CLI ------------------------------------------------------------------------


def parse_column_map(items: list[str] | None) -> dict[str, str]:
    """Parse ``["src=dst", ...]`` (the CLI's repeated ``--map``) into ``{src: dst}``.

    Examples
    --------
    >>> parse_column_map(["TxnID=transaction_id", "cust=customer_id"])
    {'TxnID': 'transaction_id', 'cust': 'customer_id'}
    """
    mapping: dict[str, str] = {}
    for item in items or []:
        src, sep, dst = item.partition("=")
        src, dst = src.strip(), dst.strip()
        if not sep or not src or not dst:
            raise IngestError(
                f"--map expects SOURCE_COLUMN=TABLE_COLUMN, got {item!r}; "
                "e.g. --map TxnID=transaction_id"
            )
        if src in mapping and mapping[src] != dst:
            raise IngestError(
                f"--map gives file column {src!r} two targets: {mapping[src]!r} and {dst!r}."
            )
        mapping[src] = dst
    return mapping


def read_quarantine(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str | None = None,
    source_file: str | Path | None = None,
    limit: int = 20,
) -> tuple[list[dict], int]:
    """The newest quarantined rows (optionally of one table / file) and how many there are.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from customer360.data.warehouse import connect
    >>> con = connect(pathlib.Path(tempfile.mkdtemp()) / "w.duckdb", create=True)
    >>> read_quarantine(con, table="customers")
    ([], 0)
    """
    if table is not None:
        _contract(table)
    where, params = [], []
    if table is not None:
        where.append("table_name = ?")
        params.append(table)
    if source_file is not None:
        where.append("source_file = ?")
        params.append(str(Path(source_file).resolve()))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    total = con.execute(f"SELECT count(*) FROM quarantine {clause}", params).fetchone()[0]
    cur = con.execute(
        "SELECT table_name, source_file, row_number, reason, raw_row, ingested_at "
        f"FROM quarantine {clause} ORDER BY ingested_at DESC, source_file, row_number LIMIT ?",
        [*params, int(limit)],
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()], total
