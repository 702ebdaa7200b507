"""The one exception family of customer360.

Every message says what was wrong, where (file, table, column, row or customer id) and what to
do about it.
"""

from __future__ import annotations


class Customer360Error(Exception):
    """Base class of every error raised on purpose by customer360."""


class ConfigError(Customer360Error):
    """A configuration file is missing, unreadable or does not match its schema."""


class ContractError(Customer360Error):
    """Data does not match a table contract (missing column, wrong type, bad value)."""


class IngestError(Customer360Error):
    """A file cannot be ingested; the warehouse is left unchanged."""


class WarehouseError(Customer360Error):
    """The warehouse file is missing, locked, or lacks a table the caller needs."""


class ModelError(Customer360Error):
    """A model failed to fit or predict (no convergence, NaN output, not fitted, not found)."""


class NotFoundError(Customer360Error):
    """A customer, offer or registered model that was asked for does not exist."""


class IdentityError(Customer360Error):
    """Source records cannot be unified (missing id column, duplicate ids, empty file, bad map)."""


# issue 16
class CampaignError(Customer360Error):
    """A campaign log cannot support uplift or planning (no control group, unknown action,
    budget or cost out of range)."""
