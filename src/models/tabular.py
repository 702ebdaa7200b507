"""Shared tabular helpers for the churn and ML-CLV models.

One place for what both LightGBM models need: typing a messy table automatically (numbers
stored as text, blanks, stray spaces), turning it into a contiguous float matrix LightGBM can
read, fitting a booster with early stopping, the evaluation metrics, the logistic-regression
baseline and the diagnostic plots. Everything here is pure: frames in, arrays/figures out.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd

from customer360.errors import ModelError

log = logging.getLogger(__name__)

# OpenMP threads that busy-wait starve each other (and every other process) on a shared,
# loaded machine: LightGBM with 2 threads ran 15x slower than with 1 until they were told to
# sleep while idle. Only a default; read when the OpenMP runtime starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a"})
_NUMBER_RE = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)?(\.\d*)?([eE][+-]?\d+)?$")
NUMERIC_SHARE = 0.95
MAX_CATEGORIES = 200
STACK_FILE = "probabilistic_stack.joblib"  # the fitted BG/NBD + Gamma-Gamma a model stacks on


# --- automatic typing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnNote:
    """Something the typing step did to a column that the user should know about."""

    column: str
    action: str
    detail: str


@dataclass(frozen=True)
class TableSchema:
    """How a table's columns are read as model inputs.

    ``columns`` is the model's input order; ``categories[c]`` lists the levels of categorical
    column ``c`` (code = position, unseen level = missing). ``notes`` records every column that
    was dropped or partly read as missing, so nothing disappears silently.
    """

    columns: tuple[str, ...]
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: tuple[ColumnNote, ...] = ()

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c in self.categories]

    def to_dict(self) -> dict:
        return {
            "columns": list(self.columns),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "notes": [asdict(n) for n in self.notes],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TableSchema:
        return cls(
            columns=tuple(data["columns"]),
            categories={k: tuple(v) for k, v in data["categories"].items()},
            notes=tuple(ColumnNote(**n) for n in data.get("notes", [])),
        )


def clean_text(values: pd.Series) -> pd.Series:
    """Strip whitespace and turn blank / NA-like tokens into missing (object dtype)."""
    text = values.astype("string").str.strip()
    is_missing = text.isna() | text.str.lower().isin(MISSING_TOKENS)
    return text.astype(object).where(~is_missing.to_numpy(dtype=bool), None)


def parse_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse text numbers such as ``" 1,234.5 "``.

    Returns the float values (missing where blank or unparseable) and a boolean mask of the
    non-blank values that could not be parsed.
    """
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        floats = pd.to_numeric(values, errors="coerce").astype("float64")
        return floats, pd.Series(False, index=values.index)
    text = clean_text(values)
    present = text.notna()
    compact = text.astype("string").str.replace(" ", "", regex=False)
    well_formed = compact.str.match(_NUMBER_RE).fillna(False).astype(bool) & present
    floats = pd.to_numeric(
        compact.where(well_formed).str.replace(",", "", regex=False), errors="coerce"
    ).astype("float64")
    bad = present & floats.isna()
    return floats, bad


def infer_schema(frame: pd.DataFrame, *, exclude: Sequence[str] = ()) -> TableSchema:
    """Decide, column by column, how ``frame`` is read as model input.

    Numeric columns stay numeric; text columns whose non-blank values are (almost all) numbers
    become numeric; other text columns with at most ``MAX_CATEGORIES`` levels become
    categorical. Constant columns and free-text / identifier-like columns are left out, each
    with a note saying why.

    Examples
    --------
    >>> df = pd.DataFrame({"spend": [" 1,234.5 ", "12", ""], "plan": ["a", "b", "a"]})
    >>> s = infer_schema(df)
    >>> s.columns, s.categories
    (('spend', 'plan'), {'plan': ('a', 'b')})
    """
    columns: list[str] = []
    categories: dict[str, tuple[str, ...]] = {}
    notes: list[ColumnNote] = []
    excluded = set(exclude)
    for name in frame.columns:
        if name in excluded:
            continue
        col = frame[name]
        floats, bad = parse_numbers(col)
        present = int((floats.notna() | bad).sum())
        n_bad = int(bad.sum())
        if present == 0:
            notes.append(ColumnNote(name, "dropped", "every value is blank"))
            continue
        if n_bad == 0 or (present - n_bad) / present >= NUMERIC_SHARE:
            if floats.nunique(dropna=True) <= 1 and not floats.isna().any():
                notes.append(ColumnNote(name, "dropped", "constant: the same value in every row"))
                continue
            if n_bad:
                examples = ", ".join(repr(v) for v in col[bad].astype(str).unique()[:3])
                notes.append(
                    ColumnNote(
                        name,
                        "read as missing",
                        f"{n_bad} value(s) are not numbers (e.g. {examples}); fix them in the "
                        "file to use them",
                    )
                )
            columns.append(name)
            continue
        text = clean_text(col)
        levels = text.dropna().value_counts()
        if len(levels) <= 1 and not text.isna().any():
            notes.append(ColumnNote(name, "dropped", "constant: the same value in every row"))
        elif len(levels) > MAX_CATEGORIES:
            notes.append(
                ColumnNote(
                    name,
                    "dropped",
                    f"text with {len(levels)} distinct values (identifier, date or free text); "
                    "convert it to a number or a category with fewer levels to use it",
                )
            )
        else:
            columns.append(name)
            categories[name] = tuple(sorted(str(v) for v in levels.index))
    if not columns:
        raise ModelError(
            "No usable feature column: every column was dropped ("
            + "; ".join(f"{n.column}: {n.detail}" for n in notes)
            + "). Add numeric or categorical columns."
        )
    for note in notes:
        log.info("column %s %s: %s", note.column, note.action, note.detail)
    return TableSchema(tuple(columns), categories, tuple(notes))


