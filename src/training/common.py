"""Training machinery shared by churn, CLV (and usable by NBO).

- config pieces: :class:`ParamRange` search spaces and :class:`SnapshotPlan` as-of dates;
- time-based splitting of stacked snapshots with a leakage guard;
- :func:`tune`: an Optuna study (seeded TPE, median pruning on the validation metric) whose
  trials are nested MLflow runs under the caller's parent run;
- :func:`lightgbm_pruning_callback`: reports LightGBM's validation metric to Optuna;
- :func:`log_and_register`: logs a fitted model as an MLflow pyfunc with signature and input
  example, registers it and points the ``challenger`` alias at it;
- :func:`evaluate_champion`: scores the current champion on the challenger's test rows, so
  promotion compares both on the same data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import model_validator

from customer360.config import StrictModel
from customer360.errors import ConfigError, ModelError
from customer360.models.tabular import sample_rows

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
TAG_TEST_SNAPSHOT = "test_snapshot"
TAG_PRIMARY_METRIC = "primary_metric"
TAG_GREATER_IS_BETTER = "primary_metric_greater_is_better"
TAG_CHAMPION_EVALUATED = "champion_version_evaluated"


# --- config pieces -------------------------------------------------------------------------------


class ParamRange(StrictModel):
    """One hyperparameter's search range: ``low``/``high`` (``log``, ``integer``) or
    ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[float | int | str | bool] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ParamRange:
        if self.choices is None and (self.low is None or self.high is None):
            raise ValueError("give either choices or both low and high")
        if self.choices is None and self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.choices is None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def clip(self, value):
        """``value`` moved into this range (or kept when it is one of the choices)."""
        if self.choices is not None:
            return value if value in self.choices else self.choices[0]
        clipped = min(max(float(value), self.low), self.high)
        return int(round(clipped)) if self.integer else clipped

    def suggest(self, trial, name: str):
        """Draw this parameter for an Optuna ``trial``."""
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


class SnapshotPlan(StrictModel):
    """Which as-of dates to train, validate and test on.

    The latest as-of is ``today - horizon_days`` (so its label window ends at the last
    observed day); earlier ones follow every ``step_days``. The last ``test`` snapshots are
    the test set, the ``validation`` ones before them validate, the rest train. With
    ``step_days < horizon_days`` the snapshots whose label window would overlap a later part
    are purged (see :func:`time_split`), so more, overlapping training snapshots are allowed.
    """

    count: int = 5
    step_days: int = 90
    validation: int = 1
    test: int = 1

    @model_validator(mode="after")
    def _enough(self) -> SnapshotPlan:
        if self.count < self.validation + self.test + 1:
            raise ValueError(
                f"count {self.count} leaves no training snapshot after {self.validation} "
                f"validation + {self.test} test snapshot(s)"
            )
        return self


class TrainingConfig(StrictModel):
    """Settings every LightGBM training job shares (churn and CLV configs extend it)."""

    experiment: str
    model_name: str
    horizon_days: int = 90
    snapshots: SnapshotPlan = SnapshotPlan()
    trials: int = 20
    seed: int = 42
    n_jobs: int = 2
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    pruning_warmup_rounds: int = 20
    search_space: dict[str, ParamRange] = {}
    fixed_params: dict[str, float | int | str | bool] = {}
    # The first trial evaluates these (clipped to the search space), typically LightGBM's
    # defaults, so the tuned model starts from what an untuned one would do.
    first_trial: dict[str, float | int | str | bool] = {}
    # Register a model refit on every labelled row (train + validation + test) with the chosen
    # settings; the reported test figures always come from the model that never saw the test.
    refit_on_all_rows: bool = True


def snapshot_dates(today: dt.date, horizon_days: int, plan: SnapshotPlan) -> list[dt.date]:
    """As-of dates, oldest first: ``today - horizon - k * step`` for ``k = count-1 .. 0``.

    Examples
    --------
    >>> snapshot_dates(dt.date(2026, 6, 30), 90, SnapshotPlan(count=3, step_days=90))
    [datetime.date(2025, 10, 3), datetime.date(2026, 1, 1), datetime.date(2026, 4, 1)]
    """
    last = today - dt.timedelta(days=horizon_days)
    return [last - dt.timedelta(days=k * plan.step_days) for k in range(plan.count - 1, -1, -1)]


