"""The feature registry: names, declarations, the contract with other rooms, generated docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from customer360.features import registry
from customer360.features.registry import (
    FAMILY_SQL,
    FEATURE_SET_VERSION,
    FEATURES,
    catalogue_markdown,
    describe,
    feature_names,
)
from customer360.features.spec import FAMILIES, FeatureError, feature

ROOT = Path(__file__).resolve().parents[1]


def _key_features_from_architecture() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("Key features other rooms rely on", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`([a-z]+__[a-z0-9_]+__[a-z0-9]+)`", block)


def test_every_key_feature_of_the_architecture_contract_exists():
    keys = _key_features_from_architecture()
    assert len(keys) >= 27
    missing = sorted(set(keys) - set(feature_names()))
    assert not missing, f"features promised in docs/architecture.md are missing: {missing}"


def test_declarations_are_well_formed():
    names = feature_names()
    assert len(names) == len(set(names)) == len(FEATURES) >= 100
    pattern = re.compile(r"^(demo|txn|tp|beh|social|svc)__[a-z0-9_]+__(\d+d|all|static)$")
    for spec in FEATURES:
        assert pattern.match(spec.name), spec.name
        assert spec.name.startswith(spec.family + "__")
        assert spec.description and spec.description == spec.description.strip()
        window = spec.name.rsplit("__", 1)[1]
        assert spec.window_days == (int(window[:-1]) if window.endswith("d") else None)
        assert spec.default is not None or spec.null_means, spec.name
        assert spec.dtype in {"int64", "float64", "category"}
        if spec.dtype == "category":
            assert isinstance(spec.default, str), spec.name
    assert set(FAMILY_SQL) == set(FAMILIES)
    assert all(feature_names(family) for family in FAMILIES)


def test_describe_and_unknown_names():
    assert describe("txn__recency_days__all") == "days since last purchase"
    with pytest.raises(FeatureError, match="features list"):
        describe("txn__nope__all")
    with pytest.raises(FeatureError, match="Unknown feature family"):
        feature_names("nope")


@pytest.mark.parametrize(
    ("name", "dtype", "default", "message"),
    [
        ("txn_orders_30d", "int64", 0, "does not read"),
        ("foo__orders__30d", "int64", 0, "unknown family"),
        ("txn__orders__30d", "int32", 0, "dtype"),
        ("txn__orders__30d", "float64", None, "null means"),
        ("txn__orders__weekly", "int64", 0, "does not read"),
    ],
)
def test_bad_declarations_are_refused(name, dtype, default, message):
    with pytest.raises(FeatureError, match=message):
        feature(name, "orders", dtype, default, "x.n")


def test_feature_set_version_is_a_hash_of_the_declarations():
    assert re.fullmatch(r"[0-9a-f]{12}", FEATURE_SET_VERSION)
    assert registry._version() == FEATURE_SET_VERSION
    changed = FEATURES[0].__class__(**{**FEATURES[0].__dict__, "sql": "base.region"})
    original = registry.FEATURES
    try:
        registry.FEATURES = (changed, *original[1:])
        assert registry._version() != FEATURE_SET_VERSION
    finally:
        registry.FEATURES = original


def test_docs_catalogue_is_up_to_date():
    on_disk = (ROOT / "docs" / "features.md").read_text()
    assert on_disk == catalogue_markdown(), (
        "docs/features.md is stale: run `customer360 features docs`"
    )
    for spec in FEATURES:
        assert f"`{spec.name}`" in on_disk
    assert FEATURE_SET_VERSION in on_disk
