"""customer360.training."""
