"""customer360.models."""
