"""Churn training: warehouse snapshots or a user's own table -> Optuna -> MLflow -> registry.

Two entry points share one job (:func:`run_churn_job`):

- :func:`train_churn` builds stacked as-of snapshots from the warehouse, splits them by time
  (train on earlier snapshots, validate and test on later ones), and compares the calibrated
  LightGBM with a logistic regression, an untuned LightGBM, 1 - P(alive) from BG/NBD and, on
  synthetic data, the oracle's true churn probabilities;
- :func:`train_churn_table` does the same on any customer table with a binary label column
  (typed automatically; random stratified split because one table has no time axis).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from customer360.config import StrictModel, load_config
from customer360.errors import ConfigError
from customer360.models.churn import ChurnClassifier, choose_calibrator
from customer360.models.tabular import (
    TableSchema,
    classification_metrics,
    infer_schema,
    logistic_baseline,
    model_input_example,
    plot_calibration,
    plot_gain,
    plot_importance,
    plot_pr,
    plot_roc,
    sample_rows,
    to_matrix,
)
from customer360.training.common import (
    Evaluation,
    TrainingConfig,
    TrainResult,
    data_fingerprint,
    feature_descriptions,
    model_label,
    oracle_values,
    random_split,
    run_training_job,
    shap_figure,
    warehouse_split,
)

log = logging.getLogger(__name__)

PRIMARY_METRIC = "roc_auc"


class ByoConfig(StrictModel):
    """Bring-your-own-table settings: the share of rows held out for the test figure, and the
    stratified folds hyperparameters are selected on (``cv_folds`` < 2: one validation part
    of ``validation_fraction`` instead)."""

    model_name: str = "churn_byo"
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    cv_folds: int = Field(5, ge=0, le=20)


class ChurnConfig(TrainingConfig):
    """``configs/churn.yaml``."""

    experiment: str = "churn"
    model_name: str = "churn"
    calibration: Literal["auto", "isotonic", "sigmoid", "none"] = "auto"
    stack_probabilistic: bool = True
    untuned_rounds: int = 100
    # the logistic-regression baseline is fitted on at most this many training rows (seeded
    # sample): ~150 coefficients are well determined long before that, and lbfgs on millions
    # of rows would dominate the job's time
    baseline_max_rows: int = 100_000
    # inverse L2 strengths of the spline logistic regression competing with (and blended
    # with) LightGBM, chosen by CV (BYO) or on the validation snapshot (warehouse), and the
    # LightGBM weights of the blends tried; [] = LightGBM only
    linear_c: list[Annotated[float, Field(gt=0)]] = [0.05, 0.5, 5.0, 50.0]
    # 0: straight-line numerics; n >= 2: cubic splines with n knots
    linear_knots: list[Annotated[int, Field(ge=0)]] = [0, 5]
    blend_weights: list[Annotated[float, Field(gt=0, lt=1)]] = [0.25, 0.5, 0.75]
    # issue 13: the linear candidate averages the log-odds of this many best (C, knots)
    # settings by out-of-fold (or validation) ROC-AUC (1: the single best)
    linear_top: int = Field(3, ge=1)
    # the linear candidates (and the registered linear part, refit included) are fitted on at
    # most this many rows (seeded sample): spline inputs of millions of rows would take GBs
    # and minutes per setting for coefficients settled long before
    linear_max_rows: int = Field(100_000, ge=100)
    byo: ByoConfig = ByoConfig()

    @field_validator("linear_knots")
    @classmethod
    def _spline_knots(cls, knots: list[int]) -> list[int]:
        if 1 in knots:
            raise ValueError("a cubic spline needs at least 2 knots: use 0 for straight-line "
                             "numerics or 2 or more")
        return knots


def load_churn_config(path: str | Path | None = None) -> ChurnConfig:
    """Parse ``configs/churn.yaml`` (or ``path``)."""
    return load_config(path or "churn", ChurnConfig)


@dataclass
class ChurnData:
    """Prepared train / validation / test parts for one churn job."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_val: pd.DataFrame
    y_val: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    schema: TableSchema
    descriptions: dict[str, str]
    test_identity: str
    tags: dict[str, object]
    extra_baselines: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stack: object = None  # issue 13: the probabilistic stack the prob__ inputs were made with
    # >= 2: select on stratified k-fold CV of the training rows (X_val is then empty)
    cv_folds: int = 0
    # issue 13: one time value per training row (``X_train`` order) -> time-ordered folds
    times: np.ndarray | None = None


# --- warehouse -----------------------------------------------------------------------------------


