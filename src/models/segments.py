"""Customer classification and the Pareto report: how the business reads its portfolio.

Pure logic: a feature frame (one row per customer, the columns of ``docs/architecture.md``) and a
:class:`SegmentsConfig` (``configs/segments.yaml``) in, frames out. Everything is vectorised.

Definitions (every threshold lives in the config):

* **status** -- ``active``: bought within ``status.active_window_days`` before as-of;
  ``inactive``: bought, but earlier; ``potential``: never bought, showed interest (sum of the
  ``interest_features`` >= ``interest_min_events``) and has economic capacity (affluence >=
  ``capacity_min_affluence`` or income band in ``capacity_income_bands``); ``probable``: never
  bought, not potential, but a profile like the buyers' (affluence within the
  ``probable_affluence_quantiles`` of the buyers' affluence AND a customer type that makes up at
  least ``probable_min_type_share`` of the buyers); ``cold``: never bought, none of that.
* **volume_tier** -- ``very_high`` / ``high`` / ``medium`` / ``low`` by spend against quantiles
  (or multiples of the mean) of the positive spend; ``none`` when spend <= 0.
* **frequency_class** -- mean inter-purchase time <= ``frequent_max_ipt_days``: ``frequent``;
  <= ``habitual_max_ipt_days``: ``habitual``; longer or a single purchase: ``occasional``.
* **RFM** -- scores 1..``bins`` among buyers: ``1 + floor(bins * (r - 1) / n)`` where ``r`` is
  the rank with ties sharing the lowest rank ("min"), so equal values always get equal scores and
  the result does not depend on row order. Recency is ranked so that more recent is better. The
  named segment comes from the (R, F) cell through the configured rules. Non-buyers score 0 and
  get the segment ``none``.
* **value_segment** -- the buyers with positive profitability (margin - returns - cost to
  serve, over the feature's window) ranked best first (ties share the better rank); the first
  ``shares[A]`` of them are A, the next ``shares[B]`` B, and so on. Buyers without positive
  profitability (loss-making, break-even, or no purchase in the window) go to
  ``value.unprofitable_segment``, never-bought customers to ``value.never_bought_segment``.
  :func:`service_policy` gives each segment's service policy.
* **lifecycle_stage** -- ``prospect`` (never bought), ``first_purchase`` (one order, at most
  ``first_purchase_max_days`` old), ``follow_up`` (one order, older), ``post_sale`` (repeat
  buyer, last order at most ``post_sale_max_days`` old), ``renewal_cross_sell`` (repeat buyer
  past the post-sale period).
* **sales_cycle** -- signup (first contact) to first purchase: ``short`` <= ``short_max_days``,
  ``intermediate`` <= ``intermediate_max_days``, else ``long``; ``none`` if never bought,
  ``unknown`` if the time is missing.
* **lenses** -- marketing: ``existing`` (bought) / ``qualified_potential`` (status potential) /
  ``potential``. Sales: ``qualified_prospect`` (never bought, meets every qualification
  criterion) / ``prospect`` / ``inactive`` / ``loyal`` (active, refers buyers and is a repeat
  buyer) / ``new`` (active, first purchase recent) / ``existing``. Finance: ``priority`` (the
  fewest top-revenue buyers bringing ``priority_revenue_share`` of revenue; ties broken by
  customer id) / ``recurring`` / ``transactional`` (one-off or sporadic) / ``average`` /
  ``none``. Service: ``special_needs`` (ticket history) / ``satisfied`` / ``unsatisfied`` /
  ``neutral`` / ``no_feedback``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from customer360.config import StrictModel, load_config
from customer360.data.contracts import ACQUISITION_CHANNELS, INCOME_BANDS
from customer360.errors import ConfigError, ContractError, NotFoundError

# --- config -------------------------------------------------------------------------------------


def _increasing(values: list[float], name: str, low: float, high: float) -> list[float]:
    if any(not (low <= v <= high) for v in values):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {values}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing, got {values}")
    return values


class StatusConfig(StrictModel):
    active_window_days: int = Field(gt=0)
    interest_features: list[str] = Field(min_length=1)
    interest_min_events: float = Field(gt=0)
    capacity_min_affluence: float = Field(ge=0, le=100)
    capacity_income_bands: list[str]
    probable_affluence_quantiles: list[float] = Field(min_length=2, max_length=2)
    probable_min_type_share: float = Field(ge=0, le=1)

    @field_validator("capacity_income_bands")
    @classmethod
    def _known_bands(cls, bands: list[str]) -> list[str]:
        unknown = sorted(set(bands) - set(INCOME_BANDS))
        if unknown:
            raise ValueError(f"unknown income band(s) {unknown}; allowed: {list(INCOME_BANDS)}")
        return bands

    @field_validator("probable_affluence_quantiles")
    @classmethod
    def _quantiles(cls, q: list[float]) -> list[float]:
        return _increasing(q, "probable_affluence_quantiles", 0.0, 1.0)


class VolumeConfig(StrictModel):
    feature: str
    method: Literal["quantile", "mean"]
    quantile_cuts: list[float] = Field(min_length=3, max_length=3)
    mean_multiples: list[float] = Field(min_length=3, max_length=3)

    @field_validator("quantile_cuts")
    @classmethod
    def _cuts(cls, q: list[float]) -> list[float]:
        return _increasing(q, "quantile_cuts", 0.0, 1.0)

    @field_validator("mean_multiples")
    @classmethod
    def _multiples(cls, m: list[float]) -> list[float]:
        return _increasing(m, "mean_multiples", 0.0, math.inf)


class FrequencyConfig(StrictModel):
    frequent_max_ipt_days: float = Field(gt=0)
    habitual_max_ipt_days: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> FrequencyConfig:
        if self.habitual_max_ipt_days <= self.frequent_max_ipt_days:
            raise ValueError("habitual_max_ipt_days must exceed frequent_max_ipt_days")
        return self


class RfmRule(StrictModel):
    name: str = Field(min_length=1)
    r: list[int] = Field(min_length=2, max_length=2)
    f: list[int] = Field(min_length=2, max_length=2)


class RfmConfig(StrictModel):
    recency_feature: str
    frequency_feature: str
    monetary_feature: str
    bins: int = Field(ge=2, le=10)
    segments: list[RfmRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _covers_grid(self) -> RfmConfig:
        for rule in self.segments:
            for axis in ("r", "f"):
                lo, hi = getattr(rule, axis)
                if not 1 <= lo <= hi <= self.bins:
                    raise ValueError(
                        f"rule {rule.name!r}: {axis} range [{lo}, {hi}] must satisfy "
                        f"1 <= low <= high <= bins ({self.bins})"
                    )
        grid = _rfm_grid(self)
        holes = [f"R{r}F{f}" for r in range(1, self.bins + 1) for f in range(1, self.bins + 1)
                 if grid[r, f] == ""]
        if holes:
            raise ValueError(f"segments leave (R, F) cells without a segment: {holes}")
        return self


class ServicePolicy(StrictModel):
    """What a value segment is entitled to; a downstream system acts on these fields."""

    account_management: str
    credit_terms_days: int = Field(ge=0)
    credit_limit: float = Field(ge=0)
    contract: str
    discount_pct: float = Field(ge=0, le=100)
    returns: str
    delivery: str
    support_sla_hours: int = Field(gt=0)


class ValueConfig(StrictModel):
    feature: str
    shares: dict[str, float] = Field(min_length=2)
    unprofitable_segment: str
    never_bought_segment: str

    @model_validator(mode="after")
    def _valid_shares(self) -> ValueConfig:
        if any(s <= 0 for s in self.shares.values()):
            raise ValueError(f"every share must be positive, got {self.shares}")
        total = sum(self.shares.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"shares must sum to 1, they sum to {total:.6g}")
        for key in ("unprofitable_segment", "never_bought_segment"):
            seg = getattr(self, key)
            if seg not in self.shares:
                raise ValueError(f"{key} {seg!r} is not one of the segments {list(self.shares)}")
        return self


class LifecycleConfig(StrictModel):
    first_purchase_max_days: int = Field(gt=0)
    post_sale_max_days: int = Field(gt=0)


class SalesCycleConfig(StrictModel):
    short_max_days: int = Field(gt=0)
    intermediate_max_days: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> SalesCycleConfig:
        if self.intermediate_max_days <= self.short_max_days:
            raise ValueError("intermediate_max_days must exceed short_max_days")
        return self


class SalesLensConfig(StrictModel):
    qualification_min_affluence: float = Field(ge=0, le=100)
    qualification_min_product_views: int = Field(ge=0)
    qualification_max_days_since_visit: int = Field(ge=0)
    new_max_days_since_first: int = Field(gt=0)
    loyal_min_referred_buyers: int = Field(ge=1)
    loyal_min_orders: int = Field(ge=1)


class FinanceLensConfig(StrictModel):
    revenue_feature: str
    priority_revenue_share: float = Field(gt=0, le=1)
    recurring_min_orders_365d: int = Field(ge=1)
    transactional_max_orders_365d: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> FinanceLensConfig:
        if self.recurring_min_orders_365d <= self.transactional_max_orders_365d:
            raise ValueError(
                "recurring_min_orders_365d must exceed transactional_max_orders_365d"
            )
        return self


class ServiceLensConfig(StrictModel):
    satisfaction_feature: str
    satisfied_min_score: float
    unsatisfied_max_score: float
    special_needs_min_tickets_365d: int = Field(ge=1)
    special_needs_min_open_complaints: int = Field(ge=1)
    special_needs_min_open_returns: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ServiceLensConfig:
        if self.unsatisfied_max_score >= self.satisfied_min_score:
            raise ValueError("unsatisfied_max_score must be below satisfied_min_score")
        return self


class LensesConfig(StrictModel):
    sales: SalesLensConfig
    finance: FinanceLensConfig
    service: ServiceLensConfig


GROUPABLE = (
    "status",
    "volume_tier",
    "frequency_class",
    "rfm_segment",
    "value_segment",
    "lifecycle_stage",
    "sales_cycle",
    "lens_marketing",
    "lens_sales",
    "lens_finance",
    "lens_service",
)


class ReportConfig(StrictModel):
    top_share: float = Field(gt=0, lt=1)
    margin_feature: str
    referral_feature: str
    group_by: Literal[GROUPABLE]  # type: ignore[valid-type]
    acquisition_cost: dict[str, float]
    preferred_channel_feature: str | None = None

    @field_validator("acquisition_cost")
    @classmethod
    def _costs(cls, costs: dict[str, float]) -> dict[str, float]:
        missing = [c for c in ACQUISITION_CHANNELS if c not in costs]
        if missing:
            raise ValueError(f"no cost to acquire for channel(s) {missing}")
        negative = {k: v for k, v in costs.items() if v < 0}
        if negative:
            raise ValueError(f"costs to acquire must be >= 0, got {negative}")
        return costs


class SegmentsConfig(StrictModel):
    """``configs/segments.yaml``: every threshold and window of the classification."""

    status: StatusConfig
    volume: VolumeConfig
    frequency: FrequencyConfig
    rfm: RfmConfig
    value: ValueConfig
    service_policies: dict[str, ServicePolicy]
    lifecycle: LifecycleConfig
    sales_cycle: SalesCycleConfig
    lenses: LensesConfig
    report: ReportConfig

    @model_validator(mode="after")
    def _policy_per_segment(self) -> SegmentsConfig:
        missing = [s for s in self.value.shares if s not in self.service_policies]
        if missing:
            raise ValueError(f"service_policies has no policy for value segment(s) {missing}")
        return self


def load_segments_config(path: str | Path | None = None) -> SegmentsConfig:
    """Load ``configs/segments.yaml`` (or the file at ``path``) into a :class:`SegmentsConfig`.

    Raises :class:`~customer360.errors.ConfigError` naming the file and the bad key.

    Examples
    --------
    >>> load_segments_config().value.shares["A"]
    0.2
    """
    return load_config(path or "segments", SegmentsConfig)


def service_policy(segment: str, config: SegmentsConfig) -> ServicePolicy:
    """The service policy of a value segment.

    Examples
    --------
    >>> service_policy("A", load_segments_config()).support_sla_hours
    4
    """
    try:
        return config.service_policies[segment]
    except KeyError:
        raise NotFoundError(
            f"value segment {segment!r} has no service policy; known segments: "
            f"{sorted(config.service_policies)} (configs/segments.yaml, key service_policies)"
        ) from None


# --- classification -----------------------------------------------------------------------------

FIXED_FEATURES = (
    "customer_id",
    "txn__orders__all",
    "txn__orders__365d",
    "txn__ipt_mean_days__all",
    "txn__first_purchase_days__all",
    "txn__referred_buyers__all",
    "demo__customer_type__static",
    "demo__signup_to_first_purchase_days__all",
    "tp__affluence_score__static",
    "tp__income_band__static",
    "beh__product_views__90d",
    "beh__days_since_last_visit__all",
    "svc__tickets__365d",
    "svc__open_complaints__all",
    "svc__open_returns__all",
)

OUTPUT_COLUMNS = (
    "customer_id",
    "as_of",
    "status",
    "volume_tier",
    "frequency_class",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_score",
    "rfm_segment",
    "value_segment",
    "lifecycle_stage",
    "sales_cycle",
    "lens_marketing",
    "lens_sales",
    "lens_finance",
    "lens_service",
    "clv",
)
"""Columns of :func:`classify`'s output (``as_of`` only when the features carry it)."""


