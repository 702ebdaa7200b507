"""Next best offer: eligibility rules, the acceptance-propensity model and the decision.

* :func:`eligibility` crosses customers with the offer catalogue and names every exclusion
  (``open_return_or_complaint``, ``segment_not_eligible``, ``already_held``,
  ``recently_rejected``, ``channel_contact_cap``), vectorised over all pairs.
* :class:`PropensityModel` is a calibrated LightGBM estimate of P(accept | customer, offer),
  fitted with inverse-propensity weights so the logging policy's choices do not bias it.
* :func:`recommend` ranks the eligible offers of every customer by expected value
  ``P(accept) x margin`` (+ an optional retention term), optionally through Thompson sampling
  (:mod:`customer360.models.bandit`), and returns the top ``k`` with reasons plus the excluded
  offers with theirs.

Thompson sampling lives in :mod:`customer360.models.bandit`, off-policy evaluation in
:mod:`customer360.models.ope`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from customer360.config import StrictModel, load_config
from customer360.data.contracts import CATEGORIES
from customer360.errors import Customer360Error, ModelError
from customer360.features.behavioural import CATEGORY_EVENTS
from customer360.features.transactional import CATEGORY_ORDERS
from customer360.models.churn import NO_CALIBRATION, Calibrator
from customer360.models.tabular import BoostedTabularModel, TableSchema, infer_schema, to_matrix

log = logging.getLogger(__name__)

OFFER_COLUMNS = ("offer_id", "category", "kind", "channel", "margin")
"""Offer attributes the propensity model sees next to the customer features."""

REASON_OPEN_ISSUE = "open_return_or_complaint"
REASON_SEGMENT = "segment_not_eligible"
REASON_HELD = "already_held"
REASON_REJECTED = "recently_rejected"
REASON_CONTACT_CAP = "channel_contact_cap"
EXCLUSION_REASONS = (
    REASON_OPEN_ISSUE,
    REASON_SEGMENT,
    REASON_HELD,
    REASON_REJECTED,
    REASON_CONTACT_CAP,
)
"""Every name an exclusion can carry (joined with '|' when several rules apply)."""

RECOMMEND_COLUMNS = (
    "customer_id",
    "offer_id",
    "status",
    "rank",
    "p_accept",
    "score",
    "expected_value",
    "margin",
    "kind",
    "channel",
    "reasons",
)


# --- config -------------------------------------------------------------------------------


class OfferOverride(StrictModel):
    offer_id: str
    product: str | None = None
    category: str | None = None
    kind: str | None = None
    margin: float | None = None
    channel: str | None = None
    eligible_segments: str | None = None


class CatalogueConfig(StrictModel):
    source_table: str = "offers"
    overrides: list[OfferOverride] = Field(default_factory=list)


class EligibilityConfig(StrictModel):
    open_issue_features: list[str] = Field(
        default_factory=lambda: ["svc__open_returns__all", "svc__open_complaints__all"]
    )
    blocked_kinds_with_open_issue: list[str] = Field(
        default_factory=lambda: ["sales", "cross_sell"]
    )
    segment_column: str = "value_segment"
    contact_window_days: int = Field(30, gt=0)
    contact_cap: dict[str, int] = Field(default_factory=dict)
    exclude_held: bool = True
    rejected_window_days: int = Field(90, ge=0)


class PropensityConfig(StrictModel):
    history_days: int = Field(365, gt=0)
    as_of_step_months: int = Field(1, ge=1)
    holdout_fraction: float = Field(0.3, gt=0, lt=1)
    calibration_fraction: float = Field(0.15, gt=0, lt=1)
    # Calibration map fitted on the calibration events plus out-of-fold predictions of the
    # training events (this many contiguous folds; 0 = calibration events only).
    calibration_folds: int = Field(3, ge=0)
    weight_clip: float = Field(50.0, ge=1)
    calibrate: Literal["sigmoid", "isotonic", "none"] = "sigmoid"
    # Per-offer logistic base margin on these columns (empty: plain LightGBM).
    linear_features: list[str] = Field(default_factory=list)
    linear_C: float = Field(1.0, gt=0)
    # Partial pooling: shared slopes next to the per-offer ones (both L2-penalised), so an
    # offer with few acceptances borrows strength from the others.
    linear_shared: bool = True
    # Register a model refit on every logged event (the shared runner's refit on all rows).
    refit: bool = True
    num_boost_round: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(30, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)
    # Customer features the model sees (null: every registry feature). With
    # pair__category_affinity in linear_features the per-category registry features it is
    # computed from (AFFINITY_COLUMNS) are added.
    feature_columns: list[str] | None = None
    trials: int = Field(0, ge=0)
    search_space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = 42

    def model_features(self, available: list[str]) -> list[str]:
        """The customer features the model reads, given the registry's feature names."""
        wanted = list(self.feature_columns or available)
        if "pair__category_affinity" in self.linear_features:
            wanted += [c for c in AFFINITY_COLUMNS if c not in wanted]
        return wanted


class DecisionConfig(StrictModel):
    k: int = Field(3, ge=1)
    retention_weight: float = Field(0.0, ge=0)
    retention_kinds: list[str] = Field(default_factory=lambda: ["retention"])
    churn_column: str = "churn_risk"
    clv_column: str = "clv"


class BanditConfig(StrictModel):
    prior_strength: float = Field(20.0, gt=0)
    prior_mean: float = Field(0.1, gt=0, lt=1)
    exploration: float = Field(1.0, ge=0)
    # One Thompson decision per customer per period (see bandit.decision_quantiles): the same
    # customer gets the same ranks on every call, endpoint and batch run within a period.
    decision_period: Literal["day", "week", "month"] = "week"


class OPEConfig(StrictModel):
    n_boot: int = Field(500, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)
    min_propensity: float = Field(1e-3, gt=0)
    seed: int = 0


