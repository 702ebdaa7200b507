"""Written contracts of the raw CRM tables: columns, types, keys, allowed values, nullability.

The contracts are data. The warehouse DDL, the ingest validation and the docs are all derived
from :data:`CONTRACTS`, so they cannot drift apart.

Conventions
-----------
* Every raw table has a single-column primary key and a ``customer_id`` (except ``offers``).
* Timestamps are naive UTC ``TIMESTAMP``; dates are ``DATE``.
* Money is ``DOUBLE`` in the company's currency. Returns are rows of ``transactions`` with
  ``is_return = true`` and a negative ``amount`` and ``margin``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pydantic import Field

from customer360.config import StrictModel, load_config

# Allowed values shared by the generator, the contracts and the features.
CUSTOMER_TYPES = ("B2C", "B2B")
COMPANY_SIZES = ("micro", "small", "medium", "large")
INDUSTRIES = ("retail", "manufacturing", "services", "technology", "healthcare", "finance")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = ("F", "M", "X")
REGIONS = ("north", "south", "east", "west", "central")
ACQUISITION_CHANNELS = (
    "paid_digital",
    "organic_content",
    "referral",
    "live_event",
    "partner",
    "direct",
)
CATEGORIES = ("electronics", "home", "fashion", "grocery", "sports", "beauty", "services")
SALES_CHANNELS = ("web", "app", "store", "phone", "sales_rep")
INCOME_BANDS = ("low", "lower_middle", "middle", "upper_middle", "high")
EDUCATION_LEVELS = ("secondary", "vocational", "bachelor", "master", "doctorate")
PROFESSIONS = (
    "student",
    "clerical",
    "skilled_trade",
    "professional",
    "manager",
    "executive",
    "retired",
    "other",
)
REVENUE_BANDS = ("<1M", "1M-10M", "10M-100M", "100M-1B", ">1B")
EVENT_TYPES = ("session", "product_view", "cart_add", "email_send", "email_open", "email_click")
EVENT_CHANNELS = ("web", "app", "email")
SOCIAL_KINDS = ("mention", "like", "share", "comment")
SOCIAL_PLATFORMS = ("x", "facebook", "instagram", "linkedin", "review_site")
TICKET_CATEGORIES = (
    "fee_complaint",
    "statement_unclear",
    "product_issue",
    "delivery",
    "return_request",
    "billing",
    "general",
)
TICKET_STATUSES = ("open", "resolved", "unresolved")
OFFER_KINDS = ("sales", "cross_sell", "retention", "service")
OFFER_CHANNELS = ("email", "app", "web", "phone", "sales_rep")


# Plausibility bounds (issue 12): a value past them is an export or unit error, not a customer.
MAX_MONEY = 1e9
"""Largest absolute money value of one row (order amount, margin, cost, discount, home value)."""
ID_MAX_LENGTH = 128
"""Longest identifier (``*_id`` columns)."""
TEXT_MAX_LENGTH = 512
"""Longest free-text value (city, product, ...)."""


class DatePlausibility(StrictModel):
    """``configs/contracts.yaml``: the dates every DATE / TIMESTAMP column must fall between.

    Examples
    --------
    >>> DatePlausibility().earliest_date
    datetime.date(1970, 1, 1)
    """

    earliest_date: dt.date = dt.date(1970, 1, 1)
    future_tolerance_days: int = Field(1, ge=0)
    latest_planned_date: dt.date = dt.date(2200, 1, 1)


def date_plausibility() -> DatePlausibility:
    """The date bounds of ``configs/contracts.yaml``."""
    return load_config("contracts", DatePlausibility)


@dataclass(frozen=True)
class Column:
    """One column of a table contract.

    ``dtype`` is a DuckDB type name. ``allowed`` restricts values to a closed set; ``min`` and
    ``max`` bound numeric values (inclusive). ``references`` names ``table.column`` of a foreign
    key that must exist. ``max_length`` bounds a VARCHAR's characters. Dates and timestamps lie
    between :class:`DatePlausibility`'s earliest date and now plus its tolerance, or its latest
    planned date when ``planned`` (a future date by nature, e.g. a contract's end).
    """

    name: str
    dtype: str
    description: str
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    references: str | None = None
    max_length: int | None = None
    planned: bool = False


@dataclass(frozen=True)
class TableContract:
    """The contract of one raw table."""

    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: str
    time_column: str | None = None
    checks: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """Extra row-level rules as ``(name, SQL boolean expression that must hold)``."""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if not c.nullable]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    def ddl(self, table_name: str | None = None, *, primary_key: bool = True) -> str:
        """``CREATE TABLE IF NOT EXISTS`` statement for this contract (types and nullability;
        value rules are enforced by ingest validation, which reports every bad row instead of
        failing on the first). ``primary_key=False`` leaves the key out, for bulk loads that
        add it afterwards."""
        parts = [f"{c.name} {c.dtype}{'' if c.nullable else ' NOT NULL'}" for c in self.columns]
        if primary_key:
            parts.append(f"PRIMARY KEY ({self.primary_key})")
        body = ",\n  ".join(parts)
        return f"CREATE TABLE IF NOT EXISTS {table_name or self.name} (\n  {body}\n)"


def _c(name: str, dtype: str, description: str, **kw) -> Column:
    if dtype == "VARCHAR" and kw.get("allowed") is None:
        kw.setdefault("max_length", ID_MAX_LENGTH if name.endswith("_id") else TEXT_MAX_LENGTH)
    return Column(name=name, dtype=dtype, description=description, **kw)


CUSTOMERS = TableContract(
    name="customers",
    description="Demographic master data, one row per customer (B2C person or B2B company).",
    primary_key="customer_id",
    time_column="signup_date",
    columns=(
        _c("customer_id", "VARCHAR", "Stable customer identifier."),
        _c("customer_type", "VARCHAR", "B2C person or B2B company.", allowed=CUSTOMER_TYPES),
        _c("company_size", "VARCHAR", "B2B only.", nullable=True, allowed=COMPANY_SIZES),
        _c("industry", "VARCHAR", "B2B only.", nullable=True, allowed=INDUSTRIES),
        _c("age_band", "VARCHAR", "B2C only.", nullable=True, allowed=AGE_BANDS),
        _c("gender", "VARCHAR", "B2C only.", nullable=True, allowed=GENDERS),
        _c("region", "VARCHAR", "Sales region.", allowed=REGIONS),
        _c("city", "VARCHAR", "City name."),
        _c(
            "acquisition_channel",
            "VARCHAR",
            "How the customer first came in.",
            allowed=ACQUISITION_CHANNELS,
        ),
        _c("signup_date", "DATE", "First contact / account creation date."),
        _c(
            "contract_end_date",
            "DATE",
            "End of a fixed-term contract; null for non-contractual customers.",
            nullable=True,
            planned=True,
        ),
    ),
    checks=(
        (
            "b2b_fields_only_for_companies",
            "customer_type = 'B2B' OR (company_size IS NULL AND industry IS NULL)",
        ),
        (
            "b2c_fields_only_for_people",
            "customer_type = 'B2C' OR (age_band IS NULL AND gender IS NULL)",
        ),
        (
            "contract_ends_after_signup",
            "contract_end_date IS NULL OR contract_end_date >= signup_date",
        ),
    ),
)

TRANSACTIONS = TableContract(
    name="transactions",
    description=(
        "Orders (one row per order), returns (is_return, negative amount and margin), "
        "referral purchases (referrer_id) and the cost to serve each order."
    ),
    primary_key="transaction_id",
    time_column="ts",
    columns=(
        _c("transaction_id", "VARCHAR", "Order or return identifier."),
        _c("customer_id", "VARCHAR", "Buyer.", references="customers.customer_id"),
        _c("ts", "TIMESTAMP", "When the order or return happened."),
        _c("amount", "DOUBLE", "Net revenue; negative for returns.", min=-MAX_MONEY,
           max=MAX_MONEY),
        _c("margin", "DOUBLE", "Gross margin; negative for returns.", min=-MAX_MONEY,
           max=MAX_MONEY),
        _c("quantity", "INTEGER", "Units (positive, also for returns).", min=1),
        _c("category", "VARCHAR", "Product category.", allowed=CATEGORIES),
        _c("channel", "VARCHAR", "Sales channel.", allowed=SALES_CHANNELS),
        _c("discount", "DOUBLE", "Discount granted, in money.", min=0, max=MAX_MONEY),
        _c("is_return", "BOOLEAN", "True for a return of earlier goods."),
        _c(
            "referrer_id",
            "VARCHAR",
            "Customer who referred this purchase, if any.",
            nullable=True,
            references="customers.customer_id",
        ),
        _c("cost_to_serve", "DOUBLE", "Logistics + handling cost of this order.", min=0,
           max=MAX_MONEY),
    ),
    checks=(
        ("returns_are_negative", "(is_return AND amount <= 0) OR (NOT is_return AND amount >= 0)"),
        ("no_self_referral", "referrer_id IS NULL OR referrer_id <> customer_id"),
    ),
)

THIRD_PARTY = TableContract(
    name="third_party",
    description="Third-party economic enrichment: household economics and firmographics.",
    primary_key="customer_id",
    time_column="observed_at",
    columns=(
        _c("customer_id", "VARCHAR", "Enriched customer.", references="customers.customer_id"),
        _c("observed_at", "TIMESTAMP", "When the provider delivered this record."),
        _c("profession", "VARCHAR", "B2C profession.", nullable=True, allowed=PROFESSIONS),
        _c("education", "VARCHAR", "B2C education.", nullable=True, allowed=EDUCATION_LEVELS),
        _c("income_band", "VARCHAR", "B2C income band.", nullable=True, allowed=INCOME_BANDS),
        _c("household_size", "INTEGER", "B2C household size.", nullable=True, min=1, max=15),
        _c("home_value", "DOUBLE", "B2C estimated home value.", nullable=True, min=0,
           max=MAX_MONEY),
        _c("affluence_score", "DOUBLE", "0-100 affluence / net worth index.", min=0, max=100),
        _c("revenue_band", "VARCHAR", "B2B annual revenue band.", nullable=True,
           allowed=REVENUE_BANDS),
        _c("employee_count", "INTEGER", "B2B employees.", nullable=True, min=1),
    ),
)

EVENTS = TableContract(
    name="events",
    description="Behavioural events: web/app sessions, product views, cart adds, email funnel.",
    primary_key="event_id",
    time_column="ts",
    columns=(
        _c("event_id", "VARCHAR", "Event identifier."),
        _c("customer_id", "VARCHAR", "Actor.", references="customers.customer_id"),
        _c("ts", "TIMESTAMP", "When it happened."),
        _c("event_type", "VARCHAR", "What happened.", allowed=EVENT_TYPES),
        _c("channel", "VARCHAR", "Where it happened.", allowed=EVENT_CHANNELS),
        _c("category", "VARCHAR", "Product category viewed or added.", nullable=True,
           allowed=CATEGORIES),
    ),
)

SOCIAL = TableContract(
    name="social",
    description="Social media activity about the brand: mentions, likes, shares, comments.",
    primary_key="social_id",
    time_column="ts",
    columns=(
        _c("social_id", "VARCHAR", "Post or reaction identifier."),
        _c("customer_id", "VARCHAR", "Author.", references="customers.customer_id"),
        _c("ts", "TIMESTAMP", "When it was posted."),
        _c("kind", "VARCHAR", "Kind of activity.", allowed=SOCIAL_KINDS),
        _c("platform", "VARCHAR", "Where.", allowed=SOCIAL_PLATFORMS),
        _c("sentiment", "DOUBLE", "Sentiment score -1..1 (null for likes/shares).",
           nullable=True, min=-1, max=1),
    ),
)

SUPPORT_TICKETS = TableContract(
    name="support_tickets",
    description="Customer service tickets with category, resolution and satisfaction.",
    primary_key="ticket_id",
    time_column="opened_at",
    columns=(
        _c("ticket_id", "VARCHAR", "Ticket identifier."),
        _c("customer_id", "VARCHAR", "Customer.", references="customers.customer_id"),
        _c("opened_at", "TIMESTAMP", "When the ticket was opened."),
        _c("closed_at", "TIMESTAMP", "When it was closed; null while open.", nullable=True),
        _c("category", "VARCHAR", "Reason for contact.", allowed=TICKET_CATEGORIES),
        _c("status", "VARCHAR", "Current status (as of the extract).", allowed=TICKET_STATUSES),
        _c("satisfaction", "INTEGER", "Post-contact satisfaction 1-5.", nullable=True,
           min=1, max=5),
    ),
    checks=(
        ("closed_after_opened", "closed_at IS NULL OR closed_at >= opened_at"),
        ("open_means_not_closed", "status <> 'open' OR closed_at IS NULL"),
    ),
)

OFFERS = TableContract(
    name="offers",
    description="Offer catalogue.",
    primary_key="offer_id",
    columns=(
        _c("offer_id", "VARCHAR", "Offer identifier."),
        _c("product", "VARCHAR", "Product or service offered."),
        _c("category", "VARCHAR", "Product category.", allowed=CATEGORIES),
        _c("kind", "VARCHAR", "Sales, cross-sell, retention or service offer.",
           allowed=OFFER_KINDS),
        _c("margin", "DOUBLE", "Expected margin if accepted.", min=-MAX_MONEY, max=MAX_MONEY),
        _c("channel", "VARCHAR", "Channel the offer is made through.", allowed=OFFER_CHANNELS),
        _c("eligible_segments", "VARCHAR",
           "Value segments (A-D) allowed, '|'-separated, e.g. 'A|B'."),
    ),
)

OFFER_EVENTS = TableContract(
    name="offer_events",
    description=(
        "Offers made to customers by the logging policy, with the probability it chose them "
        "and whether the customer accepted."
    ),
    primary_key="offer_event_id",
    time_column="ts",
    columns=(
        _c("offer_event_id", "VARCHAR", "Offer presentation identifier."),
        _c("customer_id", "VARCHAR", "Customer.", references="customers.customer_id"),
        _c("offer_id", "VARCHAR", "Offer made.", references="offers.offer_id"),
        _c("ts", "TIMESTAMP", "When the offer was made."),
        _c("channel", "VARCHAR", "Channel it was made through.", allowed=OFFER_CHANNELS),
        _c("propensity", "DOUBLE", "Logging policy's probability of choosing this offer.",
           min=1e-9, max=1),
        _c("accepted", "BOOLEAN", "Customer accepted (true) or rejected (false)."),
    ),
)

# Issue 14: raw customer records as each source system holds them (identity resolution).
SOURCE_SYSTEM_MAX_LENGTH = 64

SOURCE_RECORDS = TableContract(
    name="source_records",
    description=(
        "Customer records as each source system (CRM, web shop, POS loyalty, call centre, B2B "
        "contacts) holds them, before identity resolution; raw values, standardised later. "
        "customer360.identity links them into one customer_id."
    ),
    primary_key="record_key",
    time_column="updated_at",
    columns=(
        _c("record_key", "VARCHAR", "source_system || ':' || source_record_id (unique key)."),
        _c("source_system", "VARCHAR", "System the record comes from, e.g. crm.",
           max_length=SOURCE_SYSTEM_MAX_LENGTH),
        _c("source_record_id", "VARCHAR", "The record's id inside its source system."),
        _c("given_name", "VARCHAR", "Person's given name.", nullable=True),
        _c("surname", "VARCHAR", "Person's surname.", nullable=True),
        _c("company_name", "VARCHAR", "Company name (B2B records).", nullable=True),
        _c("email", "VARCHAR", "Email address as typed.", nullable=True),
        _c("phone", "VARCHAR", "Phone number as typed (any format).", nullable=True),
        _c("street", "VARCHAR", "Street address line.", nullable=True),
        _c("postcode", "VARCHAR", "Postcode / ZIP.", nullable=True),
        _c("city", "VARCHAR", "City.", nullable=True),
        _c("country", "VARCHAR", "Country (ISO 3166 alpha-2 preferred).", nullable=True),
        _c("date_of_birth", "VARCHAR",
           "Date of birth as the system holds it (text: raw values are messy, the "
           "standardiser parses them).", nullable=True),
        _c("company_id", "VARCHAR", "Company registration or tax id.", nullable=True),
        _c("created_at", "TIMESTAMP", "When the source system created the record."),
        _c("updated_at", "TIMESTAMP", "When the source system last changed the record."),
    ),
    checks=(
        ("record_key_is_system_and_id", "record_key = source_system || ':' || source_record_id"),
        ("updated_after_created", "updated_at >= created_at"),
        ("has_a_name", "coalesce(given_name, surname, company_name) IS NOT NULL"),
    ),
)

CONTRACTS: dict[str, TableContract] = {
    t.name: t
    for t in (
        CUSTOMERS,
        TRANSACTIONS,
        THIRD_PARTY,
        EVENTS,
        SOCIAL,
        SUPPORT_TICKETS,
        OFFERS,
        OFFER_EVENTS,
        SOURCE_RECORDS,  # issue 14
    )
}
"""Every raw table, in load order (referenced tables first)."""

RAW_TABLES: tuple[str, ...] = tuple(CONTRACTS)


# --- issue 15: B2B leads and opportunities --------------------------------------------------------

LEAD_SOURCES = ("web_form", "referral", "trade_show", "partner", "cold_outreach", "content")
LEAD_CHANNELS = ("web", "email", "phone", "event", "partner")
LEAD_TYPES = ("company", "person")
LEAD_STATUSES = ("new", "working", "qualified", "converted", "disqualified")
DECISION_TIMEFRAMES = ("under_3_months", "3_to_9_months", "over_9_months")
POSTPONING_COSTS = ("low", "medium", "high")
PURCHASE_INFLUENCES = ("user", "influencer", "decision_maker")
LEAD_EVENT_KINDS = ("status_change", "email_open", "email_click", "web_visit", "call", "meeting")
OPPORTUNITY_STAGES = ("lead", "potential_customer", "proposal", "verbal_acceptance", "close")
OPPORTUNITY_OUTCOMES = ("open", "won", "lost")
LOSS_REASONS = ("price", "competitor", "no_decision", "timing", "no_fit")

LEADS = TableContract(
    name="leads",
    description=(
        "Sales leads (prospects): where they came from, who owns them, the qualification "
        "answers (filled at qualified_at, null before) and the current status. The status "
        "history and the lead's activity are in lead_events."
    ),
    primary_key="lead_id",
    time_column="created_at",
    columns=(
        _c("lead_id", "VARCHAR", "Lead identifier."),
        _c("customer_id", "VARCHAR", "Unified customer this lead belongs to, if known.",
           nullable=True, references="customers.customer_id"),
        _c("lead_type", "VARCHAR", "A company (B2B) or a person (B2C).", allowed=LEAD_TYPES),
        _c("name", "VARCHAR", "Company or person name as entered."),
        _c("source", "VARCHAR", "Where the lead came from.", allowed=LEAD_SOURCES),
        _c("channel", "VARCHAR", "First contact channel.", allowed=LEAD_CHANNELS),
        _c("owner", "VARCHAR", "Sales rep who owns the lead."),
        _c("created_at", "TIMESTAMP", "When the lead was created."),
        _c("company_size", "VARCHAR", "Companies only.", nullable=True, allowed=COMPANY_SIZES),
        _c("industry", "VARCHAR", "Companies only.", nullable=True, allowed=INDUSTRIES),
        _c("qualified_at", "TIMESTAMP", "When the qualification answers were recorded.",
           nullable=True),
        _c("need_identified", "BOOLEAN", "The main need is identified (qualification).",
           nullable=True),
        _c("decision_timeframe", "VARCHAR", "When the buyer expects to decide (qualification).",
           nullable=True, allowed=DECISION_TIMEFRAMES),
        _c("cost_of_postponing", "VARCHAR", "Consequence of postponing (qualification).",
           nullable=True, allowed=POSTPONING_COSTS),
        _c("purchase_influence", "VARCHAR", "Contact's influence on the purchase "
           "(qualification).", nullable=True, allowed=PURCHASE_INFLUENCES),
        _c("status", "VARCHAR", "Current status (as of the extract).", allowed=LEAD_STATUSES),
        _c("status_changed_at", "TIMESTAMP", "When the current status was set."),
        _c("converted_at", "TIMESTAMP", "When it became an opportunity; null if not (yet).",
           nullable=True),
    ),
    checks=(
        ("qualification_only_when_qualified",
         "qualified_at IS NOT NULL OR (need_identified IS NULL AND decision_timeframe IS NULL "
         "AND cost_of_postponing IS NULL AND purchase_influence IS NULL)"),
        ("lead_dates_in_order",
         "status_changed_at >= created_at AND (qualified_at IS NULL OR qualified_at >= "
         "created_at) AND (converted_at IS NULL OR converted_at >= created_at)"),
        ("converted_means_converted_at",
         "(status = 'converted') = (converted_at IS NOT NULL)"),
        ("company_fields_only_for_companies",
         "lead_type = 'company' OR (company_size IS NULL AND industry IS NULL)"),
    ),
)

LEAD_EVENTS = TableContract(
    name="lead_events",
    description=(
        "Dated history of each lead: status changes (new status in `status`) and activity "
        "(email opens and clicks, web visits, calls, meetings)."
    ),
    primary_key="lead_event_id",
    time_column="ts",
    columns=(
        _c("lead_event_id", "VARCHAR", "Event identifier."),
        _c("lead_id", "VARCHAR", "Lead.", references="leads.lead_id"),
        _c("ts", "TIMESTAMP", "When it happened."),
        _c("kind", "VARCHAR", "What happened.", allowed=LEAD_EVENT_KINDS),
        _c("status", "VARCHAR", "New status of a status change; null otherwise.",
           nullable=True, allowed=LEAD_STATUSES),
    ),
    checks=(("status_only_on_status_change", "(kind = 'status_change') = (status IS NOT NULL)"),),
)

OPPORTUNITIES = TableContract(
    name="opportunities",
    description=(
        "Sales opportunities: account, amount, the seller's expected close date, outcome "
        "(open / won / lost) and loss reason. Stage history is in opportunity_stages."
    ),
    primary_key="opportunity_id",
    time_column="created_at",
    columns=(
        _c("opportunity_id", "VARCHAR", "Opportunity identifier."),
        _c("lead_id", "VARCHAR", "Lead it was converted from, if any.", nullable=True,
           references="leads.lead_id"),
        _c("customer_id", "VARCHAR", "Unified customer (account), if known.", nullable=True,
           references="customers.customer_id"),
        _c("account_name", "VARCHAR", "Account (company or person) name."),
        _c("created_at", "TIMESTAMP", "When the opportunity was opened."),
        _c("amount", "DOUBLE", "Expected deal value.", min=0, max=MAX_MONEY),
        _c("expected_close_date", "DATE", "Close date the seller expects (as entered).",
           planned=True),
        _c("stage", "VARCHAR", "Current stage (as of the extract).", allowed=OPPORTUNITY_STAGES),
        _c("outcome", "VARCHAR", "Open, won or lost.", allowed=OPPORTUNITY_OUTCOMES),
        _c("closed_at", "TIMESTAMP", "When it was won or lost; null while open.", nullable=True),
        _c("loss_reason", "VARCHAR", "Why it was lost.", nullable=True, allowed=LOSS_REASONS),
    ),
    checks=(
        ("open_means_not_closed", "(outcome = 'open') = (closed_at IS NULL)"),
        ("loss_reason_only_when_lost", "loss_reason IS NULL OR outcome = 'lost'"),
        ("closed_after_created", "closed_at IS NULL OR closed_at >= created_at"),
    ),
)

OPPORTUNITY_STAGE_HISTORY = TableContract(
    name="opportunity_stages",
    description="When each opportunity entered each stage (one row per stage entered).",
    primary_key="opportunity_stage_id",
    time_column="entered_at",
    columns=(
        _c("opportunity_stage_id", "VARCHAR", "Row identifier."),
        _c("opportunity_id", "VARCHAR", "Opportunity.",
           references="opportunities.opportunity_id"),
        _c("stage", "VARCHAR", "Stage entered.", allowed=OPPORTUNITY_STAGES),
        _c("entered_at", "TIMESTAMP", "When the stage was entered."),
    ),
)

B2B_CONTRACTS: dict[str, TableContract] = {
    t.name: t for t in (LEADS, LEAD_EVENTS, OPPORTUNITIES, OPPORTUNITY_STAGE_HISTORY)
}
"""The issue-15 sales tables, in load order; part of :data:`CONTRACTS`."""
CONTRACTS.update(B2B_CONTRACTS)
RAW_TABLES = tuple(CONTRACTS)
# --- issue 16: campaign logs with a randomised control group -----------------------------------
# Kept outside CONTRACTS: a warehouse holds them only when campaigns were logged (generated with
# ``campaigns=...`` or ingested with ``ingest_file(con, CAMPAIGN_CONTACTS, file)`` after
# :func:`customer360.data.campaigns.create_campaign_tables`), so default warehouses are unchanged.
CAMPAIGN_ACTIONS = ("retention", "cross_sell", "up_sell")
CAMPAIGN_ARMS = ("treatment", "control")

CAMPAIGNS = TableContract(
    name="campaigns",
    description=(
        "Campaign header: the action offered, its channel, when it started, the horizon its "
        "outcomes were measured over, and the arm of its randomised holdout (eligible "
        "customers deliberately not contacted)."
    ),
    primary_key="campaign_id",
    time_column="started_at",
    columns=(
        _c("campaign_id", "VARCHAR", "Campaign identifier."),
        _c("action", "VARCHAR", "Retention offer, cross-sell or up-sell.",
           allowed=CAMPAIGN_ACTIONS),
        _c("channel", "VARCHAR", "Channel the contacts were made through.",
           allowed=OFFER_CHANNELS),
        _c("started_at", "DATE", "First day of the campaign (features are taken before it)."),
        _c("horizon_days", "INTEGER", "Days after the start over which outcomes were measured.",
           min=1, max=3650),
        _c("control_group", "VARCHAR",
           "Arm value in campaign_contacts.arm of the randomised holdout; NULL = no holdout "
           "(the log is then refused for uplift).", nullable=True, allowed=CAMPAIGN_ARMS),
        _c("treatment_share", "DOUBLE",
           "Probability with which an eligible customer was assigned to treatment.",
           min=0, max=1),
    ),
)

CAMPAIGN_CONTACTS = TableContract(
    name="campaign_contacts",
    description=(
        "One row per eligible customer of a campaign: the arm drawn at random, its "
        "probability, and the outcome measured over the campaign's horizon."
    ),
    primary_key="contact_id",
    columns=(
        _c("contact_id", "VARCHAR", "Row identifier."),
        _c("campaign_id", "VARCHAR", "Campaign.", references="campaigns.campaign_id"),
        _c("customer_id", "VARCHAR", "Customer.", references="customers.customer_id"),
        _c("arm", "VARCHAR", "treatment (contacted) or control (eligible, not contacted).",
           allowed=CAMPAIGN_ARMS),
        _c("treatment_probability", "DOUBLE",
           "Probability this customer was assigned to treatment (the logging propensity).",
           min=1e-9, max=1),
        _c("purchased", "BOOLEAN", "Bought at least once within the horizon."),
        _c("margin", "DOUBLE", "Margin of the customer's orders within the horizon.",
           min=-MAX_MONEY, max=MAX_MONEY),
    ),
)

CAMPAIGN_CONTRACTS: dict[str, TableContract] = {
    t.name: t for t in (CAMPAIGNS, CAMPAIGN_CONTACTS)
}
"""The campaign log tables (issue 16), in load order."""
