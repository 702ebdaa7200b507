"""Request and response models of the serving API, and the serving config.

The HTTP schemas are pydantic models, so BentoML validates every request before our code runs
and its OpenAPI page (``/docs``) documents them. Validation errors come back as 400 with the
path of the wrong field (``loc``) in ``detail``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from customer360.config import StrictModel, load_config

# --- config -----------------------------------------------------------------------------------


class ServingConfig(StrictModel):
    """``configs/serving.yaml``: what the service loads and how much it accepts."""

    models: tuple[str, ...] = ("churn", "clv", "nbo")
    alias: str = "champion"
    max_batch_size: int = Field(500, ge=1, le=100_000)
    max_latency_ms: int = Field(2000, ge=1)
    top_k_offers: int = Field(3, ge=1, le=50)
    token_env_var: str = "CUSTOMER360_API_TOKEN"
    prob_horizon_days: int = Field(365, ge=1)
    chunk_size: int = Field(20_000, ge=1)
    # issue 17: churn reasons of the profile (batch scoring, /customer360): "path" attributions
    # (fast, within serving.reasons.REASON_TOLERANCE of TreeSHAP) or "exact" TreeSHAP.
    reasons: Literal["path", "exact"] = "path"


def load_serving_config(path: str | None = None) -> ServingConfig:
    """Load ``configs/serving.yaml`` (or ``path``) into :class:`ServingConfig`.

    Examples
    --------
    >>> load_serving_config().alias  # doctest: +SKIP
    'champion'
    """
    return load_config(path or "serving", ServingConfig)


# Read once at import: the batch size limit is part of the request schema below.
SERVING_CONFIG = load_serving_config()

# --- requests ---------------------------------------------------------------------------------

CustomerId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
FeatureValue = float | int | bool | str | None


# A client's event id (idempotency key): printable, no spaces, at most 128 characters.
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:~-]{1,128}$"
EventId = Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerRequest(_Request):
    """One customer: either ``customer_id`` (features looked up in the latest feature snapshot)
    or ``features`` (a full feature payload: every column the models need, by feature name).
    Exactly one of them is given (a null counts as not given)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["customer_id"], "properties": {"customer_id": {"type": "string"}}},
                {"required": ["features"], "properties": {"features": {"type": "object"}}},
            ]
        },
    )

    customer_id: CustomerId | None = Field(
        None, description="Customer id in the warehouse (POST /schema_info counts them)."
    )
    features: dict[str, FeatureValue] | None = Field(
        None,
        description="Feature name -> value, instead of customer_id: exactly the columns POST "
        "/schema_info lists. A null stands for the feature's registry default (as in batch "
        "scoring; refused where the feature has none and needs a value); integers must be "
        "whole and within +-2**53; category values must be ones the service knows; unknown "
        "or missing columns are refused. Every refusal is a 400 naming the field.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CustomerRequest:
        if (self.customer_id is None) == (self.features is None):
            raise ValueError("give exactly one of customer_id or features")
        return self


def batch_request_model(max_size: int) -> type[BaseModel]:
    """A request holding ``customers: list[CustomerRequest]`` of at most ``max_size`` items."""

    class BatchRequest(_Request):
        customers: list[CustomerRequest] = Field(
            ..., min_length=1, max_length=max_size, description="Customers to score."
        )

    return BatchRequest


BatchRequest = batch_request_model(SERVING_CONFIG.max_batch_size)


class FeedbackRequest(_Request):
    """An offer made to a customer was accepted or rejected."""

    customer_id: CustomerId
    offer_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    accepted: StrictBool = Field(
        ..., description="true or false (JSON booleans only: \"yes\", 1 or \"true\" are refused)."
    )
    channel: str | None = Field(
        None,
        max_length=32,
        description="Channel the offer went out on; one of the catalogue's channels.",
    )
    event_id: EventId | None = Field(
        None,
        description="The client's id of this event (or the Idempotency-Key header): sending the "
        "same id again stores nothing more and answers the same, so a retry after a timeout or "
        "a crash never double counts. The same id with another customer, offer or answer is "
        "refused (409). Without one, every request is a new event.",
    )


# --- responses --------------------------------------------------------------------------------


class ChurnResult(BaseModel):
    customer_id: str | None
    as_of: dt.date | None
    churn_probability: float = Field(..., ge=0, le=1)
    reasons: list[str] = Field(..., description="Top drivers of churn risk, strongest first.")
    # issue 13: what the number means (from the training configs; see serving/definitions.py)
    horizon_days: int = Field(
        default_factory=lambda: _definitions().churn_horizon_days,
        description="Churn window: days after as_of in which no purchase counts as churn.",
    )
    definition: str = Field(default_factory=lambda: _definitions().churn)


class ClvResult(BaseModel):
    customer_id: str | None
    as_of: dt.date | None
    clv_ml: float = Field(..., description="Margin expected over the ML model's horizon.")
    prob_clv: float | None = Field(None, description="BG/NBD + Gamma-Gamma CLV.")
    p_alive: float | None = None
    expected_purchases: float | None = None
    expected_spend: float | None = None
    horizon_days: int
    # issue 13: the ML and the probabilistic CLV have different horizons; say which is which
    clv_ml_horizon_days: int = Field(
        default_factory=lambda: _definitions().clv_ml_horizon_days,
        description="Days after as_of that clv_ml covers.",
    )
    clv_ml_definition: str = Field(default_factory=lambda: _definitions().clv_ml)
    prob_clv_horizon_months: int = Field(
        default_factory=lambda: _definitions().prob_clv_horizon_months,
        description="Months that prob_clv covers (discounted).",
    )
    prob_clv_definition: str = Field(default_factory=lambda: _definitions().prob_clv)
    expected_purchases_definition: str = Field(
        default_factory=lambda: _definitions().expected_purchases
    )


class Offer(BaseModel):
    offer_id: str
    rank: int
    p_accept: float | None = None
    expected_value: float | None = None
    score: float | None = Field(
        None,
        description="Ranking value (offers are ranked by it, highest first): the expected "
        "value, with P(accept) replaced by a Thompson draw from the NBO bandit's posterior once "
        "feedback has been recorded or exploration is on. The draw is one decision per customer "
        "per decision period (bandit.decision_period, ISO week by default), the same on every "
        "call, endpoint and batch run; ranks change only when the period rolls over, recorded "
        "feedback moves the posterior or an offer's eligibility, or new models or a new "
        "snapshot are served.",
    )
    reasons: list[str] = Field(default_factory=list, description="Why the offer is eligible.")


class Exclusion(BaseModel):
    offer_id: str
    reason: str


class NboResult(BaseModel):
    customer_id: str | None
    as_of: dt.date | None
    offers: list[Offer]
    excluded: list[Exclusion] = Field(default_factory=list)


class GoldenAttribute(BaseModel):
    """One golden attribute of a unified customer and the source record it came from."""

    attribute: str
    value: str
    source_system: str
    source_record_id: str


class SourceRecord(BaseModel):
    """A source system's record behind a unified customer (raw key fields)."""

    source_system: str
    source_record_id: str
    match_probability: float | None = Field(
        None, description="Best match probability linking this record to its cluster.")
    given_name: str | None = None
    surname: str | None = None
    company_name: str | None = None
    email: str | None = None
    phone: str | None = None
    street: str | None = None
    postcode: str | None = None
    city: str | None = None
    date_of_birth: str | None = None
    company_id: str | None = None


class IdentityBlock(BaseModel):
    """Who the customer is across systems (issue 14): golden attributes with their sources,
    the source records behind the customer and the old ids merged into it."""

    golden: list[GoldenAttribute]
    source_records: list[SourceRecord]
    aliases: list[str] = Field(default_factory=list)


# --- issue 15: leads and opportunities ----------------------------------------------------------


def _one_of(key: str) -> dict[str, Any]:
    return {"oneOf": [
        {"required": [key], "properties": {key: {"type": "string"}}},
        {"required": ["features"], "properties": {"features": {"type": "object"}}},
    ]}


class LeadRequest(_Request):
    """One lead: ``lead_id`` (an open lead of the served snapshot) or ``features`` (its
    point-in-time features, by name); exactly one of them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of("lead_id"))

    lead_id: CustomerId | None = Field(None, description="Lead id in the warehouse.")
    features: dict[str, FeatureValue] | None = Field(
        None, description="Feature name -> value instead of lead_id: exactly the lead model's "
        "features (lead__age_days, lead__source, ...); categories must be values the model "
        "knows; numbers finite (null where unknown). Every refusal is a 400 naming the field.")

    @model_validator(mode="after")
    def _exactly_one(self) -> LeadRequest:
        if (self.lead_id is None) == (self.features is None):
            raise ValueError("give exactly one of lead_id or features")
        return self


class OpportunityRequest(_Request):
    """One opportunity: ``opportunity_id`` (open in the served snapshot) or ``features`` (its
    stage features by name: opp__stage, opp__days_in_stage, ...); exactly one of them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of("opportunity_id"))

    opportunity_id: CustomerId | None = Field(None, description="Opportunity id.")
    features: dict[str, FeatureValue] | None = Field(
        None, description="Feature name -> value instead of opportunity_id: exactly the "
        "opportunity model's features; the same rules as /lead_score's.")

    @model_validator(mode="after")
    def _exactly_one(self) -> OpportunityRequest:
        if (self.opportunity_id is None) == (self.features is None):
            raise ValueError("give exactly one of opportunity_id or features")
        return self


