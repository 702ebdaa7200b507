"""The departments' workspace: a server-rendered web app mounted on the BentoML service at
``/app`` (FastAPI + Jinja2 templates shipped with the package; no JavaScript).

Pages: ``/app/`` (search), ``/app/customers/{customer_id}`` (the customer card, built by the
service's own ``customer360`` and ``feedback`` methods, so it shows exactly what the API
answers), ``/app/segments`` (A–D table, RFM grid, Pareto curves and negative contributors, each
linking to its customers, CSV export), ``/app/departments/{marketing|sales|finance|service}``
(each department's classes, filterable lists, CSV) and ``/app/models`` (champion and challenger
of each registered model next to their baselines). With the service token configured the app
asks for it once (``/app/login``) and keeps an HttpOnly, SameSite=Strict session cookie; every
POST carries a CSRF token; GETs write nothing.
"""

from customer360.serving.webapp.app import APP_PATH
from customer360.serving.webapp.app import app as webapp

__all__ = ["APP_PATH", "webapp"]
