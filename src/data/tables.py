"""Names of the warehouse tables the rooms share, defined once.

The raw tables are declared in :mod:`customer360.data.contracts`; these are the derived ones
(features, scores, segments, the bandit's feedback log) that one room writes and others read.
Import the name from here rather than spelling it again.
"""

from __future__ import annotations

SNAPSHOT_TABLE = "feature_snapshots"
"""Feature rows per customer and as-of date (``customer360 features build``)."""

TRAINING_TABLE = "training_set"
"""Features plus labels (``customer360 features build --horizon``)."""

SCORES_TABLE = "customer_scores"
"""Batch scores of one snapshot (``customer360 score``)."""

SEGMENTS_TABLE = "customer_segments"
"""The segments table (``customer360 segments``)."""

FEEDBACK_TABLE = "nbo_feedback"
"""The bandit's append-only offer feedback log."""

BANDIT_STATE_VIEW = "nbo_bandit_state"
"""Successes and failures per segment and offer, a view over the feedback log."""

NBO_SEGMENTS_TABLE = "nbo_segments"
"""The value segment the bandit files each customer's feedback under."""

MONITOR_RESULTS_TABLE = "monitor_results"
"""Drift and performance results (``customer360 monitor``)."""