def required_features(config: SegmentsConfig) -> list[str]:
    """Feature columns :func:`classify` reads, fixed ones first, then the configured ones."""
    configured = [
        *config.status.interest_features,
        config.volume.feature,
        config.rfm.recency_feature,
        config.rfm.frequency_feature,
        config.rfm.monetary_feature,
        config.value.feature,
        config.lenses.finance.revenue_feature,
        config.lenses.service.satisfaction_feature,
    ]
    return list(dict.fromkeys([*FIXED_FEATURES, *configured]))


def _check_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ContractError(
            f"{what} lacks column(s) {missing}. Build it with customer360.features."
            "build_features, or fix the feature names in configs/segments.yaml."
        )


def _num(frame: pd.DataFrame, column: str, fill: float | None = None) -> np.ndarray:
    """A column as float64 (NaN for missing), with a clear error for non-numeric values."""
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype="float64",
                                                                       na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise ContractError(f"feature column {column!r} must be numeric: {exc}") from exc
    return values if fill is None else np.where(np.isnan(values), fill, values)


def _pick(conditions: list[np.ndarray], choices: list[str], default: str) -> np.ndarray:
    """The choice of the first true condition per row (``default`` when none holds)."""
    labels = np.array([*choices, default], dtype=object)
    return labels[np.select(conditions, np.arange(len(choices)), default=len(choices))]