@dataclass(frozen=True)
class TimeSplit:
    """Row masks of a time-based split and the as-of dates in each part (``purged``: dates
    used nowhere because their label window would overlap a later part)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    train_dates: tuple[dt.date, ...]
    validation_dates: tuple[dt.date, ...]
    test_dates: tuple[dt.date, ...]
    purged_dates: tuple[dt.date, ...] = ()


def time_split(
    as_of: pd.Series, horizon_days: int, *, validation: int = 1, test: int = 1
) -> TimeSplit:
    """Split stacked snapshots by time, never letting a later part's period into an earlier
    part's labels.

    The latest ``test`` dates test. Validation takes the latest ``validation`` dates whose
    label window ``[T, T + H)`` ends by the first test date; training takes every date whose
    window ends by the first validation date. Dates in between are purged (used nowhere).

    Examples
    --------
    >>> d = pd.Series(pd.to_datetime(["2025-01-01", "2025-04-01", "2025-07-01", "2025-10-01"]))
    >>> s = time_split(d, 90)
    >>> s.train.tolist(), s.validation.tolist(), s.test.tolist()
    ([True, True, False, False], [False, False, True, False], [False, False, False, True])
    >>> monthly = pd.Series(pd.date_range("2025-01-01", periods=6, freq="MS"))
    >>> [str(d) for d in time_split(monthly, 60).purged_dates]
    ['2025-05-01', '2025-03-01', '2025-02-01']
    """
    dates = pd.to_datetime(as_of).dt.date
    distinct = sorted(dates.unique())
    horizon = dt.timedelta(days=horizon_days)
    test_dates = tuple(distinct[-test:]) if test > 0 else ()
    before_test = [d for d in distinct if test_dates and d + horizon <= min(test_dates)]
    val_dates = tuple(before_test[-validation:]) if validation > 0 else ()
    train_dates = tuple(d for d in before_test if val_dates and d + horizon <= min(val_dates))
    if len(test_dates) < test or len(val_dates) < validation or not train_dates:
        raise ModelError(
            f"Cannot split the as-of snapshots {[str(d) for d in distinct]} by time with a "
            f"{horizon_days}-day horizon: need {test} test date(s), {validation} validation "
            "date(s) whose label window ends by the first test date, and training dates whose "
            "window ends by the first validation date. Add earlier snapshots in the config."
        )
    used = set(train_dates) | set(val_dates) | set(test_dates)
    purged = tuple(d for d in reversed(distinct) if d not in used)
    if purged:
        log.info("time split: purged snapshots %s (label windows overlap a later part)", purged)
    return TimeSplit(
        train=dates.isin(train_dates).to_numpy(),
        validation=dates.isin(val_dates).to_numpy(),
        test=dates.isin(test_dates).to_numpy(),
        train_dates=train_dates,
        validation_dates=val_dates,
        test_dates=test_dates,
        purged_dates=purged,
    )


def random_split(
    y: np.ndarray, *, validation: float, test: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified random train/validation/test masks for a single-snapshot table (BYO)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test_idx = train_test_split(idx, test_size=test, stratify=y, random_state=seed)
    train_idx, val_idx = train_test_split(
        rest, test_size=validation / (1 - test), stratify=y[rest], random_state=seed
    )
    masks = []
    for chosen in (train_idx, val_idx, test_idx):
        mask = np.zeros(len(y), dtype=bool)
        mask[chosen] = True
        masks.append(mask)
    return masks[0], masks[1], masks[2]


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Order-independent short hash of a frame's rows (identifies the test data)."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    total = int(np.sum(row_hashes, dtype=np.uint64))
    return hashlib.sha256(f"{total}:{len(frame)}".encode()).hexdigest()[:16]


# --- Optuna + MLflow -----------------------------------------------------------------------------


def lightgbm_pruning_callback(trial, *, warmup: int = 20, every: int = 5) -> Callable:
    """A LightGBM callback reporting the first validation metric to ``trial`` and pruning.

    Reports every ``every`` rounds after ``warmup`` rounds; raises ``optuna.TrialPruned``
    when the pruner says so.
    """
    import optuna

    def _callback(env) -> None:
        step = env.iteration + 1
        if step < warmup or step % every:
            return
        _, _, value, _ = env.evaluation_result_list[0][:4]
        trial.report(float(value), step)
        trial.set_user_attr("last_reported", float(value))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {step} with validation metric {value:.5g}")

    return _callback


@dataclass
class TuningResult:
    """The best parameters of a study and its bookkeeping."""

    best_params: dict
    best_value: float
    n_trials: int
    n_pruned: int
    seconds_per_trial: float
    study: Any = field(repr=False, default=None)


def tune(
    objective: Callable[[dict, list[Callable]], float],
    space: dict[str, ParamRange],
    *,
    trials: int,
    seed: int,
    metric: str,
    direction: str = "minimize",
    fixed_params: dict | None = None,
    first_trial: dict | None = None,
    warmup_rounds: int = 20,
    on_progress: Callable[[int, int], None] | None = None,
) -> TuningResult:
    """Run an Optuna study; each trial is a nested MLflow run of the active parent run.

    Parameters
    ----------
    objective
        ``objective(params, callbacks) -> validation metric``: fits one model with the drawn
        ``params`` (plus ``fixed_params``), passing ``callbacks`` to LightGBM (pruning).
    space
        Parameter name -> :class:`ParamRange`.
    trials
        Number of trials; 0 skips tuning and returns ``fixed_params``.
    metric
        Name of the validation metric, logged on each trial run as ``val_<metric>``.
    first_trial
        Parameters evaluated first (clipped into ``space``), e.g. the library defaults, so
        the search never ends worse on validation than the untuned starting point.
    """
    import time

    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fixed = dict(fixed_params or {})
    if trials <= 0:
        return TuningResult(fixed, float("nan"), 0, 0, 0.0)
    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_rounds),
    )
    if first_trial:
        study.enqueue_trial(
            {k: space[k].clip(v) for k, v in first_trial.items() if k in space},
            skip_if_exists=True,
        )
    started = time.perf_counter()

    def _objective(trial) -> float:
        params = {**fixed, **{k: r.suggest(trial, k) for k, r in space.items()}}
        with mlflow.start_run(run_name=f"trial-{trial.number:03d}", nested=True):
            mlflow.log_params(params)
            try:
                value = objective(params, [lightgbm_pruning_callback(trial, warmup=warmup_rounds)])
            except optuna.TrialPruned:
                mlflow.set_tag("optuna_state", "pruned")
                if "last_reported" in trial.user_attrs:
                    mlflow.log_metric(f"val_{metric}", trial.user_attrs["last_reported"])
                raise
            mlflow.set_tag("optuna_state", "complete")
            mlflow.log_metric(f"val_{metric}", value)
            if not math.isfinite(value):
                raise ModelError(f"Trial {trial.number} gave a non-finite {metric}: {value}")
            return value

    def _progress(study, trial) -> None:
        if on_progress is not None:
            on_progress(len(study.trials), trials)

    study.optimize(_objective, n_trials=trials, callbacks=[_progress], catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ModelError(f"All {trials} Optuna trials were pruned; raise trials or the warmup.")
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return TuningResult(
        best_params={**fixed, **study.best_params},
        best_value=float(study.best_value),
        n_trials=len(study.trials),
        n_pruned=pruned,
        seconds_per_trial=(time.perf_counter() - started) / len(study.trials),
        study=study,
    )


@dataclass
class TrainResult:
    """What a training job produced.

    ``metrics`` are the model's test metrics; ``baselines`` maps baseline name -> its test
    metrics on the same rows (``oracle`` included on synthetic data); ``notes`` are
    plain-language findings worth printing (e.g. a baseline that beat the tuned model).
    """

    run_id: str
    model_uri: str
    version: str | None
    metrics: dict
    baselines: dict
    notes: list[str] = field(default_factory=list)
    test_snapshot: str = ""
    experiment_id: str = ""
    became_champion: bool = False
    rows: dict[str, int] = field(default_factory=dict)
    model_name: str = ""
    # how the registered model scores, for tables and plots (churn: the chosen family)
    model_label: str = "lightgbm_tuned"


def shap_figure(model, X: np.ndarray, names: Sequence[str], seed: int, rows: int = 2000):
    """SHAP summary plot of ``model`` on at most ``rows`` sampled rows of ``X`` (TreeSHAP on
    every test row of a big snapshot would cost more than the plot can show)."""
    from customer360.models.tabular import plot_shap_summary

    sample = X[sample_rows(len(X), rows, seed)]
    return plot_shap_summary(model.contributions(sample), sample, names)


def log_figures(figures: dict[str, Any]) -> None:
    """Log matplotlib figures as ``plots/<name>.png`` artifacts of the active run."""
    import mlflow

    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}.png")


def log_metric_table(prefix: str, metrics: dict[str, float]) -> None:
    """Log ``{name: value}`` as ``<prefix>_<name>`` metrics (non-finite values skipped)."""
    import mlflow

    mlflow.log_metrics(
        {f"{prefix}_{k}": float(v) for k, v in metrics.items() if np.isfinite(float(v))}
    )


def log_and_register(
    model,
    example: pd.DataFrame,
    *,
    model_name: str,
    register: bool,
    description: str | None = None,
    version_tags: dict[str, object] | None = None,
    signature: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, Any]] | None = None,
) -> tuple[str, str | None]:
    """Log ``model`` (a fitted BoostedTabularModel) as a pyfunc with signature and input
    example; register it as ``model_name`` with alias ``challenger`` when ``register``, with
    ``description`` and ``version_tags`` on the new version.

    A model with a probabilistic stack (``stack_``) computes its ``prob__`` inputs itself: the
    signature and example hold only the feature columns.

    ``signature(example, output) -> (example, ModelSignature)`` replaces the inferred
    signature (and may retype the example), e.g. NBO's optional offer columns.

    Returns the model URI and the registered version (``None`` when not registered).
    """
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    from customer360.models.prob_stack import is_prob_column
    from customer360.models.tabular import BoostedModelPyfunc

    if getattr(model, "stack_", None) is not None:
        example = example[[c for c in example.columns if not is_prob_column(c)]]
    with warnings.catch_warnings():
        # int64 features are never null (build_features fills them); the hint is noise here
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        if signature is None:
            signature_ = infer_signature(example, model.predict_frame(example))
        else:
            example, signature_ = signature(example, model.predict_frame(example))
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    # MLflow warns about pickling any python_model object; ours holds no state (the model is
    # the booster.txt + meta.json artifact), so the warning would only alarm users.
    pyfunc_log.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            model.save(tmp)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=BoostedModelPyfunc(),
                artifacts={"model_dir": tmp},
                signature=signature_,
                input_example=example,
                pip_requirements=[
                    f"lightgbm=={lightgbm.__version__}",
                    f"mlflow=={mlflow.__version__}",
                    f"pandas=={pd.__version__}",
                    f"numpy=={np.__version__}",
                    "customer360",
                ],
                registered_model_name=model_name if register else None,
            )
    finally:
        pyfunc_log.setLevel(level)
    version = None
    if register:
        version = str(info.registered_model_version)
        describe_version(model_name, version, description, version_tags or {})
        set_registration_aliases(model_name, version)
    return info.model_uri, version


def describe_version(
    model_name: str, version: str, description: str | None, tags: dict[str, object]
) -> None:
    """Set the description and tags of a registered model version (what it predicts, on
    which feature set, from how many rows), so the registry says what a version is."""
    import mlflow

    client = mlflow.MlflowClient()
    if description:
        client.update_model_version(model_name, version, description=description)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))


LABEL_DEFINITIONS = {
    "label__churn__": "1 = a buyer before the as-of date with no purchase in the {h} days "
    "after the as-of date (or whose contract ends in them); 0 = bought again",
    "label__margin__": "margin of the purchases in the {h} days after the as-of date",
    "label__purchases__": "purchases in the {h} days after the as-of date",
    "label__offer_accepted__": "1 = an offer made in the {h} days after the as-of date was "
    "accepted",
}


def label_definition(label: str, horizon_days: int | None) -> str:
    """Plain definition of a warehouse label (``label__churn__90d``); a user's own label
    column is described by its name."""
    for prefix, text in LABEL_DEFINITIONS.items():
        if label.startswith(prefix):
            return text.format(h=horizon_days)
    return f"the column {label!r} of the user's table"


def version_description(
    model_name: str, tags: dict[str, object], rows: dict[str, int], stack: Any
) -> tuple[str, dict[str, object]]:
    """Description and tags of a registered version from the run's tags and row counts."""
    label = str(tags.get("label", ""))
    horizon = tags.get("horizon_days")
    definition = tags.get("label_definition") or (
        label_definition(label, horizon) if label else "see the training run"
    )
    version_tags: dict[str, object] = {
        "label": label,
        "label_definition": definition,
        "horizon_days": horizon,
        "feature_set_version": tags.get("feature_set_version"),
        "source": tags.get("source"),
        **rows,
    }
    scope = f", horizon {horizon} days" if horizon is not None else ""
    if tags.get("feature_set_version"):
        scope += f", feature set {tags['feature_set_version']}"
    else:
        scope += f", trained on {tags.get('table') or tags.get('source') or 'a table'}"
    text = (
        f"{model_name}: predicts {label or 'its label'} ({definition}){scope}. Registered "
        f"model fit on {rows.get('rows_registered_model', 0):,} labelled rows; test figures "
        f"from a model fit on {rows.get('rows_fit_evaluated_model', 0):,}."
    )
    if stack is not None:
        version_tags["probabilistic_inputs_fitted_as_of"] = stack.fitted_as_of
        text += (
            " The prob__ inputs are computed inside the model by BG/NBD + Gamma-Gamma fitted "
            f"on the purchases before {stack.fitted_as_of}: pass plain feature rows."
        )
    return text, {k: v for k, v in version_tags.items() if v is not None and v != ""}


