"""Column roles, inferred from names and values, and the Splink settings generated from them.

A role says what a column holds (``given_name``, ``surname``, ``dob``, ``postcode``, ...). Each
role names its standardiser, its Splink comparison and whether it can block; the settings are
built from that table, so a user never writes Splink settings and an expert can still pass a
file. The settings are a :class:`splink.SettingsCreator`, which is not tied to a SQL dialect:
the same object runs on DuckDB or Spark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from customer360.errors import IdentityError
from customer360.identity import standardise as std

ROLES = (
    "given_name", "surname", "full_name", "dob", "email", "phone", "postcode", "id",
    "street_number", "address", "city", "region", "free_text",
)

# Name patterns, tried in order; the first match wins. Matched against the lower-cased name with
# separators removed ("Given-Name" -> "givenname").
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    ("email", r"e?mail"),
    ("phone", r"phone|tel|mobile|cell|fax"),
    ("dob", r"dob|dateofbirth|birth|born|bday"),
    ("given_name", r"given|first|forename|fname|christian"),
    ("surname", r"surname|last|family|lname"),
    # A company's registration or tax number is an id, not the company's name.
    ("id", r"(company|organi[sz]ation|business)(id|no|num|reg)"),
    ("full_name", r"^(full)?name$|company|organi[sz]ation|business|contact"),
    ("postcode", r"post|zip|pin"),
    ("street_number", r"(street|house|building)(no|num)|^number$"),
    ("address", r"addr|street|line\d"),
    ("city", r"city|town|suburb|locality|village"),
    ("region", r"state|county|region|province"),
    ("id", r"ssn|socsec|tax|vat|passport|licen[cs]e|registration|national"),
)
# "cust_id", "CustomerID", "id" are ids; "paid" and "valid" are not.
_ID_SUFFIX = re.compile(r"(^|[^a-z])id$|[a-z]ID$|^id$")


@dataclass(frozen=True)
class RoleSpec:
    """What a role does: how its values are cleaned and whether they can block."""

    standardise: Any
    blocks: bool


ROLE_SPECS: dict[str, RoleSpec] = {
    "given_name": RoleSpec(std.standardise_name, True),
    "surname": RoleSpec(std.standardise_name, True),
    "full_name": RoleSpec(std.standardise_name, True),
    "dob": RoleSpec(std.standardise_date, True),
    "email": RoleSpec(std.standardise_email, True),
    "phone": RoleSpec(std.standardise_phone, True),
    "postcode": RoleSpec(std.standardise_code, True),
    "id": RoleSpec(std.standardise_code, True),
    "street_number": RoleSpec(std.standardise_code, False),
    "address": RoleSpec(std.standardise_address, False),
    "city": RoleSpec(std.standardise_name, False),
    "region": RoleSpec(std.standardise_name, False),
    "free_text": RoleSpec(std.standardise_text, False),
}


def _role_from_name(column: str) -> str | None:
    key = re.sub(r"[^a-z0-9]", "", column.lower())
    for role, pattern in _NAME_PATTERNS:
        if re.search(pattern, key):
            return role
    if _ID_SUFFIX.search(column.strip()) or _ID_SUFFIX.search(column.strip().lower()):
        return "id"
    return None


def _role_from_values(values: pd.Series) -> str:
    """Guess a role from a sample of values when the column name says nothing."""
    sample = values.dropna().astype("string").str.strip()
    sample = sample[sample != ""].head(2000)
    if sample.empty:
        return "free_text"

    def share(pattern: str) -> float:
        return float(sample.str.fullmatch(pattern, na=False).mean())

    if share(r"[^@\s]+@[^@\s]+\.[^@\s]+") > 0.8:
        return "email"
    if share(r"(19|20)\d\d-?[01]\d-?[0-3]\d") > 0.8:
        return "dob"
    if share(r"\+?[\d\s().-]{7,20}") > 0.8 and sample.str.count(r"\d").median() >= 9:
        return "phone"
    if share(r"\d+") > 0.8:
        return "id" if sample.str.len().median() >= 5 else "street_number"
    if share(r"[A-Za-z0-9]{2,4} ?[A-Za-z0-9]{3}") > 0.8 and share(r".*\d.*") > 0.8:
        return "postcode"
    return "free_text"


def infer_roles(
    frame: pd.DataFrame, exclude: tuple[str, ...] = (), overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """Map each column of ``frame`` to a role (column -> role).

    Names decide first, values second; ``overrides`` (role -> column, from ``--map``) win over
    both. Columns in ``exclude`` (the id and truth columns) get no role.

    Examples
    --------
    >>> df = pd.DataFrame({"First Name": ["Ann"], "e_mail": ["a@b.co"], "x": ["1980-01-02"]})
    >>> infer_roles(df)
    {'First Name': 'given_name', 'e_mail': 'email', 'x': 'dob'}
    """
    overrides = overrides or {}
    for role, column in overrides.items():
        if role not in ROLES:
            raise IdentityError(
                f"--map {role}={column}: unknown role {role!r}. Use one of: {', '.join(ROLES)}."
            )
        if column not in frame.columns:
            raise IdentityError(
                f"--map {role}={column}: no column {column!r} in the records (columns: "
                f"{', '.join(map(str, frame.columns))})."
            )
    mapped = {column: role for role, column in overrides.items()}
    roles: dict[str, str] = {}
    for column in frame.columns:
        if column in exclude:
            continue
        roles[column] = (
            mapped.get(column)
            or _role_from_name(str(column))
            or _role_from_values(frame[column])
        )
    return roles


def forms_column(column: str) -> str:
    """The column holding a given-name column's forms (:func:`standardise.given_name_forms`)."""
    return f"forms_{column}"