def quantile_scores(values: np.ndarray, bins: int, *, higher_is_better: bool = True) -> np.ndarray:
    """Scores 1..``bins`` by rank: ``1 + floor(bins * (r - 1) / n)``, ties share the lowest rank.

    Examples
    --------
    >>> quantile_scores(np.arange(10.0), 5).tolist()
    [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    >>> quantile_scores(np.array([3.0, 1.0, 1.0, 2.0]), 2, higher_is_better=False).tolist()
    [1, 2, 2, 1]
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keyed = pd.Series(values if higher_is_better else -values)
    rank_min = keyed.rank(method="min").to_numpy()
    return (1 + np.floor(bins * (rank_min - 1) / n)).astype(np.int64)


def _rfm_grid(rfm: RfmConfig) -> np.ndarray:
    """(bins + 1) x (bins + 1) table of segment names indexed by [R, F]; row/col 0 = 'none'."""
    grid = np.full((rfm.bins + 1, rfm.bins + 1), "", dtype=object)
    grid[0, :] = "none"
    grid[:, 0] = "none"
    for rule in reversed(rfm.segments):  # earlier rules overwrite later ones: first match wins
        grid[rule.r[0] : rule.r[1] + 1, rule.f[0] : rule.f[1] + 1] = rule.name
    return grid


def _status(f: pd.DataFrame, cfg: StatusConfig, bought: np.ndarray, recency: np.ndarray):
    active = bought & (recency <= cfg.active_window_days)
    interest_events = sum(_num(f, col, fill=0.0) for col in cfg.interest_features)
    interest = interest_events >= cfg.interest_min_events
    affluence = _num(f, "tp__affluence_score__static")
    income = f["tp__income_band__static"].isin(cfg.capacity_income_bands).to_numpy()
    capacity = (affluence >= cfg.capacity_min_affluence) | income
    potential = ~bought & interest & capacity

    ctype = f["demo__customer_type__static"]
    buyer_aff = affluence[bought & ~np.isnan(affluence)]
    if bought.any() and len(buyer_aff):
        lo, hi = np.quantile(buyer_aff, cfg.probable_affluence_quantiles)
        type_share = ctype[bought].value_counts(normalize=True)
        common_types = type_share[type_share >= cfg.probable_min_type_share].index
        similar = (affluence >= lo) & (affluence <= hi) & ctype.isin(common_types).to_numpy()
    else:  # nobody to compare with
        similar = np.zeros(len(f), dtype=bool)
    status = _pick(
        [active, bought, potential, ~bought & similar],
        ["active", "inactive", "potential", "probable"],
        "cold",
    )
    return status, active


def _volume_tier(f: pd.DataFrame, cfg: VolumeConfig) -> np.ndarray:
    spend = _num(f, cfg.feature, fill=0.0)
    positive = spend > 0
    if not positive.any():
        cuts = np.full(3, np.inf)
    elif cfg.method == "quantile":
        cuts = np.quantile(spend[positive], cfg.quantile_cuts)
    else:
        cuts = spend[positive].mean() * np.asarray(cfg.mean_multiples)
    return _pick(
        [~positive, spend >= cuts[2], spend >= cuts[1], spend >= cuts[0]],
        ["none", "very_high", "high", "medium"],
        "low",
    )


def value_cutoffs(shares: list[float], n: int) -> np.ndarray:
    """Rank cut-offs of the value segments among ``n`` ranked customers: a customer of 0-based
    rank ``r`` is in the first segment whose cut-off exceeds ``r``.

    The cumulative shares times ``n``, rounded half to even; the first segment always holds at
    least the best customer (rounding alone put a lone profitable customer, the best there
    is, in 'C').

    Examples
    --------
    >>> value_cutoffs([0.2, 0.3, 0.3, 0.2], 10).tolist()
    [2, 5, 8, 10]
    >>> value_cutoffs([0.2, 0.3, 0.3, 0.2], 1).tolist()
    [1, 1, 1, 1]
    """
    cutoffs = np.round(np.cumsum(shares) * n).astype(np.int64)
    cutoffs[0] = max(cutoffs[0], 1)
    return np.maximum.accumulate(cutoffs)


def _value_segment(f: pd.DataFrame, cfg: ValueConfig, bought: np.ndarray) -> np.ndarray:
    labels = np.array(list(cfg.shares), dtype=object)
    out = np.full(len(f), cfg.never_bought_segment, dtype=object)
    profit = _num(f, cfg.feature, fill=0.0)
    out[bought] = cfg.unprofitable_segment
    ranked = bought & (profit > 0)
    n = int(ranked.sum())
    if n:
        rank0 = pd.Series(-profit[ranked]).rank(method="min").to_numpy() - 1  # 0 = best
        cutoffs = value_cutoffs(list(cfg.shares.values()), n)
        index = np.minimum(np.searchsorted(cutoffs, rank0, side="right"), len(labels) - 1)
        out[ranked] = labels[index]
    return out


def _finance_priority(f: pd.DataFrame, cfg: FinanceLensConfig) -> np.ndarray:
    revenue = _num(f, cfg.revenue_feature, fill=0.0)
    order = np.lexsort((f["customer_id"].astype(str).to_numpy(), -revenue))
    sorted_rev = np.where(revenue[order] > 0, revenue[order], 0.0)
    total = sorted_rev.sum()
    before = np.cumsum(sorted_rev) - sorted_rev
    priority = np.zeros(len(f), dtype=bool)
    priority[order] = (sorted_rev > 0) & (before < cfg.priority_revenue_share * total)
    return priority


def _clv_column(f: pd.DataFrame, clv: pd.DataFrame | None) -> np.ndarray:
    if clv is None:
        return np.full(len(f), np.nan)
    _check_columns(clv, ["customer_id", "prob__clv"], "the CLV frame")
    dupes = clv["customer_id"][clv["customer_id"].duplicated()]
    if len(dupes):
        raise ContractError(
            f"the CLV frame has duplicate customer_id(s), e.g. {dupes.iloc[0]!r}; pass one row "
            "per customer"
        )
    by_id = pd.Series(_num(clv, "prob__clv"), index=clv["customer_id"].to_numpy())
    return f["customer_id"].map(by_id).to_numpy(dtype="float64", na_value=np.nan)


def classify(
    features: pd.DataFrame,
    config: SegmentsConfig,
    clv: pd.DataFrame | None = None,
    cycles: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Classify every customer of a feature frame.

    Parameters
    ----------
    features
        One row per customer with ``customer_id`` and the columns of
        :func:`required_features` (``build_features`` output); ``as_of`` is carried along.
    config
        The parsed ``configs/segments.yaml``.
    clv
        Optional probabilistic scores with ``customer_id`` and ``prob__clv``; becomes the
        ``clv`` column (NaN for customers not scored, or for everyone without it).
    cycles
        Optional sales cycles from opportunities (``customer_id``, ``cycle_days``, as from
        :func:`customer360.models.opportunities.sales_cycle_classes`): for the customers it
        lists, ``sales_cycle`` is classed from ``cycle_days`` with the same thresholds instead
        of signup to first purchase (B2B customers with opportunities).

    Returns
    -------
    DataFrame
        :data:`OUTPUT_COLUMNS`, one row per customer in the input order. RFM scores are
        ``int`` (0 = never bought); every class is a string.

    Examples
    --------
    >>> cfg = load_segments_config()
    >>> out = classify(example_features(), cfg)
    >>> out.loc[0, ["status", "value_segment", "lifecycle_stage"]].tolist()
    ['active', 'A', 'post_sale']
    """
    _check_columns(features, required_features(config), "the feature frame")
    f = features.reset_index(drop=True)
    dupes = f["customer_id"][f["customer_id"].duplicated()]
    if len(dupes):
        raise ContractError(
            f"the feature frame has duplicate customer_id(s), e.g. {dupes.iloc[0]!r}; classify "
            "one as-of date at a time"
        )
    orders = _num(f, "txn__orders__all", fill=0.0)
    bought = orders >= 1
    recency = _num(f, config.rfm.recency_feature)
    missing_recency = bought & np.isnan(recency)
    if missing_recency.any():
        who = f.loc[missing_recency, "customer_id"].iloc[0]
        raise ContractError(
            f"customer {who!r} has orders but no {config.rfm.recency_feature}; the feature "
            "build is inconsistent, rebuild the features"
        )
    status, active = _status(f, config.status, bought, recency)

    ipt = _num(f, "txn__ipt_mean_days__all")
    fq = config.frequency
    frequency_class = _pick(
        [~bought, ipt <= fq.frequent_max_ipt_days, ipt <= fq.habitual_max_ipt_days],
        ["none", "frequent", "habitual"],
        "occasional",
    )

    rfm = config.rfm
    scores = {}
    for axis, column, better_high in (
        ("r", rfm.recency_feature, False),
        ("f", rfm.frequency_feature, True),
        ("m", rfm.monetary_feature, True),
    ):
        score = np.zeros(len(f), dtype=np.int64)
        score[bought] = quantile_scores(_num(f, column, fill=0.0)[bought], rfm.bins,
                                        higher_is_better=better_high)
        scores[axis] = score
    rfm_segment = _rfm_grid(rfm)[scores["r"], scores["f"]]
    rfm_score = (
        pd.Series(scores["r"]).astype(str)
        + pd.Series(scores["f"]).astype(str)
        + pd.Series(scores["m"]).astype(str)
    ).to_numpy(dtype=object)

    first_days = _num(f, "txn__first_purchase_days__all")
    lc = config.lifecycle
    single = orders == 1
    lifecycle = _pick(
        [~bought, single & (first_days <= lc.first_purchase_max_days), single,
         recency <= lc.post_sale_max_days],
        ["prospect", "first_purchase", "follow_up", "post_sale"],
        "renewal_cross_sell",
    )

    to_first = _num(f, "demo__signup_to_first_purchase_days__all")
    sc = config.sales_cycle
    sales_cycle = _pick(
        [~bought, np.isnan(to_first), to_first <= sc.short_max_days,
         to_first <= sc.intermediate_max_days],
        ["none", "unknown", "short", "intermediate"],
        "long",
    )
    if cycles is not None:
        _check_columns(cycles, ["customer_id", "cycle_days"], "the sales-cycle frame")
        by_id = pd.Series(_num(cycles, "cycle_days"), index=cycles["customer_id"].to_numpy())
        days = f["customer_id"].map(by_id).to_numpy(dtype="float64", na_value=np.nan)
        has = ~np.isnan(days)
        from_opps = _pick([days <= sc.short_max_days, days <= sc.intermediate_max_days],
                          ["short", "intermediate"], "long")
        sales_cycle = np.where(has, from_opps, sales_cycle)

    marketing = _pick([bought, status == "potential"], ["existing", "qualified_potential"],
                      "potential")

    sales_cfg = config.lenses.sales
    qualified = (
        (_num(f, "tp__affluence_score__static") >= sales_cfg.qualification_min_affluence)
        & (_num(f, "beh__product_views__90d", fill=0.0)
           >= sales_cfg.qualification_min_product_views)
        & (_num(f, "beh__days_since_last_visit__all")
           <= sales_cfg.qualification_max_days_since_visit)
    )
    loyal = (
        active
        & (_num(f, "txn__referred_buyers__all", fill=0.0) >= sales_cfg.loyal_min_referred_buyers)
        & (orders >= sales_cfg.loyal_min_orders)
    )
    new = active & (first_days <= sales_cfg.new_max_days_since_first)
    sales = _pick(
        [~bought & qualified, ~bought, ~active, loyal, new],
        ["qualified_prospect", "prospect", "inactive", "loyal", "new"],
        "existing",
    )

    fin = config.lenses.finance
    orders_365 = _num(f, "txn__orders__365d", fill=0.0)
    finance = _pick(
        [~bought, _finance_priority(f, fin), orders_365 >= fin.recurring_min_orders_365d,
         single | (orders_365 <= fin.transactional_max_orders_365d)],
        ["none", "priority", "recurring", "transactional"],
        "average",
    )

    svc = config.lenses.service
    special = (
        (_num(f, "svc__tickets__365d", fill=0.0) >= svc.special_needs_min_tickets_365d)
        | (_num(f, "svc__open_complaints__all", fill=0.0) >= svc.special_needs_min_open_complaints)
        | (_num(f, "svc__open_returns__all", fill=0.0) >= svc.special_needs_min_open_returns)
    )
    satisfaction = _num(f, svc.satisfaction_feature)
    service = _pick(
        [special, satisfaction >= svc.satisfied_min_score,
         satisfaction <= svc.unsatisfied_max_score, ~np.isnan(satisfaction)],
        ["special_needs", "satisfied", "unsatisfied", "neutral"],
        "no_feedback",
    )

    columns = {
        "customer_id": f["customer_id"].to_numpy(),
        "status": status,
        "volume_tier": _volume_tier(f, config.volume),
        "frequency_class": frequency_class,
        "rfm_r": scores["r"],
        "rfm_f": scores["f"],
        "rfm_m": scores["m"],
        "rfm_score": rfm_score,
        "rfm_segment": rfm_segment,
        "value_segment": _value_segment(f, config.value, bought),
        "lifecycle_stage": lifecycle,
        "sales_cycle": sales_cycle,
        "lens_marketing": marketing,
        "lens_sales": sales,
        "lens_finance": finance,
        "lens_service": service,
        "clv": _clv_column(f, clv),
    }
    out = pd.DataFrame(columns)
    if "as_of" in f.columns:
        out.insert(1, "as_of", f["as_of"].to_numpy())
    for name in GROUPABLE + ("customer_id", "rfm_score"):
        out[name] = out[name].astype(str)
    return out


