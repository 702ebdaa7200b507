"""Ingest's last gaps (issue 12, item 8): a malformed CSV names its line; a duplicated header
column is refused. Real DuckDB files in tmp_path; the warehouse is left unchanged."""

from __future__ import annotations

import gzip

import pytest
from test_ingest import TX_HEADER, TX_LINE, make_warehouse, snapshot

from customer360.data.ingest import ingest_file
from customer360.data.warehouse import connect
from customer360.errors import IngestError


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("quote.csv", TX_LINE + TX_LINE.replace("home", '"home') + TX_LINE,
         r"line 3 is malformed .*unbalanced double quote"),
        ("short.csv", TX_LINE + TX_LINE + "T9,C1,2025-03-01\n" + TX_LINE,
         "line 4 has 3 fields but the header has 12"),
        ("quote.csv.gz", TX_LINE + TX_LINE.replace("home", '"home') + TX_LINE,
         "line 3 is malformed"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path, name, body, expected):
    db = make_warehouse(tmp_path)
    file = tmp_path / name
    data = (TX_HEADER + body).encode()
    file.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with connect(db) as con:
        before = snapshot(con)
        with pytest.raises(IngestError, match=expected) as exc:
            ingest_file(con, "transactions", file)
        assert str(file.resolve()) in str(exc.value)
        assert snapshot(con) == before


def test_duplicated_header_column_is_refused(tmp_path):
    db = make_warehouse(tmp_path)
    file = tmp_path / "dup.csv"
    file.write_text(TX_HEADER.replace("discount", "amount") + TX_LINE)
    with connect(db) as con:
        before = snapshot(con)
        with pytest.raises(IngestError, match=r"names column\(s\) 'amount' more than once"):
            ingest_file(con, "transactions", file)
        assert snapshot(con) == before
