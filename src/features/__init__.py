"""customer360.features: point-in-time feature pipelines for the six data families.

Public entry points: :func:`build_features` (one function for training and scoring) and
:func:`build_training_set` (features + labels). The catalogue is
:data:`customer360.features.registry.FEATURES`.
"""

from customer360.features.assembler import build_features, build_training_set

__all__ = ["build_features", "build_training_set"]
