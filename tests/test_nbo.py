"""Next best offer on hand-built frames: every eligibility rule with its reason, the propensity
model, the decision's ranking and output contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from customer360.errors import ConfigError, Customer360Error, ModelError
from customer360.models.nbo import (
    EXCLUSION_REASONS,
    RECOMMEND_COLUMNS,
    NBOConfig,
    PropensityModel,
    eligibility,
    greedy_choice,
    load_nbo_config,
    recommend,
)

AS_OF = pd.Timestamp("2026-06-30")


@pytest.fixture
def config() -> NBOConfig:
    return load_nbo_config()


@pytest.fixture
def offers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "offer_id": ["O1", "O2", "O3", "O4", "O5"],
            "product": ["p1", "p2", "p3", "p4", "p5"],
            "category": ["electronics", "home", "services", "services", "fashion"],
            "kind": ["sales", "cross_sell", "retention", "service", "sales"],
            "margin": [100.0, 40.0, 20.0, 30.0, 10.0],
            "channel": ["email", "app", "email", "phone", "web"],
            "eligible_segments": ["A|B", "A|B|C|D", "A|B|C|D", "A|B|C|D", "C|D"],
        }
    )


@pytest.fixture
def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3", "C4"],
            "as_of": AS_OF,
            "value_segment": ["A", "D", "B", "B"],
            "svc__open_returns__all": [1, 0, 0, 0],
            "svc__open_complaints__all": [0, 0, 0, 0],
            "x": [1.0, -1.0, 0.5, 0.0],
        }
    )


@pytest.fixture
def history() -> pd.DataFrame:
    day = pd.Timedelta(days=1)
    rows = [
        ("C3", "O2", AS_OF - 300 * day, "app", True),  # held
        ("C3", "O3", AS_OF - 10 * day, "email", False),  # recently rejected
        ("C3", "O4", AS_OF - 200 * day, "phone", False),  # rejected long ago: eligible again
        ("C2", "O2", AS_OF + 1 * day, "app", True),  # after as_of: must not count
    ]
    rows += [("C4", "O3", AS_OF - (i + 1) * day, "email", False) for i in range(4)]
    # C4's email contacts: 4 in the last 30 days -> cap (4) reached for every email offer
    return pd.DataFrame(rows, columns=["customer_id", "offer_id", "ts", "channel", "accepted"])


def _reason(frame: pd.DataFrame, customer: str, offer: str) -> str:
    row = frame[(frame["customer_id"] == customer) & (frame["offer_id"] == offer)]
    assert len(row) == 1
    return row["reasons"].iloc[0]


def test_each_eligibility_rule_excludes_with_its_reason(customers, offers, history, config):
    elig = eligibility(customers, offers, config, history)
    assert len(elig) == len(customers) * len(offers)
    # open return: no sales / cross-sell, retention and service still allowed
    assert _reason(elig, "C1", "O1") == "open_return_or_complaint"
    assert _reason(elig, "C1", "O2") == "open_return_or_complaint"
    assert _reason(elig, "C1", "O3") == "" and _reason(elig, "C1", "O4") == ""
    # C1 is segment A: O5 is for C|D only (two reasons at once are both named)
    assert _reason(elig, "C1", "O5") == "open_return_or_complaint|segment_not_eligible"
    # segment D cannot get the A|B offer; future history is ignored
    assert _reason(elig, "C2", "O1") == "segment_not_eligible"
    assert _reason(elig, "C2", "O2") == ""
    # held, recently rejected, rejected long ago
    assert _reason(elig, "C3", "O2") == "already_held"
    assert _reason(elig, "C3", "O3") == "recently_rejected"
    assert _reason(elig, "C3", "O4") == ""
    # contact cap on e-mail hits every e-mail offer of C4, not the others
    assert _reason(elig, "C4", "O1") == "channel_contact_cap"
    assert "channel_contact_cap" in _reason(elig, "C4", "O3")
    assert _reason(elig, "C4", "O4") == ""
    assert elig["eligible"].to_numpy().tolist() == (elig["reasons"] == "").tolist()
    named = {r for rs in elig["reasons"] if rs for r in rs.split("|")}
    assert named <= set(EXCLUSION_REASONS)


def test_complaint_blocks_like_a_return_and_missing_columns_fail(customers, offers, config):
    cust = customers.assign(
        svc__open_returns__all=0, svc__open_complaints__all=[0, 2, 0, 0]
    )
    elig = eligibility(cust, offers, config)
    assert _reason(elig, "C2", "O2") == "open_return_or_complaint"
    with pytest.raises(Customer360Error, match="value_segment"):
        eligibility(cust.drop(columns="value_segment"), offers, config)
    with pytest.raises(Customer360Error, match="svc__open_returns__all"):
        eligibility(cust.drop(columns="svc__open_returns__all"), offers, config)


def test_config_is_strict(tmp_path):
    bad = tmp_path / "nbo.yaml"
    bad.write_text("decision:\n  kk: 3\n")
    with pytest.raises(ConfigError, match="kk"):
        load_nbo_config(str(bad))


def _training_frame(rng, n):
    cust = pd.DataFrame({"x": rng.normal(size=n), "seg": rng.choice(["u", "v"], n)})
    offer_id = rng.choice(["O1", "O2", "O3", "O4", "O5"], n)
    logit = -2 + 1.5 * cust["x"].to_numpy() * (offer_id == "O1") + 1.0 * (offer_id == "O4")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = cust.assign(offer_id=offer_id, category="c", kind="k", channel="email", margin=1.0)
    return X, y


def test_propensity_model_learns_and_calibrates():
    rng = np.random.default_rng(0)
    X, y = _training_frame(rng, 4000)
    Xc, yc = _training_frame(rng, 2000)
    model = PropensityModel(num_boost_round=80, params={"num_leaves": 7}).fit(
        X, y, np.ones(len(y)), X_cal=Xc, y_cal=yc
    )
    Xt, yt = _training_frame(rng, 4000)
    p = model.predict_proba(Xt)
    assert ((p >= 0) & (p <= 1)).all()
    # calibrated: mean prediction close to the observed rate, better than chance ranking
    assert abs(p.mean() - yt.mean()) < 0.02
    from sklearn.metrics import roc_auc_score

    offer_rate = pd.Series(y).groupby(X["offer_id"].to_numpy()).mean()
    baseline = offer_rate.reindex(Xt["offer_id"].to_numpy()).to_numpy()
    truth = -2 + 1.5 * Xt["x"].to_numpy() * (Xt["offer_id"] == "O1") + (Xt["offer_id"] == "O4")
    auc, auc_base, auc_true = (roc_auc_score(yt, s) for s in (p, baseline, truth))
    assert auc > auc_base + 0.02 and auc > auc_true - 0.03
    with pytest.raises(ModelError, match="lacks column"):
        model.predict_proba(Xt.drop(columns="x"))
    with pytest.raises(ModelError, match="not fitted"):
        PropensityModel().predict_proba(Xt)


def test_recommend_ranks_by_expected_value_and_lists_exclusions(
    customers, offers, history, config
):
    rng = np.random.default_rng(1)
    X, y = _training_frame(rng, 3000)
    model = PropensityModel(num_boost_round=50, calibrate=False).fit(
        X.drop(columns="seg"), y
    )
    out = recommend(customers, offers, model, config, history=history, k=2)
    assert list(out.columns) == list(RECOMMEND_COLUMNS)
    rec = out[out["status"] == "recommended"]
    exc = out[out["status"] == "excluded"]
    # at most k per customer, ranks 1..n, ordered by score, EV = p x margin
    assert rec.groupby("customer_id").size().max() == 2
    for _, grp in rec.groupby("customer_id"):
        assert grp["rank"].tolist() == list(range(1, len(grp) + 1))
        assert grp["expected_value"].is_monotonic_decreasing
    np.testing.assert_allclose(rec["expected_value"], rec["p_accept"] * rec["margin"])
    assert rec["reasons"].str.contains("expected value").all()
    # nothing excluded is recommended, every exclusion carries its reason
    elig = eligibility(customers, offers, config, history)
    bad_pairs = set(map(tuple, elig.loc[~elig["eligible"], ["customer_id", "offer_id"]].values))
    assert not bad_pairs & set(map(tuple, rec[["customer_id", "offer_id"]].values))
    assert set(map(tuple, exc[["customer_id", "offer_id"]].values)) == bad_pairs
    assert (exc["reasons"] != "").all() and exc["rank"].isna().all()
    # C1 (open return) only gets retention / service offers
    assert set(rec.loc[rec["customer_id"] == "C1", "kind"]) <= {"retention", "service"}
    # the top pick matches the greedy choice over the same model
    greedy = out[(out["customer_id"] == "C2") & (out["rank"] == 1)]["offer_id"].iloc[0]
    assert greedy == rec[rec["customer_id"] == "C2"].sort_values("score").iloc[-1]["offer_id"]


def test_recommend_retention_term_and_bandit(customers, offers, config):
    from customer360.models.bandit import BanditState

    rng = np.random.default_rng(2)
    X, y = _training_frame(rng, 2000)
    model = PropensityModel(num_boost_round=30, calibrate=False).fit(X.drop(columns="seg"), y)
    cfg = config.model_copy(
        update={"decision": config.decision.model_copy(update={"retention_weight": 1.0})}
    )
    with pytest.raises(Customer360Error, match="churn_risk"):
        recommend(customers, offers, model, cfg)
    cust = customers.assign(churn_risk=0.5, clv=1000.0)
    out = recommend(cust, offers, model, cfg, k=5, include_excluded=False)
    ret = out[out["kind"] == "retention"]
    np.testing.assert_allclose(
        ret["expected_value"], ret["p_accept"] * (ret["margin"] + 0.5 * 1000.0)
    )
    # a bandit that has seen O4 accepted 500 times in segment D pushes it to the top for C2
    state = BanditState.empty().updated(
        pd.DataFrame({"segment": ["D"] * 500, "offer_id": ["O4"] * 500, "accepted": True})
    )
    top = recommend(customers, offers, model, config, k=1, bandit=state,
                    rng=np.random.default_rng(0), include_excluded=False)
    assert top.loc[top["customer_id"] == "C2", "offer_id"].item() == "O4"
    with pytest.raises(Customer360Error, match="appears twice"):
        recommend(pd.concat([customers, customers]), offers, model, config)


def test_greedy_choice():
    values = np.array([[1.0, 5.0, 3.0], [2.0, 1.0, 0.0]])
    allowed = np.array([[True, False, True], [False, True, True]])
    assert greedy_choice(values, allowed).tolist() == [2, 1]
    with pytest.raises(Customer360Error, match="no eligible offer"):
        greedy_choice(values, np.zeros_like(allowed))


def test_category_affinity_from_the_registry_category_features():
    from customer360.models.nbo import (
        AFFINITY_COLUMNS,
        AFFINITY_PRIOR,
        PropensityConfig,
        add_pair_features,
        category_affinity,
    )

    X = pd.DataFrame(
        {
            # activity = orders + views/cart adds: home 5 + 3, fashion 0 + 0, ...
            "txn__category_orders_home__all": [5, 0, 1],
            "beh__category_events_home__all": [3, 0, 0],
            "txn__category_orders_fashion__all": [0, 0, 1],
            "category": ["home", "home", "garden"],  # garden: no category features
        }
    )
    a = category_affinity(X)
    # log(n_cat * (own + prior) / (total + n_cat * prior)); no history = no preference (0)
    expected_0 = np.log(2 * (8 + AFFINITY_PRIOR) / (8 + 2 * AFFINITY_PRIOR))
    np.testing.assert_allclose(a, [expected_0, 0.0, 0.0])
    assert "pair__category_affinity" in add_pair_features(X).columns
    assert category_affinity(X.drop(columns="category")) is None
    assert category_affinity(X[["category"]]) is None

    # the affinity's registry features join the model's inputs when the base uses it
    with_affinity = PropensityConfig(
        feature_columns=["demo__region__static"], linear_features=["pair__category_affinity"]
    )
    assert with_affinity.model_features([]) == ["demo__region__static", *AFFINITY_COLUMNS]
    plain = PropensityConfig(feature_columns=["demo__region__static"])
    assert plain.model_features(["x"]) == ["demo__region__static"]
    assert PropensityConfig().model_features(["x", "y"]) == ["x", "y"]
    assert "pair__category_affinity" in load_nbo_config().propensity.linear_features


def test_offer_linear_base_partial_pooling_matches_its_design():
    from customer360.models.nbo import OfferLinearBase

    rng = np.random.default_rng(4)
    n = 3000
    X = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "kind": rng.choice(["a", "b"], n),
            "offer_id": rng.choice(["O1", "O2", "O3"], n),
        }
    )
    # the same slope on x for every offer: pooling should find it shared
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1.5 + 1.2 * X["x"])))).astype(int)
    for shared in (False, True):
        base = OfferLinearBase(features=["x", "kind"], C=0.5, shared=shared).fit(X, y)
        np.testing.assert_allclose(
            base.logit(X), base.glm_.decision_function(base._design(X)), atol=1e-10
        )
    n_per_offer = 3 * 4  # offers x [1, x, kind=a, kind=b]
    assert base.glm_.coef_.shape[1] == n_per_offer + 3
    assert base.glm_.coef_[0][n_per_offer] > 0.5  # the shared slope on x carries the effect


def test_pair_scoring_from_customer_and_offer_rows_equals_the_pair_frame(offers):
    """Issue 17: predict_pairs (customer columns encoded once per customer, offer columns once
    per offer) gives exactly predict_proba of the pandas pair frame, unseen levels and missing
    values included; exclusion codes spell out as eligibility's reasons."""
    from customer360.models.nbo import (
        AFFINITY_COLUMNS,
        exclusion_codes,
        exclusion_text,
        pair_accept,
        pair_frame,
    )

    rng = np.random.default_rng(3)
    n = 300
    cats = ["electronics", "home", "services", "fashion", None]
    customers = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "demo__customer_type__static": rng.choice(["B2C", "B2B", None], n),
            "tp__affluence_score__static": np.where(
                rng.random(n) < 0.1, np.nan, rng.normal(size=n)
            ),
            "txn__top_category__all": rng.choice(cats, n),
            "beh__preferred_channel__365d": rng.choice(["email", "app", "web", None], n),
            **{c: rng.poisson(1.0, n) for c in AFFINITY_COLUMNS},
        }
    )
    pairs = pair_frame(customers, offers, np.repeat(np.arange(n), 5), np.tile(np.arange(5), n))
    y = (rng.random(len(pairs)) < 0.2 + 0.2 * (pairs["offer_id"] == "O1")).astype(int)
    model = PropensityModel(
        num_boost_round=15, calibrate=False, linear_C=0.3, linear_shared=True,
        linear_features=["demo__customer_type__static", "pair__category_affinity"],
    ).fit(pairs.drop(columns="customer_id"), y)
    scored = customers.assign(  # a level the model never saw
        demo__customer_type__static=customers["demo__customer_type__static"].replace("B2B", "X")
    )
    cust_idx = rng.integers(0, n, 400)
    offer_idx = rng.integers(0, 5, 400)
    expected = model.predict_proba(pair_frame(scored, offers, cust_idx, offer_idx))
    fast = model.predict_pairs(scored, offers, cust_idx, offer_idx)
    np.testing.assert_array_equal(fast, expected)
    np.testing.assert_array_equal(pair_accept(model, scored, offers, cust_idx, offer_idx), fast)
    assert len(pair_accept(model, scored, offers, cust_idx[:0], offer_idx[:0])) == 0

    assert exclusion_text(np.array([0, 1, 2, 3, 31])).tolist() == [
        "", EXCLUSION_REASONS[0], EXCLUSION_REASONS[1], "|".join(EXCLUSION_REASONS[:2]),
        "|".join(EXCLUSION_REASONS),
    ]
    frame = scored.assign(value_segment=rng.choice(list("ABCD"), n), svc__open_returns__all=0,
                          svc__open_complaints__all=rng.integers(0, 2, n))
    config = load_nbo_config()
    codes = exclusion_codes(frame, offers, config)
    elig = eligibility(frame, offers, config)
    assert (elig["reasons"].to_numpy() == exclusion_text(codes)).all()
    assert (elig["eligible"].to_numpy() == (codes == 0)).all() and codes.any()
