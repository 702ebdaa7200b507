"""Pure drift and performance statistics, vectorised over features: frames in, frames out.

* :func:`numeric_drift` -- PSI on the reference's quantile bins (missing values in a bin of
  their own) and the two-sample Kolmogorov-Smirnov test, for a whole matrix at once.
* :func:`categorical_drift` -- PSI over categories and Pearson's chi-square test (with
  Cramér's V as the effect size).
* :func:`expected_performance` -- confidence-based performance estimation (CBPE): the ROC-AUC
  and Brier score a calibrated model should reach if its probabilities hold, before labels.
* :func:`realised_performance` -- the same metrics once labels mature.

Why not Evidently or NannyML: NannyML 0.13 pins ``lightgbm<4.6`` (we pin 4.7), and Evidently
0.7 pulls two dozen packages (a web server, telemetry, NLTK) and computes column by column in
pandas, which misses the 1M x 140 features in 60 s target. The statistics are short and
standard, so they are written here with numpy/scipy over whole matrices.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy import special, stats

PSI_EPSILON = 1e-4
"""Floor on bin shares, so an empty bin gives a large but finite PSI."""


def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    """Population stability index of count tables, one row per feature.

    ``sum((cur - ref) * ln(cur / ref))`` over bins of the shares, each floored at
    :data:`PSI_EPSILON`.

    Examples
    --------
    >>> float(psi_from_counts(np.array([[50, 50]]), np.array([[50, 50]]))[0])
    0.0
    """
    ref = np.asarray(ref_counts, dtype=float)
    cur = np.asarray(cur_counts, dtype=float)
    ref = np.maximum(ref / np.maximum(ref.sum(axis=-1, keepdims=True), 1.0), PSI_EPSILON)
    cur = np.maximum(cur / np.maximum(cur.sum(axis=-1, keepdims=True), 1.0), PSI_EPSILON)
    return ((cur - ref) * np.log(cur / ref)).sum(axis=-1)


def _sorted_finite(values: np.ndarray) -> np.ndarray:
    """The non-missing values, sorted (NaN sorts last)."""
    out = np.sort(values)
    return out[: np.searchsorted(out, np.nan, "left")]


def _counts_at_or_below(x: np.ndarray) -> np.ndarray:
    """For sorted ``x``: how many values are <= each value (``searchsorted(x, x, "right")`` in
    one linear pass: the 1-based position of the last of its ties).

    Examples
    --------
    >>> _counts_at_or_below(np.array([1.0, 2.0, 2.0, 3.0])).tolist()
    [1, 3, 3, 4]
    """
    n = x.size
    last = np.empty(n, dtype=bool)
    last[-1:] = True
    np.not_equal(x[1:], x[:-1], out=last[:-1])
    pos = np.where(last, np.arange(1, n + 1), n + 1)
    return np.minimum.accumulate(pos[::-1])[::-1]


def _column_drift(ref: np.ndarray, cur: np.ndarray, qs: np.ndarray) -> tuple[float, ...]:
    """PSI, KS statistic, KS p-value and missing shares of one numeric column pair."""
    r, c = _sorted_finite(ref), _sorted_finite(cur)
    nr, nc = r.size, c.size
    if nr == 0 or nc == 0:
        psi = float(psi_from_counts(np.array([nr, ref.size - nr]), np.array([nc, cur.size - nc])))
        return psi, float("nan"), float("nan"), 1 - nr / max(ref.size, 1), 1 - nc / max(cur.size, 1)
    edges = r[np.floor(qs * (nr - 1)).astype(np.intp)]
    ref_counts = np.diff(np.concatenate([[0], np.searchsorted(r, edges, "right"), [nr]]))
    cur_counts = np.diff(np.concatenate([[0], np.searchsorted(c, edges, "right"), [nc]]))
    psi = float(
        psi_from_counts(
            np.append(ref_counts, ref.size - nr), np.append(cur_counts, cur.size - nc)
        )
    )
    # KS: the largest gap between the two empirical CDFs, attained at a point of either sample;
    # a sample's own CDF at its sorted points is linear (:func:`_counts_at_or_below`), so only
    # the two cross searches remain
    d = max(
        float(np.abs(_counts_at_or_below(r) / nr - np.searchsorted(c, r, "right") / nc).max()),
        float(np.abs(np.searchsorted(r, c, "right") / nr - _counts_at_or_below(c) / nc).max()),
    )
    en = np.sqrt(nr * nc / (nr + nc))
    return psi, d, float(special.kolmogorov(en * d)), 1 - nr / ref.size, 1 - nc / cur.size


def numeric_drift(
    reference: pd.DataFrame, current: pd.DataFrame, *, bins: int = 10, threads: int | None = None
) -> pd.DataFrame:
    """PSI and KS test of every column of two numeric frames with the same columns.

    PSI uses ``bins`` quantile bins of the reference (tied quantiles merge bins) plus a bin for
    missing values; KS is exact (two-sample statistic, asymptotic p-value) on the non-missing
    values. Each column is sorted once per frame, in ``threads`` threads (numpy releases the
    GIL while sorting and searching).

    Returns
    -------
    pandas.DataFrame
        One row per feature: ``feature, psi, statistic (KS D), p_value, ref_missing,
        cur_missing``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"x": rng.normal(size=5000)})
    >>> cur = pd.DataFrame({"x": rng.normal(1.0, size=5000)})
    >>> bool(numeric_drift(ref, cur)["psi"].iloc[0] > 0.25)
    True
    """
    from concurrent.futures import ThreadPoolExecutor

    cols = list(reference.columns)
    qs = np.linspace(0, 1, bins + 1)[1:-1]

    def one(col: str) -> tuple[float, ...]:
        return _column_drift(
            reference[col].to_numpy(dtype=np.float64, na_value=np.nan),
            current[col].to_numpy(dtype=np.float64, na_value=np.nan),
            qs,
        )

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        stats_ = list(pool.map(one, cols))
    return pd.DataFrame(
        stats_ or None,
        columns=["psi", "statistic", "p_value", "ref_missing", "cur_missing"],
    ).assign(feature=cols)[["feature", "psi", "statistic", "p_value", "ref_missing",
                            "cur_missing"]]


def categorical_drift(reference: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """PSI and chi-square test of every column of two categorical / text frames.

    Missing is a category of its own. The statistic is Cramér's V of the 2 x categories table.

    Examples
    --------
    >>> ref = pd.DataFrame({"c": ["a"] * 500 + ["b"] * 500})
    >>> cur = pd.DataFrame({"c": ["a"] * 900 + ["b"] * 100})
    >>> bool(categorical_drift(ref, cur)["p_value"].iloc[0] < 0.01)
    True
    """
    rows = []
    for col in reference.columns:
        # counts per category (missing: one category) of each frame, aligned: 2 x categories
        counts = [frame[col].astype("string").value_counts(dropna=False)
                  for frame in (reference, current)]
        table = pd.concat(counts, axis=1).fillna(0).to_numpy(dtype=float).T
        psi = float(psi_from_counts(table[0][None, :], table[1][None, :])[0])
        if table.shape[1] < 2:
            chi2, p, v = 0.0, 1.0, 0.0
        else:
            chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
            v = float(np.sqrt(chi2 / table.sum()))
        rows.append(
            {"feature": col, "psi": psi, "statistic": v, "p_value": float(p),
             "ref_missing": float(reference[col].isna().mean()),
             "cur_missing": float(current[col].isna().mean())}
        )
    return pd.DataFrame(
        rows, columns=["feature", "psi", "statistic", "p_value", "ref_missing", "cur_missing"]
    )


def _auc_from_weights(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC where each row counts ``pos`` positives and ``neg`` negatives (ties count half)."""
    uniq, inverse = np.unique(scores, return_inverse=True)
    p = np.bincount(inverse, weights=pos, minlength=uniq.size)
    n = np.bincount(inverse, weights=neg, minlength=uniq.size)
    total_p, total_n = p.sum(), n.sum()
    if total_p <= 0 or total_n <= 0:
        return float("nan")
    neg_below = np.cumsum(n) - n  # negatives with a strictly lower score
    return float((p * (neg_below + 0.5 * n)).sum() / (total_p * total_n))


