"""The plots of an NBO training run: calibration of P(accept), acceptance by offer, and the
policy values with their intervals. Pure: frames and arrays in, ``Figure`` out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from customer360.figures import new_figure


def plot_weighted_calibration(
    y: np.ndarray, p: np.ndarray, weights: np.ndarray, bins: int = 10
) -> Figure:
    """Reliability diagram of P(accept) on held-out events, inverse-propensity weighted (the
    weights the model is trained and evaluated with)."""
    y, p, w = (np.asarray(a, dtype=float) for a in (y, p, weights))
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = np.bincount(idx, weights=w, minlength=bins)
    used = total > 0
    mean_p = np.bincount(idx, weights=w * p, minlength=bins)[used] / total[used]
    mean_y = np.bincount(idx, weights=w * y, minlength=bins)[used] / total[used]
    fig, ax = new_figure()
    ax.plot(mean_p, mean_y, marker="o", label="propensity model")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    upper = float(max(mean_p.max(initial=0), mean_y.max(initial=0)) * 1.1 or 1.0)
    ax.set(xlim=(0, upper), ylim=(0, upper), xlabel="mean predicted P(accept)",
           ylabel="observed acceptance (IPW)", title="Calibration (held-out events)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_acceptance_by_offer(
    offer_ids: np.ndarray, y: np.ndarray, p: np.ndarray, weights: np.ndarray
) -> Figure:
    """Observed (IPW) and predicted acceptance per offer on the held-out events."""
    frame = pd.DataFrame({"offer": offer_ids, "w": weights, "wy": weights * y, "wp": weights * p})
    per = frame.groupby("offer", sort=True)[["w", "wy", "wp"]].sum()
    per = per[per["w"] > 0]
    x = np.arange(len(per))
    fig, ax = new_figure((max(6, 0.5 * len(per) + 2), 4.5))
    ax.bar(x - 0.2, per["wy"] / per["w"], 0.4, label="observed (IPW)")
    ax.bar(x + 0.2, per["wp"] / per["w"], 0.4, label="predicted")
    ax.set_xticks(x, [str(o) for o in per.index], rotation=45, ha="right", fontsize=7)
    ax.set(ylabel="acceptance rate", title="Acceptance by offer (held-out events)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_policy_values(table: pd.DataFrame) -> Figure:
    """Doubly robust value per decision of each policy with its bootstrap interval (and the
    true value where the data are synthetic)."""
    fig, ax = new_figure()
    y = np.arange(len(table))
    dr = table["dr"].to_numpy(dtype=float)
    err = np.vstack([dr - table["dr_low"].to_numpy(dtype=float),
                     table["dr_high"].to_numpy(dtype=float) - dr])
    ax.errorbar(dr, y, xerr=np.clip(err, 0, None), fmt="o", capsize=3,
                label="DR, bootstrap interval")
    if "true_value" in table and table["true_value"].notna().any():
        ax.scatter(table["true_value"], y, marker="x", color="black", label="true value")
    ax.set_yticks(y, table["policy"].astype(str).tolist())
    ax.set(xlabel="value per decision", title="Policy values (held-out events)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