def set_registration_aliases(model_name: str, version: str) -> bool:
    """Point ``@challenger`` at a newly registered ``version``; when ``model_name`` has no
    ``@champion`` yet (its first version), point ``@champion`` at it too, so
    ``predict --model NAME`` works right after the first ``train``.

    Returns True when the version also became ``@champion``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    log.info("registered %s version %s as @%s", model_name, version, CHALLENGER)
    try:
        client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        log.info("%s had no @%s: version %s is now @%s", model_name, CHAMPION, version, CHAMPION)
        return True
    return False


def evaluate_champion(
    model_name: str,
    X_test: pd.DataFrame,
    score: Callable[[pd.DataFrame], dict[str, float]],
) -> tuple[str, dict[str, float]] | None:
    """Score the current ``champion`` of ``model_name`` on the challenger's test rows.

    ``score(predictions_frame) -> metrics``. Returns ``(version, metrics)``, or ``None`` when
    there is no champion or it cannot read these rows (different input columns).
    """
    return evaluate_champion_with(model_name, lambda champion: score(champion.predict(X_test)))


def evaluate_champion_with(
    model_name: str, evaluate: Callable[[Any], dict[str, float]]
) -> tuple[str, dict[str, float]] | None:
    """``evaluate(champion_pyfunc) -> metrics`` for the current ``champion`` of
    ``model_name`` (the NBO model's metrics need more than predictions on a frame).

    Returns ``(version, metrics)``, or ``None`` when there is no champion or it cannot be
    evaluated on the challenger's test data (logged).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    try:
        champion = mlflow.pyfunc.load_model(f"models:/{model_name}@{CHAMPION}")
        metrics = evaluate(champion)
    except (MlflowException, ModelError, KeyError, ValueError) as exc:
        log.warning(
            "champion %s v%s cannot score this test data: %s", model_name, version.version, exc
        )
        return None
    return str(version.version), metrics


def mlflow_ui_command() -> str:
    """The command that opens the MLflow UI on the current store."""
    from customer360.training.tracking import tracking_uri

    return f".venv/bin/mlflow ui --backend-store-uri {tracking_uri()}"


# --- warehouse snapshots -------------------------------------------------------------------------


def warehouse_today(con) -> dt.date:
    """The warehouse's first day without data (``warehouse_meta.today`` or the day after the
    last transaction), as the feature pipeline defines it."""
    from customer360.features.assembler import data_end

    end = data_end(con)
    if end is None:
        raise ModelError("The warehouse has no transactions; generate or ingest data first.")
    return end


def load_snapshots(
    con, as_of_dates: Sequence[dt.date], horizon_days: int, *, with_probabilistic: bool
) -> tuple[pd.DataFrame, list[str], Any]:
    """Features + labels of every as-of date, stacked, optionally with the BG/NBD +
    Gamma-Gamma scores of the same as-of date (``prob__*`` columns) joined on.

    The scores of each date come from a
    :class:`~customer360.models.prob_stack.ProbabilisticStack` fitted on the purchases before
    that date and applied to the date's feature rows: the same computation the registered
    model runs on a feature frame. Returns the frame (``as_of`` as ``datetime64``), notes and
    the stack of the latest date that could be fitted (``None`` without one), which the
    registered model carries. When the probabilistic models cannot be fitted on one snapshot
    (e.g. too few repeat buyers early in the history), that snapshot's ``prob__*`` columns stay
    missing (LightGBM handles missing values) and a note says so; when they fail on every
    snapshot the model trains without them (noted).
    """
    from customer360.features import build_training_set

    data = build_training_set(con, list(as_of_dates), horizon_days)
    data["as_of"] = pd.to_datetime(data["as_of"])
    notes: list[str] = []
    if not with_probabilistic:
        return data, notes, None
    from customer360.models.clv import purchases_column
    from customer360.training.probabilistic import warehouse_stack

    columns = ["prob__p_alive", purchases_column(horizon_days), "prob__expected_spend",
               "prob__clv"]
    parts, stack = [], None
    for d in as_of_dates:
        try:
            stack = warehouse_stack(con, d)
        except ModelError as exc:
            notes.append(
                f"BG/NBD + Gamma-Gamma failed on the {d} snapshot; its prob__ "
                f"features are missing: {exc}"
            )
            log.warning(notes[-1])
            continue
        rows = data["as_of"] == pd.Timestamp(d)
        parts.append(stack.transform(data[rows], columns))
    if not parts:
        notes.append("No prob__ features: BG/NBD + Gamma-Gamma failed on every snapshot.")
        log.warning(notes[-1])
        return data, notes, None
    return data.join(pd.concat(parts)), notes, stack


@dataclass
class WarehouseSplit:
    """Labelled snapshots of the warehouse split by time, with what every job logs about them."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    label: str
    features: list[str]
    schema: Any  # customer360.models.tabular.TableSchema of the training rows
    notes: list[str]
    test_identity: str
    tags: dict[str, object]
    stack: Any = None  # the ProbabilisticStack the registered model computes prob__ with


def warehouse_split(
    con, config: TrainingConfig, label: str, *, with_probabilistic: bool
) -> WarehouseSplit:
    """Stacked snapshots (:func:`load_snapshots`) with a ``label`` value, split by time.

    Rows without a label are left out and counted in a note; the test identity (test dates,
    horizon, rows, a fingerprint of the labelled test rows) and the run tags (feature-set
    version, dates and rows of each part) are the ones :func:`run_training_job` records.
    """
    from customer360.features.registry import FEATURE_SET_VERSION
    from customer360.models.tabular import infer_schema

    horizon = config.horizon_days
    dates = snapshot_dates(warehouse_today(con), horizon, config.snapshots)
    data, notes, stack = load_snapshots(
        con, dates, horizon, with_probabilistic=with_probabilistic
    )
    if label not in data.columns:
        raise ModelError(f"build_training_set returned no {label} column; check horizon_days.")
    missing = int(data[label].isna().sum())
    if missing:
        notes.append(f"{missing} row(s) without a {label} were left out.")
    data = data[data[label].notna()].reset_index(drop=True)
    split = time_split(
        data["as_of"], horizon, validation=config.snapshots.validation, test=config.snapshots.test
    )
    features = model_feature_columns(data)
    train, val, test = data[split.train], data[split.validation], data[split.test]
    identity = (
        f"as_of={_joined(split.test_dates)};H={horizon};rows={len(test)}"
        f";hash={data_fingerprint(test[['customer_id', 'as_of', label]])}"
    )
    tags: dict[str, object] = {
        "source": "warehouse",
        "label": label,
        "feature_set_version": FEATURE_SET_VERSION,
        "horizon_days": horizon,
        "as_of_train": _joined(split.train_dates),
        "as_of_validation": _joined(split.validation_dates),
        "as_of_test": _joined(split.test_dates),
        "rows_train": len(train),
        "rows_validation": len(val),
        "rows_test": len(test),
    }
    return WarehouseSplit(
        train=train, validation=val, test=test, label=label, features=features,
        schema=infer_schema(train[features]), notes=notes, test_identity=identity, tags=tags,
        stack=stack,
    )


def _joined(dates: Sequence[dt.date]) -> str:
    return ",".join(map(str, dates))


def model_feature_columns(frame: pd.DataFrame) -> list[str]:
    """Registry features present in ``frame`` (registry order) followed by ``prob__*``."""
    from customer360.features.registry import feature_names

    names = [c for c in feature_names() if c in frame.columns]
    return names + [c for c in frame.columns if str(c).startswith("prob__")]


def feature_descriptions(columns: Sequence[str]) -> dict[str, str]:
    """Plain descriptions from the feature registry (and for the ``prob__`` stack)."""
    from customer360.features.registry import describe
    from customer360.features.registry import get as get_feature

    prob = {
        "prob__p_alive": "probability the customer is still active",
        "prob__expected_spend": "expected spend per purchase",
        "prob__clv": "probabilistic lifetime value",
    }
    out = {}
    for c in columns:
        if c.startswith("prob__expected_purchases"):
            out[c] = "expected purchases in the horizon"
        elif c in prob:
            out[c] = prob[c]
        else:
            try:
                get_feature(c)
            except Exception:  # noqa: BLE001 - unknown names fall back to the column name
                continue
            out[c] = describe(c)
    return out


# --- one training job ----------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What a model-specific evaluation hands back to :func:`run_training_job`."""

    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    figures: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    extra_metrics: dict[str, float] = field(default_factory=dict)


def run_training_job(
    *,
    config: TrainingConfig,
    model_name: str,
    trials: int,
    register: bool,
    fit: Callable[..., Any],
    tuning_metric: str,
    evaluate: Callable[[Any], Evaluation],
    champion_input: pd.DataFrame | None = None,
    champion_score: Callable[[pd.DataFrame], dict[str, float]] | None = None,
    primary_metric: str,
    example: pd.DataFrame,
    tags: dict[str, object],
    test_identity: str,
    notes: Sequence[str] = (),
    on_progress: Callable[[int, int], None] | None = None,
    refit_data: tuple[Any, ...] | None = None,
    stack: Any = None,
    champion_evaluate: Callable[[Any], dict[str, float]] | None = None,
    signature: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, Any]] | None = None,
) -> TrainResult:
    """One MLflow parent run: tags + resolved config, Optuna trials as nested runs, the refit
    best model, its evaluation against baselines (metrics, plots), the current champion scored
    on the same test rows, and the logged / registered pyfunc.

    Parameters
    ----------
    fit
        ``fit(params, callbacks=(), final=False) -> model`` with ``model.best_score_`` the
        validation ``tuning_metric`` (lower is better); ``final=True`` for the refit.
    evaluate
        Test-set evaluation of the refit model.
    champion_input, champion_score
        The test rows' model input, and how to score the champion pyfunc's predictions on them.
    champion_evaluate
        Instead of those two: ``champion_evaluate(champion_pyfunc) -> metrics`` when scoring
        the champion needs more than its predictions on a frame (NBO's policy value).
    primary_metric
        Test metric promotion compares (greater is better).
    refit_data
        ``(X_all, y_all)`` or ``(X_all, y_all, weights)``: every labelled row (training,
        validation and test), with row weights when the model fits weighted. After the
        honest test evaluation (by the model fitted without the test rows), the registered
        model is refit on these rows with the chosen settings, its boosting rounds rescaled
        from the early-stopped count by ``len(X_all) / training rows``. ``None`` registers
        the evaluated model itself. The run's ``rows_*`` tags say which rows each part used.
    stack
        The :class:`~customer360.models.prob_stack.ProbabilisticStack` the ``prob__`` inputs
        were made with: the logged model carries it and computes them from plain features.
    signature
        ``signature(example, output) -> (example, ModelSignature)`` when the inferred MLflow
        signature does not fit (NBO: optional offer columns); see :func:`log_and_register`.

    The run's ``config.json`` is what ran: the resolved config plus a ``ran`` block (trials
    run and pruned, chosen parameters, boosting rounds, rows of each part, the model family
    and calibration the fitted model used).
    """
    import mlflow

    from customer360.training.tracking import run_tags, setup_mlflow

    experiment_id = setup_mlflow(config.experiment)
    with mlflow.start_run(run_name=f"{model_name}-train") as run:
        mlflow.set_tags(run_tags(model_name=model_name, **tags))
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        tuning = tune(
            lambda params, callbacks: fit(params, callbacks).best_score_,
            config.search_space,
            trials=trials,
            seed=config.seed,
            metric=tuning_metric,
            fixed_params=config.fixed_params,
            first_trial=config.first_trial,
            warmup_rounds=config.pruning_warmup_rounds,
            on_progress=on_progress,
        )
        mlflow.log_params({f"best_{k}": v for k, v in tuning.best_params.items()})
        mlflow.log_metrics(
            {
                "n_trials": tuning.n_trials,
                "n_pruned": tuning.n_pruned,
                "seconds_per_trial": tuning.seconds_per_trial,
            }
        )
        model = fit(tuning.best_params, final=True)
        mlflow.log_metric("best_iteration", model.best_iteration_)
        result = evaluate(model)
        log_metric_table("test", result.metrics)
        for name, values in result.baselines.items():
            log_metric_table(f"baseline_{name}", values)
        if result.extra_metrics:
            mlflow.log_metrics(result.extra_metrics)
        if champion_evaluate is not None:
            champion = evaluate_champion_with(model_name, champion_evaluate)
        else:
            champion = evaluate_champion(model_name, champion_input, champion_score)
        if champion is not None:
            mlflow.set_tag(TAG_CHAMPION_EVALUATED, champion[0])
            log_metric_table("champion_test", champion[1])
        mlflow.set_tags(
            {
                TAG_TEST_SNAPSHOT: test_identity,
                TAG_PRIMARY_METRIC: primary_metric,
                TAG_GREATER_IS_BETTER: "true",
            }
        )
        log_figures(result.figures)
        all_notes = [*notes, *result.notes]
        rows = {"rows_fit_evaluated_model": int(model.train_rows_)}
        evaluated_rounds = int(model.best_iteration_)
        rounds = evaluated_rounds
        if refit_data is not None:
            X_all, y_all, *weights = refit_data
            rounds = max(1, round(model.best_iteration_ * len(y_all) / model.train_rows_))
            model = model.refit_all(
                X_all, y_all, rounds=rounds, **({"sample_weight": weights[0]} if weights else {})
            )
            rows["rows_registered_model"] = len(y_all)
            mlflow.log_metric("refit_rounds", rounds)
            all_notes.append(
                f"Test metrics come from a model fitted on {rows['rows_fit_evaluated_model']:,} "
                f"training rows that never saw the test rows; the logged model was then refit "
                f"on all {len(y_all):,} labelled rows with the chosen settings "
                f"({evaluated_rounds} -> {rounds} boosting rounds)."
            )
        else:
            rows["rows_registered_model"] = rows["rows_fit_evaluated_model"]
        mlflow.set_tags(rows)
        if stack is not None:
            model.stack_ = stack
            mlflow.log_params({f"prob_{k}": v for k, v in stack.params().items()})
        if all_notes:
            mlflow.log_text("\n".join(all_notes), "notes.txt")
        mlflow.log_dict(
            what_ran(config, tuning, model, rows, evaluated_rounds, rounds), "config.json"
        )
        description, version_tags = version_description(model_name, tags, rows, stack)
        model_uri, version = log_and_register(
            model, example, model_name=model_name, register=register,
            description=description, version_tags=version_tags, signature=signature,
        )
        became_champion = False
        if version is not None:
            became_champion = (
                str(mlflow.MlflowClient().get_model_version_by_alias(model_name, CHAMPION).version)
                == version
            )
            mlflow.set_tag("became_champion", str(became_champion).lower())
    return TrainResult(
        run_id=run.info.run_id,
        model_uri=model_uri,
        version=version,
        metrics=result.metrics,
        baselines=result.baselines,
        notes=all_notes,
        test_snapshot=test_identity,
        experiment_id=experiment_id,
        became_champion=became_champion,
        rows=rows,
        model_name=model_name,
        model_label=model_label(model),
    )


