"""customer360.serving."""
