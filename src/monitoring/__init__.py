"""Drift and performance monitoring of the scored snapshots (``customer360 monitor``)."""
