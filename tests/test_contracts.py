"""Every rule of every table contract has a failing input that ingest quarantines for that rule.

The cases are derived from CONTRACTS, so a rule added to a contract gets a test automatically
(table checks need a hand-written violating row: the coverage test fails until one is added).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from customer360.data.contract_docs import render_contracts_markdown
from customer360.data.contracts import CONTRACTS, TableContract
from customer360.data.ingest import format_bound, ingest_file
from customer360.data.warehouse import connect

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "data-contracts.md"

# One valid row per table ('' = null). Foreign keys point at the prerequisites loaded below.
VALID_ROWS: dict[str, dict[str, str]] = {
    "customers": {
        "customer_id": "CX", "customer_type": "B2C", "company_size": "", "industry": "",
        "age_band": "25-34", "gender": "F", "region": "north", "city": "Oslo",
        "acquisition_channel": "referral", "signup_date": "2024-01-01",
        "contract_end_date": "2025-01-01",
    },
    "transactions": {
        "transaction_id": "TX", "customer_id": "C1", "ts": "2025-01-01 10:00:00",
        "amount": "10", "margin": "2", "quantity": "1", "category": "home", "channel": "web",
        "discount": "0", "is_return": "false", "referrer_id": "C2", "cost_to_serve": "1.5",
    },
    "third_party": {
        "customer_id": "C1", "observed_at": "2025-01-01 00:00:00", "profession": "professional",
        "education": "master", "income_band": "middle", "household_size": "3",
        "home_value": "250000", "affluence_score": "55", "revenue_band": "",
        "employee_count": "",
    },
    "events": {
        "event_id": "EX", "customer_id": "C1", "ts": "2025-01-01 10:00:00",
        "event_type": "product_view", "channel": "web", "category": "home",
    },
    "social": {
        "social_id": "SX", "customer_id": "C1", "ts": "2025-01-01 10:00:00", "kind": "comment",
        "platform": "x", "sentiment": "0.5",
    },
    "support_tickets": {
        "ticket_id": "KX", "customer_id": "C1", "opened_at": "2025-01-01 09:00:00",
        "closed_at": "2025-01-02 09:00:00", "category": "delivery", "status": "resolved",
        "satisfaction": "4",
    },
    "offers": {
        "offer_id": "OX", "product": "Gold card", "category": "services", "kind": "sales",
        "margin": "12.5", "channel": "email", "eligible_segments": "A|B",
    },
    "offer_events": {
        "offer_event_id": "EVX", "customer_id": "C1", "offer_id": "O1",
        "ts": "2025-01-01 10:00:00", "channel": "email", "propensity": "0.25",
        "accepted": "true",
    },
    # issue 14
    "source_records": {
        "record_key": "crm:R1", "source_system": "crm", "source_record_id": "R1",
        "given_name": "Ann", "surname": "Lee", "company_name": "", "email": "ann@x.org",
        "phone": "020 7946 0018", "street": "1 High St", "postcode": "SW1A 1AA",
        "city": "London", "country": "GB", "date_of_birth": "1980-01-02", "company_id": "",
        "created_at": "2024-01-01 10:00:00", "updated_at": "2025-01-01 10:00:00",
    },
}

# For each table check, the change to the valid row that breaks it (and nothing before it).
CHECK_VIOLATIONS: dict[tuple[str, str], dict[str, str]] = {
    ("customers", "b2b_fields_only_for_companies"): {"company_size": "small"},
    ("customers", "b2c_fields_only_for_people"): {
        "customer_type": "B2B", "company_size": "small", "industry": "retail",
    },
    ("customers", "contract_ends_after_signup"): {"contract_end_date": "2023-12-31"},
    ("transactions", "returns_are_negative"): {"amount": "-10"},
    ("transactions", "no_self_referral"): {"referrer_id": "C1"},
    ("support_tickets", "closed_after_opened"): {"closed_at": "2024-12-31 09:00:00"},
    ("support_tickets", "open_means_not_closed"): {"status": "open"},
    # issue 14
    ("source_records", "record_key_is_system_and_id"): {"record_key": "crm:R2"},
    ("source_records", "updated_after_created"): {"updated_at": "2023-12-31 10:00:00"},
    ("source_records", "has_a_name"): {"given_name": "", "surname": ""},
}

# --- issue 15: the sales tables (leads L1 and opportunity OP1 are prerequisites) -------------
VALID_ROWS.update({
    "leads": {
        "lead_id": "LX", "customer_id": "C1", "lead_type": "person", "name": "Ann Berg",
        "source": "referral", "channel": "web", "owner": "rep_01",
        "created_at": "2025-01-01 10:00:00", "company_size": "", "industry": "",
        "qualified_at": "2025-01-05 10:00:00", "need_identified": "true",
        "decision_timeframe": "under_3_months", "cost_of_postponing": "high",
        "purchase_influence": "decision_maker", "status": "converted",
        "status_changed_at": "2025-02-01 10:00:00", "converted_at": "2025-02-01 10:00:00",
    },
    "lead_events": {
        "lead_event_id": "LEX", "lead_id": "L1", "ts": "2025-01-02 10:00:00",
        "kind": "status_change", "status": "working",
    },
    "opportunities": {
        "opportunity_id": "OPX", "lead_id": "L1", "customer_id": "C1", "account_name": "Ann",
        "created_at": "2025-02-01 10:00:00", "amount": "1500",
        "expected_close_date": "2025-04-01", "stage": "close", "outcome": "lost",
        "closed_at": "2025-03-01 10:00:00", "loss_reason": "price",
    },
    "opportunity_stages": {
        "opportunity_stage_id": "OSX", "opportunity_id": "OP1", "stage": "proposal",
        "entered_at": "2025-02-10 10:00:00",
    },
})
CHECK_VIOLATIONS.update({
    ("leads", "qualification_only_when_qualified"): {"qualified_at": ""},
    ("leads", "lead_dates_in_order"): {"status_changed_at": "2024-12-31 10:00:00"},
    ("leads", "converted_means_converted_at"): {"status": "working"},
    ("leads", "company_fields_only_for_companies"): {"company_size": "small"},
    ("lead_events", "status_only_on_status_change"): {"kind": "call"},
    ("opportunities", "open_means_not_closed"): {"outcome": "open", "loss_reason": ""},
    ("opportunities", "loss_reason_only_when_lost"): {"outcome": "won"},
    ("opportunities", "closed_after_created"): {"closed_at": "2025-01-01 10:00:00"},
})


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([[row.get(c, "") for c in columns] for row in rows])
    return path


def load_prerequisites(db: Path) -> None:
    """Customers C1 (B2C) and C2 (B2B) and offer O1, for the foreign keys of the valid rows."""
    con = connect(db, create=True)
    base = VALID_ROWS["customers"]
    b2b = {**base, "customer_id": "C2", "customer_type": "B2B", "company_size": "small",
           "industry": "retail", "age_band": "", "gender": ""}
    folder = db.parent
    for table, rows in (
        ("customers", [{**base, "customer_id": "C1"}, b2b]),
        ("offers", [{**VALID_ROWS["offers"], "offer_id": "O1"}]),
        ("leads", [{**VALID_ROWS["leads"], "lead_id": "L1"}]),  # issue 15
        ("opportunities", [{**VALID_ROWS["opportunities"], "opportunity_id": "OP1"}]),
    ):
        file = write_csv(folder / f"prereq_{table}.csv", CONTRACTS[table].column_names, rows)
        report = ingest_file(con, table, file)
        assert report.rows_loaded == len(rows), report
    con.close()


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory) -> Path:
    """One warehouse for the single-row negative cases (they quarantine, never load)."""
    db = tmp_path_factory.mktemp("contracts") / "w.duckdb"
    load_prerequisites(db)
    return db


@pytest.fixture(scope="module")
def shared_con(shared_db):
    con = connect(shared_db)
    yield con
    con.close()


def quarantine_one(con, tmp_path: Path, table: str, changes: dict[str, str]):
    """Ingest the valid row of ``table`` with ``changes``; return (report, reason in table)."""
    row = {**VALID_ROWS[table], **changes}
    file = write_csv(tmp_path / f"{table}.csv", CONTRACTS[table].column_names, [row])
    report = ingest_file(con, table, file)
    assert not report.skipped_duplicate_file
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (1, 0, 1), report
    rows = con.execute(
        "SELECT row_number, reason FROM quarantine WHERE source_file = ?", [report.file]
    ).fetchall()
    assert len(rows) == 1 and rows[0][0] == 1
    return report, rows[0][1]


def _cases(kind: str) -> list[tuple[str, str]]:
    out = []
    for table, contract in CONTRACTS.items():
        for col in contract.columns:
            if (
                (kind == "type" and col.dtype != "VARCHAR")
                or (kind == "null" and not col.nullable)
                or (kind == "allowed" and col.allowed is not None)
                or (kind == "min" and col.min is not None)
                or (kind == "max" and col.max is not None)
                or (kind == "fk" and col.references)
            ):
                out.append((table, col.name))
    return out


@pytest.mark.parametrize(("table", "column"), _cases("type"))
def test_wrong_type_is_quarantined(shared_con, tmp_path, table, column):
    dtype = CONTRACTS[table].column(column).dtype
    report, reason = quarantine_one(shared_con, tmp_path, table, {column: "abc"})
    assert report.reasons == {f"{column}: not a valid {dtype}": 1}
    assert reason == f"column {column}: 'abc' is not a valid {dtype}"


@pytest.mark.parametrize(("table", "column"), _cases("null"))
def test_null_in_required_column_is_quarantined(shared_con, tmp_path, table, column):
    report, reason = quarantine_one(shared_con, tmp_path, table, {column: ""})
    assert report.reasons == {f"{column}: null in a required column": 1}
    assert reason == f"column {column}: null in a required column"


@pytest.mark.parametrize(("table", "column"), _cases("allowed"))
def test_value_not_allowed_is_quarantined(shared_con, tmp_path, table, column):
    allowed = CONTRACTS[table].column(column).allowed
    report, reason = quarantine_one(shared_con, tmp_path, table, {column: "not_a_value"})
    assert report.reasons == {f"{column}: value not allowed": 1}
    assert reason == (
        f"column {column}: 'not_a_value' is not an allowed value (allowed: {', '.join(allowed)})"
    )


@pytest.mark.parametrize(("table", "column"), _cases("min"))
def test_below_minimum_is_quarantined(shared_con, tmp_path, table, column):
    minimum = CONTRACTS[table].column(column).min
    too_low = {column: format_bound(minimum - 1)}
    report, reason = quarantine_one(shared_con, tmp_path, table, too_low)
    assert report.reasons == {f"{column}: below minimum {format_bound(minimum)}": 1}
    assert reason.startswith(f"column {column}: ")
    assert reason.endswith(f" is below the minimum {format_bound(minimum)}")


@pytest.mark.parametrize(("table", "column"), _cases("max"))
def test_above_maximum_is_quarantined(shared_con, tmp_path, table, column):
    maximum = CONTRACTS[table].column(column).max
    too_high = {column: format_bound(maximum + 1)}
    report, reason = quarantine_one(shared_con, tmp_path, table, too_high)
    assert report.reasons == {f"{column}: above maximum {format_bound(maximum)}": 1}
    assert reason.endswith(f" is above the maximum {format_bound(maximum)}")


def test_min_and_max_are_inclusive(shared_con, tmp_path):
    row = {"ticket_id": "K_bounds", "satisfaction": "5"}
    file = write_csv(
        tmp_path / "bounds.csv",
        CONTRACTS["support_tickets"].column_names,
        [{**VALID_ROWS["support_tickets"], **row},
         {**VALID_ROWS["support_tickets"], "ticket_id": "K_bounds2", "satisfaction": "1"}],
    )
    report = ingest_file(shared_con, "support_tickets", file)
    assert (report.rows_loaded, report.rows_quarantined) == (2, 0)


@pytest.mark.parametrize(
    ("table", "check"),
    [(t, name) for t, c in CONTRACTS.items() for name, _ in c.checks],
)
def test_failed_table_check_is_quarantined(shared_con, tmp_path, table, check):
    if (table, check) not in CHECK_VIOLATIONS:
        pytest.fail(f"add a row violating {table}.{check} to CHECK_VIOLATIONS")
    report, reason = quarantine_one(shared_con, tmp_path, table, CHECK_VIOLATIONS[(table, check)])
    expr = dict(CONTRACTS[table].checks)[check]
    assert report.reasons == {f"check {check} failed": 1}
    assert reason == f"check {check} failed: {expr}"


@pytest.mark.parametrize(("table", "column"), _cases("fk"))
def test_unknown_foreign_key_is_quarantined(shared_con, tmp_path, table, column):
    ref = CONTRACTS[table].column(column).references
    report, reason = quarantine_one(shared_con, tmp_path, table, {column: "NOPE"})
    assert report.reasons == {f"{column}: not found in {ref}": 1}
    assert reason == f"column {column}: 'NOPE' not found in {ref}"


@pytest.mark.parametrize("table", list(CONTRACTS))
def test_valid_row_loads_once_and_duplicate_keys_are_quarantined(shared_con, table, tmp_path):
    """The valid rows really are valid (so each negative case fails for its own rule only);
    a repeated key is quarantined, within the file and against the warehouse.

    Runs on the shared warehouse under keys no negative case uses (third_party is keyed by
    customer, so it uses customer C2; the negative cases use C1 and never load)."""
    con = shared_con
    contract: TableContract = CONTRACTS[table]
    pk = contract.primary_key
    row = {**VALID_ROWS[table]}
    row[pk] = "C2" if table == "third_party" else row[pk] + "_loaded"
    if table == "source_records":  # issue 14: the key is system:id, so the id moves with it
        row["source_record_id"] += "_loaded"
    first = write_csv(tmp_path / "first.csv", contract.column_names, [row, row])
    report = ingest_file(con, table, first)
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert report.reasons == {f"duplicate primary key {pk} within the file": 1}
    reason, row_number = con.execute(
        "SELECT reason, row_number FROM quarantine WHERE source_file = ?", [report.file]
    ).fetchone()
    assert row_number == 2
    assert reason == f"duplicate primary key {pk}='{row[pk]}' within the file (first at row 1)"

    # A different file carrying the same key again: quarantined, not loaded twice.
    again = write_csv(tmp_path / "again.csv", contract.column_names, [row])
    report = ingest_file(con, table, again)
    assert (report.rows_loaded, report.rows_quarantined) == (0, 1)
    assert report.reasons == {f"duplicate primary key {pk} already in warehouse": 1}
    reason = con.execute(
        "SELECT reason FROM quarantine WHERE source_file = ?", [report.file]
    ).fetchone()[0]
    assert reason == f"duplicate primary key {pk}='{row[pk]}' already in warehouse"
    assert con.execute(f"SELECT count(*) FROM {table} WHERE {pk} = ?", [row[pk]]).fetchone()[0] == 1


def test_every_contract_is_well_formed():
    for name, contract in CONTRACTS.items():
        assert contract.name == name
        assert contract.primary_key in contract.column_names
        assert not contract.column(contract.primary_key).nullable
        assert len(set(contract.column_names)) == len(contract.column_names)
        for col in contract.columns:
            if col.references:
                ref_table, _, ref_col = col.references.partition(".")
                assert ref_col in CONTRACTS[ref_table].column_names, col
                # referenced tables come first, so loading in CONTRACTS order works
                assert list(CONTRACTS).index(ref_table) <= list(CONTRACTS).index(name)
            if col.min is not None and col.max is not None:
                assert col.min <= col.max


def test_docs_page_is_up_to_date():
    expected = render_contracts_markdown()
    assert DOCS_PAGE.read_text() == expected, (
        "docs/data-contracts.md is stale: run "
        "`.venv/bin/python -m customer360.data.contract_docs > docs/data-contracts.md`"
    )
    for name in CONTRACTS:
        assert f"## `{name}`" in expected