# --- Pareto report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoReport:
    """Portfolio figures: who brings the margin, the referrals and the losses.

    ``margin_share_top`` is the share of the buyers' total margin that the top ``top_share`` of
    buyers (by margin) bring; it exceeds 1 when others lose money. ``referral_share_top`` is the
    same for referral purchases among referrers (NaN without referrals). ``curve`` holds the
    Lorenz-style points (customer share, cumulative margin share) of the chart.
    """

    as_of: str | None
    top_share: float
    buyers: int
    margin_share_top: float
    referrers: int
    referral_share_top: float
    churn_basis: str
    group_by: str
    segments: pd.DataFrame
    channels: pd.DataFrame
    negative_contributors: pd.DataFrame
    curve: pd.DataFrame = field(repr=False)

    def summary(self) -> dict:
        """JSON-ready headline figures."""
        return {
            "as_of": self.as_of,
            "top_share": self.top_share,
            "buyers": self.buyers,
            "margin_share_top": _json_float(self.margin_share_top),
            "referrers": self.referrers,
            "referral_share_top": _json_float(self.referral_share_top),
            "negative_contributors": len(self.negative_contributors),
            "negative_contribution_total": _json_float(
                float(self.negative_contributors["profitability"].sum())
            ),
            "churn_basis": self.churn_basis,
            "group_by": self.group_by,
        }


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def top_share_of_total(values: np.ndarray, top_share: float) -> float:
    """Share of ``values.sum()`` held by the largest ``ceil(top_share * n)`` values.

    Examples
    --------
    >>> top_share_of_total(np.array([50.0, 20, 10, 10, 5, 5, 0, 0, 0, 0]), 0.2)
    0.7
    """
    n = len(values)
    total = values.sum()
    if n == 0 or total == 0:
        return math.nan
    k = max(1, math.ceil(round(top_share * n, 9)))
    return float(np.sort(values)[::-1][:k].sum() / total)


