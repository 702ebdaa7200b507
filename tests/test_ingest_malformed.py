"""Ingest of a CSV with malformed lines: each bad line is quarantined with its line number and
text, the good rows load, counts reconcile, the file stays idempotent; a file of which nothing
parses is refused whole. Tiny files, real DuckDB file in tmp_path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from customer360.data.contracts import CONTRACTS
from customer360.data.ingest import MALFORMED_LINE, ingest_file
from customer360.data.warehouse import connect
from customer360.errors import IngestError

COLUMNS = CONTRACTS["customers"].column_names


def line(cid: str) -> str:
    values = {
        "customer_id": cid, "customer_type": "B2C", "age_band": "25-34", "gender": "F",
        "region": "north", "city": "Oslo", "acquisition_channel": "referral",
        "signup_date": "2024-01-01",
    }
    return ",".join(values.get(c, "") for c in COLUMNS)


def write(tmp_path: Path, third: str) -> Path:
    """Five data rows; the third (line 4 of the file, after the header) is ``third``."""
    rows = [line("C1"), line("C2"), third, line("C4"), line("C5")]
    path = tmp_path / "customers.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


BAD_LINES = {
    "unbalanced quote": (line("C3").replace("Oslo", '"Oslo'), "double quote"),
    "too few fields": ("C3,B2C,25-34", "3 fields but the header has"),
    "too many fields": (line("C3") + ",extra,more", "fields but the header has"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_is_quarantined_and_the_rest_loads(tmp_path: Path, case: str) -> None:
    bad, problem = BAD_LINES[case]
    path = write(tmp_path, bad)
    con = connect(tmp_path / "w.duckdb", create=True)
    report = ingest_file(con, "customers", path)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (5, 4, 1)
    assert report.rows_read == report.rows_loaded + report.rows_quarantined
    assert report.reasons == {MALFORMED_LINE: 1}
    loaded = [r[0] for r in con.execute(
        "SELECT customer_id FROM customers ORDER BY customer_id").fetchall()]
    assert loaded == ["C1", "C2", "C4", "C5"]
    rows = con.execute("SELECT row_number, reason, raw_row FROM quarantine").fetchall()
    assert len(rows) == 1
    row_number, reason, raw = rows[0]
    assert row_number == 3
    assert reason.startswith("line 4: ") and problem in reason
    assert json.loads(raw) == {"_line": bad}
    logged = con.execute("SELECT rows_read, rows_loaded, rows_quarantined FROM ingest_log")
    assert logged.fetchall() == [(5, 4, 1)]


def test_reingest_of_a_salvaged_file_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "C3,B2C")
    con = connect(tmp_path / "w.duckdb", create=True)
    assert ingest_file(con, "customers", path).rows_loaded == 4
    again = ingest_file(con, "customers", path)
    assert again.skipped_duplicate_file
    assert con.execute("SELECT count(*) FROM customers").fetchone()[0] == 4
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1


def test_good_rows_after_a_bad_line_keep_their_row_numbers(tmp_path: Path) -> None:
    """A row broken by a contract rule after a malformed line is quarantined under its own
    data row number in the original file, not its position in the salvaged copy."""
    path = write(tmp_path, "C3,B2C")
    text = path.read_text().replace(line("C5"), line("C5").replace("B2C", "nonsense"))
    path.write_text(text)
    con = connect(tmp_path / "w.duckdb", create=True)
    report = ingest_file(con, "customers", path)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (5, 3, 2)
    rows = con.execute("SELECT row_number FROM quarantine ORDER BY row_number").fetchall()
    assert rows == [(3,), (5,)]


def test_binary_file_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(bytes(range(256)) * 8)
    con = connect(tmp_path / "w.duckdb", create=True)
    with pytest.raises(IngestError, match=r"customers\.csv: it cannot be parsed as CSV"):
        ingest_file(con, "customers", path)
    assert con.execute("SELECT count(*) FROM ingest_log").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def test_file_whose_every_line_is_malformed_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(",".join(COLUMNS) + "\nC1,B2C\nC2\n", encoding="utf-8")
    con = connect(tmp_path / "w.duckdb", create=True)
    with pytest.raises(IngestError, match=r"no line parses as CSV .*line 2"):
        ingest_file(con, "customers", path)
    assert con.execute("SELECT count(*) FROM ingest_log").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def test_bad_line_past_the_sniffer_sample_in_a_gzip_file(tmp_path: Path) -> None:
    """The sniffer reads only the start; a ragged line 3002 of a .csv.gz is still found."""
    rows = [line(f"C{i}") for i in range(1, 3001)] + [line("C3001") + ",x"]
    path = tmp_path / "customers.csv.gz"
    path.write_bytes(gzip.compress((",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n").encode()))
    con = connect(tmp_path / "w.duckdb", create=True)
    report = ingest_file(con, "customers", path)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (3001, 3000, 1)
    reason, row_number = con.execute("SELECT reason, row_number FROM quarantine").fetchone()
    assert row_number == 3001
    assert reason == f"line 3002: {len(COLUMNS) + 1} fields but the header has {len(COLUMNS)}"


def test_quoted_field_spanning_lines_before_a_bad_line(tmp_path: Path) -> None:
    """A valid quoted field with a newline shifts records against physical lines: the bad
    line is still named by its physical line and quarantined under its data row."""
    rows = [line("C1").replace("Oslo", '"Os\nlo"'), line("C2"), "C3,B2C", line("C4")]
    path = tmp_path / "customers.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    con = connect(tmp_path / "w.duckdb", create=True)
    report = ingest_file(con, "customers", path)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (4, 3, 1)
    assert con.execute("SELECT city FROM customers WHERE customer_id = 'C1'").fetchone() == (
        "Os\nlo",
    )
    assert con.execute("SELECT row_number, reason, raw_row FROM quarantine").fetchall() == [
        (3, f"line 5: 2 fields but the header has {len(COLUMNS)}", '{"_line":"C3,B2C"}')
    ]


def test_several_bad_lines_after_an_unbalanced_quote(tmp_path: Path) -> None:
    rows = [line("C1"), 'C2,"B2C', line("C3"), "C4,B2C", line("C5"), line("C6") + ",x"]
    path = tmp_path / "customers.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    con = connect(tmp_path / "w.duckdb", create=True)
    report = ingest_file(con, "customers", path)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (6, 3, 3)
    quarantined = con.execute(
        "SELECT row_number, split_part(reason, ':', 1) FROM quarantine ORDER BY row_number"
    ).fetchall()
    assert quarantined == [(2, "line 3"), (4, "line 5"), (6, "line 7")]
    loaded = con.execute("SELECT customer_id FROM customers ORDER BY customer_id").fetchall()
    assert loaded == [("C1",), ("C3",), ("C5",)]