def threads_for(rows: int, parallel_from: int) -> int:
    """LightGBM threads for work on ``rows`` rows: one below ``parallel_from`` (handing a few
    rows to OpenMP costs more than it saves, and small jobs on a shared machine oversubscribe
    it), every core this process may run on from there.

    Examples
    --------
    >>> threads_for(10, parallel_from=100)
    1
    """
    if rows < parallel_from:
        return 1
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(cores) if cores else (os.cpu_count() or 1))


def _threads(num_threads: int | None) -> dict[str, int]:
    return {} if num_threads is None else {"num_threads": num_threads}


def to_matrix(frame: pd.DataFrame, schema: TableSchema) -> np.ndarray:
    """The model matrix: float64, C-contiguous, columns in ``schema.columns`` order.

    Categorical columns hold the level's code (missing or unseen level -> NaN), which is what
    LightGBM's categorical features expect. Raises when an input column is missing.
    """
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise ModelError(
            f"Input lacks {len(missing)} column(s) the model was trained on: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. "
            "Pass a table with the same columns as the training table."
        )
    out = np.empty((len(frame), len(schema.columns)), dtype=np.float64)
    # Numeric columns go over in one block copy: column-by-column access costs more than the
    # prediction itself for the one-row frames of online serving.
    numeric = [
        j
        for j, name in enumerate(schema.columns)
        if name not in schema.categories
        and (pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name]))
    ]
    if numeric:
        block = frame[[schema.columns[j] for j in numeric]]
        out[:, numeric] = block.to_numpy(dtype=np.float64, na_value=np.nan)
    done = set(numeric)
    for j, name in enumerate(schema.columns):
        if j in done:
            continue
        col = frame[name]
        if name in schema.categories:
            out[:, j] = category_codes(col, schema.categories[name])
        else:
            out[:, j] = parse_numbers(col)[0].to_numpy()
    return out


def category_codes(values: pd.Series, levels: Sequence[str]) -> np.ndarray:
    """Codes of ``values`` among ``levels`` as floats (missing or unseen level -> NaN).

    Values equal to a level are looked up directly; only the others go through
    :func:`clean_text` (stray spaces, NA-like tokens), which gives the same answer for clean
    values at a fraction of the cost.
    """
    index = pd.Index(list(levels), dtype=object)
    raw = values.to_numpy(dtype=object, na_value=None)
    found = index.get_indexer(raw)
    # A level spelled like a missing token ("n/a") still means missing, as clean_text says.
    token_level = np.array([str(lv).strip().lower() in MISSING_TOKENS for lv in levels] + [True])
    unmatched = token_level[found]  # found == -1 picks the trailing True
    codes = found.astype(np.float64)
    if unmatched.any():
        cleaned = clean_text(values[unmatched]).to_numpy(dtype=object)
        codes[unmatched] = index.get_indexer(cleaned)
    codes[codes < 0] = np.nan
    return codes


# --- LightGBM ------------------------------------------------------------------------------------


def fit_booster(
    params: dict,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    categorical: Sequence[int] = (),
    num_boost_round: int = 1000,
    early_stopping_rounds: int = 50,
    callbacks: Sequence[Callable] = (),
    weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
    init_score: np.ndarray | None = None,
    val_init_score: np.ndarray | None = None,
):
    """Train a LightGBM booster with early stopping on the validation set.

    ``params`` must name the objective and metric; the first metric decides early stopping.
    ``weight`` / ``val_weight`` are row weights (e.g. inverse-propensity weights), and
    ``init_score`` / ``val_init_score`` a starting margin per row (e.g. a linear base's
    log-odds) that the trees then correct. Returns the booster; ``booster.best_iteration``
    and ``booster.best_score`` tell where it stopped.
    """
    import lightgbm as lgb

    full = {"verbosity": -1, "feature_pre_filter": False, **params}
    train = lgb.Dataset(
        X_train, y_train, weight=weight, init_score=init_score,
        categorical_feature=list(categorical), free_raw_data=True,
    )
    valid = lgb.Dataset(
        X_val, y_val, weight=val_weight, init_score=val_init_score, reference=train,
        categorical_feature=list(categorical),
    )
    try:
        return lgb.train(
            full,
            train,
            num_boost_round=num_boost_round,
            valid_sets=[valid],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False),
                *callbacks,
            ],
        )
    except lgb.basic.LightGBMError as exc:
        raise ModelError(f"LightGBM failed to train with params {params}: {exc}") from exc


def feature_importance(booster, names: Sequence[str]) -> pd.Series:
    """Total gain per feature, largest first."""
    gain = booster.feature_importance(importance_type="gain")
    return pd.Series(gain, index=list(names)).sort_values(ascending=False)


