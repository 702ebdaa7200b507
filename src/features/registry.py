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

FAMILY_SQL: dict[str, FamilySQL] = {
    module.FAMILY.family: module.FAMILY
    for module in (demographic, transactional, third_party, behavioural, social, service)
}
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


def categorical_features() -> list[str]:
    """Names of the string-valued features (model code converts them to categories)."""
    return [f.name for f in FEATURES if f.dtype == "category"]
