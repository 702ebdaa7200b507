"""The feature registry, generated from the declarations in the family modules.

Nothing is declared here: each family module holds its features next to the SQL computing
them, and this module only collects them in a fixed order. ``FEATURE_SET_VERSION`` is a hash of
every declaration (name, dtype, window, default, SQL), so any change to a feature definition
gives a new version that training runs and snapshots record.
"""

from __future__ import annotations

import hashlib
import json

from customer360.features import (
    behavioural,
    demographic,
    service,
    social,
    third_party,
    transactional,
)
from customer360.features.spec import FAMILIES, FamilySQL, FeatureError, FeatureSpec

_MODULES = (demographic, transactional, third_party, behavioural, social, service)

FAMILY_SQL: dict[str, FamilySQL] = {module.FAMILY.family: module.FAMILY for module in _MODULES}
"""Family prefix -> its SQL and features, in registry order."""

FEATURES: tuple[FeatureSpec, ...] = tuple(f for fam in FAMILY_SQL.values() for f in fam.features)
"""Every feature, family by family, in the order of the feature frame's columns."""

_BY_NAME: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}
if len(_BY_NAME) != len(FEATURES):  # pragma: no cover - guards the declarations themselves
    raise FeatureError("Two features share a name; every feature is declared once.")
if list(FAMILY_SQL) != list(FAMILIES):  # pragma: no cover
    raise FeatureError(f"Registry families {list(FAMILY_SQL)} differ from {list(FAMILIES)}.")


def _version() -> str:
    payload = [[f.name, f.family, f.dtype, f.window_days, f.default, f.sql] for f in FEATURES] + [
        [fam.family, list(fam.ctes)] for fam in FAMILY_SQL.values()
    ]
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:12]


FEATURE_SET_VERSION: str = _version()
"""Hash of every declaration; changes whenever any feature's definition changes."""


def feature_names(family: str | None = None) -> list[str]:
    """Names of all features (or of one family), in registry order.

    Examples
    --------
    >>> "txn__recency_days__all" in feature_names("txn")
    True
    """
    if family is not None and family not in FAMILY_SQL:
        raise FeatureError(f"Unknown feature family {family!r}; use one of {', '.join(FAMILIES)}.")
    return [f.name for f in FEATURES if family is None or f.family == family]


def get(name: str) -> FeatureSpec:
    """The declaration of one feature (clear error for an unknown name)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise FeatureError(
            f"Unknown feature {name!r}; `customer360 features list` prints the catalogue."
        ) from None


def describe(name: str) -> str:
    """Plain description of a feature, for reason codes ("days since last purchase").

    Examples
    --------
    >>> describe("txn__recency_days__all")
    'days since last purchase'
    """
    return get(name).description


def dtypes() -> dict[str, str]:
    """Feature name -> declared dtype (``int64``, ``float64``, ``category``)."""
    return {f.name: f.dtype for f in FEATURES}


def _default_text(spec: FeatureSpec) -> str:
    if spec.default is None:
        return f"null: {spec.null_means}"
    return f"`{spec.default}`" if not isinstance(spec.default, str) else f'`"{spec.default}"`'


def catalogue_markdown() -> str:
    """docs/features.md, generated from the declarations (``customer360 features docs``)."""
    lines = [
        "# Feature catalogue",
        "",
        "<!-- Generated from the feature declarations by `customer360 features docs`; "
        "do not edit by hand. -->",
        "",
        f"Feature-set version `{FEATURE_SET_VERSION}`: {len(FEATURES)} features in "
        f"{len(FAMILY_SQL)} families.",
        "",
        "Every feature is computed *as of* a date T from rows strictly before midnight of T "
        "(third-party records: `observed_at < T`; customers: `signup_date < T`, so a frame holds "
        "the customers signed up before T, prospects included). Names read "
        "`<family>__<what>__<window>`: `30d`, `90d`, `365d` are look-back windows "
        "`[T - N days, T)`, `all` is the whole history before T and `static` the latest known "
        "attribute. Day counts are whole calendar days. The *default* is the value of a "
        "customer with no rows in the family (or whose value is undefined, e.g. a ratio with "
        "a zero denominator); `null` says what a missing value means. Categorical features are "
        "strings (dtype `category`); model code converts them.",
        "",
        "Build them with `customer360 features build --as-of YYYY-MM-DD`, or in Python with "
        "`customer360.features.build_features(con, as_of)` (DuckDB or Spark engine) and "
        "`build_training_set(con, as_of_dates, horizon_days)` (features plus labels).",
        "",
        "## Labels (training sets)",
        "",
        "Labels read only rows in `[T, T + H)`:",
        "",
        "| label | meaning |",
        "|---|---|",
        "| `label__churn__{H}d` | 1 = no purchase in `[T, T+H)` or the contract ends in it, "
        "0 otherwise; null for customers without a purchase before T |",
        "| `label__margin__{H}d` | sum of `margin` of all transactions in `[T, T+H)`, returns "
        "included (0 if none) |",
        "| `label__purchases__{H}d` | orders (non-return transactions) in `[T, T+H)` |",
        "| `label__offer_accepted__{H}d` | 1 = an offer made in `[T, T+H)` was accepted, 0 = "
        "offers made but none accepted, null = no offer made |",
    ]
    for module in _MODULES:
        family = module.FAMILY
        doc = (module.__doc__ or "").strip().split("\n\n", 1)
        lines += ["", f"## {FAMILIES[family.family].capitalize()} (`{family.family}`)", ""]
        lines += [" ".join(doc[0].split()), ""]
        if len(doc) > 1:
            lines += [doc[1].strip(), ""]
        lines += [
            f"Source tables: {', '.join(f'`{t}`' for t in family.tables)}.",
            "",
            "| feature | description | dtype | default |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{f.name}` | {f.description} | {f.dtype} | {_default_text(f)} |"
            for f in family.features
        ]
    return "\n".join(lines) + "\n"