# --- metrics -------------------------------------------------------------------------------------


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |predicted - observed| over ``bins`` equal-width probability bins, weighted by
    the share of rows in each bin."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    used = count > 0
    return float(np.sum(np.abs(sum_p[used] - sum_y[used])) / len(y))


def lift_at(y: np.ndarray, score: np.ndarray, share: float = 0.1) -> float:
    """Positive rate among the top ``share`` by score divided by the overall positive rate."""
    y = np.asarray(y, dtype=float)
    k = max(1, int(round(share * len(y))))
    top = np.argsort(-np.asarray(score, dtype=float), kind="stable")[:k]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier, log-loss, lift at 10 % and ECE of probabilities ``p``."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    if len(np.unique(y)) < 2:
        raise ModelError(
            "Cannot evaluate: the evaluation rows hold only one class. Use more rows or "
            "another snapshot."
        )
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "lift_at_10": lift_at(y, p, 0.1),
        "ece": expected_calibration_error(y, p),
    }


def gini(actual: np.ndarray, score: np.ndarray) -> float:
    """Gini of ``actual`` ordered by ``score`` (descending); ties keep input order."""
    actual = np.asarray(actual, dtype=float)
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    cum = np.cumsum(actual[order]) / actual.sum()
    n = len(actual)
    return float(np.sum(cum - np.arange(1, n + 1) / n) / n)


def normalized_gini(actual: np.ndarray, score: np.ndarray) -> float:
    """Gini of the score divided by the Gini of a perfect ordering (1 = perfect, 0 = random)."""
    return gini(actual, score) / gini(actual, actual)


def decile_table(actual: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """Mean predicted and actual value per decile of the prediction (decile 1 = highest)."""
    predicted = np.asarray(predicted, dtype=float)
    order = np.argsort(-predicted, kind="stable")
    decile = np.empty(len(order), dtype=int)
    decile[order] = np.arange(len(order)) * 10 // len(order) + 1
    frame = pd.DataFrame({"decile": decile, "predicted": predicted, "actual": actual})
    return frame.groupby("decile", sort=True)[["predicted", "actual"]].mean()


def value_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Normalized Gini, Spearman, decile-level MAPE and total error of value predictions.

    ``decile_mape`` is sum_d |pred_d - actual_d| / sum_d |actual_d| over the ten deciles of the
    prediction (weighted, so near-zero deciles of a zero-inflated target cannot blow it up);
    ``total_error`` is (sum predicted - sum actual) / sum actual, signed.
    """
    from scipy.stats import spearmanr

    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    deciles = decile_table(actual, predicted)
    return {
        "normalized_gini": normalized_gini(actual, predicted),
        "spearman": float(spearmanr(actual, predicted).statistic),
        "decile_mape": float(
            np.abs(deciles["predicted"] - deciles["actual"]).sum() / deciles["actual"].abs().sum()
        ),
        "total_error": float((predicted.sum() - actual.sum()) / actual.sum()),
    }


# --- baselines -----------------------------------------------------------------------------------


def logistic_baseline(X: np.ndarray, y: np.ndarray, schema: TableSchema, *, seed: int = 0):
    """A plain logistic regression on the same matrix: median-imputed, standardised numerics
    and one-hot categoricals. Returns the fitted sklearn pipeline (``predict_proba`` on the
    same kind of matrix)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cat = schema.categorical_indices
    num = [i for i in range(len(schema.columns)) if i not in set(cat)]
    prep = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(
                    SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()
                ),
                num,
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=-1),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                cat,
            ),
        ]
    )
    model = make_pipeline(prep, LogisticRegression(max_iter=500, C=1.0, random_state=seed))
    return model.fit(X, y)


