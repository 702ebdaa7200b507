"""The plots people look at after a unify run, drawn with matplotlib's object API (no pyplot).

Match-weight distribution, the waterfall of one pair (prior + each comparison's weight = the
pair's match weight) and the cluster-size histogram.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def write_plots(
    pairs: pd.DataFrame, clusters: pd.DataFrame, report: dict[str, Any], output: Path
) -> dict[str, str]:
    """Write the three PNGs into ``output``; returns plot name -> file name."""
    files: dict[str, str] = {}
    threshold = report["thresholds"]["match"]

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    if len(pairs):
        ax.hist(pairs["match_weight"], bins=60, color="#4c72b0")
    cut = math.log2(threshold / (1 - threshold))
    ax.axvline(cut, color="#c44e52", linestyle="--", label=f"match threshold p={threshold}")
    ax.set(xlabel="match weight (log2 Bayes factor)", ylabel="pairs",
           title="Match-weight distribution of scored pairs")
    ax.legend()
    files["match_weights"] = _save(fig, output / "match_weights.png")

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    mw_cols = [c for c in pairs.columns if c.startswith("mw_")]
    if len(pairs):
        # The pair nearest the threshold is the one a reader wants explained.
        row = pairs.iloc[int(np.argmin(np.abs(pairs["match_probability"] - threshold)))]
        lam = report["probability_two_random_records_match"]
        labels = ["prior", *[c[3:] for c in mw_cols]]
        steps = [math.log2(lam / (1 - lam)), *[float(row[c]) for c in mw_cols]]
        starts = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
        colors = ["#55a868" if s >= 0 else "#c44e52" for s in steps]
        ax.bar(labels, steps, bottom=starts, color=colors)
        ax.bar(["total"], [sum(steps)], color="#4c72b0")
        ends = np.concatenate([[0.0], np.cumsum(steps)])
        pad = 0.05 * (ends.max() - ends.min() + 1)
        ax.set_ylim(ends.min() - pad, ends.max() + pad)
        ax.set_title(
            f"Waterfall: {row['source_l']}/{row['record_id_l']} vs "
            f"{row['source_r']}/{row['record_id_r']} (p={row['match_probability']:.3f})"
        )
        ax.tick_params(axis="x", rotation=45)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("match weight")
    files["waterfall"] = _save(fig, output / "waterfall.png")

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    sizes = clusters["customer_id"].value_counts().value_counts().sort_index()
    ax.bar(sizes.index.astype(str), sizes.to_numpy(), color="#4c72b0")
    ax.set(xlabel="records per customer", ylabel="customers", title="Cluster sizes")
    ax.set_yscale("log")
    files["cluster_sizes"] = _save(fig, output / "cluster_sizes.png")
    return files