def name_forms(standardised: pd.DataFrame, roles: dict[str, str]) -> dict[str, pd.Series]:
    """``forms_<column>`` for every given-name column, from its ``std_<column>``.

    Derived data, not a standardised value: the warehouse stores ``std_<column>`` only and
    derives the forms again when it builds Splink's input.
    """
    return {forms_column(c): std.given_name_forms(standardised[f"std_{c}"])
            for c, r in roles.items() if r == "given_name"}


def _standardised(frame: pd.DataFrame, roles: dict[str, str], default_region: str
                  ) -> pd.DataFrame:
    return pd.DataFrame({
        f"std_{column}": (ROLE_SPECS[role].standardise(frame[column], default_region)
                          if role == "phone" else ROLE_SPECS[role].standardise(frame[column]))
        for column, role in roles.items()}, index=frame.index)


def standardise_frame(
    frame: pd.DataFrame, roles: dict[str, str], default_region: str = "GB", *,
    forms: bool = True,
) -> pd.DataFrame:
    """Add ``std_<column>`` next to every role column and (``forms``) ``forms_<column>`` (the
    name and the full names it is a nickname of) next to every given-name column; the raw
    columns are kept unchanged. Large frames are standardised on every core
    (:func:`standardise.in_row_chunks`).

    Examples
    --------
    >>> out = standardise_frame(pd.DataFrame({"fn": ["Bill "]}), {"fn": "given_name"})
    >>> out["std_fn"].tolist(), out["forms_fn"].tolist()
    (['bill'], [['bill', 'robert', 'will', 'william', 'willis']])
    """
    out = frame.copy()
    clean = std.in_row_chunks(_standardised, frame[list(roles)], roles, default_region)
    out = out.assign(**{c: clean[c].array for c in clean.columns})  # rows in order
    return out.assign(**name_forms(out, roles)) if forms else out


# Dates of birth are standardised to ISO text; each engine spells that format its own way.
DATE_FORMATS = {"duckdb": "%Y-%m-%d", "spark": "yyyy-MM-dd"}


def _comparison(role: str, column: str, dialect: str = "duckdb"):
    import splink.comparison_library as cl

    if role in ("given_name", "surname", "full_name"):
        comp = cl.NameComparison(column)
    elif role == "dob":
        comp = cl.DateOfBirthComparison(
            column, input_is_string=True, datetime_format=DATE_FORMATS[dialect],
            invalid_dates_as_null=False,
        )
    elif role == "email":
        comp = cl.EmailComparison(column)
    elif role in ("phone", "id", "postcode"):
        comp = cl.LevenshteinAtThresholds(column, [1, 2])
    elif role == "street_number":
        comp = cl.LevenshteinAtThresholds(column, [1])
    else:  # address, city, region, free text
        comp = cl.JaroWinklerAtThresholds(column, [0.9, 0.7])
    if role in ("given_name", "surname", "full_name", "postcode", "city", "address", "email"):
        comp = comp.configure(term_frequency_adjustments=True)
    return comp