def spline_logistic(schema: TableSchema, *, c: float = 1.0, seed: int = 0, knots: int = 5):
    """An unfitted regularised logistic regression for the model's matrix: one-hot
    categoricals and cubic-spline numerics (median-imputed, constant columns dropped), so a
    linear model can still bend with each number; ``knots=0``: standardised numerics (straight
    lines). L2 strength ``1 / c``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

    cat = schema.categorical_indices
    num = [i for i in range(len(schema.columns)) if i not in set(cat)]
    prep = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(
                    SimpleImputer(strategy="median", keep_empty_features=True),
                    VarianceThreshold(0.0),
                    SplineTransformer(n_knots=knots, degree=3, extrapolation="linear")
                    if knots
                    else StandardScaler(),
                ),
                num,
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=-1),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                cat,
            ),
        ]
    )
    return make_pipeline(prep, LogisticRegression(max_iter=2000, C=c, random_state=seed))


# --- reason codes --------------------------------------------------------------------------------


def top_contributions(contrib: np.ndarray, k: int = 3) -> np.ndarray:
    """Indices of the ``k`` largest absolute contributions per row (largest first).

    ``contrib`` is LightGBM's ``pred_contrib`` output without the bias column.
    """
    k = min(k, contrib.shape[1])
    mag = np.abs(contrib)
    part = np.argpartition(-mag, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(mag, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def reason_phrases(
    X: np.ndarray,
    contrib: np.ndarray,
    schema: TableSchema,
    descriptions: Sequence[str],
    medians: np.ndarray,
    *,
    k: int = 3,
    up: str = "raises risk",
    down: str = "lowers risk",
) -> np.ndarray:
    """Plain-language reasons, shape (n, k): "<description> is high (raises risk)".

    A numeric value is "high" at or above its training median, "low" below it, "missing" when
    blank; a categorical value is named ("customer type is B2B (lowers risk)").
    """
    n = X.shape[0]
    if n == 0:
        return np.empty((0, k), dtype=object)
    top = top_contributions(contrib, k)
    rows = np.arange(n)[:, None]
    values = X[rows, top]
    signs = contrib[rows, top]
    desc = np.asarray(descriptions, dtype=object)[top]
    level = np.where(values >= medians[top], "high", "low").astype(object)
    level[np.isnan(values)] = "missing"
    for j in schema.categorical_indices:
        hit = top == j
        if hit.any():
            cats = np.asarray([*schema.categories[schema.columns[j]], "missing"], dtype=object)
            codes = values[hit]
            level[hit] = cats[np.where(np.isnan(codes), len(cats) - 1, codes).astype(int)]
    direction = np.where(signs > 0, f" ({up})", f" ({down})").astype(object)
    return desc + " is " + level + direction


def plain_description(name: str) -> str:
    """A readable description for a column without a registry entry (``days_since_x`` ->
    ``days since x``)."""
    return name.replace("__", " ").replace("_", " ").strip()


# --- plots ---------------------------------------------------------------------------------------


def _figure():
    from customer360.figures import new_figure

    return new_figure((6, 4.5), dpi=100)


def plot_roc(y: np.ndarray, curves: dict[str, np.ndarray]):
    """ROC curves of several scores on the same labels."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _figure()
    for name, score in curves.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, score):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_pr(y: np.ndarray, curves: dict[str, np.ndarray]):
    """Precision-recall curves of several scores on the same labels."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = _figure()
    for name, score in curves.items():
        precision, recall, _ = precision_recall_curve(y, score)
        ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(y, score):.3f})")
    ax.axhline(np.mean(y), color="grey", lw=0.8, ls="--")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_calibration(y: np.ndarray, curves: dict[str, np.ndarray], bins: int = 10):
    """Reliability diagram: observed rate vs mean predicted probability per bin."""
    fig, ax = _figure()
    y = np.asarray(y, dtype=float)
    for name, p in curves.items():
        idx = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
        count = np.bincount(idx, minlength=bins)
        used = count > 0
        mean_p = np.bincount(idx, weights=p, minlength=bins)[used] / count[used]
        mean_y = np.bincount(idx, weights=y, minlength=bins)[used] / count[used]
        ax.plot(mean_p, mean_y, marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration (test)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_gain(y: np.ndarray, curves: dict[str, np.ndarray]):
    """Cumulative gain: share of positives caught vs share of customers targeted."""
    fig, ax = _figure()
    y = np.asarray(y, dtype=float)
    share = np.arange(1, len(y) + 1) / len(y)
    for name, score in curves.items():
        order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
        ax.plot(share, np.cumsum(y[order]) / y.sum(), label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="random")
    ax.set(
        xlabel="share of customers targeted",
        ylabel="share of positives caught",
        title="Cumulative gain (test)",
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_importance(importance: pd.Series, top: int = 20):
    """Horizontal bar chart of the largest gains."""
    fig, ax = _figure()
    head = importance.head(top)[::-1]
    ax.barh(list(head.index), head.to_numpy())
    ax.set(xlabel="total gain", title="Feature importance")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def plot_shap_summary(contrib: np.ndarray, X: np.ndarray, names: Sequence[str], top: int = 15):
    """Beeswarm-like SHAP summary from LightGBM ``pred_contrib`` (bias column removed):
    one row per feature, points coloured by the feature's value rank."""
    fig, ax = _figure()
    mean_abs = np.abs(contrib).mean(axis=0)
    order = np.argsort(-mean_abs)[:top][::-1]
    rng = np.random.default_rng(0)
    for row, j in enumerate(order):
        values = X[:, j]
        colour = pd.Series(values).rank(pct=True).fillna(0.5).to_numpy()
        jitter = rng.uniform(-0.3, 0.3, size=len(values))
        ax.scatter(contrib[:, j], row + jitter, c=colour, cmap="coolwarm", s=3, alpha=0.6)
    ax.set_yticks(range(len(order)), [names[j] for j in order], fontsize=7)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel="contribution to the raw score (SHAP)", title="SHAP summary (red = high value)")
    fig.tight_layout()
    return fig