def expected_performance(probability: np.ndarray) -> dict[str, float]:
    """ROC-AUC, Brier score and churn rate expected if the calibrated ``probability`` holds.

    Each customer is a positive with weight ``p`` and a negative with weight ``1 - p``
    (NannyML's confidence-based performance estimation); the expected Brier score is
    ``mean(p (1 - p))``.

    Examples
    --------
    >>> round(expected_performance(np.array([0.0, 1.0]))["roc_auc"], 3)
    1.0
    """
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
    return {
        "roc_auc": _auc_from_weights(p, p, 1.0 - p),
        "brier": float(np.mean(p * (1.0 - p))),
        "positive_rate": float(p.mean()),
    }


def realised_performance(probability: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """ROC-AUC, Brier score and positive rate of ``probability`` against 0/1 ``label``
    (rows with a missing label are left out).

    Examples
    --------
    >>> realised_performance(np.array([0.2, 0.8]), np.array([0, 1]))["roc_auc"]
    1.0
    """
    p = np.asarray(probability, dtype=float)
    y = np.asarray(label, dtype=float)
    known = np.isfinite(y) & np.isfinite(p)  # a label can be undefined (e.g. left before T)
    p, y = p[known], y[known]
    return {
        "roc_auc": _auc_from_weights(p, y, 1.0 - y),
        "brier": float(np.mean((p - y) ** 2)),
        "positive_rate": float(y.mean()),
    }


def segment_shares(segments: pd.DataFrame, column: str = "value_segment") -> pd.DataFrame:
    """Share of each segment per ``as_of``: ``as_of, segment, share``."""
    counts = segments.groupby(["as_of", column], observed=True).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby("as_of")["n"].transform("sum")
    return counts.rename(columns={column: "segment"})[["as_of", "segment", "share"]]
