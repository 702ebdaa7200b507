"""Figures for the library: matplotlib's object API, never pyplot.

``matplotlib.figure.Figure`` draws without a GUI backend and without pyplot's global figure
registry, so library code neither switches the process's backend (a user's notebook keeps
its own) nor leaks figures that must be closed. ``fig.savefig`` and ``mlflow.log_figure``
take these figures as they are.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float] = (6, 4.5), dpi: int = 100) -> tuple[Figure, Any]:
    """A new figure and its single axes.

    Examples
    --------
    >>> fig, ax = new_figure()
    >>> _ = ax.plot([0, 1], [0, 1])
    >>> type(fig).__name__
    'Figure'
    """
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots()