def plot_deciles(actual: np.ndarray, curves: dict[str, np.ndarray]):
    """Mean actual vs mean predicted value per decile of each prediction."""
    fig, ax = _figure()
    width = 0.8 / (len(curves) + 1)
    first = decile_table(actual, next(iter(curves.values())))
    x = first.index.to_numpy()
    for i, (name, pred) in enumerate(curves.items()):
        table = decile_table(actual, pred)
        ax.bar(x + i * width, table["predicted"], width, label=f"{name} predicted")
        ax.plot(x + i * width, table["actual"], marker="o", lw=0.8, label=f"actual by {name}")
    ax.set(xlabel="decile of prediction (1 = highest)", ylabel="mean value", title="Deciles (test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- the fitted-booster base shared by the churn and CLV models ---------------------------------


def _estimator_base():
    from sklearn.base import BaseEstimator

    return BaseEstimator


class AveragedLinear(_estimator_base()):
    """The mean log-odds of several linear pipelines, given unfitted (or already fitted, via
    :meth:`from_fitted`), e.g. the best few :func:`spline_logistic` settings by
    cross-validation: averaging them, instead of keeping the single best, makes the result
    less sensitive to the noise in the ranking (issue 13).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(200, 2)), rng.integers(0, 2, 200)
    >>> from sklearn.linear_model import LogisticRegression
    >>> m = AveragedLinear(estimators=(LogisticRegression(C=0.1), LogisticRegression(C=10)))
    >>> m.fit(X, y).decision_function(X).shape
    (200,)
    """

    def __init__(self, *, estimators: tuple = ()) -> None:
        self.estimators = estimators

    def fit(self, X: np.ndarray, y: np.ndarray) -> AveragedLinear:
        from sklearn.base import clone

        self.estimators_ = [clone(e).fit(X, y) for e in self.estimators]
        return self

    @classmethod
    def from_fitted(cls, fitted: Sequence) -> AveragedLinear:
        """The average of pipelines already fitted (e.g. while choosing them on a validation
        part), without fitting them again."""
        from sklearn.base import clone

        model = cls(estimators=tuple(clone(e) for e in fitted))
        model.estimators_ = list(fitted)
        return model

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "estimators_")
        return np.mean([linear_decision(e, X) for e in self.estimators_], axis=0)