def model_label(model: Any) -> str:
    """``lightgbm_tuned``, or for a churn model whose family choice picked the linear model or
    a blend, ``linear_tuned`` / ``blend_tuned`` (the row name in result tables and plots)."""
    family = getattr(model, "family", None)
    name = family() if callable(family) else "lightgbm"
    return f"{name}_tuned"


def what_ran(
    config: TrainingConfig,
    tuning: TuningResult,
    model: Any,
    rows: dict[str, int],
    evaluated_rounds: int,
    registered_rounds: int,
) -> dict[str, Any]:
    """The logged ``config.json``: the resolved ``config`` and, under ``ran``, what the job
    actually did (trials run and pruned, the chosen parameters, boosting rounds, rows of each
    part, the fitted model's family and calibration; extra settings a job records on the
    model's ``selection_`` dict, such as CV folds)."""
    family = getattr(model, "family", None)
    calibrator = getattr(model, "calibrator_", None)
    ran: dict[str, Any] = {
        "trials_requested": config.trials,
        "trials_run": tuning.n_trials,
        "trials_pruned": tuning.n_pruned,
        "chosen_params": dict(tuning.best_params),
        "model_params": getattr(model, "params", None),
        "evaluated_model_rounds": int(evaluated_rounds),
        "registered_model_rounds": int(registered_rounds),
        "rows": dict(rows),
        "model_class": type(model).__name__,
        "family": family() if callable(family) else None,
        "calibration": getattr(calibrator, "method", None),
    }
    ran.update(getattr(model, "selection_", None) or {})
    return {**config.model_dump(mode="json"), "ran": ran}