def _mode(values: pd.Series) -> str:
    """Most frequent value; ``none`` (the registry's default for "no such row") is ignored."""
    known = values.dropna().astype(str)
    counts = known[~known.isin(["none", ""])].value_counts()
    if counts.empty:
        return ""
    best = counts[counts == counts.iloc[0]].index
    return str(min(best))  # deterministic on ties


def pareto_report(
    classified: pd.DataFrame,
    features: pd.DataFrame,
    config: SegmentsConfig,
    clv: pd.DataFrame | None = None,
) -> ParetoReport:
    """Pareto figures and the per-segment table.

    Parameters
    ----------
    classified
        :func:`classify` output for ``features``.
    features
        The feature frame that was classified (same customers).
    config
        The parsed ``configs/segments.yaml``; ``report.group_by`` names the segment column.
    clv
        Optional ``customer_id, prob__clv`` frame; otherwise ``classified['clv']`` is used.

    Returns
    -------
    ParetoReport
        Per segment: customers, buyers, revenue, margin, profitability, mean CLV, the churn
        share named by its definition (:func:`churn_share_column`: ``churn_rate_<H>d``, the
        mean of a ``label__churn__<H>d`` column when the features carry one, else
        ``inactive_buyer_share``, the share of inactive buyers), cost to serve, cost to
        acquire (config per acquisition channel) and the preferred channel (mode of
        ``report.preferred_channel_feature``; empty when not configured).

    Examples
    --------
    >>> cfg = load_segments_config()
    >>> feats = example_features()
    >>> report = pareto_report(classify(feats, cfg), feats, cfg)
    >>> report.negative_contributors["customer_id"].tolist()
    ['c3']
    """
    rep = config.report
    _check_columns(
        features,
        ["customer_id", "txn__orders__all", rep.margin_feature, rep.referral_feature,
         config.value.feature, config.lenses.finance.revenue_feature,
         "txn__cost_to_serve__365d", "demo__acquisition_channel__static"]
        + ([rep.preferred_channel_feature] if rep.preferred_channel_feature else []),
        "the feature frame",
    )
    f = features.reset_index(drop=True)
    c = classified.reset_index(drop=True)
    if len(f) != len(c) or not (f["customer_id"].astype(str).to_numpy()
                                == c["customer_id"].astype(str).to_numpy()).all():
        raise ContractError(
            "classified and features do not hold the same customers in the same order; pass "
            "the output of classify(features, ...) together with those features"
        )
    bought = _num(f, "txn__orders__all", fill=0.0) >= 1
    margin = _num(f, rep.margin_feature, fill=0.0)
    profit = _num(f, config.value.feature, fill=0.0)
    referrals = _num(f, rep.referral_feature, fill=0.0)

    buyer_margin = np.sort(margin[bought])[::-1]
    total_margin = buyer_margin.sum()
    n_buyers = len(buyer_margin)
    curve = pd.DataFrame({
        "customer_share": np.arange(1, n_buyers + 1) / max(n_buyers, 1),
        "margin_share": np.cumsum(buyer_margin) / total_margin if total_margin else np.nan,
    })

    negative = profit < 0
    negative_contributors = pd.DataFrame({
        "customer_id": c.loc[negative, "customer_id"].to_numpy(),
        "profitability": profit[negative],
        "margin": margin[negative],
        "value_segment": c.loc[negative, "value_segment"].to_numpy(),
    }).sort_values(["profitability", "customer_id"], kind="stable").reset_index(drop=True)

    channel = f["demo__acquisition_channel__static"].astype(str)
    unknown = sorted(set(channel) - set(rep.acquisition_cost))
    if unknown:
        raise ConfigError(
            f"acquisition channel(s) {unknown} have no cost in configs/segments.yaml "
            "(report.acquisition_cost); add them"
        )
    cac = channel.map(rep.acquisition_cost).to_numpy(dtype="float64")
    clv_values = _clv_column(f, clv) if clv is not None else c["clv"].to_numpy(dtype="float64")
    label_cols = [col for col in f.columns if col.startswith("label__churn__")]
    if label_cols:
        churn, churn_basis = _num(f, label_cols[0]), label_cols[0]
    else:
        churn = np.where(bought, (c["status"] == "inactive").astype(float), np.nan)
        churn_basis = "share of buyers inactive"

    table = pd.DataFrame({
        "segment": c[rep.group_by].to_numpy(),
        "customers": 1,
        "buyers": bought.astype(int),
        "revenue": _num(f, config.lenses.finance.revenue_feature, fill=0.0),
        "margin": margin,
        "profitability": profit,
        "clv": clv_values,
        "churn": churn,
        "cost_to_serve": _num(f, "txn__cost_to_serve__365d", fill=0.0),
        "cost_to_acquire": cac,
        "channel": (f[rep.preferred_channel_feature] if rep.preferred_channel_feature
                    else pd.Series([None] * len(f))),
    })
    share_column = churn_share_column(churn_basis)
    segments = _segment_table(table, share_column)
    total_row = _segment_table(table.assign(segment="all"), share_column)
    segments = pd.concat([segments, total_row], ignore_index=True)

    channels = (
        pd.DataFrame({"acquisition_channel": channel, "customers": 1,
                      "buyers": bought.astype(int), "margin": margin, "cost_to_acquire": cac})
        .groupby("acquisition_channel", sort=True)
        .agg(customers=("customers", "sum"), buyers=("buyers", "sum"),
             cac=("cost_to_acquire", "first"), acquisition_cost=("cost_to_acquire", "sum"),
             margin=("margin", "sum"))
        .reset_index()
    )
    channels["margin_per_acquisition_cost"] = np.where(
        channels["acquisition_cost"] > 0,
        channels["margin"] / channels["acquisition_cost"].where(channels["acquisition_cost"] > 0),
        np.nan,
    )
    as_of = (pd.Timestamp(f["as_of"].iloc[0]).date().isoformat()
             if "as_of" in f.columns and len(f) else None)
    return ParetoReport(
        as_of=as_of,
        top_share=rep.top_share,
        buyers=n_buyers,
        margin_share_top=top_share_of_total(margin[bought], rep.top_share),
        referrers=int((referrals > 0).sum()),
        referral_share_top=top_share_of_total(referrals[referrals > 0], rep.top_share),
        churn_basis=churn_basis,
        group_by=rep.group_by,
        segments=segments,
        channels=channels,
        negative_contributors=negative_contributors,
        curve=curve,
    )


