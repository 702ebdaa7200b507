"""Standardisers for identity columns: raw value in, comparable value out.

Each function takes a pandas Series and returns a Series of strings (missing stays missing).
The library calls that have no vectorised form (``phonenumbers``, ``anyascii``) run once per
*distinct* value, then the results are mapped back, so repeated values cost nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

# Free text longer than this is cut before it is compared: a pasted document is not an identity.
MAX_CHARS = 512

# Common address tokens and their canonical short forms (Australia Post / USPS / Royal Mail).
ADDRESS_TOKENS = {
    "street": "st", "str": "st", "road": "rd", "avenue": "ave", "av": "ave",
    "boulevard": "blvd", "drive": "dr", "court": "ct", "crescent": "cres", "place": "pl",
    "lane": "ln", "terrace": "tce", "highway": "hwy", "parade": "pde", "circuit": "cct",
    "square": "sq", "close": "cl", "grove": "gr", "mount": "mt", "north": "n", "south": "s",
    "east": "e", "west": "w", "apartment": "apt", "unit": "u", "flat": "flt", "suite": "ste",
    "saint": "st", "strasse": "str", "rue": "r",
}
_TOKEN_RE = re.compile(r"\b(" + "|".join(sorted(ADDRESS_TOKENS, key=len, reverse=True)) + r")\b")


def _per_unique(values: pd.Series, fn: Callable[[str], str | None]) -> pd.Series:
    """Apply ``fn`` once per distinct non-missing value and map the results back."""
    text = values.astype("string")
    uniques = text.dropna().unique()
    lookup = {u: fn(u) for u in uniques}
    return text.map(lookup).astype("string")


def _fold(values: pd.Series) -> pd.Series:
    """Transliterate to ASCII, case-fold, keep letters/digits/spaces, squeeze blanks."""
    from anyascii import anyascii

    text = values.astype("string").str.slice(0, MAX_CHARS)
    text = _per_unique(text, anyascii).str.casefold()
    text = text.str.replace(r"[^0-9a-z]+", " ", regex=True).str.strip()
    return text.mask(text == "")


def standardise_name(values: pd.Series) -> pd.Series:
    """Person or company name: transliterated, case-folded, punctuation removed.

    Examples
    --------
    >>> standardise_name(pd.Series(["  José O'Brien ", None, "ÅSA"])).tolist()
    ['jose o brien', <NA>, 'asa']
    """
    return _fold(values)


@functools.cache
def _canonical_given_names() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Nickname -> the full names it is short for, from the ``nicknames`` data set, and every
    name the data set holds."""
    from nicknames import NickNamer

    canonical = {nick: frozenset(full) for nick, full in NickNamer().canonical_lookup.items()}
    return canonical, frozenset(canonical).union(*canonical.values())


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _one_edit(name: str) -> set[str]:
    """Every string one deletion, transposition, substitution or insertion from ``name``."""
    splits = [(name[:i], name[i:]) for i in range(len(name) + 1)]
    return ({a + b[1:] for a, b in splits if b}
            | {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
            | {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
            | {a + c + b for a, b in splits for c in _LETTERS}) - {name}


def _forms_of(name: str) -> list[str]:
    canonical, known = _canonical_given_names()
    forms = {name, *canonical.get(name, ())}
    if name not in known and len(name) >= 3:
        # A typo of a listed name (Bll, Dcebbie) takes that name's forms, but only when one
        # listed name alone is one edit away: Dve could be Dave or Eve, so it takes none.
        near = _one_edit(name) & known
        if len(near) == 1:
            (listed,) = near
            forms |= {listed, *canonical.get(listed, ())}
    return sorted(forms)


# The type of a name-forms column: a list of strings, typed even when every value is missing,
# so DuckDB and Spark read it as an array and not as an untyped null column.
NAME_FORMS_TYPE = pd.ArrowDtype(pa.list_(pa.string()))


def given_name_forms(values: pd.Series) -> pd.Series:
    """A standardised given name and the full names it can be short for, as a sorted list.

    The list holds the name itself and, when the ``nicknames`` data set knows it as a
    nickname, its full names. Two given names are forms of one name when their lists share a
    value: Bill and William (both hold ``william``), Bill and Will (both nicknames of William),
    Peggy and Margaret. A name the data set does not hold, one edit from exactly one name it
    does, is read as a typo of that name (Dcebbie: Debbie, so Deborah). The lookup runs once
    per distinct name; missing stays missing.

    Examples
    --------
    >>> forms = given_name_forms(pd.Series(["ted", "edward", None, "dcebbie"]))
    >>> forms.tolist()[:3]
    [['edmund', 'edward', 'ted', 'theodore'], ['edward'], <NA>]
    >>> "deborah" in forms[3]
    True
    """
    text = values.astype("string")
    codes, uniques = pd.factorize(text)
    forms = [_forms_of(u) for u in uniques]
    # One slot past the distinct names stands for a missing name (factorize codes it -1).
    table = pa.array([*forms, None], type=pa.list_(pa.string()))
    picked = table.take(pa.array(np.where(codes < 0, len(forms), codes)))
    return pd.Series(picked, index=values.index, dtype=NAME_FORMS_TYPE)


def standardise_address(values: pd.Series) -> pd.Series:
    """Street address: folded like a name, then common tokens shortened (``street`` -> ``st``).

    Examples
    --------
    >>> standardise_address(pd.Series(["12 Pinkerton Circuit", "3 Rue de la Paix"])).tolist()
    ['12 pinkerton cct', '3 r de la paix']
    """
    text = _fold(values)
    return text.str.replace(_TOKEN_RE, lambda m: ADDRESS_TOKENS[m.group(1)], regex=True)


def standardise_email(values: pd.Series) -> pd.Series:
    """E-mail: trimmed and lower-cased; anything without exactly one ``@`` is missing.

    Examples
    --------
    >>> standardise_email(pd.Series([" Ann@Example.COM ", "not-an-email", ""])).tolist()
    ['ann@example.com', <NA>, <NA>]
    """
    text = values.astype("string").str.slice(0, MAX_CHARS).str.strip().str.lower()
    valid = text.str.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", na=False)
    return text.where(valid, pd.NA).astype("string")


def standardise_phone(values: pd.Series, default_region: str = "GB") -> pd.Series:
    """Phone number to E.164 (``+441632960961``) with ``phonenumbers``; unparseable is missing.

    Examples
    --------
    >>> standardise_phone(pd.Series(["01632 960961", "+1 (201) 555-0123", "n/a"])).tolist()
    ['+441632960961', '+12015550123', <NA>]
    """
    import phonenumbers

    def one(raw: str) -> str | None:
        try:
            number = phonenumbers.parse(raw[:64], default_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    return _per_unique(values, one)


def standardise_code(values: pd.Series) -> pd.Series:
    """Postcode or identifier: ASCII, upper-case, letters and digits only.

    Examples
    --------
    >>> standardise_code(pd.Series(["sw1a 1aa", " 430-11-0012 ", None])).tolist()
    ['SW1A1AA', '430110012', <NA>]
    """
    text = _fold(values).str.replace(" ", "", regex=False).str.upper()
    return text.mask(text == "")


def standardise_date(values: pd.Series) -> pd.Series:
    """Date to ISO ``YYYY-MM-DD`` text; ``YYYYMMDD`` digits and ISO-like strings are read.

    An unreadable date keeps its digits (``19151131`` stays comparable to ``19151130`` by edit
    distance) rather than vanishing.

    Examples
    --------
    >>> standardise_date(pd.Series(["19151111", "1980-02-03", "19151131", "x"])).tolist()
    ['1915-11-11', '1980-02-03', '1915-11-31', <NA>]
    """
    text = values.astype("string").str.slice(0, 64).str.strip()
    digits = text.str.replace(r"\D", "", regex=True)
    eight = digits.str.fullmatch(r"\d{8}", na=False)
    parsed = pd.to_datetime(text.where(~eight), errors="coerce", format="ISO8601")
    iso = parsed.dt.strftime("%Y-%m-%d").astype("string")
    from_digits = digits.str.slice(0, 4) + "-" + digits.str.slice(4, 6) + "-" + digits.str.slice(6)
    out = from_digits.where(eight, iso)
    return out.astype("string")


def standardise_text(values: pd.Series) -> pd.Series:
    """Free text: folded like a name (cut at :data:`MAX_CHARS`)."""
    return _fold(values)
