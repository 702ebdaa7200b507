"""Standardisers for identity columns: raw value in, comparable value out.

Each function takes a pandas Series and returns a Series of strings (missing stays missing).
The library calls that have no vectorised form (``phonenumbers``, ``anyascii``) run once per
*distinct* value, then the results are mapped back, so repeated values cost nothing.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

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
    """Apply ``fn`` once per distinct non-missing value and put the results back by the
    values' codes (an Arrow ``take``, not a dict lookup per row)."""
    codes, uniques = pd.factorize(values.astype("string"))
    results = [fn(str(u)) for u in uniques]
    # One slot past the distinct values stands for a missing one (factorize codes it -1).
    table = pa.array([*results, None], type=pa.string())
    picked = table.take(pa.array(np.where(codes < 0, len(results), codes)))
    return pd.Series(picked.to_pandas(types_mapper=pd.ArrowDtype).array, index=values.index,
                     dtype="string")


def _fold(values: pd.Series) -> pd.Series:
    """Transliterate to ASCII, case-fold, keep letters/digits/spaces, squeeze blanks."""
    from anyascii import anyascii

    text = values.astype("string").str.slice(0, MAX_CHARS)
    # Only values with a non-ASCII character are transliterated (ASCII is its own
    # transliteration): a column of 600k distinct ASCII postcodes took 2.7 s through anyascii.
    ascii_ = pc.string_is_ascii(pa.array(text.array, type=pa.string()))
    foreign = np.flatnonzero(~np.asarray(ascii_.fill_null(True), dtype=bool))
    if len(foreign):
        text = text.copy()
        text.iloc[foreign] = _per_unique(text.iloc[foreign], anyascii).to_numpy()
    text = text.str.casefold()
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


def _e164(raw: str, region: str) -> str | None:
    """E.164 text of one raw phone (``None`` when unparseable or impossible)."""
    import phonenumbers

    try:
        number = phonenumbers.parse(raw[:64], region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def standardise_phone(values: pd.Series, default_region: str = "GB") -> pd.Series:
    """Phone number to E.164 (``+441632960961``) with ``phonenumbers``; unparseable is missing.

    Each distinct value is parsed once (``phonenumbers`` is pure Python: about 18 us a number).

    Examples
    --------
    >>> standardise_phone(pd.Series(["01632 960961", "+1 (201) 555-0123", "n/a"])).tolist()
    ['+441632960961', '+12015550123', <NA>]
    """
    return _per_unique(values, functools.partial(_e164, region=default_region))


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


# Rows from which :func:`in_row_chunks` shares the work with forked worker processes. The
# library calls above are pure Python on one core (1M source records: 16 s of phones, 8 s of
# the rest); below this a worker's start and the copy back cost more than they save.
PARALLEL_ROWS_FROM = 200_000
# A worker not done this long after the caller finished its own, equal chunk (or after
# WORKER_GRACE_SECONDS, whichever is later) is taken for hung: killed, its chunk done here.
WORKER_SLOWDOWN = 4.0
WORKER_GRACE_SECONDS = 60.0


def _cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container limited to 2 CPUs on a 64-core host sees 64 in its affinity)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def in_row_chunks(fn: Callable[..., pd.DataFrame], frame: pd.DataFrame, *args) -> pd.DataFrame:
    """``fn(frame, *args)``, computed on row chunks in parallel when ``frame`` is large.

    ``fn`` must be row-wise (each output row depends on its input row only) and return a frame
    with ``frame``'s index. From :data:`PARALLEL_ROWS_FROM` rows, up to one chunk per core (at
    least half that many rows a chunk): the caller's process takes the first, forked workers
    the others, each sending its result back through a pipe. Only on Linux: a spawned worker
    imports the caller's ``__main__`` again (a script without a main guard would run twice),
    and macOS's system libraries are not safe to fork; elsewhere the work stays serial.

    The fork is safe although DuckDB's (or a progress display's) threads may be running: the
    garbage collector's objects are frozen first (the child never finalises the caller's
    objects, e.g. a DuckDB connection), the child writes to the process's own stdout / stderr
    rather than to any replacement a console installed (whose lock a thread may hold), runs
    only ``fn`` on its chunk and leaves by ``os._exit``. A worker that dies (killed, out of
    memory), fails or hangs (see :data:`WORKER_SLOWDOWN`) costs time, not rows: its chunk is
    done in the calling process, where an error in ``fn`` is raised as usual.

    Examples
    --------
    >>> in_row_chunks(lambda f, k: f * k, pd.DataFrame({"a": [1, 2]}), 3)["a"].tolist()
    [3, 6]
    """
    workers = min(_cores(), len(frame) // (PARALLEL_ROWS_FROM // 2))
    if len(frame) < PARALLEL_ROWS_FROM or workers <= 1 or sys.platform != "linux":
        return fn(frame, *args)
    bounds = np.linspace(0, len(frame), workers + 1).astype(int)
    chunks = [frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    fork = mp.get_context("fork")
    # The workers inherit the job by the fork, so neither ``fn`` nor the chunks are pickled;
    # only the results come back.
    key = id(chunks)
    _JOBS[key] = (fn, chunks, args)
    started: list[tuple[int, Any, Any]] = []
    gc.collect()
    gc.freeze()
    try:
        for i in range(1, workers):
            receive, send = fork.Pipe(duplex=False)
            worker = fork.Process(target=_run_chunk, args=(key, i, send), daemon=True)
            worker.start()
            send.close()
            started.append((i, worker, receive))
    finally:
        gc.unfreeze()
        del _JOBS[key]
    try:
        t0 = time.monotonic()
        parts = {0: fn(chunks[0], *args)}
        deadline = time.monotonic() + max(WORKER_GRACE_SECONDS,
                                          WORKER_SLOWDOWN * (time.monotonic() - t0))
        for i, _, receive in started:
            try:
                if not receive.poll(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("no result in time")
                parts[i] = receive.recv()
            except Exception as exc:  # noqa: BLE001 - any failure of a worker is redone here
                # Died (EOF: the pipe closed without a result), failed, hung or sent a torn
                # result.
                logger.warning("standardising worker %d of %d gave no result (%s); its chunk "
                               "is done in the calling process", i, workers - 1,
                               type(exc).__name__)
                parts[i] = fn(chunks[i], *args)
    finally:
        for _, worker, receive in started:
            if worker.is_alive():
                worker.kill()
            worker.join()
            receive.close()
    return pd.concat([parts[i] for i in range(workers)])


_JOBS: dict[int, tuple[Callable[..., pd.DataFrame], list[pd.DataFrame], tuple]] = {}


def _run_chunk(key: int, index: int, send: Any) -> None:
    """A forked worker: ``fn`` on chunk ``index`` of job ``key``, the result sent back."""
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    fn, chunks, args = _JOBS[key]
    try:
        send.send(fn(chunks[index], *args))
    finally:
        send.close()