def churn_label(horizon_days: int) -> str:
    return f"label__churn__{horizon_days}d"


def prepare_warehouse_data(con, config: ChurnConfig) -> ChurnData:
    """Stacked snapshots -> time-based split, plus the BG/NBD and oracle scores on the test
    snapshot."""
    label = churn_label(config.horizon_days)
    parts = warehouse_split(con, config, label, with_probabilistic=config.stack_probabilistic)
    test = parts.test
    extra: dict[str, np.ndarray] = {}
    if "prob__p_alive" in test.columns and test["prob__p_alive"].notna().all():
        extra["bgnbd_1_minus_p_alive"] = 1.0 - test["prob__p_alive"].to_numpy(dtype=float)
    oracle = oracle_values(con, test, config.horizon_days, kind="churn")
    if oracle is not None:
        extra["oracle"] = oracle
    features = parts.features
    tags = parts.tags
    tags["split"] = (
        "time-ordered snapshots: trials fit on the training as-of dates and are selected, with "
        "the calibration, on the later validation as-of date; test = the latest as-of date"
    )
    rows_note = (
        f"Rows: trials fit on {tags['rows_train']:,} rows (as-of {tags['as_of_train']}); "
        f"settings, model family and calibration chosen on {tags['rows_validation']:,} later "
        f"rows (as-of "
        f"{tags['as_of_validation']}); test figures on {tags['rows_test']:,} rows (as-of "
        f"{tags['as_of_test']}), which no selection saw."
    )
    return ChurnData(
        X_train=parts.train[features],
        y_train=parts.train[label].to_numpy(dtype=int),
        X_val=parts.validation[features],
        y_val=parts.validation[label].to_numpy(dtype=int),
        X_test=test[features],
        y_test=test[label].to_numpy(dtype=int),
        schema=parts.schema,
        descriptions=feature_descriptions(features),
        test_identity=parts.test_identity,
        tags=tags,
        extra_baselines=extra,
        notes=[*parts.notes, rows_note],
        stack=parts.stack,
    )