# Blocking: a single column is enough for the rare, near-unique roles; the others block in pairs.
_SINGLE_BLOCKERS = ("email", "phone", "id", "dob")
_PAIR_BLOCKERS = ("given_name", "surname", "full_name", "postcode", "city", "address")


def blocking_columns(roles: dict[str, str]) -> list[list[str]]:
    """Column groups to block on, generated from the roles present (one exact rule per group)."""
    by_role: dict[str, list[str]] = {}
    for column, role in roles.items():
        by_role.setdefault(role, []).append(f"std_{column}")
    singles = [[c] for r in _SINGLE_BLOCKERS for c in by_role.get(r, [])]
    pair_cols = [c for r in _PAIR_BLOCKERS for c in by_role.get(r, [])]
    pairs = [[a, b] for i, a in enumerate(pair_cols) for b in pair_cols[i + 1:]]
    groups = singles + pairs
    if not groups:
        raise IdentityError(
            "No column can block (no name, date, postcode, id, email or phone role found). "
            "Name the roles with --map ROLE=COLUMN, e.g. --map surname=last_nm."
        )
    return groups


def exact_pair_counts(frame: pd.DataFrame, groups: list[list[str]]) -> list[int]:
    """Per column group, the record pairs of ``frame`` that agree exactly on all its columns
    (nulls never agree), counted by a group-by, not by forming the pairs.

    Examples
    --------
    >>> exact_pair_counts(pd.DataFrame({"a": ["x", "x", "x", None]}), [["a"]])
    [3]
    """
    import duckdb

    with duckdb.connect() as con:
        con.register("records", frame[sorted({c for g in groups for c in g})])
        counts = []
        for group in groups:
            cols = ", ".join(f'"{c}"' for c in group)
            nonnull = " AND ".join(f'"{c}" IS NOT NULL' for c in group)
            counts.append(int(con.execute(
                f"SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM (SELECT count(*) AS n "
                f"FROM records WHERE {nonnull} GROUP BY {cols})").fetchone()[0]))
    return counts


