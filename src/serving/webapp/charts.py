"""Server-side charts: matplotlib figures rendered to inline SVG (no JavaScript)."""

from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

_COLOUR = "#2f6fb3"


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog: the SVG is inlined in HTML


def spend_chart(monthly: pd.DataFrame) -> str | None:
    """Bars of net spend per month; None when the customer never bought."""
    if monthly.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    ax.bar(pd.to_datetime(monthly["month"]), monthly["spend"], width=20, color=_COLOUR)
    ax.set_ylabel("net spend per month")
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _svg(fig)


def reasons_chart(reasons: list[str]) -> str | None:
    """The churn model's top reasons as horizontal bars, strongest at the top (bar length is
    the rank: the model returns the reasons ordered, not their weights)."""
    if not reasons:
        return None
    n = len(reasons)
    labels = [textwrap.fill(r.replace("_", " "), 34) for r in reasons]
    fig, ax = plt.subplots(figsize=(5.2, 0.4 + 0.6 * n))
    ax.barh(range(n), list(range(n, 0, -1)), color="#c0504d", height=0.6)
    ax.set_yticks(range(n), labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_xlabel("strongest first")
    ax.spines[["top", "right", "bottom"]].set_visible(False)
    return _svg(fig)