def train_churn(
    con,
    config: ChurnConfig | None = None,
    *,
    trials: int | None = None,
    register: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train, evaluate, log and register the churn model from the warehouse.

    Parameters
    ----------
    con
        Warehouse connection.
    config
        :class:`ChurnConfig` (default ``configs/churn.yaml``).
    trials
        Optuna trials (default: the config's).
    register
        Register the model as ``config.model_name`` with alias ``challenger``.
    on_progress
        ``on_progress(done, total)`` after each trial.

    Returns
    -------
    TrainResult
        Run id, model URI, registered version, test metrics and baseline metrics.

    Examples
    --------
    >>> from customer360.data.warehouse import connect           # doctest: +SKIP
    >>> result = train_churn(connect(), trials=5)                 # doctest: +SKIP
    >>> sorted(result.metrics)[:3]                                # doctest: +SKIP
    ['brier', 'brier_uncalibrated', 'ece']
    """
    config = config or load_churn_config()
    data = prepare_warehouse_data(con, config)
    return run_churn_job(
        data,
        config,
        trials=config.trials if trials is None else trials,
        register=register,
        model_name=config.model_name,
        on_progress=on_progress,
    )


# --- bring your own table -------------------------------------------------------------------------

AFFIRMATIVE = ("1", "true", "yes", "y", "churn", "churned", "t")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, with clear errors for a missing file or unknown format."""
    from customer360.data.files import read_file

    return read_file(path, what="Table file", error=ConfigError)


def binary_labels(
    values: pd.Series, *, column: str, positive_label: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Turn a label column into 0/1.

    Returns ``(y, present, positive)``: ``y`` for the rows in ``present`` (rows with a blank
    label are not trainable and are reported by the caller), and the value taken as positive.
    Without ``positive_label`` the positive class must be evident (1/0, true/false, yes/no,
    or two numbers, the larger being positive). Text labels are compared case-insensitively
    after trimming spaces.
    """
    from customer360.models.tabular import clean_text

    text = clean_text(values)
    present = text.notna().to_numpy()
    if not present.any():
        raise ConfigError(f"Label column {column!r} is blank in every row.")
    as_text = text[present].astype(str).str.lower()  # "Yes" and "yes " are the same answer
    numeric = pd.to_numeric(as_text, errors="coerce")
    if numeric.notna().all():
        as_text = numeric.map(lambda v: f"{v:g}")
    levels = sorted(as_text.unique())
    if len(levels) != 2:
        shown = ", ".join(repr(v) for v in levels[:10])
        raise ConfigError(
            f"Label column {column!r} must hold exactly two values (churned / stayed); it holds "
            f"{len(levels)}: {shown}. Pick a binary column or map it to two values first."
        )
    if positive_label is not None:
        wanted = str(positive_label).strip()
        if numeric.notna().all() and pd.notna(pd.to_numeric(wanted, errors="coerce")):
            wanted = f"{float(wanted):g}"
        matches = [v for v in levels if v == wanted.lower()]
        if not matches:
            raise ConfigError(
                f"Positive label {positive_label!r} does not occur in column {column!r}; its "
                f"values are {levels[0]!r} and {levels[1]!r}."
            )
        positive = matches[0]
    elif numeric.notna().all():
        positive = max(levels, key=float)
    else:
        hits = [v for v in levels if v in AFFIRMATIVE]
        if len(hits) != 1:
            raise ConfigError(
                f"Cannot tell which value of {column!r} means churn ({levels[0]!r} or "
                f"{levels[1]!r}); pass --positive-label."
            )
        positive = hits[0]
    return (as_text == positive).to_numpy(dtype=int), present, positive


TIME_SHARE = 0.95  # share of non-blank values that must parse as dates for auto-detection


def parse_times(values: pd.Series) -> tuple[np.ndarray, int]:
    """``values`` as int64 nanoseconds since the epoch in UTC (blank or not a date: the int64
    minimum) and the number of non-blank values that are not dates. Numbers are not dates."""
    import warnings

    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return np.full(len(values), np.iinfo(np.int64).min), int(values.notna().sum())
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps, bad = pd.to_datetime(values, utc=True), 0
    else:
        text = values.astype("string").str.strip().replace("", pd.NA)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
            stamps = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
        bad = int((text.notna() & stamps.isna()).sum())
    ns = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns, bad


def find_time_column(
    frame: pd.DataFrame, *, exclude: list[str], time_col: str | None, source: str
) -> str | None:
    """The column whose values order the rows in time: ``time_col`` when given (checked), else
    the one column of dates found (datetime-typed, or text that is at least 95 % dates);
    ``None`` when there is none. Two or more candidates are an error asking for
    ``--time-col``."""
    if time_col is not None:
        if time_col not in frame.columns:
            raise ConfigError(
                f"Time column {time_col!r} is not in {source}; its columns are "
                f"{', '.join(map(str, frame.columns[:30]))}."
            )
        _, bad = parse_times(frame[time_col])
        present = int(frame[time_col].notna().sum())
        if present == 0 or bad > (1 - TIME_SHARE) * present:
            raise ConfigError(
                f"Time column {time_col!r} of {source}: {bad} of {present} value(s) are not "
                "dates (e.g. 2024-03-31); fix them or pass another --time-col."
            )
        return time_col
    found = []
    for name in frame.columns:
        if name in exclude:
            continue
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        present = int(col.notna().sum())
        if present == 0:
            continue
        sample = col.dropna().head(2000)
        _, bad = parse_times(sample)
        if bad <= (1 - TIME_SHARE) * len(sample):
            found.append(name)
    if len(found) > 1:
        raise ConfigError(
            f"{source} has several date columns ({', '.join(map(repr, found))}); pass "
            "--time-col NAME to say which one orders the rows in time (the others are left out)."
        )
    return found[0] if found else None


def time_holdout(times: np.ndarray, *, test: float) -> tuple[np.ndarray, np.ndarray]:
    """Train / test masks with the latest ``test`` share of rows (whole time values, so the
    test rows are all strictly later than every training row) as the test part."""
    ordered = np.sort(times)
    cut = ordered[min(len(ordered) - 1, int(round(len(ordered) * (1 - test))))]
    test_mask = times >= cut
    if test_mask.all() or not test_mask.any():
        raise ConfigError(
            "The time column has too few distinct values to hold out the latest rows for the "
            "test figure; give a finer time column or none."
        )
    return ~test_mask, test_mask


def train_churn_table(
    table: pd.DataFrame | str | Path,
    label: str,
    *,
    positive_label: str | None = None,
    id_col: str | None = None,
    model_name: str | None = None,
    trials: int | None = None,
    config: ChurnConfig | None = None,
    register: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    time_col: str | None = None,
) -> TrainResult:
    """Train a churn model on any customer table with a binary label column.

    Columns are typed automatically (numbers stored as text, blanks, stray spaces); rows are
    split at random (stratified) into train / validation / test; the tuned, calibrated model
    is reported beside a logistic regression and an untuned LightGBM on the same test rows.
    When the table has a date column (``time_col``, or the one found), the split follows
    time instead: the latest rows are the test part and the CV folds are time-ordered (each
    fold fits on earlier rows than it validates on); the date column is not a feature.

    Examples
    --------
    >>> result = train_churn_table("customers.csv", "churned", trials=10)  # doctest: +SKIP
    >>> sorted(result.baselines)                                          # doctest: +SKIP
    ['lightgbm_untuned', 'logistic_regression']
    """
    config = config or load_churn_config()
    frame = read_table(table) if isinstance(table, str | Path) else table
    source = str(table) if isinstance(table, str | Path) else "DataFrame"
    if label not in frame.columns:
        raise ConfigError(
            f"Label column {label!r} is not in {source}; its columns are "
            f"{', '.join(map(str, frame.columns[:30]))}."
        )
    if id_col is not None and id_col not in frame.columns:
        raise ConfigError(
            f"Id column {id_col!r} is not in {source}; its columns are "
            f"{', '.join(map(str, frame.columns[:30]))}."
        )
    y_all, present, positive = binary_labels(
        frame[label], column=label, positive_label=positive_label
    )
    notes = []
    if not present.all():
        notes.append(
            f"{int((~present).sum())} row(s) with a blank {label!r} were left out of training "
            "and evaluation."
        )
    rows = frame[present].reset_index(drop=True)
    counts = np.bincount(y_all, minlength=2)
    if counts.min() < 10:
        raise ConfigError(
            f"Label column {label!r} has only {counts.min()} row(s) of one class; need at least "
            "10 of each to train and evaluate."
        )
    exclude = [label] + ([id_col] if id_col else [])
    folds = config.byo.cv_folds
    found_time = find_time_column(rows, exclude=exclude, time_col=time_col, source=source)
    times = None
    if found_time is not None:
        exclude.append(found_time)
        times, _ = parse_times(rows[found_time])
        if folds < 2:
            raise ConfigError(
                f"Time-ordered selection on {found_time!r} needs byo.cv_folds >= 2 in the config."
            )
    schema = infer_schema(rows, exclude=exclude)
    notes += [f"column {n.column!r} {n.action}: {n.detail}" for n in schema.notes]
    if times is not None:
        missing = times == np.iinfo(np.int64).min
        if missing.any():
            raise ConfigError(
                f"Time column {found_time!r} of {source} is blank or not a date in "
                f"{int(missing.sum())} row(s) (first at row {int(np.argmax(missing))}); fill "
                "them or pass another --time-col."
            )
        train, test = time_holdout(times, test=config.byo.test_fraction)
        val = np.zeros(len(y_all), dtype=bool)
        for part, mask in (("training", train), ("test", test)):
            if len(np.unique(y_all[mask])) < 2:
                raise ConfigError(
                    f"The {part} part of the time-ordered split on {found_time!r} holds one "
                    "class only; the table needs churners and stayers early and late."
                )
    elif folds >= 2:
        train, test = holdout_split(y_all, test=config.byo.test_fraction, seed=config.seed)
        val = np.zeros(len(y_all), dtype=bool)
    else:
        train, val, test = random_split(
            y_all,
            validation=config.byo.validation_fraction,
            test=config.byo.test_fraction,
            seed=config.seed,
        )
    if times is not None:
        split_text = (
            f"time-ordered on {found_time!r}: the latest {int(test.sum()):,} rows are the test "
            f"part; {folds} expanding-window folds on the earlier rows (each fits on rows "
            "earlier than those it validates on) select the settings and calibration"
        )
    elif folds >= 2:
        split_text = (
            f"random stratified test hold-out; {folds}-fold stratified CV on the training "
            "rows selects the settings and calibration"
        )
    else:
        split_text = "random stratified train / validation / test (no time column)"
    features = list(schema.columns)
    key_cols = [id_col] if id_col else []
    data = ChurnData(
        X_train=rows.loc[train, features],
        y_train=y_all[train],
        X_val=rows.loc[val, features],
        y_val=y_all[val],
        X_test=rows.loc[test, features],
        y_test=y_all[test],
        schema=schema,
        descriptions={},
        test_identity=f"table={Path(source).name};rows={int(test.sum())};hash="
        + data_fingerprint(
            rows.loc[test, [*key_cols, *features]].astype(str).assign(_y=y_all[test])
        ),
        tags={
            "source": "table",
            "table": source,
            "label": label,
            "positive_label": positive,
            "id_col": id_col or "",
            "split": split_text,
            "time_col": found_time or "",
            "cv_folds": folds if folds >= 2 else 0,
            "rows_train": int(train.sum()),
            "rows_validation": int(val.sum()),
            "rows_test": int(test.sum()),
        },
        cv_folds=folds if folds >= 2 else 0,
        times=None if times is None else times[train],
    )
    if times is not None:
        data.tags["test_from"] = str(pd.Timestamp(times[test].min()))
        data.tags["train_until"] = str(pd.Timestamp(times[train].max()))
    notes.append(
        f"Rows: {split_text}. Selection (hyperparameters, model family, calibration) used the "
        f"{int(train.sum()):,} training rows only; the test figures are on the other "
        f"{int(test.sum()):,} rows"
        + (
            f" (dated {data.tags['test_from'][:10]} or later; training rows end "
            f"{data.tags['train_until'][:10]})"
            if times is not None
            else ""
        )
        + "."
    )
    return run_churn_job(
        data,
        config,
        trials=config.trials if trials is None else trials,
        register=register,
        model_name=model_name or config.byo.model_name,
        on_progress=on_progress,
        notes=notes,
    )


# --- the shared job -------------------------------------------------------------------------------


def run_churn_job(
    data: ChurnData,
    config: ChurnConfig,
    *,
    trials: int,
    register: bool,
    model_name: str,
    on_progress: Callable[[int, int], None] | None = None,
    notes: list[str] | None = None,
) -> TrainResult:
    """Tune, refit, calibrate, evaluate against baselines, log and register one churn model
    inside one MLflow parent run."""
    train_m = to_matrix(data.X_train, data.schema)
    val_m = to_matrix(data.X_val, data.schema)

    def fit(params: dict, callbacks=(), *, final: bool = False, rounds=None):
        if data.cv_folds >= 2:
            return cv_fit(data, config, train_m, params, callbacks, final=final, rounds=rounds)
        model = ChurnClassifier(
            params=params,
            num_boost_round=rounds or config.num_boost_round,
            early_stopping_rounds=rounds or config.early_stopping_rounds,
            calibration=config.calibration,
            seed=config.seed,
            n_jobs=config.n_jobs,
        )
        model.fit(
            train_m,
            data.y_train,
            X_val=val_m,
            y_val=data.y_val,
            schema=data.schema,
            descriptions=data.descriptions,
            callbacks=callbacks,
            calibrate=final,
        )
        if final and rounds is None:
            choose_family_on_validation(model, data, config, train_m, val_m)
        return model

    return run_training_job(
        config=config,
        model_name=model_name,
        trials=trials,
        register=register,
        fit=fit,
        tuning_metric="binary_logloss",
        evaluate=lambda model: evaluate_churn(model, data, config, fit),
        champion_input=data.X_test,
        champion_score=lambda pred: classification_metrics(data.y_test, pred["churn_probability"]),
        primary_metric=PRIMARY_METRIC,
        example=model_input_example(data.X_train, data.schema),
        tags=data.tags,
        test_identity=data.test_identity,
        notes=[*data.notes, *(notes or [])],
        on_progress=on_progress,
        refit_data=(
            (
                np.vstack([train_m, val_m, to_matrix(data.X_test, data.schema)]),
                np.concatenate([data.y_train, data.y_val, data.y_test]),
            )
            if config.refit_on_all_rows
            else None
        ),
        stack=data.stack,
    )


@dataclass
class CrossValidation:
    """Out-of-fold result of one parameter setting: mean held-out log-loss (``best_score_``,
    what tuning minimises), mean early-stopped rounds and the out-of-fold raw scores."""

    best_score_: float
    best_iteration_: float
    oof_raw: np.ndarray
    last_model: ChurnClassifier


def holdout_split(y: np.ndarray, *, test: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random train / test masks; the test rows take no part in any selection."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    _, test_idx = train_test_split(idx, test_size=test, stratify=y, random_state=seed)
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test_idx] = True
    return ~test_mask, test_mask


def cv_splits(data: ChurnData, config: ChurnConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (fit, held-out) row positions of the CV folds on the training rows: stratified
    k-fold, or, when the table has a time column (``data.times``), time-ordered folds in which
    every fit part is strictly earlier than the part it is validated on."""
    if data.times is not None:
        return time_ordered_splits(data.times, data.cv_folds)
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=data.cv_folds, shuffle=True, random_state=config.seed)
    return list(splitter.split(np.zeros(len(data.y_train)), data.y_train))


def time_ordered_splits(times: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds over ``times`` (one value per row, any order): the rows are cut
    into ``folds + 1`` blocks by time; fold i fits on the blocks before block i + 1 and is
    validated on block i + 1. A cut never splits rows of the same time, so every fitted row
    is strictly earlier than every row it is validated on.

    Examples
    --------
    >>> [(f.tolist(), h.tolist()) for f, h in time_ordered_splits(np.array([3, 1, 2, 4]), 3)]
    [([1], [2]), ([1, 2], [0]), ([1, 2, 0], [3])]
    """
    times = np.asarray(times)
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    n = len(order)
    # block starts at n * i / (folds + 1), moved back to the first row of their time value
    # (forward, past it, when that is the very first row)
    cuts = set()
    for start in (n * i // (folds + 1) for i in range(1, folds + 1)):
        cut = int(np.searchsorted(ordered, ordered[start], side="left"))
        cuts.add(cut or int(np.searchsorted(ordered, ordered[start], side="right")))
    bounds = sorted({c for c in cuts if 0 < c < n} | {n})
    splits = [(order[:a], order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if not splits:
        raise ConfigError(
            "The time column has too few distinct values for time-ordered folds; give a finer "
            "time column or none (stratified folds)."
        )
    return splits


def cross_validate(
    data: ChurnData, config: ChurnConfig, train_m: np.ndarray, params: dict, callbacks=()
) -> CrossValidation:
    """CV of one setting on the training rows only (``data.X_train``), each fold early-stopped
    on its held-out part; the pruning ``callbacks`` watch the first fold."""
    y = data.y_train
    oof = np.full(len(y), np.nan)
    scores, rounds = [], []
    model = None
    for i, (fit_idx, held_idx) in enumerate(cv_splits(data, config)):
        model = ChurnClassifier(
            params=params,
            num_boost_round=config.num_boost_round,
            early_stopping_rounds=config.early_stopping_rounds,
            calibration=config.calibration,
            seed=config.seed,
            n_jobs=config.n_jobs,
        ).fit(
            train_m[fit_idx],
            y[fit_idx],
            X_val=train_m[held_idx],
            y_val=y[held_idx],
            schema=data.schema,
            descriptions=data.descriptions,
            callbacks=callbacks if i == 0 else (),
            calibrate=False,
        )
        oof[held_idx] = model.predict_raw(train_m[held_idx])
        scores.append(model.best_score_)
        rounds.append(model.best_iteration_)
    return CrossValidation(float(np.mean(scores)), float(np.mean(rounds)), oof, model)


def fixed_round_oof(
    data: ChurnData, config: ChurnConfig, train_m: np.ndarray, params: dict, rounds: int
) -> np.ndarray:
    """Out-of-fold LightGBM log-odds with a fixed number of rounds on every fold: unlike the
    tuning folds, no held-out part chose its own stopping round, so these scores are as
    honest as the linear candidates' when families, blend weights and calibration are chosen
    on them (rows no fold holds out, the earliest under time-ordered folds, stay NaN)."""
    y = data.y_train
    oof = np.full(len(y), np.nan)
    for fit_idx, held_idx in cv_splits(data, config):
        model = ChurnClassifier(params=params, seed=config.seed, n_jobs=config.n_jobs)
        model.refit_all(train_m[fit_idx], y[fit_idx], rounds=rounds, schema=data.schema)
        oof[held_idx] = model.predict_raw(train_m[held_idx])
    return oof


def cv_fit(
    data: ChurnData,
    config: ChurnConfig,
    train_m: np.ndarray,
    params: dict,
    callbacks=(),
    *,
    final: bool,
    rounds: int | None,
):
    """The CV counterpart of a single fit: a trial returns the :class:`CrossValidation`; the
    final fit boosts on every training row for the folds' mean rounds rescaled by
    ``k / (k - 1)`` and is calibrated on out-of-fold scores of fixed-round fits (the
    calibration method too is chosen on them). ``rounds`` (the untuned baseline) boosts that
    many rounds on every training row, as ``LGBMClassifier()`` would."""
    if rounds is not None:
        model = ChurnClassifier(params=params, seed=config.seed, n_jobs=config.n_jobs)
        model.refit_all(
            train_m, data.y_train, rounds=rounds, schema=data.schema, descriptions=data.descriptions
        )
        model.train_rows_ = len(train_m)
        return model
    cv = cross_validate(data, config, train_m, params, callbacks)
    if not final:
        return cv
    splits = cv_splits(data, config)
    fit_share = np.mean([len(f) for f, _ in splits]) / len(train_m)
    model = cv.last_model
    model.refit_all(train_m, data.y_train, rounds=max(1, round(cv.best_iteration_ / fit_share)))
    model.train_rows_ = len(train_m)
    honest = fixed_round_oof(data, config, train_m, params, max(1, round(cv.best_iteration_)))
    oof = choose_family(model, data, config, train_m, honest)
    held = ~np.isnan(oof)
    model.calibrator_, model.calibration_report_ = choose_calibrator(
        oof[held], data.y_train[held], config.calibration, seed=config.seed
    )
    return model


def choose_family(
    model: ChurnClassifier,
    data: ChurnData,
    config: ChurnConfig,
    train_m: np.ndarray,
    lightgbm_scores: np.ndarray,
    *,
    val_m: np.ndarray | None = None,
) -> np.ndarray:
    """Pick LightGBM, the spline logistic regression or a blend of their log-odds by ROC-AUC
    on rows no candidate was fitted on, give ``model`` the linear part when chosen, and
    return the chosen family's scores on those rows (what the calibrator is then chosen and
    fitted on). Ties keep LightGBM.

    Without ``val_m``: out of fold on the training rows (the tuning folds; rows no fold holds
    out are left out), the linear part then fitted on every training row. With ``val_m``
    (the warehouse's later validation snapshot): the linear candidates are fitted on the
    training rows and scored on the validation rows, the same rows ``lightgbm_scores`` are
    on. Linear fits use at most ``config.linear_max_rows`` seeded-sample rows.
    """
    import mlflow
    from sklearn.metrics import roc_auc_score

    from customer360.models.tabular import AveragedLinear, linear_decision, spline_logistic

    started = time.perf_counter()
    on_validation = val_m is not None
    y = data.y_val if on_validation else data.y_train
    held = np.ones(len(y), dtype=bool) if on_validation else ~np.isnan(lightgbm_scores)
    cap = config.linear_max_rows

    def capped(idx: np.ndarray) -> np.ndarray:
        return idx[sample_rows(len(idx), cap, config.seed)]

    def fit_linear(c: float, knots: int, idx: np.ndarray):
        rows = capped(idx)
        pipe = spline_logistic(data.schema, c=c, seed=config.seed, knots=knots)
        return pipe.fit(train_m[rows], data.y_train[rows])

    scores = {("lightgbm", 1.0, None): lightgbm_scores}
    fitted: dict[tuple[float, int], object] = {}  # validation mode: reused if chosen
    if config.linear_c:
        splits = None if on_validation else cv_splits(data, config)
        linear = {}
        for setting in ((c, k) for c in config.linear_c for k in config.linear_knots):
            if on_validation:
                fitted[setting] = fit_linear(*setting, np.arange(len(train_m)))
                linear[setting] = linear_decision(fitted[setting], val_m)
                continue
            out = np.full(len(y), np.nan)
            for fit_idx, held_idx in splits:
                out[held_idx] = linear_decision(fit_linear(*setting, fit_idx), train_m[held_idx])
            linear[setting] = out
        ranked = sorted(linear, key=lambda c: -roc_auc_score(y[held], linear[c][held]))
        best_c = tuple(ranked[: config.linear_top])
        averaged = np.mean([linear[c] for c in best_c], axis=0)  # same rows: exact average
        scores[("linear", 0.0, best_c)] = averaged
        for w in config.blend_weights:
            scores[("blend", w, best_c)] = w * lightgbm_scores + (1 - w) * averaged
    aucs = {key: float(roc_auc_score(y[held], s[held])) for key, s in scores.items()}
    chosen = max(aucs, key=aucs.get)  # first maximum: LightGBM on ties
    family, weight, c = chosen
    if family != "lightgbm":
        # the settings' pipelines on (at most ``cap`` of) every training row: in validation
        # mode those the choice scored, out of fold fitted once more on all of them
        every = np.arange(len(train_m))
        model.linear_ = AveragedLinear.from_fitted(
            [fitted[s] if s in fitted else fit_linear(*s, every) for s in c]
        )
        model.blend_weight_ = weight
        model.linear_rows_ = cap
    where = "validation rows" if on_validation else "cross-validation"
    mlflow.set_tags(
        {"model_family": family, "blend_lightgbm_weight": weight, "family_selected_on": where}
    )
    if c is not None:
        mlflow.set_tags({
            "linear_c": ",".join(f"{ci:g}" for ci, _ in c),
            "linear_spline_knots": ",".join(str(k) for _, k in c),
        })
    prefix = "val" if on_validation else "cv"
    mlflow.log_metrics(
        {
            f"{prefix}_roc_auc_{f}" + (f"_w{w:g}" if f == "blend" else ""): v
            for (f, w, _), v in aucs.items()
        }
        | {"family_choice_seconds": time.perf_counter() - started}
    )
    log.info("family choice by %s ROC-AUC %s -> %s", where, aucs, chosen)
    return scores[chosen]


def choose_family_on_validation(
    model: ChurnClassifier,
    data: ChurnData,
    config: ChurnConfig,
    train_m: np.ndarray,
    val_m: np.ndarray,
) -> ChurnClassifier:
    """The single-validation-part counterpart of the CV family choice (warehouse snapshots,
    BYO with ``byo.cv_folds`` < 2): candidates scored on the validation rows and, when the
    linear model or a blend wins, the calibrator chosen again on the winner's scores there."""
    chosen = choose_family(model, data, config, train_m, model.predict_raw(val_m), val_m=val_m)
    if model.family() != "lightgbm":
        model.calibrator_, model.calibration_report_ = choose_calibrator(
            chosen, data.y_val, config.calibration, seed=config.seed
        )
    return model


def evaluate_churn(model: ChurnClassifier, data: ChurnData, config: ChurnConfig, fit) -> Evaluation:
    """Test metrics of the calibrated model and of every baseline on the same rows, the
    calibration report and the plots."""
    test_m = model.matrix(data.X_test)
    p_test = model.predict_proba(test_m)
    p_raw = model.predict_uncalibrated(test_m)
    metrics = classification_metrics(data.y_test, p_test)
    metrics["brier_uncalibrated"] = classification_metrics(data.y_test, p_raw)["brier"]
    scores = baseline_scores(data, config, fit, test_m)
    baselines = {name: classification_metrics(data.y_test, s) for name, s in scores.items()}
    notes = []
    for name in ("logistic_regression", "lightgbm_untuned"):
        if baselines[name][PRIMARY_METRIC] > metrics[PRIMARY_METRIC]:
            notes.append(
                f"The tuned model's test ROC-AUC {metrics[PRIMARY_METRIC]:.4f} is below "
                f"{name}'s {baselines[name][PRIMARY_METRIC]:.4f} on the same rows: more trials "
                "or more data may help, or the table is close to linear."
            )
    if "oracle" in baselines:
        metrics["roc_auc_vs_oracle"] = metrics["roc_auc"] / baselines["oracle"]["roc_auc"]
    curves = {model_label(model): p_test}
    curves.update(
        {
            k: v
            for k, v in scores.items()
            if k in ("logistic_regression", "bgnbd_1_minus_p_alive", "oracle")
        }
    )
    family = model.family()
    where = "in cross-validation" if data.cv_folds >= 2 else "on the validation rows"
    if family == "linear":
        notes.append(
            "The registered model is the linear one (logistic regression with one-hot "
            f"categoricals and spline numerics): it beat LightGBM {where}; reason "
            "codes still come from the LightGBM fitted beside it."
        )
    elif family == "blend":
        notes.append(
            f"The registered model blends LightGBM (weight {model.blend_weight_:g}) with the "
            f"spline logistic regression: the blend won {where}."
        )
    import mlflow

    mlflow.set_tag("calibration_method", model.calibrator_.method)
    figures = {
        "roc": plot_roc(data.y_test, curves),
        "pr": plot_pr(data.y_test, curves),
        "calibration": plot_calibration(data.y_test, {"calibrated": p_test, "uncalibrated": p_raw}),
        "cumulative_gain": plot_gain(data.y_test, curves),
        "feature_importance": plot_importance(model.importance()),
        "shap_summary": shap_figure(model, test_m, data.schema.columns, config.seed),
    }
    extra = {f"val_calibration_{k}": v for k, v in model.calibration_report_.items()}
    return Evaluation(metrics, baselines, figures, notes, extra)


def baseline_scores(data: ChurnData, config: ChurnConfig, fit, test_m: np.ndarray) -> dict:
    """Test-set scores of the baselines: logistic regression and an untuned LightGBM trained
    on the same rows, plus whatever the data brought (1 - P(alive), oracle)."""
    train_m = to_matrix(data.X_train, data.schema)
    rows = sample_rows(len(train_m), config.baseline_max_rows, config.seed)
    logistic = logistic_baseline(train_m[rows], data.y_train[rows], data.schema, seed=config.seed)
    untuned = fit({}, rounds=config.untuned_rounds)
    return {
        "logistic_regression": logistic.predict_proba(test_m)[:, 1],
        "lightgbm_untuned": untuned.predict_uncalibrated(test_m),
        **data.extra_baselines,
    }