Grade = Literal["A", "B", "C", "D"]
Trend = Literal["improving", "steady", "declining", "new"]


class LeadScoreResult(BaseModel):
    """A lead's conversion score (configs/leads.yaml: horizon, grade cut-offs, trend band)."""

    lead_id: str | None
    customer_id: str | None = Field(None, description="Unified customer, when linked.")
    as_of: dt.date
    probability: float = Field(..., ge=0, le=1,
                               description="P(converts to an opportunity within the horizon).")
    score: int = Field(..., ge=1, le=100, description="The probability in whole percent.")
    grade: Grade
    trend: Trend | None = Field(
        None, description="Against the previous stored scoring (`customer360 score`); new "
        "when it was not scored then; null for a payload.")
    reasons_for: list[str] = Field(..., description="Strongest reasons raising the chance.")
    reasons_against: list[str] = Field(..., description="Strongest reasons lowering it.")
    model_version: str


class OpportunityScoreResult(BaseModel):
    """An open opportunity's win probability at its stage and its expected close date."""

    opportunity_id: str | None
    customer_id: str | None = None
    as_of: dt.date
    stage: str
    amount: float | None = None
    win_probability: float = Field(..., ge=0, le=1)
    expected_close_date: dt.date | None = Field(
        None, description="Median of the time-to-close model (null: beyond its horizon).")
    close_date_low: dt.date | None = None
    close_date_high: dt.date | None = None
    interval: float = Field(..., gt=0, lt=1, description="Central share of the close dates.")
    model_version: str