class NBOConfig(StrictModel):
    catalogue: CatalogueConfig = Field(default_factory=CatalogueConfig)
    eligibility: EligibilityConfig = Field(default_factory=EligibilityConfig)
    propensity: PropensityConfig = Field(default_factory=PropensityConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    bandit: BanditConfig = Field(default_factory=BanditConfig)
    ope: OPEConfig = Field(default_factory=OPEConfig)


def load_nbo_config(name_or_path: str = "nbo") -> NBOConfig:
    """Parse ``configs/nbo.yaml`` (or the given file) into :class:`NBOConfig`."""
    return load_config(name_or_path, NBOConfig)


def apply_overrides(offers: pd.DataFrame, config: NBOConfig) -> pd.DataFrame:
    """The catalogue: warehouse offers with the config's per-offer overrides applied."""
    offers = offers.copy()
    for override in config.catalogue.overrides:
        values = override.model_dump(exclude_none=True)
        hit = offers["offer_id"] == override.offer_id
        if hit.any():
            for col, val in values.items():
                offers.loc[hit, col] = val
        else:
            missing = {"kind", "margin", "channel", "eligible_segments", "category"} - set(values)
            if missing:
                raise Customer360Error(
                    f"configs/nbo.yaml catalogue.overrides adds offer {override.offer_id!r} "
                    f"that is not in the warehouse; give it {sorted(missing)} too."
                )
            offers = pd.concat([offers, pd.DataFrame([values])], ignore_index=True)
    return offers


def offer_catalogue(raw: pd.DataFrame, config: NBOConfig) -> pd.DataFrame:
    """The catalogue training and serving score: the warehouse's offer table (``raw``) with
    the config's overrides, sorted by ``offer_id``."""
    return apply_overrides(raw, config).sort_values("offer_id").reset_index(drop=True)


# --- eligibility --------------------------------------------------------------------------


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise Customer360Error(
            f"{what} lacks column(s) {missing}; it has {list(frame.columns)[:12]}..."
        )


def _as_of_per_customer(customers: pd.DataFrame) -> pd.Series:
    if "as_of" in customers.columns:
        return pd.to_datetime(customers["as_of"]).astype("datetime64[us]")
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    return pd.Series(now, index=customers.index).astype("datetime64[us]")


def eligibility(
    customers: pd.DataFrame,
    offers: pd.DataFrame,
    config: NBOConfig,
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every customer x offer pair with ``eligible`` and the named reasons it is excluded.

    Parameters
    ----------
    customers
        One row per customer: ``customer_id``, the value segment column (config
        ``eligibility.segment_column``, A-D), the open-issue features and optionally ``as_of``
        (the decision time; default now). Features are as built by ``build_features``.
    offers
        Catalogue: ``offer_id``, ``kind``, ``channel``, ``margin``, ``eligible_segments``
        ('A|B').
    history
        Past offers: ``customer_id``, ``offer_id``, ``ts``, ``channel``, ``accepted`` (e.g.
        ``offer_events`` plus recorded feedback). Only rows strictly before each customer's
        ``as_of`` count.

    Returns
    -------
    DataFrame
        ``customer_id``, ``offer_id``, ``eligible`` (bool), ``reasons`` ('' when eligible,
        else names from :data:`EXCLUSION_REASONS` joined by '|'), in customer-major order.
    """
    codes = exclusion_codes(customers, offers, config, history)
    n_c, n_o = len(customers), len(offers)
    return pd.DataFrame(
        {
            "customer_id": np.repeat(customers["customer_id"].to_numpy(), n_o),
            "offer_id": np.tile(offers["offer_id"].to_numpy(), n_c),
            "eligible": codes == 0,
            "reasons": exclusion_text(codes),
        }
    )


def exclusion_text(codes: np.ndarray) -> np.ndarray:
    """The ``reasons`` text of exclusion ``codes`` (bit ``i`` set: rule
    ``EXCLUSION_REASONS[i]`` applies): names joined by '|' in that order, '' when eligible;
    one lookup in a table of every combination (issue 17: no string work per pair)."""
    table = np.array(
        [
            "|".join(name for i, name in enumerate(EXCLUSION_REASONS) if code >> i & 1)
            for code in range(1 << len(EXCLUSION_REASONS))
        ],
        dtype=object,
    )
    return table[np.asarray(codes, dtype=np.intp)]


def exclusion_codes(
    customers: pd.DataFrame,
    offers: pd.DataFrame,
    config: NBOConfig,
    history: pd.DataFrame | None = None,
) -> np.ndarray:
    """:func:`eligibility` as numbers: one ``uint8`` per customer x offer pair in
    customer-major order, bit ``i`` set when rule ``EXCLUSION_REASONS[i]`` excludes the pair
    (0: eligible). :func:`exclusion_text` spells a code out."""
    rules = config.eligibility
    _require(customers, ["customer_id", rules.segment_column], "The customer frame")
    _require(offers, ["offer_id", "kind", "channel", "eligible_segments"], "The offer catalogue")
    n_c, n_o = len(customers), len(offers)
    codes = np.zeros((n_c, n_o), dtype=np.uint8)
    bit = {name: np.uint8(1 << i) for i, name in enumerate(EXCLUSION_REASONS)}
    for col in rules.open_issue_features:
        _require(customers, [col], "The customer frame (open-issue rule)")
    if not n_c or not n_o:
        return codes.ravel()

    open_issue = np.zeros(n_c, dtype=bool)
    for col in rules.open_issue_features:
        open_issue |= pd.to_numeric(customers[col], errors="coerce").fillna(0).to_numpy() > 0
    blocked_kind = offers["kind"].isin(rules.blocked_kinds_with_open_issue).to_numpy()
    codes[np.ix_(open_issue, blocked_kind)] |= bit[REASON_OPEN_ISSUE]

    segments = customers[rules.segment_column].astype(str).to_numpy()
    allowed = offers["eligible_segments"].fillna("").astype(str).str.split("|")
    seg_levels, seg_code = np.unique(segments, return_inverse=True)
    # (segment-level, offer) membership table, then one fancy-indexing lookup for all pairs.
    member = np.array([[lvl in set(a) for a in allowed] for lvl in seg_levels], dtype=bool)
    codes |= np.where(member[seg_code], np.uint8(0), bit[REASON_SEGMENT])

    flat = codes.ravel()
    if history is not None and len(history):
        _require(history, ["customer_id", "offer_id", "ts", "accepted"], "The offer history")
        pair_pos, chan_hits = _history_flags(customers, offers, history, config)
        if rules.exclude_held:
            flat[pair_pos["held"]] |= bit[REASON_HELD]
        flat[pair_pos["rejected"]] |= bit[REASON_REJECTED]
        flat[chan_hits] |= bit[REASON_CONTACT_CAP]
    return flat


def _history_flags(
    customers: pd.DataFrame, offers: pd.DataFrame, history: pd.DataFrame, config: NBOConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pair positions held / recently rejected, and the channel-cap mask, from the history.

    ``customers`` may hold several rows per customer (one per decision, each with its own
    ``as_of``): history is matched on ``customer_id`` and cut at each row's ``as_of``.
    """
    rules = config.eligibility
    n_o = len(offers)
    offer_pos = pd.Series(np.arange(n_o), index=offers["offer_id"].to_numpy())
    rows = pd.DataFrame(
        {
            "row": np.arange(len(customers)),
            "customer_id": customers["customer_id"].to_numpy(),
            "decision_at": _as_of_per_customer(customers).to_numpy(),
        }
    )
    hist = pd.DataFrame(
        {
            "customer_id": history["customer_id"].to_numpy(),
            "offer_id": history["offer_id"].to_numpy(),
            "ts": pd.to_datetime(history["ts"]).to_numpy().astype("datetime64[us]"),
            "accepted": history["accepted"].astype(bool).to_numpy(),
            "channel": history["channel"].astype(str).to_numpy()
            if "channel" in history.columns
            else offers.set_index("offer_id")["channel"]
            .reindex(history["offer_id"].to_numpy())
            .to_numpy(),
        }
    )
    joined = rows.merge(hist, on="customer_id", how="inner")
    joined = joined[joined["ts"].to_numpy() < joined["decision_at"].to_numpy()]
    age_days = (joined["decision_at"] - joined["ts"]).to_numpy() / np.timedelta64(1, "D")
    oi = offer_pos.reindex(joined["offer_id"].to_numpy()).to_numpy()
    known = ~np.isnan(oi)
    pair = joined["row"].to_numpy() * n_o + np.where(known, oi, 0).astype(np.int64)
    accepted = joined["accepted"].to_numpy()
    held = pair[known & accepted]
    rejected = pair[known & ~accepted & (age_days <= rules.rejected_window_days)]

    capped = np.zeros(len(customers) * n_o, dtype=bool)
    if rules.contact_cap:
        recent = joined[age_days <= rules.contact_window_days]
        contacts = recent.groupby(["row", "channel"]).size().rename("n").reset_index()
        contacts["cap"] = contacts["channel"].map(rules.contact_cap).astype(float)
        at_cap = contacts[contacts["n"] >= contacts["cap"]]  # NaN cap (uncapped) never hits
        if len(at_cap):
            full = at_cap[["row", "channel"]].merge(
                pd.DataFrame({"channel": offers["channel"].astype(str).to_numpy(),
                              "o": np.arange(n_o)}),
                on="channel",
            )
            capped[full["row"].to_numpy() * n_o + full["o"].to_numpy()] = True
    return {"held": held, "rejected": rejected}, capped


# --- propensity model ---------------------------------------------------------------------

AFFINITY_SOURCES: dict[str, tuple[str, str]] = {
    c: (CATEGORY_ORDERS[c], CATEGORY_EVENTS[c]) for c in CATEGORIES
}
"""Product category -> the registry features whose sum is the customer's activity in it
(orders + product views and cart adds before the as-of date)."""
AFFINITY_COLUMNS: tuple[str, ...] = tuple(c for pair in AFFINITY_SOURCES.values() for c in pair)
AFFINITY_PRIOR = 1.0
"""Pseudo-count per category that shrinks a thin activity history towards no preference."""

PAIR_FEATURES = {
    # pair feature -> (customer feature, offer column): 1 when they agree, NaN when unknown
    "pair__top_category_match": ("txn__top_category__all", "category"),
    "pair__preferred_channel_match": ("beh__preferred_channel__365d", "channel"),
}


def add_pair_features(X: pd.DataFrame) -> pd.DataFrame:
    """Customer x offer agreement features the trees would otherwise need many splits for.

    Computed from columns already in the model input, so callers pass only customer features
    plus offer columns.
    """
    extra = {}
    affinity = category_affinity(X)
    if affinity is not None:
        extra["pair__category_affinity"] = affinity
    for name, (cust_col, offer_col) in PAIR_FEATURES.items():
        if cust_col in X.columns and offer_col in X.columns:
            left = X[cust_col].astype("string")
            same = (left == X[offer_col].astype("string")).astype("Float64")
            extra[name] = same.where(left.notna()).astype(float).to_numpy()
    if not extra:
        return X
    base = X.drop(columns=[c for c in extra if c in X.columns])
    return pd.concat([base, pd.DataFrame(extra, index=X.index)], axis=1)



def category_affinity(X: pd.DataFrame) -> np.ndarray | None:
    """Log affinity of each row's customer for the row's offer category, or None when ``X``
    has none of the :data:`AFFINITY_COLUMNS` (or no ``category`` column).

    Activity in a category = orders + product views and cart adds in it (the registry features
    of :data:`AFFINITY_SOURCES`). ``log(n_categories * share)`` with ``share = (activity in the
    offer's category + prior) / (all activity + n_categories * prior)``: 0 = no preference,
    positive = the customer buys and browses that category more than an even split. An offer
    category without activity columns gets 0.
    """
    if "category" not in X.columns:
        return None
    names, blocks = [], []
    for cat, sources in AFFINITY_SOURCES.items():
        present = [c for c in sources if c in X.columns]
        if present:
            names.append(cat)
            cols = X[present].apply(pd.to_numeric, errors="coerce").fillna(0.0)
            blocks.append(cols.to_numpy(dtype=float).sum(axis=1))
    if not names:
        return None
    counts = np.column_stack(blocks)
    n_cat = len(names)
    idx = pd.Categorical(X["category"].astype("string"), categories=names).codes
    own = counts[np.arange(len(X)), np.maximum(idx, 0)]
    share = (own + AFFINITY_PRIOR) / (counts.sum(axis=1) + n_cat * AFFINITY_PRIOR)
    return np.where(idx >= 0, np.log(n_cat * share), 0.0)


class OfferLinearBase:
    """Per-offer logistic regression used as LightGBM's starting margin.

    Design: offer one-hot x ``[1, features]`` (numeric features standardised, categorical ones
    one-hot), plus with ``shared`` the features themselves (slopes common to every offer, so
    the per-offer slopes are deviations shrunk towards them: partial pooling), L2-penalised
    with strength ``1 / C``. Few logged acceptances cannot teach trees
    every offer x customer interaction; this base gives each offer its own slopes and the
    boosting on top corrects what it misses.
    """

    def __init__(self, *, features: list[str], C: float = 1.0, shared: bool = False) -> None:
        self.features = features
        self.C = C
        self.shared = shared

    def _parts(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Shared customer block ``[1, features]`` and the offer code of every row."""
        blocks = [np.ones((len(X), 1))]
        for col in self.features:
            if col in self.levels_:
                codes = pd.Categorical(X[col].astype("string"), categories=self.levels_[col])
                blocks.append(np.eye(len(self.levels_[col]))[np.maximum(codes.codes, 0)]
                              * (codes.codes >= 0)[:, None])
            else:
                v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float)
                mean, std = self.scale_[col]
                blocks.append(np.nan_to_num((v - mean) / std, nan=0.0)[:, None])
        codes = pd.Categorical(X["offer_id"].astype("string"), categories=self.offers_).codes
        return np.hstack(blocks), codes

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        base, codes = self._parts(X)
        onehot = np.eye(len(self.offers_))[np.maximum(codes, 0)] * (codes >= 0)[:, None]
        per_offer = (onehot[:, :, None] * base[:, None, :]).reshape(len(X), -1)
        if not getattr(self, "shared", False):  # models pickled before partial pooling
            return per_offer
        return np.hstack([per_offer, base[:, 1:]])

    def fit(self, X: pd.DataFrame, y, sample_weight=None) -> OfferLinearBase:
        from sklearn.linear_model import LogisticRegression

        missing = [c for c in self.features if c not in X.columns]
        if missing:
            raise ModelError(f"The linear base needs column(s) {missing}; see linear_features.")
        self.offers_ = sorted(X["offer_id"].astype(str).unique().tolist())
        self.levels_, self.scale_ = {}, {}
        for col in self.features:
            if pd.api.types.is_numeric_dtype(X[col]) or pd.api.types.is_bool_dtype(X[col]):
                v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float)
                std = float(np.nanstd(v)) if np.isfinite(v).any() else 1.0
                self.scale_[col] = (float(np.nanmean(v)) if np.isfinite(v).any() else 0.0,
                                    std if std > 0 else 1.0)
            else:
                self.levels_[col] = sorted(X[col].dropna().astype(str).unique().tolist())
        w = None if sample_weight is None else np.asarray(sample_weight, float)
        self.glm_ = LogisticRegression(C=self.C, max_iter=5000).fit(
            self._design(X), np.asarray(y, dtype=int),
            sample_weight=None if w is None else w / w.mean(),
        )
        return self

    def logit(self, X: pd.DataFrame) -> np.ndarray:
        """Linear predictor per row; computed per offer block, never materialising the
        (rows x offers x features) design."""
        base, codes = self._parts(X)
        n_per_offer = len(self.offers_) * base.shape[1]
        coef = self.glm_.coef_[0][:n_per_offer].reshape(len(self.offers_), base.shape[1])
        rows = coef[np.maximum(codes, 0)] * (codes >= 0)[:, None]  # unknown offer: intercept
        z = np.einsum("ij,ij->i", base, rows) + self.glm_.intercept_[0]
        if getattr(self, "shared", False):
            z = z + base[:, 1:] @ self.glm_.coef_[0][n_per_offer:]
        return z


ID_COLUMNS = ("customer_id", "as_of")
"""Key columns of a model input row; never model inputs themselves."""


class PropensityModel(BoostedTabularModel):
    """Calibrated LightGBM estimate of P(accept | customer features, offer).

    The shared estimator base (:class:`~customer360.models.tabular.BoostedTabularModel`) does
    the typing (one :class:`~customer360.models.tabular.TableSchema` encoder), the boosting
    with early stopping, the refit on all rows and saving; calibration is the churn model's
    :class:`~customer360.models.churn.Calibrator`. What is NBO's own: the customer x offer
    pair features (:func:`add_pair_features`, computed inside the model from the customer
    features and offer columns), row weights (inverse-propensity weights of logged offers),
    the per-offer logistic base the trees start from, and the offer catalogue
    (``offers_``, set by training) that :meth:`predict_frame` scores when no offer columns
    are given.

    Parameters
    ----------
    params
        LightGBM parameters (objective is always binary).
    num_boost_round, early_stopping_rounds
        Boosting rounds; early stopping on the calibration set when given.
    calibrate
        ``"sigmoid"`` (Platt scaling of the log-odds on the calibration set; smooth, so it
        keeps the ranking of P(accept) x margin across offers), ``"isotonic"``, or
        ``None``/False/``"none"``.
    linear_features, linear_C, linear_shared
        When given, boosting starts from an :class:`OfferLinearBase` on these columns (with
        penalty ``1 / linear_C``; ``linear_shared`` adds slopes shared by all offers).
    seed, n_jobs
        Random seed; LightGBM threads (1: logged offers are small data, more threads only
        add OpenMP spin-wait).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"x": rng.normal(size=400), "offer_id": rng.choice(["a", "b"], 400)})
    >>> y = (rng.random(400) < 0.2 + 0.3 * (X["offer_id"] == "a")).astype(int)
    >>> m = PropensityModel(num_boost_round=20, calibrate=False).fit(X, y)
    >>> m.predict_proba(X).shape
    (400,)
    """

    objective = {"objective": "binary", "metric": "binary_logloss"}
    kind = "nbo"

    def __init__(
        self,
        *,
        params: dict | None = None,
        num_boost_round: int = 300,
        early_stopping_rounds: int = 30,
        calibrate: str | bool | None = "sigmoid",
        linear_features: list[str] | None = None,
        linear_C: float = 1.0,
        linear_shared: bool = False,
        seed: int = 42,
        n_jobs: int = 1,
    ) -> None:
        super().__init__(
            params=params,
            num_boost_round=num_boost_round,
            early_stopping_rounds=early_stopping_rounds,
            seed=seed,
            n_jobs=n_jobs,
        )
        self.calibrate = calibrate
        self.linear_features = linear_features
        self.linear_C = linear_C
        self.linear_shared = linear_shared

    # --- inputs -------------------------------------------------------------------------------

    def _pairs(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` with the pair features, checked against the fitted columns."""
        P = add_pair_features(X)
        missing = [c for c in self.schema_.columns if c not in P.columns]
        if missing:
            raise ModelError(
                f"Propensity model input lacks column(s) {missing[:10]}; pass the customer "
                f"features plus the offer columns {list(OFFER_COLUMNS)}."
            )
        return P

    def _base_logit(self, P: pd.DataFrame) -> np.ndarray:
        """The linear base's log-odds of pair rows ``P`` (zeros without a base)."""
        if getattr(self, "base_", None) is None:
            return np.zeros(len(P))
        return self.base_.logit(P)

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise ModelError("PropensityModel is not fitted; call fit() first.")

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        """The model matrix of feature + offer rows ``X`` (pair features added)."""
        self._check_fitted()
        return to_matrix(self._pairs(X), self.schema_)

    def _block(self, frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
        """Columns ``cols`` of ``frame`` encoded as in the model matrix (:func:`to_matrix`)."""
        cats = self.schema_.categories
        return to_matrix(frame, TableSchema(tuple(cols), {c: cats[c] for c in cols if c in cats}))

    def pair_inputs(
        self,
        customers: pd.DataFrame,
        offers: pd.DataFrame,
        cust_idx: np.ndarray,
        offer_idx: np.ndarray,
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """The model matrix of the pairs ``(cust_idx[i], offer_idx[i])`` and the few pair
        columns the linear base reads, without the pandas pair frame of every input (issue
        17): each customer column is encoded once per customer and each offer column once per
        offer, then repeated; only the pair features (:func:`add_pair_features`) are computed
        per pair, from the columns they read. Equal to ``matrix(pair_frame(...))``.
        """
        self._check_fitted()
        names = list(self.schema_.columns)
        pair_cols = [c for c in names if c.startswith("pair__")]
        offer_cols = [c for c in names if c in OFFER_COLUMNS]
        cust_cols = [c for c in names if c not in pair_cols and c not in offer_cols]
        missing = [c for c in cust_cols if c not in customers.columns]
        if missing:
            raise ModelError(
                f"Propensity model input lacks column(s) {missing[:10]}; pass the customer "
                f"features plus the offer columns {list(OFFER_COLUMNS)}."
            )
        position = {c: j for j, c in enumerate(names)}
        out = np.empty((len(cust_idx), len(names)), dtype=np.float64)
        out[:, [position[c] for c in cust_cols]] = self._block(customers, cust_cols)[cust_idx]
        out[:, [position[c] for c in offer_cols]] = self._block(offers, offer_cols)[offer_idx]
        reads = [
            *AFFINITY_COLUMNS,
            *(cust for cust, _ in PAIR_FEATURES.values()),
            *(self.base_.features if self.base_ is not None else ()),
        ]
        kept = [c for c in dict.fromkeys(reads) if c in customers.columns]
        small = add_pair_features(pair_frame(customers[kept], offers, cust_idx, offer_idx))
        lacking = [c for c in pair_cols if c not in small.columns]
        if lacking:
            raise ModelError(
                f"Propensity model input lacks the pair feature(s) {lacking}: the customer "
                "frame lacks the columns they are computed from."
            )
        out[:, [position[c] for c in pair_cols]] = self._block(small, pair_cols)
        return np.ascontiguousarray(out), small

    def predict_pairs(
        self,
        customers: pd.DataFrame,
        offers: pd.DataFrame,
        cust_idx: np.ndarray,
        offer_idx: np.ndarray,
        *,
        num_threads: int | None = None,
    ) -> np.ndarray:
        """Calibrated P(accept) of the pairs ``(cust_idx[i], offer_idx[i])`` of ``customers``
        x ``offers``: equal to ``predict_proba(pair_frame(customers, offers, cust_idx,
        offer_idx))``, several times faster (:meth:`pair_inputs`)."""
        m, small = self.pair_inputs(customers, offers, cust_idx, offer_idx)
        raw = super().predict_raw(m, num_threads=num_threads) + self._base_logit(small)
        p = np.asarray(self.calibrator_(raw), dtype=float)
        if not np.isfinite(p).all():
            raise ModelError("Propensity model produced non-finite probabilities.")
        return p

    # --- fitting ------------------------------------------------------------------------------

    def fit(
        self,
        X: pd.DataFrame,
        y,
        sample_weight=None,
        *,
        X_cal: pd.DataFrame | None = None,
        y_cal=None,
        cal_weight=None,
        callbacks: Sequence[Callable] = (),
        calibrate: bool = True,
    ) -> PropensityModel:
        """Fit on ``X`` (customer features + offer columns) weighted by ``sample_weight``.

        With ``X_cal`` boosting stops early on it and (``calibrate``) the calibration map is
        fitted on it; without, a fixed ``num_boost_round`` fit, uncalibrated.
        ``calibrate=False`` skips calibration (tuning trials score the booster itself).
        """
        self.input_columns_ = [c for c in X.columns if c not in ID_COLUMNS]
        P = add_pair_features(X)
        schema = infer_schema(P, exclude=ID_COLUMNS)
        y = np.asarray(y, dtype=float)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.base_ = self._fit_base(P, y, w)
        self.calibrator_ = Calibrator(NO_CALIBRATION, (1.0, 0.0))
        if X_cal is None or not self.early_stopping_rounds:
            self._boost_fixed(P, y, w, self.num_boost_round, schema)
            self.train_rows_ = len(P)
            return self
        P_cal = add_pair_features(X_cal)
        y_cal = np.asarray(y_cal, dtype=float)
        self._fit_booster(
            to_matrix(P, schema), y, to_matrix(P_cal, schema), y_cal,
            schema=schema, descriptions=None, callbacks=callbacks,
            weight=w, val_weight=cal_weight,
            init_score=self._base_logit(P), val_init_score=self._base_logit(P_cal),
        )
        if calibrate and self.calibrate not in (None, False, NO_CALIBRATION):
            self.fit_calibration(self.predict_raw(X_cal), y_cal, cal_weight)
        return self

    def _fit_base(self, P: pd.DataFrame, y: np.ndarray, w) -> OfferLinearBase | None:
        if not self.linear_features:
            return None
        base = OfferLinearBase(
            features=list(self.linear_features), C=self.linear_C, shared=self.linear_shared
        )
        return base.fit(P, y, w)

    def _boost_fixed(self, P, y, w, rounds: int, schema: TableSchema) -> None:
        """Boost ``rounds`` rounds on pair rows ``P`` from the fitted base's margin."""
        super().refit_all(
            to_matrix(P, schema), y, rounds=rounds, schema=schema,
            sample_weight=w, init_score=self._base_logit(P),
        )

    def refit_all(self, X, y, *, rounds: int, schema=None, descriptions=None,
                  sample_weight=None, init_score=None) -> PropensityModel:
        """Refit the linear base and the booster on all rows (``X``, ``y``, weights
        ``sample_weight``) for ``rounds`` rounds; the calibration map and catalogue are kept
        (``schema``/``descriptions``/``init_score`` are the base's arguments; the typing is
        kept when fitted, the starting margin is the refitted base's)."""
        P = add_pair_features(X)
        schema = schema or getattr(self, "schema_", None) or infer_schema(P, exclude=ID_COLUMNS)
        y = np.asarray(y, dtype=float)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.base_ = self._fit_base(P, y, w)
        self._boost_fixed(P, y, w, rounds, schema)
        return self

    def fit_calibration(self, raw: np.ndarray, y, sample_weight=None) -> PropensityModel:
        """Fit the calibration map from held-out (or out-of-fold) log-odds and outcomes."""
        method = "isotonic" if self.calibrate == "isotonic" else "sigmoid"
        self.calibrator_ = Calibrator.fit(raw, y, method, sample_weight)
        return self

    # --- predicting ---------------------------------------------------------------------------

    def predict_raw(self, X: pd.DataFrame, *, num_threads: int | None = None) -> np.ndarray:
        """Log-odds of acceptance before calibration: linear base + trees."""
        self._check_fitted()
        P = self._pairs(X)
        trees = super().predict_raw(to_matrix(P, self.schema_), num_threads=num_threads)
        return trees + self._base_logit(P)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated P(accept) per row of ``X``."""
        self._check_fitted()
        p = np.asarray(self.calibrator_(self.predict_raw(X)), dtype=float)
        if not np.isfinite(p).all():
            raise ModelError("Propensity model produced non-finite probabilities.")
        return p

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """What the registered pyfunc returns: with offer columns, ``p_accept`` per row;
        without, every offer of the catalogue (``offers_``) for each row (``input_row``,
        ``offer_id``, ``p_accept``; see :func:`score_every_offer`)."""
        has_offer = any(c in X.columns for c in OFFER_COLUMNS)
        if has_offer or getattr(self, "offers_", None) is None:
            return pd.DataFrame({"p_accept": self.predict_proba(X)})
        return score_every_offer(self, X, self.offers_)

    # --- saving -------------------------------------------------------------------------------

    def _extra_state(self) -> dict:
        c = self.calibrator_
        offers = getattr(self, "offers_", None)
        return {
            "calibrator": {"method": c.method, "x": list(c.x), "y": list(c.y)},
            "offers": None if offers is None else offers.to_dict(orient="list"),
            "input_columns": list(self.input_columns_),
        }

    def _load_extra_state(self, state: dict) -> None:
        c = state["calibrator"]
        self.calibrator_ = Calibrator(c["method"], tuple(c["x"]), tuple(c["y"]))
        self.input_columns_ = state.get("input_columns", [])
        if state.get("offers") is not None:
            self.offers_ = pd.DataFrame(state["offers"])

    def _save_artifacts(self, folder) -> None:
        import joblib

        joblib.dump(getattr(self, "base_", None), Path(folder) / "offer_linear_base.joblib")

    def _load_artifacts(self, folder) -> None:
        import joblib

        path = Path(folder) / "offer_linear_base.joblib"
        self.base_ = joblib.load(path) if path.is_file() else None


def predict_accept(model: Any, X: pd.DataFrame) -> np.ndarray:
    """P(accept) from a :class:`PropensityModel` or an MLflow pyfunc returning ``p_accept``."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X), dtype=float)
    out = model.predict(X)
    if isinstance(out, pd.DataFrame):
        out = out["p_accept"] if "p_accept" in out.columns else out.iloc[:, 0]
    return np.asarray(out, dtype=float).ravel()


def pair_accept(
    model: Any,
    customers: pd.DataFrame,
    offers: pd.DataFrame,
    cust_idx: np.ndarray,
    offer_idx: np.ndarray,
    *,
    num_threads: int | None = None,
) -> np.ndarray:
    """P(accept) of the pairs ``(cust_idx[i], offer_idx[i])``: a :class:`PropensityModel`
    scores them from the customer and offer rows (:meth:`PropensityModel.predict_pairs`),
    anything else (a pyfunc) the pair frame."""
    if not len(cust_idx):
        return np.zeros(0)
    if isinstance(model, PropensityModel):
        return model.predict_pairs(customers, offers, cust_idx, offer_idx, num_threads=num_threads)
    return predict_accept(model, pair_frame(customers, offers, cust_idx, offer_idx))


def pair_frame(
    customers: pd.DataFrame, offers: pd.DataFrame, cust_idx: np.ndarray, offer_idx: np.ndarray
) -> pd.DataFrame:
    """Model input rows: customer feature columns + offer columns for each (customer, offer)."""
    left = customers.iloc[cust_idx].reset_index(drop=True)
    right = offers.iloc[offer_idx][list(OFFER_COLUMNS)].reset_index(drop=True)
    left = left.drop(columns=[c for c in OFFER_COLUMNS if c in left.columns])
    return pd.concat([left, right], axis=1)


def score_every_offer(model: Any, customers: pd.DataFrame, offers: pd.DataFrame) -> pd.DataFrame:
    """P(accept) of every offer for every row of ``customers`` (feature rows without offer
    columns): one row per (customer row, offer), ``input_row`` (0-based position in
    ``customers``), ``offer_id``, ``p_accept``; ordered by row, then catalogue order.

    Eligibility is not applied here (that is :func:`eligibility`'s job): this is the model's
    answer for each pair.
    """
    n, k = len(customers), len(offers)
    cust_idx = np.repeat(np.arange(n), k)
    offer_idx = np.tile(np.arange(k), n)
    pairs = pair_frame(customers.reset_index(drop=True), offers.reset_index(drop=True),
                       cust_idx, offer_idx)
    return pd.DataFrame({
        "input_row": cust_idx,
        "offer_id": offers["offer_id"].to_numpy()[offer_idx],
        "p_accept": predict_accept(model, pairs),
    })


# --- decision -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferRanking:
    """Every customer's offers ranked, as arrays over the customer x offer matrix
    (:func:`rank_offers`).

    ``codes`` holds the exclusion code of every pair (customer-major, see
    :func:`exclusion_codes`); ``cust_idx`` / ``offer_idx`` are the rows and catalogue
    positions of the eligible pairs, with their ``p`` (P(accept)), ``margin``, ``retention``,
    ``ev`` (expected value) and ``score`` (ranking value). ``keep`` indexes the eligible pairs
    of the top-``k`` offers, customer by customer, best first, ``rank`` their ranks (1..k).
    """

    codes: np.ndarray
    cust_idx: np.ndarray
    offer_idx: np.ndarray
    p: np.ndarray
    margin: np.ndarray
    retention: np.ndarray
    ev: np.ndarray
    score: np.ndarray
    keep: np.ndarray
    rank: np.ndarray

    def reasons(self) -> np.ndarray:
        """The text reason of each kept recommendation (its expected value spelled out)."""
        keep = self.keep
        return recommendation_reasons(
            self.p[keep], self.margin[keep], self.retention[keep], self.ev[keep]
        )


def recommendation_reasons(
    p: np.ndarray, margin: np.ndarray, retention: np.ndarray, ev: np.ndarray
) -> np.ndarray:
    """A recommendation's reason text per offer: its expected value spelled out from
    P(accept), margin, retention term and expected value.

    Examples
    --------
    >>> recommendation_reasons(np.array([0.2]), np.array([10.0]), np.array([0.0]),
    ...                        np.array([2.0]))[0]
    'P(accept) 0.200 x margin 10.00 = expected value 2.00'
    """
    # one f-string per offer: the same texts as pandas' map + concatenation, and no pandas
    # overhead on the service's few rows
    return np.array(
        [
            f"P(accept) {pi:.3f} x margin {mi:.2f}"
            + (f" + retention {ri:.2f}" if ri > 0 else "")
            + f" = expected value {ei:.2f}"
            for pi, mi, ri, ei in zip(
                np.asarray(p, dtype=float).tolist(),
                np.asarray(margin, dtype=float).tolist(),
                np.asarray(retention, dtype=float).tolist(),
                np.asarray(ev, dtype=float).tolist(),
                strict=True,
            )
        ],
        dtype=object,
    )


def rank_offers(
    features_df: pd.DataFrame,
    offers_df: pd.DataFrame,
    propensity_model: Any,
    config: NBOConfig,
    history: pd.DataFrame | None = None,
    k: int | None = 3,
    *,
    bandit: Any | None = None,
    rng: np.random.Generator | None = None,
    decided_at: Any | None = None,
    num_threads: int | None = None,
) -> OfferRanking:
    """The ranking :func:`recommend` reports, vectorised over the customer x offer matrix with
    numpy (issue 17): eligibility codes, P(accept) of the eligible pairs
    (:meth:`PropensityModel.predict_pairs`), expected value, the optional Thompson draw, and
    the top ``k`` per customer. Parameters as :func:`recommend`'s; ``num_threads`` for
    LightGBM."""
    k = config.decision.k if k is None else k
    dec = config.decision
    if features_df["customer_id"].duplicated().any():
        dup = features_df.loc[features_df["customer_id"].duplicated(), "customer_id"].iloc[0]
        raise Customer360Error(
            f"recommend() needs one row per customer; customer {dup!r} appears twice."
        )
    features_df = features_df.reset_index(drop=True)
    offers_df = offers_df.reset_index(drop=True)
    codes = exclusion_codes(features_df, offers_df, config, history)
    n_o = len(offers_df)
    pos = np.flatnonzero(codes == 0)
    cust_idx, offer_idx = pos // n_o, pos % n_o
    p = pair_accept(
        propensity_model, features_df, offers_df, cust_idx, offer_idx, num_threads=num_threads
    )
    margin = offers_df["margin"].to_numpy(dtype=float)[offer_idx]
    ev = p * margin
    retention = np.zeros(len(pos))
    if dec.retention_weight > 0:
        _require(features_df, [dec.churn_column, dec.clv_column], "The customer frame (retention)")
        is_ret = offers_df["kind"].isin(dec.retention_kinds).to_numpy()[offer_idx]
        churn = features_df[dec.churn_column].to_numpy(dtype=float)[cust_idx]
        clv = features_df[dec.clv_column].to_numpy(dtype=float)[cust_idx]
        retention = np.where(is_ret, p * churn * clv * dec.retention_weight, 0.0)
        ev = ev + retention
    score = ev
    if bandit is not None:
        from customer360.models.bandit import decision_quantiles, thompson_draw

        segs = features_df[config.eligibility.segment_column].astype(str).to_numpy()[cust_idx]
        pair_offers = offers_df["offer_id"].to_numpy()[offer_idx]
        succ, fail = bandit.lookup(segs, pair_offers)
        quantiles = None
        if rng is None:
            quantiles = decision_quantiles(
                features_df["customer_id"].to_numpy()[cust_idx],
                pair_offers,
                decided_at,
                config.bandit.decision_period,
            )
        p_draw = thompson_draw(
            succ, fail, p, config.bandit.prior_strength,
            exploration=config.bandit.exploration, rng=rng, quantiles=quantiles,
        )
        score = p_draw * margin + retention * np.where(p > 0, p_draw / np.maximum(p, 1e-12), 0)

    order = np.lexsort((-score, cust_idx))
    ranked_c = cust_idx[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ranked_c)) + 1] if len(order) else np.zeros(0, int)
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.arange(len(order)) - group_start + 1
    return OfferRanking(
        codes=codes, cust_idx=cust_idx, offer_idx=offer_idx, p=p, margin=margin,
        retention=retention, ev=ev, score=score, keep=order[rank <= k], rank=rank[rank <= k],
    )


def recommend(
    features_df: pd.DataFrame,
    offers_df: pd.DataFrame,
    propensity_model: Any,
    config: NBOConfig,
    history: pd.DataFrame | None = None,
    k: int | None = 3,
    *,
    bandit: Any | None = None,
    rng: np.random.Generator | None = None,
    include_excluded: bool = True,
    decided_at: Any | None = None,
) -> pd.DataFrame:
    """Top-``k`` offers per customer by expected value, plus the excluded offers and why.

    Parameters
    ----------
    features_df
        One row per customer: ``customer_id``, the model's feature columns, the value segment
        (``value_segment``), optionally ``as_of`` and the retention inputs (``churn_risk``,
        ``clv``) when ``decision.retention_weight > 0``.
    offers_df
        The catalogue (``offers`` table).
    propensity_model
        A fitted :class:`PropensityModel` or the registered ``nbo`` pyfunc.
    history
        Past offers for the held / rejected / contact-cap rules (see :func:`eligibility`).
    k
        Offers per customer (default ``config.decision.k`` when None).
    bandit
        A :class:`customer360.models.bandit.BanditState`: P(accept) becomes a Thompson draw
        from the segment x offer posterior centred on the model's probability.
    rng
        Free Thompson draws from this generator (simulations). Default (None): one decision
        per customer per ``bandit.decision_period``: each (customer, offer) pair's draw is the
        posterior quantile at a point fixed by (customer, offer, period), so repeated calls,
        endpoints and batch runs rank alike until the period rolls over or feedback moves the
        posterior.
    decided_at
        When the decision is made (default: now, UTC); picks the decision period.
    include_excluded
        Also return every excluded pair with its reasons.

    Returns
    -------
    DataFrame
        Columns :data:`RECOMMEND_COLUMNS`: ``status`` is ``recommended`` (``rank`` 1..k) or
        ``excluded`` (``rank`` null, ``reasons`` = exclusion names); ``score`` is the ranking
        value (equal to ``expected_value`` unless a bandit draw is used); ``reasons`` of a
        recommendation spells out its expected value.
    """
    ranking = rank_offers(
        features_df, offers_df, propensity_model, config, history, k,
        bandit=bandit, rng=rng, decided_at=decided_at,
    )
    features_df = features_df.reset_index(drop=True)
    offers_df = offers_df.reset_index(drop=True)
    keep, offer_idx = ranking.keep, ranking.offer_idx
    rec = pd.DataFrame(
        {
            "customer_id": features_df["customer_id"].to_numpy()[ranking.cust_idx[keep]],
            "offer_id": offers_df["offer_id"].to_numpy()[offer_idx[keep]],
            "status": "recommended",
            "rank": pd.array(ranking.rank, dtype="Int64"),
            "p_accept": ranking.p[keep],
            "score": ranking.score[keep],
            "expected_value": ranking.ev[keep],
            "margin": ranking.margin[keep],
            "kind": offers_df["kind"].to_numpy()[offer_idx[keep]],
            "channel": offers_df["channel"].to_numpy()[offer_idx[keep]],
            "reasons": ranking.reasons(),
        }
    )
    elig = None
    if include_excluded:
        n_o = len(offers_df)
        elig = pd.DataFrame(
            {
                "customer_id": np.repeat(features_df["customer_id"].to_numpy(), n_o),
                "offer_id": np.tile(offers_df["offer_id"].to_numpy(), len(features_df)),
                "eligible": ranking.codes == 0,
                "reasons": exclusion_text(ranking.codes),
            }
        )
    frames = [rec]
    if include_excluded:
        ex = elig[~elig["eligible"]]
        ex_offer = offers_df.set_index("offer_id").loc[ex["offer_id"].to_numpy()]
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": ex["customer_id"].to_numpy(),
                    "offer_id": ex["offer_id"].to_numpy(),
                    "status": "excluded",
                    "rank": pd.array([pd.NA] * len(ex), dtype="Int64"),
                    "p_accept": np.nan,
                    "score": np.nan,
                    "expected_value": np.nan,
                    "margin": ex_offer["margin"].to_numpy(dtype=float),
                    "kind": ex_offer["kind"].to_numpy(),
                    "channel": ex_offer["channel"].to_numpy(),
                    "reasons": ex["reasons"].to_numpy(),
                }
            )
        )
    out = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(
        len(f) for f in frames
    ) else rec
    out = out[list(RECOMMEND_COLUMNS)]
    status_order = out["status"].map({"recommended": 0, "excluded": 1})
    cust_order = pd.Series(
        np.arange(len(features_df)), index=features_df["customer_id"].to_numpy()
    ).reindex(out["customer_id"].to_numpy()).to_numpy()
    sort_key = np.lexsort((out["rank"].fillna(10**9).to_numpy(), status_order.to_numpy(),
                           cust_order))
    return out.iloc[sort_key].reset_index(drop=True)


def greedy_choice(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Index of the best allowed action per row of ``values`` (``(n, K)``), for policies."""
    masked = np.where(allowed, values, -np.inf)
    if (~allowed.any(axis=1)).any():
        bad = int(np.flatnonzero(~allowed.any(axis=1))[0])
        raise Customer360Error(f"Decision row {bad} has no eligible offer to choose from.")
    return np.argmax(masked, axis=1)