def sample_rows(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random sample of at most ``limit`` of ``n`` rows.

    Examples
    --------
    >>> sample_rows(3, 5, seed=0).tolist()
    [0, 1, 2]
    >>> len(sample_rows(1000, 10, seed=0))
    10
    """
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def linear_decision(estimator, X: np.ndarray, rows: int = 65_536) -> np.ndarray:
    """A fitted linear estimator's ``decision_function(X)``: column by column
    (:class:`ColumnwiseLinear`) when the estimator is a :func:`spline_logistic` pipeline,
    otherwise a block of ``rows`` at a time (a spline expansion of a million rows would be a
    dense matrix of several GB)."""
    fast = columnwise_linear(estimator)
    if fast is not None:
        return fast.decision_function(X)
    if len(X) <= rows:
        return estimator.decision_function(X)
    return np.concatenate(
        [estimator.decision_function(X[i : i + rows]) for i in range(0, len(X), rows)]
    )


# How far the column-by-column decision may differ from the pipeline's on the probe rows
# (relative to max(1, |value|)) before it is not used: float rounding is ~1e-15.
COLUMNWISE_TOLERANCE = 1e-9


@dataclass
class _SplineColumn:
    column: int
    fill: float
    spline: Any  # scipy BSpline: the fitted basis combined with the coefficients
    low: float
    high: float
    below: tuple[float, float]  # value and slope at ``low``, continued linearly below it
    above: tuple[float, float]


@dataclass
class _ScaledColumn:
    column: int
    fill: float
    mean: float
    weight: float  # coefficient / scale


@dataclass
class _CategoryColumn:
    column: int
    fill: float
    levels: np.ndarray  # sorted codes seen in fitting
    weights: np.ndarray


@dataclass
class ColumnwiseLinear:
    """A fitted :func:`spline_logistic` pipeline's decision function, evaluated one column at
    a time: each numeric column's spline basis combined with its coefficients into one
    spline (or one line), each categorical column a lookup of its levels' coefficients. The
    same function as the pipeline (equal to float rounding: checked when it is built), with
    no expanded basis matrix: ~10-30x faster on batch-sized matrices (issue 17)."""

    intercept: float
    columns: list

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        out = np.full(len(X), self.intercept)
        for c in self.columns:
            x = X[:, c.column]
            x = np.where(np.isnan(x), c.fill, x)
            if isinstance(c, _SplineColumn):
                inside = (x >= c.low) & (x <= c.high)
                value = np.empty_like(x)
                value[inside] = c.spline(x[inside])
                lo, hi = x < c.low, x > c.high
                value[lo] = c.below[0] + (x[lo] - c.low) * c.below[1]
                value[hi] = c.above[0] + (x[hi] - c.high) * c.above[1]
                out += value
            elif isinstance(c, _ScaledColumn):
                out += (x - c.mean) * c.weight
            else:  # unseen levels add nothing, as the encoder's handle_unknown="ignore"
                at = np.minimum(np.searchsorted(c.levels, x), len(c.levels) - 1)
                out += np.where(c.levels[at] == x, c.weights[at], 0.0)
        return out


def columnwise_linear(pipeline) -> ColumnwiseLinear | None:
    """The :class:`ColumnwiseLinear` form of a fitted :func:`spline_logistic` pipeline (kept
    on the pipeline, built once), or ``None`` when the pipeline is not of that shape or the
    column-by-column values differ from the pipeline's on probe rows (then the pipeline
    itself is used)."""
    try:
        return _COLUMNWISE[pipeline]
    except (KeyError, TypeError):
        pass
    try:
        fast = _build_columnwise(pipeline)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        fast = None
    if fast is not None and not _columnwise_agrees(fast, pipeline):
        log.warning("column-by-column linear scores differ from the pipeline's; using the "
                    "pipeline (slower)")
        fast = None
    try:
        _COLUMNWISE[pipeline] = fast
    except TypeError:  # not weakly referable: built again next time
        pass
    return fast


# fitted pipeline -> its ColumnwiseLinear (or None); weak, so nothing of it is pickled with
# a model and a pipeline that is gone takes its entry along (pipelines are never refit in
# place here: every fit is on a clone)
_COLUMNWISE: WeakKeyDictionary = WeakKeyDictionary()


def _build_columnwise(pipeline) -> ColumnwiseLinear | None:
    from scipy.interpolate import BSpline
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        return None
    ct, lr = steps[0][1], steps[1][1]
    if not isinstance(ct, ColumnTransformer) or not isinstance(lr, LogisticRegression):
        return None
    if lr.coef_.shape[0] != 1:
        return None
    coef, offset, columns = lr.coef_[0], 0, []
    for name, part, cols in ct.transformers_:
        if name == "remainder" or len(cols) == 0:
            if name == "remainder" and part != "drop" and len(cols):
                return None
            continue
        cols = np.asarray(cols, dtype=int)
        if name == "num":
            imputer, threshold, last = (s for _, s in part.steps)
            kept = np.flatnonzero(threshold.get_support())
            fills = imputer.statistics_
            if isinstance(last, SplineTransformer):
                if last.extrapolation != "linear" or last.degree < 2:
                    return None
                width = last.n_features_out_ // len(kept)
                for i, k in enumerate(kept):
                    basis = last.bsplines_[i]
                    w = coef[offset + i * width : offset + (i + 1) * width]
                    degree = basis.k
                    low, high = basis.t[degree], basis.t[-degree - 1]
                    f_low, f_high = basis(low), basis(high)
                    d_low, d_high = basis(low, nu=1), basis(high, nu=1)
                    first, last_ = np.arange(degree), width - 1 - np.arange(degree)
                    columns.append(_SplineColumn(
                        column=int(cols[k]), fill=float(fills[k]),
                        spline=BSpline(basis.t, basis.c @ w, degree, extrapolate=False),
                        low=float(low), high=float(high),
                        below=(float(w[first] @ f_low[first]), float(w[first] @ d_low[first])),
                        above=(float(w[last_] @ f_high[last_]),
                               float(w[last_] @ d_high[last_])),
                    ))
                offset += width * len(kept)
            elif isinstance(last, StandardScaler):
                scale = last.scale_ if last.scale_ is not None else np.ones(len(kept))
                mean = last.mean_ if last.mean_ is not None else np.zeros(len(kept))
                for i, k in enumerate(kept):
                    columns.append(_ScaledColumn(
                        column=int(cols[k]), fill=float(fills[k]), mean=float(mean[i]),
                        weight=float(coef[offset + i] / scale[i]),
                    ))
                offset += len(kept)
            else:
                return None
        elif name == "cat":
            imputer, encoder = (s for _, s in part.steps)
            if not isinstance(encoder, OneHotEncoder) or encoder.drop is not None:
                return None
            for i, levels in enumerate(encoder.categories_):
                levels = np.asarray(levels, dtype=float)
                if not len(levels):
                    return None
                order = np.argsort(levels, kind="stable")
                w = coef[offset : offset + len(levels)]
                columns.append(_CategoryColumn(
                    column=int(cols[i]), fill=float(imputer.statistics_[i]),
                    levels=levels[order], weights=np.asarray(w, dtype=float)[order],
                ))
                offset += len(levels)
        else:
            return None
    if offset != len(coef):
        return None
    return ColumnwiseLinear(intercept=float(lr.intercept_[0]), columns=columns)


def _columnwise_agrees(fast: ColumnwiseLinear, pipeline, rows: int = 256) -> bool:
    """Probe rows from the pipeline's own fitted ranges (inside, at and beyond the spline
    ends, blanks, unseen levels): the two decision functions must agree."""
    n = pipeline.steps[0][1].n_features_in_
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, n))
    for c in fast.columns:
        if isinstance(c, _SplineColumn):
            span = max(c.high - c.low, 1.0)
            choices = np.array([c.low - span, c.low, c.high, c.high + span, np.nan])
            inside = c.low + span * rng.uniform(size=rows)
            X[:, c.column] = np.where(rng.uniform(size=rows) < 0.3,
                                      choices[rng.integers(0, len(choices), rows)], inside)
        elif isinstance(c, _ScaledColumn):
            X[rng.uniform(size=rows) < 0.1, c.column] = np.nan
        else:
            pool = np.concatenate([c.levels, [np.nan, 1e9]])
            X[:, c.column] = pool[rng.integers(0, len(pool), rows)]
    expected = pipeline.decision_function(X)
    got = fast.decision_function(X)
    return bool(np.all(np.abs(got - expected) <= COLUMNWISE_TOLERANCE
                       * np.maximum(1.0, np.abs(expected))))


class BoostedTabularModel(_estimator_base()):
    """Base of the LightGBM models: typing, fitting with early stopping, saving, loading.

    Subclasses set ``objective`` (LightGBM params fixed by the task) and add their own output
    (calibrated probability, value). Hyperparameters go to ``__init__``; data only to ``fit``.
    """

    objective: dict = {}
    kind: str = "tabular"

    def __init__(
        self,
        *,
        params: dict | None = None,
        num_boost_round: int = 1000,
        early_stopping_rounds: int = 50,
        seed: int = 0,
        n_jobs: int = 2,
    ) -> None:
        self.params = params
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.n_jobs = n_jobs

    def lgb_params(self) -> dict:
        """The full LightGBM parameter dict: task objective + tuned params + seed/threads."""
        return {
            **self.objective,
            **(self.params or {}),
            "seed": self.seed,
            "deterministic": True,
            "num_threads": self.n_jobs,
        }

    def _fit_booster(
        self,
        X: pd.DataFrame | np.ndarray,
        y: np.ndarray,
        X_val: pd.DataFrame | np.ndarray,
        y_val: np.ndarray,
        *,
        schema: TableSchema | None,
        descriptions: dict[str, str] | None,
        callbacks: Sequence[Callable],
        **rows: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fit the booster; ``rows`` are :func:`fit_booster`'s optional per-row inputs
        (``weight``, ``val_weight``, ``init_score``, ``val_init_score``)."""
        if schema is None and isinstance(X, np.ndarray):
            raise ModelError("A numpy matrix needs its TableSchema; pass schema=.")
        self.schema_ = schema or infer_schema(X)
        # Tuning refits many times on the same rows: callers may pass the matrices once made.
        train_m = X if isinstance(X, np.ndarray) else to_matrix(X, self.schema_)
        val_m = X_val if isinstance(X_val, np.ndarray) else to_matrix(X_val, self.schema_)
        booster = fit_booster(
            self.lgb_params(),
            train_m,
            np.asarray(y, dtype=float),
            val_m,
            np.asarray(y_val, dtype=float),
            categorical=self.schema_.categorical_indices,
            num_boost_round=self.num_boost_round,
            early_stopping_rounds=self.early_stopping_rounds,
            callbacks=callbacks,
            **rows,
        )
        self.train_rows_ = len(train_m)
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.best_score_ = float(next(iter(booster.best_score["valid"].values())))
        # Keep only the trees up to the best iteration, so every later predict uses them.
        import lightgbm as lgb

        self.booster_ = lgb.Booster(model_str=booster.model_to_string(self.best_iteration_))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing column -> NaN median
            self.medians_ = np.nan_to_num(np.nanmedian(train_m, axis=0), nan=0.0)
        descriptions = descriptions or {}
        self.descriptions_ = [
            descriptions.get(c) or plain_description(c) for c in self.schema_.columns
        ]
        return train_m, val_m

    def _refit_target(self, y: np.ndarray) -> np.ndarray:
        """The target the booster trains on (subclasses clip or transform it)."""
        return np.asarray(y, dtype=float)

    def refit_all(
        self,
        X: pd.DataFrame | np.ndarray,
        y: np.ndarray,
        *,
        rounds: int,
        schema: TableSchema | None = None,
        descriptions: dict[str, str] | None = None,
        sample_weight: np.ndarray | None = None,
        init_score: np.ndarray | None = None,
    ):
        """Refit the booster on all labelled rows (``X``, ``y``) for a fixed ``rounds``, keeping
        the fitted schema, descriptions and every other fitted part (calibration included).

        Used after evaluation: the honest test figure comes from the model fitted without the
        test rows; the registered model then learns from every row with the chosen settings
        (the caller rescales the early-stopped round count to the larger data). An unfitted
        model needs ``schema`` (and may take ``descriptions``): it is then a plain fixed-round
        fit, e.g. the untuned baseline. ``sample_weight`` and ``init_score`` are per-row
        weights and starting margins, as in :func:`fit_booster`. Returns ``self``.
        """
        import lightgbm as lgb
        from sklearn.utils.validation import check_is_fitted

        if schema is not None:
            self.schema_ = schema
            self.descriptions_ = [
                (descriptions or {}).get(c) or plain_description(c) for c in schema.columns
            ]
        check_is_fitted(self, "schema_")
        if rounds < 1:
            raise ModelError(f"refit_all needs at least one boosting round, got {rounds}.")
        all_m = X if isinstance(X, np.ndarray) else to_matrix(X, self.schema_)
        data = lgb.Dataset(
            all_m,
            self._refit_target(y),
            weight=sample_weight,
            init_score=init_score,
            categorical_feature=list(self.schema_.categorical_indices),
            free_raw_data=True,
        )
        params = {"verbosity": -1, "feature_pre_filter": False, **self.lgb_params()}
        params.pop("early_stopping_round", None)
        try:
            self.booster_ = lgb.train(params, data, num_boost_round=int(rounds))
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"LightGBM failed to refit on all rows: {exc}") from exc
        self.best_iteration_ = int(rounds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing column -> NaN median
            self.medians_ = np.nan_to_num(np.nanmedian(all_m, axis=0), nan=0.0)
        self.refit_rows_ = len(all_m)
        return self

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        """``X`` as the model's contiguous float matrix (typing applied; the ``prob__`` inputs
        computed by the model's probabilistic stack, see :meth:`with_probabilistic`)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "booster_")
        return to_matrix(self.with_probabilistic(X), self.schema_)

    def with_probabilistic(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` with the model's ``prob__`` inputs computed from its features by the
        :class:`~customer360.models.prob_stack.ProbabilisticStack` it was trained with
        (``stack_``; issue 13). Columns of that name in ``X`` are ignored, so every caller gets
        the same answers. Without a stack, ``X`` as given."""
        from customer360.models.prob_stack import is_prob_column

        stack = getattr(self, "stack_", None)
        wanted = [c for c in self.schema_.columns if is_prob_column(c)]
        if stack is None or not wanted:
            return X
        kept = [c for c in X.columns if not is_prob_column(c)]
        return pd.concat([X[kept], stack.transform(X, wanted)], axis=1)

    def predict_raw(
        self, X: pd.DataFrame | np.ndarray, *, num_threads: int | None = None
    ) -> np.ndarray:
        """LightGBM's raw score (log-odds for churn, log of the mean for Tweedie).

        ``num_threads`` overrides the booster's threads (1 for a few rows online).
        """
        m = X if isinstance(X, np.ndarray) else self.matrix(X)
        return self.booster_.predict(m, raw_score=True, **_threads(num_threads))

    def contributions(
        self, X: pd.DataFrame | np.ndarray, *, num_threads: int | None = None
    ) -> np.ndarray:
        """Per-feature SHAP contributions to the raw score (bias column dropped)."""
        m = X if isinstance(X, np.ndarray) else self.matrix(X)
        return self.booster_.predict(m, pred_contrib=True, **_threads(num_threads))[:, :-1]

    def importance(self) -> pd.Series:
        return feature_importance(self.booster_, self.schema_.columns)

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        return None

    def save(self, path) -> None:
        """Write ``booster.txt`` and ``meta.json`` into the folder ``path``."""
        import json
        from pathlib import Path

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(folder / "booster.txt"))
        meta = {
            "kind": self.kind,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            # every __init__ argument (scikit-learn's get_params), so load() rebuilds it
            "hyperparameters": self.get_params(deep=False),
            "schema": self.schema_.to_dict(),
            "medians": self.medians_.tolist(),
            "descriptions": self.descriptions_,
            "best_iteration": self.best_iteration_,
            "best_score": getattr(self, "best_score_", None),  # None: a fixed-round fit
            **self._extra_state(),
        }
        stack = getattr(self, "stack_", None)
        if stack is not None:
            import joblib

            meta["probabilistic_stack"] = stack.params()
            joblib.dump(stack, folder / STACK_FILE)
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        self._save_artifacts(folder)

    def _save_artifacts(self, folder) -> None:
        """Subclasses write fitted parts that are not JSON (e.g. a linear pipeline)."""

    def _load_artifacts(self, folder) -> None:
        """Counterpart of :meth:`_save_artifacts`."""

    @classmethod
    def load(cls, path) -> BoostedTabularModel:
        """Read a model written by :meth:`save` (the subclass is taken from ``meta.json``)."""
        import importlib
        import json
        from pathlib import Path

        import lightgbm as lgb

        folder = Path(path)
        meta = json.loads((folder / "meta.json").read_text())
        module, _, name = meta["class"].rpartition(".")
        klass = getattr(importlib.import_module(module), name)
        model = klass(**meta["hyperparameters"])
        model.booster_ = lgb.Booster(model_file=str(folder / "booster.txt"))
        model.schema_ = TableSchema.from_dict(meta["schema"])
        model.medians_ = np.asarray(meta["medians"], dtype=float)
        model.descriptions_ = meta["descriptions"]
        model.best_iteration_ = meta["best_iteration"]
        model.best_score_ = meta["best_score"]
        model._load_extra_state(meta)
        model._load_artifacts(folder)
        if (folder / STACK_FILE).is_file():
            import joblib

            model.stack_ = joblib.load(folder / STACK_FILE)
        return model

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:  # pragma: no cover - abstract
        raise NotImplementedError


