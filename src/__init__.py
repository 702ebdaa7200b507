"""customer360: one integrated view of every customer, with churn, CLV and next-best-offer.

Rooms, data flowing one way: ``data`` -> ``features`` -> ``models`` -> ``training`` -> ``serving``.
"""

from customer360.errors import Customer360Error

__all__ = ["Customer360Error", "__version__"]
__version__ = "0.1.0"