def affordable_blocking(
    frame: pd.DataFrame, groups: list[list[str]], max_pairs_per_record: float
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """The blocking groups whose exact rule compares at most ``max_pairs_per_record`` pairs a
    record, and the dropped ones (``columns``, ``pairs``).

    A rule on a low-cardinality pair (given name and city, surname and city) compares pairs in
    proportion to the square of the population: 148k generated records gave 36-39 pairs a
    record for each city rule (11M of the 12.6M candidates) and 1M records would give ~250.
    Counted within ``frame`` (an upper bound for links across sources), nulls never block.
    The cheapest group is kept even when all are over the budget.

    Examples
    --------
    >>> f = pd.DataFrame({"std_city": ["X"] * 4, "std_email": ["a", "a", "b", None]})
    >>> affordable_blocking(f, [["std_email"], ["std_city"]], 1.0)
    ([['std_email']], [{'columns': ['std_city'], 'pairs': 6}])
    """
    counts = exact_pair_counts(frame, groups)
    budget = max_pairs_per_record * len(frame)
    kept = [g for g, n in zip(groups, counts, strict=True) if n <= budget]
    if not kept:
        kept = [groups[counts.index(min(counts))]]
    dropped = [{"columns": g, "pairs": n} for g, n in zip(groups, counts, strict=True)
               if g not in kept]
    return kept, dropped


def _location_comparison(street: str, postcode: str, city: str | None):
    """One comparison for a street, its postcode and its city, whose agreements are not
    independent.

    Scored as separate comparisons, a shared street, postcode and city count the same evidence
    two or three times and outweigh a different given name and date of birth, so neighbours
    and relatives at one address merge. One comparison gives each pattern of agreement a single
    weight; the city still counts where the postcode disagrees.
    """
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    null = cll.And(cll.NullLevel(street), cll.NullLevel(postcode))
    null.configure(is_null_level=True)
    levels = [
        null,
        cll.And(cll.ExactMatchLevel(street), cll.ExactMatchLevel(postcode)),
        cll.And(cll.JaroWinklerLevel(street, 0.9), cll.ExactMatchLevel(postcode)),
        cll.ExactMatchLevel(postcode),
    ]
    if city:
        levels += [cll.And(cll.JaroWinklerLevel(street, 0.9), cll.ExactMatchLevel(city)),
                   cll.ExactMatchLevel(city)]
    levels += [cll.JaroWinklerLevel(street, 0.9), cll.ElseLevel()]
    return CustomComparison(
        output_column_name="std_location",
        comparison_description=f"location ({', '.join(c for c in (street, postcode, city) if c)})",
        comparison_levels=levels,
    )


def _short_form_sql(left: str, right: str) -> str:
    """SQL true when one given name can be a short form of the other.

    Short forms mostly keep the start of the name (Ed, Pat, Steve, Dave) or a part of it (Liz,
    Beth, Tori): one name starts with the other (two letters or more), holds it (three or
    more), or both start with the same three letters. Short forms that keep neither (Bill,
    Ted, Peggy) would need a nickname list, which this is not; and names that merely share a
    start (Mary, Maria) pass too, so the level is scored by EM like any other.
    Written in functions DuckDB and Spark share (``instr``, ``substr``, ``length``).
    """
    def holds(a: str, b: str) -> str:
        return (f"((length({b}) >= 3 AND instr({a}, {b}) > 0)"
                f" OR (length({b}) = 2 AND instr({a}, {b}) = 1))")

    same_start = (f"(length({left}) >= 3 AND length({right}) >= 3"
                  f" AND substr({left}, 1, 3) = substr({right}, 1, 3))")
    return f"({holds(left, right)} OR {holds(right, left)} OR {same_start})"


def _given_name_comparison(given: str, surname: str, forms: str):
    """The given name: exact, one edit, near (Jaro-Winkler), a nickname of the same name
    (``forms``: the name and its full names share one, e.g. Bill and William, Ted and Edward),
    written the other way round (swapped with the surname), a short form of the other, or
    unrelated ("else").

    There is no weak-similarity level (Jaro-Winkler 0.7): it gave relatives such as Maria and
    Amelia a positive weight. "Else" means the names are unrelated, which
    :func:`person_conflict_sql` reads as two people unless something personal agrees.
    """
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    return CustomComparison(
        output_column_name=given,
        comparison_description=f"given name ({given}; reversed with {surname})",
        comparison_levels=[
            cll.NullLevel(given),
            cll.ExactMatchLevel(given, term_frequency_adjustments=True),
            cll.DamerauLevenshteinLevel(given, 1),
            cll.JaroWinklerLevel(given, 0.92),
            cll.JaroWinklerLevel(given, 0.88),
            cll.ArrayIntersectLevel(forms, 1).configure(
                label_for_charts="Nicknames of the same name"),
            cll.ColumnsReversedLevel(given, surname),
            cll.CustomLevel(_short_form_sql(f"{given}_l", f"{given}_r"),
                            label_for_charts="One is a short form of the other"),
            cll.ElseLevel(),
        ],
    )


def person_conflict_sql(roles: dict[str, str], model: dict[str, Any]) -> str | None:
    """SQL (on Splink's predictions) true for a pair that must not merge: its given names are
    unrelated (the given-name comparison's "else" level) and nothing else about the person
    agrees exactly (no date of birth, no id).

    Shared contact data (a family email, the landline, the address, the surname) is evidence
    about a household, not about a person: relatives score high on it although they are
    different people, so a merge needs some agreement about the person themself. The rule is
    the same for every data set; it holds back true pairs whose given names are a nickname
    that is no short form (Bill and William) or a heavy typo, unless the date of birth or an id
    agrees. Dates of birth years apart are not a conflict: typing slips move the year (FEBRL).

    ``model`` is the Splink settings dict (``save_model_to_json``), which gives each
    comparison's levels. ``None`` when the records have no single given-name column or its
    comparison has no "else" level (an expert's settings).

    Examples
    --------
    >>> model = {"comparisons": [
    ...     {"output_column_name": "std_fn", "comparison_levels": [
    ...         {"is_null_level": True}, {"sql_condition": "x"}, {"sql_condition": "ELSE"}]},
    ...     {"output_column_name": "std_dob", "comparison_levels": [
    ...         {"is_null_level": True}, {"sql_condition": "y"}, {"sql_condition": "ELSE"}]}]}
    >>> person_conflict_sql({"fn": "given_name", "dob": "dob"}, model)
    '(gamma_std_fn = 0 AND coalesce(gamma_std_dob, -1) <> 1)'
    """
    given = [c for c, r in roles.items() if r == "given_name"]
    levels = {c["output_column_name"]: [lv for lv in c["comparison_levels"]
                                        if not lv.get("is_null_level")]
              for c in model["comparisons"]}
    if len(given) != 1 or f"std_{given[0]}" not in levels:
        return None
    if levels[f"std_{given[0]}"][-1].get("sql_condition", "").upper() != "ELSE":
        return None
    # gamma counts the non-null levels from "else" (0) up; the first level is the exact one.
    checks = [f"gamma_std_{given[0]} = 0"] + [
        f"coalesce(gamma_std_{c}, -1) <> {len(levels[f'std_{c}']) - 1}"
        for c, r in roles.items() if r in ("dob", "id") and f"std_{c}" in levels
    ]
    return "(" + " AND ".join(checks) + ")"


def _comparisons(roles: dict[str, str], dialect: str = "duckdb") -> list:
    """One comparison per role column, except the address group.

    With a street and a postcode, the first street column, the first postcode column and the
    first city column are compared together (:func:`_location_comparison`).
    """
    columns = {r: [c for c, role in roles.items() if role == r] for r in set(roles.values())}
    group: list[str] = []
    if columns.get("postcode") and columns.get("address"):
        group = [columns["address"][0], columns["postcode"][0], *columns.get("city", [])[:1]]
    given, surname = columns.get("given_name", []), columns.get("surname", [])
    out = []
    for column, role in roles.items():
        if len(given) == 1 and len(surname) == 1 and column == given[0]:
            out.append(_given_name_comparison(f"std_{column}", f"std_{surname[0]}",
                                              forms_column(column)))
        elif group and column == group[0]:
            out.append(_location_comparison(
                *(f"std_{c}" for c in group[:2]), f"std_{group[2]}" if len(group) > 2 else None))
        elif column not in group:
            out.append(_comparison(role, f"std_{column}", dialect))
    return out


def build_settings(
    roles: dict[str, str], link_type: str, *, max_iterations: int = 25, dialect: str = "duckdb",
    blocking: list[list[str]] | None = None,
):
    """Splink settings (engine-neutral ``SettingsCreator``) generated from the column roles.

    Examples
    --------
    >>> s = build_settings({"fn": "given_name", "sn": "surname", "dob": "dob"}, "dedupe_only")
    >>> len(s.comparisons), len(s.blocking_rules_to_generate_predictions)
    (3, 2)
    """
    from splink import SettingsCreator, block_on

    comparisons = _comparisons(roles, dialect)
    rules = [block_on(*group) for group in (blocking or blocking_columns(roles))]
    return SettingsCreator(
        link_type=link_type,
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=rules,
        retain_intermediate_calculation_columns=True,
        max_iterations=max_iterations,
        unique_id_column_name="record_id",
        source_dataset_column_name="source",
    )


def training_blocks(roles: dict[str, str], *, narrow_names: bool = False) -> list[list[str]]:
    """Blocks for EM: one on the names (trains the rest), one on the rest (trains the names).

    ``narrow_names``: the name block also agrees on the postcode (when there is one), for
    populations where namesakes crowd the name block (:func:`~customer360.identity.unify.
    train_linker` decides from the block's pair count); the location comparison is then
    trained in the second block.
    """
    # Person names when there are any: a company-name column is empty on every person's
    # record, so an exact rule that needs it too would find no pairs to train on.
    names = [f"std_{c}" for c, r in roles.items() if r in ("given_name", "surname")] or [
        f"std_{c}" for c, r in roles.items() if r == "full_name"]
    postcode = [f"std_{c}" for c, r in roles.items() if r == "postcode"][:1]
    if names and narrow_names:
        names = names + postcode
    others = [
        f"std_{c}" for r in ("dob", "postcode", "email", "phone", "id")
        for c, role in roles.items() if role == r and f"std_{c}" not in names
    ]
    blocks = []
    if names:
        blocks.append(names)
    if others:
        blocks.append(others[:1])
    if len(blocks) < 2:
        groups = blocking_columns(roles)
        blocks = groups[:2]
    return blocks