# --- scoring a table with a registered model -----------------------------------------------------


def model_uri_from_ref(ref: str) -> tuple[str, str, str]:
    """``NAME[@ALIAS]`` (default alias ``champion``) or ``NAME/VERSION`` -> (uri, name,
    alias-or-version)."""
    if ref.startswith("models:/"):
        ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return f"models:/{name}@{alias}", name, alias
    if "/" in ref:
        name, version = ref.split("/", 1)
        return f"models:/{name}/{version}", name, version
    return f"models:/{ref}@{CHAMPION}", ref, CHAMPION


def load_registered_model(ref: str):
    """Load ``NAME[@ALIAS]`` as an MLflow pyfunc, with clear errors for an unknown model or
    alias."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from customer360.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    uri, name, which = model_uri_from_ref(ref)
    client = mlflow.MlflowClient()
    if "/" not in uri.removeprefix("models:/"):
        from customer360.training.promote import alias_version

        alias_version(client, name, which)  # raises NotFoundError with the known names
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        from customer360.errors import NotFoundError

        raise NotFoundError(
            f"Cannot load model {ref!r} ({uri}): {exc}. Refer to a model as NAME "
            "(= NAME@champion), NAME@ALIAS or NAME/VERSION."
        ) from exc


def check_numeric_cells(table: pd.DataFrame, columns: Sequence[str]) -> None:
    """Refuse a table whose numeric ``columns`` hold text that is not a number (``'abc'``)
    or an infinite value: scoring them as missing would change scores silently.

    Blanks and NA-like tokens stay missing. Rows are 1-based data rows (header not counted),
    as in the ``row`` column of :func:`predict_table`'s output.

    Examples
    --------
    >>> check_numeric_cells(pd.DataFrame({"x": ["1", "", "2.5"]}), ["x"])
    """
    from customer360.models.tabular import parse_numbers

    problems = []
    for name in columns:
        if name not in table.columns:
            continue  # the model's own check names every missing column at once
        floats, bad = parse_numbers(table[name])
        bad = bad.to_numpy(dtype=bool) | np.isinf(floats.to_numpy(dtype=np.float64))
        if bad.any():
            rows = np.flatnonzero(bad) + 1
            shown = ", ".join(repr(str(v)) for v in table[name].to_numpy()[rows[:3] - 1])
            problems.append(
                f"column {name!r}: {len(rows)} row(s) ({', '.join(map(str, rows[:10]))}"
                f"{' ...' if len(rows) > 10 else ''}) hold {shown}"
            )
    if problems:
        raise ConfigError(
            "Numeric cells that are not finite numbers: " + "; ".join(problems)
            + ". Fix or blank those cells (a blank is scored as missing)."
        )


def predict_table(
    ref: str, table: pd.DataFrame, *, id_col: str | None = None, loaded=None
) -> pd.DataFrame:
    """Score a (possibly messy) table with a registered model.

    Returns the id column (``id_col``, else the training run's id column or ``customer_id``
    when present, else the 1-based ``row`` number) followed by the model's outputs (churn:
    ``churn_probability``, ``reason_1..3``; CLV: ``clv_ml``). Text numbers, blanks and stray
    spaces are read the way training read them. ``loaded`` is ``ref`` already loaded by
    :func:`load_registered_model` (a caller that looked at it first does not load it twice).
    """
    import mlflow

    loaded = loaded if loaded is not None else load_registered_model(ref)
    if id_col is not None and id_col not in table.columns:
        raise ConfigError(
            f"Id column {id_col!r} is not in the table; its columns are "
            f"{', '.join(map(str, table.columns[:30]))}."
        )
    if id_col is None:
        run_id = loaded.metadata.run_id
        trained_id = (
            mlflow.MlflowClient().get_run(run_id).data.tags.get("id_col") if run_id else None
        )
        for candidate in (trained_id, "customer_id"):
            if candidate and candidate in table.columns:
                id_col = candidate
                break
    # The pyfunc's own predict enforces the signature's clean types; a user's file may hold
    # numbers as text, so score through the wrapped model, which types columns itself.
    model = loaded.unwrap_python_model().model
    check_numeric_cells(table, [c for c in model.schema_.columns if c not in
                                model.schema_.categories])
    scored = model.predict_frame(table.reset_index(drop=True))
    ids = (
        table[id_col].reset_index(drop=True).rename(id_col)
        if id_col
        else pd.Series(np.arange(1, len(table) + 1), name="row")
    )
    return pd.concat([ids, scored], axis=1)


def oracle_values(
    con, test: pd.DataFrame, horizon_days: int, *, kind: str
) -> np.ndarray | None:
    """The generator's truth for the test rows, aligned with them (synthetic warehouses only).

    ``kind`` is ``"churn"`` (true churn probability) or ``"margin"`` (expected margin within
    the horizon). Returns ``None`` when the warehouse has no ground truth; raises when some
    test customer has none.
    """
    from customer360.data.warehouse import table_exists

    if not table_exists(con, "truth_customers"):
        return None
    from customer360.data.oracle import oracle_churn_probability, oracle_expected_margin

    oracle, column, what = {
        "churn": (oracle_churn_probability, "p_churn", "churn probability"),
        "margin": (oracle_expected_margin, "expected_margin", "expected margin"),
    }[kind]
    keys = test[["customer_id", "as_of"]].reset_index(drop=True)
    truth = pd.concat(
        [
            oracle(con, pd.Timestamp(as_of).date(), horizon_days).assign(as_of=as_of)
            for as_of in keys["as_of"].unique()
        ]
    )
    values = keys.merge(truth, on=["customer_id", "as_of"], how="left")[column]
    values = values.to_numpy(dtype=float)
    if np.isnan(values).any():
        raise ModelError(
            f"The oracle has no {what} for {int(np.isnan(values).sum())} test customer(s); "
            "the warehouse's truth tables do not match its raw tables."
        )
    return values
