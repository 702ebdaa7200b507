"""Fast churn reason codes: path attributions from leaf indices (issue 17).

Exact TreeSHAP (LightGBM's ``pred_contrib``) costs O(trees x leaves x depth^2) per row: for
the benchmark's churn champion (166 trees x 31 leaves, 141 inputs) about 2.5 ms of CPU a
row, a hundred times the prediction itself, so 1M customers cannot be explained in a minute
on 2 cores. :class:`PathAttribution` computes each tree's *path attribution* instead (Saabas,
the "approximate contributions" of XGBoost): walking from the root to the row's leaf, every
split adds the change of the node value to the feature it splits on. Per tree and leaf that
vector is fixed, so it is tabulated once (a sparse ``leaves x features`` matrix) and a chunk
is explained by LightGBM's ``pred_leaf`` (a tree traversal, in C) and one sparse product.

Like TreeSHAP, the attributions plus the trees' root values sum to the raw score exactly. They
are not equal to TreeSHAP. On the benchmark's churn champion (3,000 rows of its 20k snapshot)
the first reason names the same feature as exact TreeSHAP for 91 % of rows, the top-3 sets
share 82 % of their features and 99.9 % of the signs agree; on the test suite's small champion
(40 rounds) 78 %, 75 % and 97 %. ``tests/test_batch_fast.py`` asserts the stated tolerance
(:data:`REASON_TOLERANCE`); docs/benchmarks.md has the figures. ``reasons: exact`` in
``configs/serving.yaml`` keeps exact TreeSHAP.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REASON_TOLERANCE = {"first_reason_agreement": 0.7, "top3_overlap": 0.7, "sign_agreement": 0.95}
"""Minimum agreement with exact TreeSHAP on a test set: share of rows whose first reason names
the same feature, mean share of the top-3 features in common, and share of the exact top-3
features whose attribution has the same sign."""


class PathAttribution:
    """Per-feature path attributions of a LightGBM booster's raw score.

    Parameters
    ----------
    booster
        A trained ``lightgbm.Booster`` (single output).

    Examples
    --------
    >>> import lightgbm as lgb
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    >>> params = {"objective": "binary", "num_leaves": 4, "verbose": -1}
    >>> booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)
    >>> attr = PathAttribution(booster)
    >>> contrib = attr.contributions(X)  # (n, n_features), like pred_contrib[:, :-1]
    >>> contrib.shape
    (200, 3)
    >>> raw = booster.predict(X, raw_score=True)
    >>> bool(np.allclose(contrib.sum(axis=1) + attr.bias, raw))
    True
    """

    def __init__(self, booster: Any) -> None:
        import scipy.sparse as sp

        self.booster = booster
        dump = booster.dump_model()
        n_features = booster.num_feature()
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        offsets = []
        self.bias = 0.0
        offset = 0
        for tree in dump["tree_info"]:
            root = tree["tree_structure"]
            offsets.append(offset)
            self.bias += float(root.get("internal_value", root.get("leaf_value", 0.0)))
            for leaf, path in _leaf_paths(root):
                for feature, value in path.items():
                    rows.append(offset + leaf)
                    cols.append(feature)
                    vals.append(value)
            offset += int(tree["num_leaves"])
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.n_leaves = offset
        self.table = sp.csr_matrix(
            (np.asarray(vals, dtype=np.float64), (rows, cols)), shape=(offset, n_features)
        )

    def contributions(self, m: np.ndarray, *, num_threads: int | None = None) -> np.ndarray:
        """Attributions, shape (n, n_features), of the rows of the model matrix ``m``."""
        import scipy.sparse as sp

        extra = {} if num_threads is None else {"num_threads": num_threads}
        leaf = self.booster.predict(m, pred_leaf=True, **extra).astype(np.int64)
        leaf = leaf.reshape(len(m), -1) + self.offsets[None, :]
        n, trees = leaf.shape
        hits = sp.csr_matrix(
            (np.ones(n * trees), leaf.ravel(), np.arange(0, n * trees + 1, trees)),
            shape=(n, self.n_leaves),
        )
        return (hits @ self.table).toarray()


def _leaf_paths(root: dict) -> list[tuple[int, dict[int, float]]]:
    """(leaf index, feature -> summed value change along the root-to-leaf path) per leaf."""
    out: list[tuple[int, dict[int, float]]] = []
    stack = [(root, {})]
    while stack:
        node, acc = stack.pop()
        if "leaf_index" in node:
            out.append((int(node["leaf_index"]), acc))
            continue
        feature, value = int(node["split_feature"]), float(node["internal_value"])
        for side in ("left_child", "right_child"):
            child = node[side]
            key = "leaf_value" if "leaf_index" in child else "internal_value"
            child_value = float(child[key])
            path = dict(acc)
            path[feature] = path.get(feature, 0.0) + child_value - value
            stack.append((child, path))
    return out


def agreement(fast: np.ndarray, exact: np.ndarray, k: int = 3) -> dict[str, float]:
    """How closely attributions ``fast`` follow ``exact`` ones (both (n, n_features)): the
    measures of :data:`REASON_TOLERANCE`."""
    from customer360.models.tabular import top_contributions

    top_f, top_e = top_contributions(fast, k), top_contributions(exact, k)
    rows = np.arange(len(fast))[:, None]
    overlap = (top_f[:, :, None] == top_e[:, None, :]).any(axis=2).sum(axis=1) / top_f.shape[1]
    return {
        "first_reason_agreement": float((top_f[:, 0] == top_e[:, 0]).mean()),
        "top3_overlap": float(overlap.mean()),
        "sign_agreement": float(
            (np.sign(fast[rows, top_e]) == np.sign(exact[rows, top_e])).mean()
        ),
    }