def model_input_example(X: pd.DataFrame, schema: TableSchema, rows: int = 5) -> pd.DataFrame:
    """A few rows of the model's input columns, used as the MLflow input example and to infer
    the signature.

    Numeric columns keep their dtype (``int64`` stays ``long`` in the signature, as
    ``build_features`` returns it; MLflow refuses to cast int64 to double at predict time),
    numbers stored as text become float64 and categoricals clean text.
    """
    head = X.head(rows)
    out = {}
    for name in schema.columns:
        col = head[name]
        if name in schema.categories:
            out[name] = clean_text(col).astype(object).to_numpy()
        elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            out[name] = col.to_numpy()
        else:
            out[name] = parse_numbers(col)[0].astype("float64").to_numpy()
    return pd.DataFrame(out, index=range(len(head)))


def _python_model_base():
    from mlflow.pyfunc import PythonModel

    return PythonModel


class BoostedModelPyfunc(_python_model_base()):
    """MLflow pyfunc wrapper of a saved :class:`BoostedTabularModel` (artifact ``model_dir``).

    ``predict`` returns the model's ``predict_frame``: churn -> ``churn_probability``,
    ``reason_1..3``; CLV -> ``clv_ml``. The loaded model keeps a LightGBM Booster and predicts
    on a contiguous float matrix.
    """

    def load_context(self, context) -> None:
        self.model = BoostedTabularModel.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        return self.model.predict_frame(model_input)
