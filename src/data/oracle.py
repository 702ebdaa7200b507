"""Oracles of the synthetic warehouse: the best possible predictions given the latent truth.

They read ``truth_customers`` and ``truth_tickets`` (written by
:func:`customer360.data.synthetic.generate_warehouse`) and are meant for tests and evaluation
only: never use them as features.

Both oracles condition on the latent state *at* ``as_of`` and project it forward with the
simulation's own transition rules, so they do not peek at the realised future:

* the customer's lifecycle state at ``as_of``: prospect (never buys), waiting for the first
  purchase, active, at risk (disengaging) or gone;
* the latent purchase rate, first-purchase rate, static weekly hazard, at-risk leaving
  probability and contract-end leaving probability;
* the hazard at every future weekly transition is computed from the tickets opened before
  ``as_of`` (they age out of the 13-week window as in the simulation) times the expected
  effect of the tickets the customer will open after ``as_of`` (the moment generating function
  of their Poisson counts; exact up to the hazard cap and the fee-complaint "grudge" term, which
  is held at its ``as_of`` level).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from customer360.data import synthetic as syn
from customer360.data.warehouse import get_meta, require_tables
from customer360.errors import WarehouseError


@dataclass
class _Projection:
    customer_id: np.ndarray
    p_no_purchase: np.ndarray
    expected_orders: np.ndarray
    margin_per_order: np.ndarray
    contract_ends_in_window: np.ndarray


def _as_date(value: date | str | pd.Timestamp) -> date:
    try:
        return pd.Timestamp(value).date()
    except (ValueError, TypeError) as exc:
        raise WarehouseError(f"as_of={value!r} is not a date (YYYY-MM-DD).") from exc


def _project(con: duckdb.DuckDBPyConnection, as_of: date, horizon_days: int) -> _Projection:
    require_tables(con, "truth_customers", "truth_tickets", "customers")
    if horizon_days <= 0:
        raise WarehouseError(f"horizon_days={horizon_days} must be a positive number of days.")
    start = date.fromisoformat(get_meta(con, "history_start", syn.HISTORY_START.isoformat()))
    d = float((as_of - start).days)
    if d < 0:
        raise WarehouseError(f"as_of={as_of} is before the history start {start}.")
    w = int(d // 7)
    cfg = syn.warehouse_config(con)
    cust = con.execute(
        """
        SELECT t.customer_id, t.is_prospect,
               epoch(t.first_purchase_at - CAST(? AS TIMESTAMP)) / 86400.0 AS first_day,
               t.first_purchase_rate_per_day, t.purchase_rate_per_day, t.at_risk_factor,
               t.hazard_static_weekly, t.leave_prob_weekly, t.contract_leave_prob,
               t.fee_ticket_rate_weekly, t.other_ticket_rate_weekly,
               t.expected_margin_per_order,
               CAST(date_diff('day', CAST(? AS DATE), t.at_risk_from) AS DOUBLE) AS at_risk_day,
               CAST(date_diff('day', CAST(? AS DATE), t.left_at) AS DOUBLE) AS left_day,
               CAST(date_diff('day', CAST(? AS DATE), c.contract_end_date) AS DOUBLE)
                 AS contract_day
        FROM truth_customers t JOIN customers c USING (customer_id)
        WHERE c.signup_date < CAST(? AS DATE)
        ORDER BY t.customer_id
        """,
        [start, start, start, start, as_of],
    ).df()
    n = len(cust)
    ids = cust["customer_id"].to_numpy()
    window = syn.TICKET_WINDOW_WEEKS
    tickets = con.execute(
        """
        SELECT customer_id, week_index,
               sum(CAST(is_fee_complaint AS INTEGER)) AS fee,
               sum(CAST(eventually_unresolved AS INTEGER)) AS unres
        FROM truth_tickets WHERE week_index < ?
        GROUP BY ALL
        """,
        [w],
    ).df()
    row = pd.Index(ids).get_indexer(tickets["customer_id"])
    ok = row >= 0
    row, week = row[ok], tickets["week_index"].to_numpy()[ok]
    fee, unres = tickets["fee"].to_numpy()[ok], tickets["unres"].to_numpy()[ok]
    fee_ever = np.bincount(row, weights=fee, minlength=n)
    hist_fee = np.zeros((n, window + 1))
    hist_unres = np.zeros((n, window + 1))
    recent = week >= w - window
    col = week[recent] - (w - window)  # 0 = oldest week in the window
    np.add.at(hist_fee, (row[recent], col), fee[recent])
    np.add.at(hist_unres, (row[recent], col), unres[recent])
    # suffix sums: known counts in the window of the transition j weeks ahead
    known_fee = np.cumsum(hist_fee[:, ::-1], axis=1)[:, ::-1]
    known_unres = np.cumsum(hist_unres[:, ::-1], axis=1)[:, ::-1]

    f = cust.fillna({"first_day": np.inf, "at_risk_day": np.inf, "left_day": np.inf,
                     "contract_day": -1.0})
    prospect = f["is_prospect"].to_numpy(bool)
    first_day = f["first_day"].to_numpy(float)
    lam = f["purchase_rate_per_day"].to_numpy(float)
    rho = f["at_risk_factor"].to_numpy(float)
    kappa = f["first_purchase_rate_per_day"].to_numpy(float)
    h0 = f["hazard_static_weekly"].to_numpy(float)
    leave = f["leave_prob_weekly"].to_numpy(float)
    c_leave = f["contract_leave_prob"].to_numpy(float)
    contract_day = f["contract_day"].to_numpy(float)
    contract_week = np.where(contract_day >= 0, np.floor(contract_day / 7), -1)
    at_risk_day = f["at_risk_day"].to_numpy(float)
    left_day = f["left_day"].to_numpy(float)

    # state probabilities (p: unconditional, q: and no purchase so far)
    waiting = ~prospect & (first_day > d)
    gone = ~prospect & ~waiting & (left_day <= d)
    at_risk = ~prospect & ~waiting & ~gone & (at_risk_day <= d)
    active = ~prospect & ~waiting & ~gone & ~at_risk
    p = {s: m.astype(float) for s, m in (("F", waiting), ("A", active), ("R", at_risk))}
    q = {s: v.copy() for s, v in p.items()}
    q_dead = (gone | prospect).astype(float)
    orders = np.zeros(n)

    pu = cfg.unresolved_prob_active
    unres_mgf = 1 - pu + pu * np.exp(cfg.unresolved_log_hazard)
    fee_mgf = np.exp(cfg.fee_complaint_log_hazard) * unres_mgf
    future_log = (
        f["fee_ticket_rate_weekly"].to_numpy(float) * (fee_mgf - 1)
        + f["other_ticket_rate_weekly"].to_numpy(float) * (unres_mgf - 1)
    )
    end = d + horizon_days
    t, j = d, 0
    while t < end:
        boundary = 7.0 * (w + 1 + j)
        seg = min(boundary, end) - t
        conv = 1 - np.exp(-kappa * seg)
        orders += p["A"] * lam * seg + p["R"] * lam * rho * seg
        orders += p["F"] * conv * (1 + lam * seg / 2)  # first order (+ some repeat orders)
        p["A"] += p["F"] * conv
        p["F"] = p["F"] * (1 - conv)
        q["F"] = q["F"] * (1 - conv)
        q["A"] = q["A"] * np.exp(-lam * seg)
        q["R"] = q["R"] * np.exp(-lam * rho * seg)
        if boundary >= end:
            break
        ends = (contract_week == w + j) * c_leave
        for s in ("A", "R"):
            q_dead += q[s] * ends
            p[s] = p[s] * (1 - ends)
            q[s] = q[s] * (1 - ends)
        col = min(j, window)  # column `window` of the suffix sums is all zeros
        # tickets not opened yet: their expected effect (weeks of the future inside the window)
        h0_j = h0 * np.exp(future_log * min(j, window))
        h = syn.weekly_hazard(h0_j, known_fee[:, col], known_unres[:, col], fee_ever, cfg)
        q_dead += q["R"] * leave
        p["R"] = p["R"] * (1 - leave) + p["A"] * h
        q["R"] = q["R"] * (1 - leave) + q["A"] * h
        p["A"] = p["A"] * (1 - h)
        q["A"] = q["A"] * (1 - h)
        t, j = boundary, j + 1
    p_none = q["F"] + q["A"] + q["R"] + q_dead
    return _Projection(
        customer_id=ids,
        p_no_purchase=np.clip(p_none, 0.0, 1.0),
        expected_orders=orders,
        margin_per_order=f["expected_margin_per_order"].to_numpy(float),
        contract_ends_in_window=(contract_day >= d) & (contract_day < end),
    )


def oracle_churn_probability(
    con: duckdb.DuckDBPyConnection,
    as_of: date | str,
    horizon_days: int,
    *,
    count_contract_end: bool = True,
) -> pd.DataFrame:
    """True probability of churn in ``[as_of, as_of + horizon_days)`` given the latent state.

    Churn means no purchase (non-return order) in the window, or, with ``count_contract_end``
    (default, matching ``label__churn__{H}d``), a contract ending in it (probability 1).

    Parameters
    ----------
    con
        Warehouse written by the synthetic generator.
    as_of
        Any date from the history start up to the synthetic today.
    horizon_days
        Window length in days.

    Returns
    -------
    pandas.DataFrame
        ``customer_id, p_churn`` for every customer signed up before ``as_of`` (prospects get 1).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from customer360.data.synthetic import generate_warehouse
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.duckdb"
    >>> _ = generate_warehouse(path, n_customers=200, seed=1)
    >>> with duckdb.connect(str(path), read_only=True) as con:
    ...     p = oracle_churn_probability(con, "2026-03-31", 90)
    ...     m = oracle_expected_margin(con, "2026-03-31", 90)
    >>> bool(p["p_churn"].between(0, 1).all()), bool((m["expected_margin"] >= 0).all())
    (True, True)
    """
    pr = _project(con, _as_date(as_of), horizon_days)
    p = pr.p_no_purchase
    if count_contract_end:
        p = np.where(pr.contract_ends_in_window, 1.0, p)
    return pd.DataFrame({"customer_id": pr.customer_id, "p_churn": p})


def oracle_expected_margin(
    con: duckdb.DuckDBPyConnection, as_of: date | str, horizon_days: int
) -> pd.DataFrame:
    """Expected gross margin of the orders in ``[as_of, as_of + horizon_days)`` given the latent
    state at ``as_of``: expected number of orders x the customer's expected margin per order
    (net of the expected returns of those orders).

    Returns
    -------
    pandas.DataFrame
        ``customer_id, expected_margin`` for every customer signed up before ``as_of``.
    """
    pr = _project(con, _as_date(as_of), horizon_days)
    return pd.DataFrame(
        {"customer_id": pr.customer_id, "expected_margin": pr.expected_orders * pr.margin_per_order}
    )
