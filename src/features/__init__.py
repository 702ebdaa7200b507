"""customer360.features."""