INACTIVE_SHARE_COLUMN = "inactive_buyer_share"


def churn_share_column(churn_basis: str) -> str:
    """The segment table's column for the churn-like share, named by what it measures (issue
    13): ``inactive_buyer_share`` (share of buyers whose status is inactive) or, with a churn
    label ``label__churn__<H>d``, ``churn_rate_<H>d`` (share labelled churned within H days).

    Examples
    --------
    >>> churn_share_column("share of buyers inactive"), churn_share_column("label__churn__90d")
    ('inactive_buyer_share', 'churn_rate_90d')
    """
    if churn_basis.startswith("label__churn__"):
        return "churn_rate_" + churn_basis.removeprefix("label__churn__")
    return INACTIVE_SHARE_COLUMN


def _segment_table(table: pd.DataFrame, share_column: str = INACTIVE_SHARE_COLUMN) -> pd.DataFrame:
    grouped = table.groupby("segment", sort=True)
    out = grouped.agg(
        customers=("customers", "sum"),
        buyers=("buyers", "sum"),
        revenue=("revenue", "sum"),
        margin=("margin", "sum"),
        profitability=("profitability", "sum"),
        mean_clv=("clv", "mean"),
        **{share_column: ("churn", "mean")},
        cost_to_serve=("cost_to_serve", "sum"),
        cost_to_acquire=("cost_to_acquire", "sum"),
    ).reset_index()
    out["preferred_channel"] = grouped["channel"].agg(_mode).to_numpy()
    return out


