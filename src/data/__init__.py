"""customer360.data."""