class LeadBrief(BaseModel):
    lead_id: str
    score: int = Field(..., ge=1, le=100)
    grade: Grade
    trend: Trend | None = None


class OpportunityBrief(BaseModel):
    opportunity_id: str
    stage: str
    amount: float | None = None
    win_probability: float = Field(..., ge=0, le=1)
    expected_close_date: dt.date | None = None
    close_date_low: dt.date | None = None
    close_date_high: dt.date | None = None


class ProfileResult(BaseModel):
    """The integrated customer profile returned by /customer360 (and written by batch scoring,
    flattened)."""

    customer_id: str | None
    as_of: dt.date | None
    classifications: dict[str, Any] = Field(
        ..., description="Status, tiers, RFM segment, lifecycle, department lenses, ..."
    )
    value_segment: str | None
    service_policy: dict[str, Any]
    churn: ChurnResult
    clv: ClvResult
    p_alive: float | None
    offers: list[Offer]
    excluded: list[Exclusion]
    model_versions: dict[str, str]
    identity: IdentityBlock | None = Field(
        None, description="Golden record and source records (null without identity tables, "
        "or for a payload request).")
    # issue 15: a B2B customer's open pipeline and leads (empty without them or the models)
    open_opportunities: list[OpportunityBrief] = Field(
        default_factory=list, description="Open opportunities, most likely win first.")
    leads: list[LeadBrief] = Field(default_factory=list,
                                   description="Open leads, highest score first.")


class FeedbackResult(BaseModel):
    recorded: bool
    customer_id: str
    offer_id: str
    accepted: bool
    event_id: str = Field(..., description="The event's id (the client's, or a fresh one).")


ResultT = TypeVar("ResultT")


class BatchItem(BaseModel, Generic[ResultT]):
    """One customer of a batch request: its result, or why it has none (e.g. unknown id).

    A bad item never fails the others: adaptive batching merges requests from different
    clients into one model call.
    """

    customer_id: str | None
    result: ResultT | None = None
    error: str | None = None


def _definitions():  # issue 13: lazy, the definitions read configs that import this module
    from customer360.serving.definitions import definitions

    return definitions()