# --- a tiny worked example (docs and doctests) ----------------------------------------------------


def example_features() -> pd.DataFrame:
    """Four hand-built customers with every column :func:`classify` needs (for docs/tests).

    ``c1`` a frequent, recent, profitable buyer who refers others; ``c2`` a one-off buyer from
    long ago; ``c3`` a loss-making buyer; ``c4`` an interested affluent prospect.
    """
    return pd.DataFrame({
        "customer_id": ["c1", "c2", "c3", "c4"],
        "as_of": pd.Timestamp("2026-06-30"),
        "demo__customer_type__static": ["B2C", "B2C", "B2B", "B2C"],
        "demo__tenure_days__all": [900, 800, 400, 20],
        "demo__acquisition_channel__static": ["referral", "paid_digital", "partner", "direct"],
        "demo__signup_to_first_purchase_days__all": [10.0, 200.0, 400.0, np.nan],
        "demo__has_contract__static": [False, False, True, False],
        "txn__recency_days__all": [5.0, 500.0, 40.0, np.nan],
        "txn__orders__all": [30, 1, 4, 0],
        "txn__orders__365d": [12, 0, 3, 0],
        "txn__spend_sum__365d": [3000.0, 0.0, 800.0, 0.0],
        "txn__margin_sum__365d": [900.0, 0.0, 50.0, 0.0],
        "txn__returns_value__365d": [50.0, 0.0, 200.0, 0.0],
        "txn__cost_to_serve__365d": [100.0, 0.0, 120.0, 0.0],
        "txn__profitability__365d": [750.0, 0.0, -270.0, 0.0],
        "txn__ipt_mean_days__all": [25.0, np.nan, 100.0, np.nan],
        "txn__first_purchase_days__all": [850.0, 500.0, 300.0, np.nan],
        "txn__referrals_made__all": [3, 0, 0, 0],
        "txn__referred_buyers__all": [2, 0, 0, 0],
        "beh__sessions__90d": [20, 0, 3, 5],
        "beh__product_views__90d": [40, 0, 2, 9],
        "beh__days_since_last_visit__all": [2.0, 400.0, 30.0, 3.0],
        "social__sentiment_mean__90d": [0.5, np.nan, -0.2, np.nan],
        "svc__tickets__365d": [1, 0, 5, 0],
        "svc__open_complaints__all": [0, 0, 1, 0],
        "svc__open_returns__all": [0, 0, 1, 0],
        "svc__satisfaction_last__all": [5.0, np.nan, 2.0, np.nan],
        "tp__affluence_score__static": [70.0, 40.0, 55.0, 80.0],
        "tp__income_band__static": ["high", "middle", None, "upper_middle"],
        "txn__preferred_channel__365d": ["app", "none", "sales_rep", "none"],
    })
