"""The integrated customer profile, shared by the BentoML service and batch scoring.

One function, :meth:`ProfileScorer.score`, turns a frame of feature rows into a flat frame of
scores (classifications, value segment and its service policy, churn probability and reason
codes, ML and probabilistic CLV, P(alive), top offers with their eligibility reasons). The
service answers with :func:`profile_from_row` applied to that frame; batch scoring writes the
frame itself. Both therefore give the same numbers for the same customer and as-of date.

Classifications are relative to the population (quantiles, ranks, revenue shares), so they are
computed once for the whole snapshot (:class:`Population`) and looked up per customer, never
recomputed on a single row.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from customer360.errors import Customer360Error, ModelError, NotFoundError, WarehouseError
from customer360.serving.schemas import ServingConfig

log = logging.getLogger(__name__)

SNAPSHOT_TABLE = "feature_snapshots"
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")
PROB_PREFIX = "prob__"


class PayloadError(Customer360Error):
    """A feature payload lacks a column the models need or holds a value of the wrong type."""


# Key of the log hash: set it to correlate log lines across restarts and workers; otherwise a
# random key per process (a bare hash of an id is reversed by hashing every candidate id).
LOG_HASH_KEY_ENV = "CUSTOMER360_LOG_HASH_KEY"
_LOG_HASH_KEY = os.environ.get(LOG_HASH_KEY_ENV, "").encode() or secrets.token_bytes(32)


def hash_id(customer_id: object) -> str:
    """A short keyed hash (HMAC-SHA256) of a customer id, for logs (ids are never logged in
    clear). The key is ``$CUSTOMER360_LOG_HASH_KEY``, else random per process: without the
    key, no loop over candidate ids recovers an id from its hash.

    Examples
    --------
    >>> hash_id("C0000001") == hash_id("C0000001") != hash_id("C0000002")
    True
    """
    return hmac.new(_LOG_HASH_KEY, str(customer_id).encode(), hashlib.sha256).hexdigest()[:12]


# --- champion models --------------------------------------------------------------------------


_SIGNATURE_DTYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32"}


@dataclass
class Champion:
    """One loaded registered model: the pyfunc, its version and its input columns/types."""

    name: str
    version: str
    model: Any
    input_columns: list[str]
    input_types: dict[str, str]

    def model_input(self, features: pd.DataFrame) -> pd.DataFrame:
        """The signature's columns of ``features``, cast to the signature's types (MLflow
        refuses e.g. int64 for a double column: it could lose precision)."""
        frame = features[self.input_columns]
        casts = {
            c: _SIGNATURE_DTYPES[t]
            for c, t in self.input_types.items()
            if t in _SIGNATURE_DTYPES and frame[c].dtype != _SIGNATURE_DTYPES[t]
        }
        return frame.astype(casts) if casts else frame

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Predict on the signature's columns of ``features``; always returns a DataFrame."""
        out = self.model.predict(self.model_input(features))
        if isinstance(out, pd.DataFrame):
            return out.reset_index(drop=True)
        if isinstance(out, pd.Series):
            return out.to_frame().reset_index(drop=True)
        return pd.DataFrame(np.asarray(out).reshape(len(features), -1))


def champion_versions(names: Iterable[str], alias: str = "champion") -> dict[str, str]:
    """The version at ``alias`` of every registered model in ``names``.

    Raises
    ------
    ModelError
        Naming every model that is not registered or has no version at ``alias``, the store
        looked in, and the commands that fix it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from customer360.training.tracking import tracking_uri

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        try:
            versions[name] = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            missing.append(name)
    if missing:
        fixes = "; ".join(
            f"`customer360 train {n}` then `customer360 promote {n}`"
            if n != "nbo"
            else "`customer360 nbo train` then `customer360 promote nbo`"
            for n in missing
        )
        raise ModelError(
            f"Cannot start: no registered model version with alias '{alias}' for "
            f"{', '.join(missing)} in the MLflow store {uri}. Train and promote first ({fixes}), "
            "or point MLFLOW_TRACKING_URI at the store that holds them."
        )
    return versions


def load_champions(names: Iterable[str], alias: str = "champion") -> dict[str, Champion]:
    """Load ``models:/<name>@<alias>`` for every name from the MLflow registry.

    Raises
    ------
    ModelError
        When any model lacks a version at ``alias`` (see :func:`champion_versions`) or has no
        named input signature.
    """
    import mlflow

    versions = champion_versions(names, alias)
    loaded = {}
    for name, version in versions.items():
        model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
        schema = model.metadata.get_input_schema()
        if schema is None or not schema.has_input_names():
            raise ModelError(
                f"Registered model {name} version {version} has no named input signature; "
                "log it with a signature (mlflow infer_signature) and register it again."
            )
        cols = list(schema.input_names())
        kinds = schema.input_types()
        types = {c: str(getattr(t, "name", t)) for c, t in zip(cols, kinds, strict=True)}
        loaded[name] = Champion(name, version, model, cols, types)
        log.info("loaded model %s version %s (%d inputs)", name, version, len(cols))
    return loaded


# --- features ---------------------------------------------------------------------------------


def latest_as_of(con: duckdb.DuckDBPyConnection) -> dt.date:
    """The most recent ``as_of`` in ``feature_snapshots``."""
    from customer360.data.warehouse import table_exists

    if not table_exists(con, SNAPSHOT_TABLE):
        raise WarehouseError(
            f"The warehouse has no {SNAPSHOT_TABLE} table. Run `customer360 features build "
            "--as-of DATE` first."
        )
    row = con.execute(f"SELECT max(as_of) FROM {SNAPSHOT_TABLE}").fetchone()
    if row is None or row[0] is None:
        raise WarehouseError(
            f"Table {SNAPSHOT_TABLE} is empty. Run `customer360 features build --as-of DATE`."
        )
    return _as_date(row[0])


def _as_date(value: object) -> dt.date:
    return pd.Timestamp(value).date()


def load_snapshot(con: duckdb.DuckDBPyConnection, as_of: dt.date | None = None) -> pd.DataFrame:
    """All feature rows of one snapshot (default: the latest), sorted by ``customer_id``."""
    as_of = as_of or latest_as_of(con)
    frame = con.execute(
        f"SELECT * FROM {SNAPSHOT_TABLE} WHERE CAST(as_of AS DATE) = ? ORDER BY customer_id",
        [as_of],
    ).df()
    if frame.empty:
        raise WarehouseError(
            f"{SNAPSHOT_TABLE} has no rows for as_of {as_of}. Run `customer360 features build "
            f"--as-of {as_of}` first."
        )
    return frame


# --- the online store behind /churn by id -----------------------------------------------------


class ChurnLookup:
    """The churn model's inputs for every customer of the served snapshot, typed once.

    At start-up the churn champion's input columns of the whole snapshot go through the
    model's own typing (:meth:`~customer360.models.tabular.BoostedTabularModel.matrix`) into
    one C-contiguous float64 matrix, ``n_customers x n_inputs`` (8 bytes a cell). A request
    by id is then a slice of that matrix, LightGBM's ``Booster.predict`` on it, the calibrator
    and the reason codes: no pandas and no MLflow schema enforcement per request. The answers
    equal the registered pyfunc's (``ChurnClassifier.predict_frame``) on the same rows: same
    matrix, same trees, same calibrator, same reason rules.

    LightGBM runs on one thread here: a few rows cost less than handing them to OpenMP, whose
    second thread waits for a busy core on a shared machine.

    Parameters
    ----------
    model
        The churn champion's estimator (a :class:`~customer360.models.churn.ChurnClassifier`).
    matrix
        Its input matrix, one row per served customer (row ``i`` = snapshot row ``i``).

    Examples
    --------
    >>> lookup = ChurnLookup.build(champions["churn"], snapshot)  # doctest: +SKIP
    >>> probability, reasons = lookup.predict(np.array([0, 5]))  # doctest: +SKIP
    """

    threads = 1

    def __init__(self, model: Any, matrix: np.ndarray, attribution: Any = None) -> None:
        self.model = model
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        self.attribution = attribution  # issue 17: the profile's reasons (None: exact)

    @classmethod
    def build(
        cls, champion: Champion, features: pd.DataFrame, attribution: Any = None
    ) -> ChurnLookup | None:
        """The lookup over the rows of ``features`` (the served snapshot, in row order), or
        None when the champion is not a customer360 churn pyfunc (the service then scores
        through the generic pyfunc path)."""
        from customer360.models.churn import ChurnClassifier

        unwrap = getattr(champion.model, "unwrap_python_model", None)
        try:
            model = getattr(unwrap(), "model", None) if unwrap else None
        except Exception:  # a flavour without a Python model inside
            model = None
        if not isinstance(model, ChurnClassifier):
            log.info("churn champion is not a ChurnClassifier: /churn uses the pyfunc path")
            return None
        return cls(model, model.matrix(champion.model_input(features)), attribution)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the matrix."""
        return self.matrix.nbytes

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated churn probability, shape (k,), and ``reason_1..3``, shape (k, 3) (None
        where the model has fewer inputs than reasons), of the snapshot rows ``rows``."""
        m = self.matrix[np.asarray(rows, dtype=np.intp)]  # a copy, C-contiguous
        return churn_scores(self.model, m, self.attribution, num_threads=self.threads)


class DirectModels:
    """The three champions' own estimators, called on typed matrices without MLflow's pyfunc
    layer (issue 17): the profile (batch scoring and ``/customer360``) spends its time in the
    trees, not in schema enforcement and frame copies.

    Answers equal the pyfunc's for churn probability, ML CLV and P(accept): same model input
    (:meth:`Champion.model_input`), same matrix, same trees and calibrators. Churn reasons come
    from :class:`~customer360.serving.reasons.PathAttribution` (``reasons: path``, the default
    of ``configs/serving.yaml``; within :data:`~customer360.serving.reasons.REASON_TOLERANCE`
    of exact TreeSHAP) or from exact TreeSHAP (``reasons: exact``: the pyfunc's reasons).

    ``build`` returns None when a champion is not one of our estimators (the profile then
    stays on the pyfunc path).
    """

    def __init__(self, churn: Any, clv: Any, nbo: Any, reasons: str, champions) -> None:
        self.churn_model, self.clv_model, self.nbo_model = churn, clv, nbo
        self.champions = champions
        self.reasons = reasons
        self.attribution = None
        if reasons == "path":
            from customer360.serving.reasons import PathAttribution

            self.attribution = PathAttribution(churn.booster_)
        self.shared = _SharedInputs.build(
            {"churn": (churn, champions["churn"]), "clv": (clv, champions["clv"])}
        )

    @classmethod
    def build(cls, champions: Mapping[str, Champion], reasons: str = "path") -> DirectModels | None:
        from customer360.models.churn import ChurnClassifier
        from customer360.models.clv_ml import CLVRegressor
        from customer360.models.nbo import PropensityModel

        models = {n: _unwrapped(champions[n]) for n in ("churn", "clv", "nbo") if n in champions}
        kinds = {"churn": ChurnClassifier, "clv": CLVRegressor, "nbo": PropensityModel}
        if any(not isinstance(models.get(n), k) for n, k in kinds.items()):
            log.info("a champion is not a customer360 estimator: the profile uses the pyfunc path")
            return None
        return cls(models["churn"], models["clv"], models["nbo"], reasons, dict(champions))

    def churn(self, features: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` and ``reason_1..3`` per row."""
        m = self.matrix("churn", features)
        threads = lightgbm_threads(len(m))
        probability, reasons = churn_scores(
            self.churn_model, m, self.attribution, num_threads=threads
        )
        frame = pd.DataFrame({"churn_probability": probability})
        for j, col in enumerate(REASON_COLUMNS):
            frame[col] = reasons[:, j]
        return frame

    def clv(self, features: pd.DataFrame) -> pd.DataFrame:
        """``clv_ml`` per row."""
        m = self.matrix("clv", features)
        clv = self.clv_model.predict(m, num_threads=lightgbm_threads(len(m)))
        return pd.DataFrame({"clv_ml": np.asarray(clv, dtype=float)})

    def matrix(self, name: str, features: pd.DataFrame) -> np.ndarray:
        """Model ``name``'s input matrix of ``features``: from the typed block churn and CLV
        share (built once per frame, see :class:`_SharedInputs`) when their typing agrees,
        else the model's own :meth:`matrix`."""
        model = self.churn_model if name == "churn" else self.clv_model
        if self.shared is None:
            return model.matrix(self.champions[name].model_input(features))
        return self.shared.matrix(name, features)


class _SharedInputs:
    """One typed float block of the input columns churn and CLV share (issue 17): the
    category lookups and the numeric copy run once per frame instead of once per model; each
    model's matrix is its columns of the block plus its own ``prob__`` inputs (its own
    probabilistic stack). Equal to ``model.matrix(champion.model_input(features))``: the same
    casts, the same :func:`~customer360.models.tabular.to_matrix` column by column.

    The last frame's block is kept (by identity), so the second model reuses it.
    """

    def __init__(self, columns, categories, casts, models) -> None:
        from customer360.models.tabular import TableSchema

        self.schema = TableSchema(tuple(columns), dict(categories))
        self.casts = casts
        self.models = models
        from customer360.models.prob_stack import is_prob_column

        position = {c: j for j, c in enumerate(columns)}
        self.layout = {}
        for name, (model, _) in models.items():
            cols = model.schema_.columns
            stacked = getattr(model, "stack_", None) is not None
            own = [stacked and is_prob_column(c) for c in cols]
            plain = [j for j, c in enumerate(cols) if not own[j]]
            prob = [j for j, c in enumerate(cols) if own[j]]
            self.layout[name] = (plain, [position[cols[j]] for j in plain], prob,
                                 [cols[j] for j in prob])
        self._last: tuple[Any, pd.DataFrame, np.ndarray] | None = None

    @classmethod
    def build(cls, models: Mapping[str, tuple[Any, Champion]]) -> _SharedInputs | None:
        """The shared block, or None when the models disagree on a shared column's type or
        levels (each model then types its own matrix)."""
        from customer360.models.prob_stack import is_prob_column

        columns: dict[str, None] = {}
        categories: dict[str, tuple[str, ...]] = {}
        casts: dict[str, str] = {}
        for model, champion in models.values():
            for col in model.schema_.columns:
                if is_prob_column(col) and getattr(model, "stack_", None) is not None:
                    continue
                if col in model.schema_.categories:
                    if categories.setdefault(col, model.schema_.categories[col]) != (
                        model.schema_.categories[col]
                    ):
                        return None
                elif col in categories:
                    return None
                columns[col] = None
            for col, typ in champion.input_types.items():
                dtype = _SIGNATURE_DTYPES.get(typ)
                if dtype is not None and casts.setdefault(col, dtype) != dtype:
                    return None
        return cls(list(columns), categories, casts, dict(models))

    def _inputs(self, features: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        from customer360.models.tabular import to_matrix

        if self._last is not None and self._last[0] is features:
            return self._last[1], self._last[2]
        wanted = list(dict.fromkeys(
            c for _, champion in self.models.values() for c in champion.input_columns
        ))
        frame = features[wanted]
        casts = {c: t for c, t in self.casts.items() if c in frame and frame[c].dtype != t}
        frame = frame.astype(casts) if casts else frame
        block = to_matrix(frame, self.schema)
        self._last = (features, frame, block)
        return frame, block

    def matrix(self, name: str, features: pd.DataFrame) -> np.ndarray:
        """Model ``name``'s contiguous float64 input matrix of ``features``."""
        from customer360.models.tabular import TableSchema, to_matrix

        model, _ = self.models[name]
        frame, block = self._inputs(features)
        plain, source, prob, prob_cols = self.layout[name]
        out = np.empty((len(frame), len(model.schema_.columns)), dtype=np.float64)
        out[:, plain] = block[:, source]
        if prob:
            scores = model.stack_.transform(frame, prob_cols)
            out[:, prob] = to_matrix(scores, TableSchema(tuple(prob_cols), {}))
        return out


def churn_scores(
    model: Any, m: np.ndarray, attribution: Any = None, *, num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated churn probability (n,) and ``reason_1..3`` (n, 3; None where the model has
    fewer inputs) of the churn classifier ``model`` on its matrix ``m``: the reasons by
    ``attribution`` (a :class:`~customer360.serving.reasons.PathAttribution`) or, when None,
    by the classifier's own exact TreeSHAP (``score_matrix``)."""
    if attribution is None:
        return model.score_matrix(m, num_threads=num_threads)
    from customer360.models.tabular import reason_phrases

    probability = model.calibrator_(model.predict_raw(m, num_threads=num_threads))
    contrib = attribution.contributions(m, num_threads=num_threads)
    k = len(REASON_COLUMNS)
    phrases = reason_phrases(m, contrib, model.schema_, model.descriptions_, model.medians_, k=k)
    reasons = np.full((len(m), k), None, dtype=object)
    reasons[:, : phrases.shape[1]] = phrases
    return np.asarray(probability, dtype=float), reasons


def _unwrapped(champion: Champion) -> Any:
    """The estimator inside a customer360 pyfunc, or None."""
    unwrap = getattr(champion.model, "unwrap_python_model", None)
    try:
        return getattr(unwrap(), "model", None) if unwrap else None
    except Exception:  # a flavour without a Python model inside
        return None


# --- the population context -------------------------------------------------------------------


@dataclass
class Population:
    """Everything population-level for one snapshot, computed once: classifications (relative
    to everyone), probabilistic CLV scores, service policies, and the NBO context (offer
    catalogue, offer history, bandit state)."""

    as_of: dt.date
    classifications: pd.DataFrame
    prob: pd.DataFrame
    policies: dict[str, dict[str, Any]]
    offers: pd.DataFrame
    history: pd.DataFrame
    bandit: Any
    segments_config: Any
    nbo_config: Any
    classify_base: pd.DataFrame | None = None

    @classmethod
    def build(
        cls,
        con: duckdb.DuckDBPyConnection,
        features: pd.DataFrame,
        as_of: dt.date,
        config: ServingConfig,
        *,
        prob_horizons: Iterable[int] = (),
    ) -> Population:
        """Classify every customer of ``features`` (at least the columns classification
        reads), compute the probabilistic scores (expected purchases over the serving horizon
        and every ``prob_horizons`` the models were stacked on) and load the NBO context."""
        from customer360.data.readers import offer_history, offer_table
        from customer360.models.bandit import BanditState
        from customer360.models.nbo import load_nbo_config, offer_catalogue
        from customer360.models.segments import load_segments_config

        segments_config = load_segments_config()
        nbo_config = load_nbo_config()
        prob = probabilistic_frame(con, as_of, [config.prob_horizon_days, *prob_horizons])
        # issue 15: a B2B customer's sales cycle from its won opportunities, as in segments
        from customer360.training.segments import observed_sales_cycles

        cycles = observed_sales_cycles(con, as_of, segments_config.sales_cycle)
        classes = _classify(features, segments_config, prob, cycles)
        offers = offer_catalogue(offer_table(con, nbo_config.catalogue.source_table), nbo_config)
        return cls(
            as_of=as_of,
            classifications=classes,
            prob=prob.set_index("customer_id"),
            policies=_policies(classes, segments_config),
            offers=offers,
            history=offer_history(con, offers),
            bandit=BanditState.load(con) if _has_feedback(con) else BanditState.empty(),
            segments_config=segments_config,
            nbo_config=nbo_config,
            classify_base=features,
        )

    def history_of(self, customer_ids: np.ndarray) -> pd.DataFrame:
        """The rows of ``history`` of these customers (what eligibility reads for them),
        found through a per-customer index instead of a scan of the whole history on every
        request and chunk (issue 17). The index is rebuilt when feedback replaces
        ``history``."""
        cached = getattr(self, "_history_index", None)
        if cached is None or cached[0] is not self.history:
            codes, uniques = pd.factorize(self.history["customer_id"].astype(object))
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
            cached = (self.history, pd.Index(uniques), order, bounds)
            self._history_index = cached
        _, index, order, bounds = cached
        found = index.get_indexer(pd.Index(customer_ids).astype(object))
        found = found[found >= 0]
        if not len(found):
            return self.history.iloc[:0]
        starts, stops = bounds[found], bounds[found + 1]
        lengths = stops - starts
        offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        rows = order[np.arange(lengths.sum()) + offsets]
        return self.history.iloc[np.sort(rows)]

    def classify_payload(self, features: pd.DataFrame) -> pd.DataFrame:
        """Classify payload rows relative to this population (rows appended, then classified)."""
        base = self.classify_base
        ids = [f"__payload_{i}" for i in range(len(features))]
        rows = features.assign(customer_id=ids)
        merged = pd.concat([base, rows], ignore_index=True) if base is not None else rows
        classes = _classify(merged, self.segments_config, None)
        return classes.loc[ids]


def probabilistic_frame(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, horizons: Iterable[int]
) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma scores (``customer_id`` + ``prob__*``) with expected purchases
    over each of ``horizons`` days."""
    from customer360.training.probabilistic import probabilistic_scores

    horizons = sorted(set(horizons))
    prob = probabilistic_scores(con, as_of, horizon_days=horizons[0])
    for h in horizons[1:]:
        more = probabilistic_scores(con, as_of, horizon_days=h)
        col = f"{PROB_PREFIX}expected_purchases__{h}d"
        prob[col] = more.set_index("customer_id")[col].reindex(prob["customer_id"]).to_numpy()
    return prob


def conform(features: pd.DataFrame, champions: Iterable[Champion]) -> pd.DataFrame:
    """Cast the models' input columns to their signature types once (e.g. a whole snapshot at
    start-up), so that per-request predictions need no casting."""
    wanted: dict[str, str] = {}
    for champ in champions:
        for col, typ in champ.input_types.items():
            dtype = _SIGNATURE_DTYPES.get(typ)
            if dtype and col in features.columns and features[col].dtype != dtype:
                wanted.setdefault(col, dtype)
    return features.astype(wanted) if wanted else features


def prob_horizons(champions: Mapping[str, Champion]) -> list[int]:
    """Horizons (days) of the ``prob__expected_purchases__{H}d`` columns the models read."""
    found = set()
    for champ in champions.values():
        for col in champ.input_columns:
            match = re.fullmatch(rf"{PROB_PREFIX}expected_purchases__(\d+)d", col)
            if match:
                found.add(int(match.group(1)))
    return sorted(found)


def _has_feedback(con: duckdb.DuckDBPyConnection) -> bool:
    from customer360.data.warehouse import table_exists
    from customer360.models.bandit import FEEDBACK_TABLE

    return table_exists(con, FEEDBACK_TABLE)


def _classify(
    features: pd.DataFrame, segments_config: Any, prob: pd.DataFrame | None,
    cycles: pd.DataFrame | None = None,
) -> pd.DataFrame:
    from customer360.models.segments import classify

    classes = classify(features, segments_config, clv=prob, cycles=cycles)
    classes = classes.drop(columns=["as_of"], errors="ignore").set_index("customer_id")
    return classes


def _policies(classes: pd.DataFrame, segments_config: Any) -> dict[str, dict[str, Any]]:
    from customer360.models.segments import service_policy

    return {
        str(seg): service_policy(str(seg), segments_config).model_dump()
        for seg in segments_config.service_policies
    }


# --- payloads ---------------------------------------------------------------------------------


_NUMERIC = {"double", "float", "long", "integer"}


def required_payload_columns(
    champions: Mapping[str, Champion], population: Population
) -> dict[str, str]:
    """Feature name -> type of every column a full feature payload must hold: the models'
    inputs (less the offer attributes NBO adds itself), and what classification and
    eligibility read."""
    from customer360.models.nbo import OFFER_COLUMNS
    from customer360.models.segments import required_features

    required: dict[str, str] = {}
    for champ in champions.values():
        required.update(
            {c: t for c, t in champ.input_types.items() if c not in OFFER_COLUMNS}
        )
    extra = [
        *required_features(population.segments_config),
        *population.nbo_config.eligibility.open_issue_features,
    ]
    base = population.classify_base
    for col in extra:
        if col not in required and col != "customer_id":
            is_num = base is not None and col in base and pd.api.types.is_numeric_dtype(base[col])
            required[col] = "double" if is_num else "string"
    return required


# Integers travel in a float64 frame before the models' int64 cast: beyond 2**53 a float no
# longer holds every integer, so larger values are refused rather than silently rounded.
MAX_PAYLOAD_INT = 2**53
_INT_TYPES = {"long", "integer"}


def payload_defaults(required: Mapping[str, str]) -> dict[str, Any]:
    """Feature name -> the value a ``null`` in a payload stands for: the feature registry's
    default (what the snapshot holds for a customer with no rows in the family, so a payload
    null scores as batch scoring scores that customer). Features whose registry default is
    ``None`` keep the null (the models read it as missing); columns outside the registry
    (e.g. ``prob__*``) are absent here."""
    from customer360.features.registry import FEATURES

    specs = {f.name: f for f in FEATURES}
    return {c: specs[c].default for c in required if c in specs and specs[c].default is not None}


def payload_vocabulary(
    required: Mapping[str, str], base: pd.DataFrame | None
) -> dict[str, frozenset[str]]:
    """Category feature -> the values a payload may hold: the levels of the served snapshot
    plus the registry default. Anything else is refused (the models would read an unseen level
    as missing, a silent guess)."""
    from customer360.features.registry import FEATURES

    out: dict[str, frozenset[str]] = {}
    for f in FEATURES:
        if f.dtype != "category" or f.name not in required:
            continue
        levels = set() if base is None or f.name not in base else set(
            base[f.name].dropna().astype(str).unique()
        )
        out[f.name] = frozenset({*levels, str(f.default)} if f.default is not None else levels)
    return out


def _field_list(columns: list[str], shown: int = 5) -> str:
    """``features.a, features.b and 3 more``: the first few field names of an error."""
    head = ", ".join(f"features.{c}" for c in columns[:shown])
    return head + (f" and {len(columns) - shown} more" if len(columns) > shown else "")


def check_payload(
    payload: Mapping[str, Any],
    required: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
    vocabulary: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, Any]:
    """One feature payload, checked field by field; returns it with nulls replaced by
    ``defaults`` (see :func:`payload_defaults`).

    Raises
    ------
    PayloadError
        Naming the field (``features.<name>``): missing, unknown, of the wrong type, a
        non-integral or out-of-range integer, a null where the feature has no meaning for
        null, or a category value the service does not know.
    """
    defaults = defaults or {}
    vocabulary = vocabulary or {}
    missing = [c for c in required if c not in payload]
    if missing:
        raise PayloadError(
            f"missing field(s) {_field_list(missing)}; a feature payload needs every "
            "column listed by POST /schema_info."
        )
    extra = [c for c in payload if c not in required]
    if extra:
        raise PayloadError(
            f"unknown field(s) {_field_list(extra)}; a feature payload holds exactly the columns "
            "listed by POST /schema_info."
        )
    out = dict(payload)
    for col, typ in required.items():
        value = payload[col]
        if value is None:
            if col in defaults:
                out[col] = defaults[col]
            elif typ in _INT_TYPES or typ == "boolean":
                raise PayloadError(
                    f"field features.{col} is null and has no default; send "
                    f"{'an integer' if typ in _INT_TYPES else 'true or false'}."
                )
            continue
        _check_value(col, typ, value, vocabulary.get(col))
    return out


def _check_value(col: str, typ: str, value: Any, levels: frozenset[str] | None) -> None:
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    if levels is not None:  # a category feature, whatever its signature type
        if not isinstance(value, str) or value not in levels:
            shown = ", ".join(repr(v) for v in sorted(levels)[:12])
            more = ", ..." if len(levels) > 12 else ""
            raise PayloadError(
                f"field features.{col} has the unknown value {value!r}; known values: "
                f"{shown}{more} (null means the registry default)."
            )
    elif typ in _NUMERIC:
        try:
            number = float(value) if is_num else None
        except OverflowError:  # an int beyond float64
            number = math.inf
        if number is None or not math.isfinite(number):
            raise PayloadError(f"field features.{col} must be a finite number, got {value!r}.")
        if typ in _INT_TYPES and not (
            number.is_integer() and abs(number) <= MAX_PAYLOAD_INT
        ):
            raise PayloadError(
                f"field features.{col} must be an integer between -2**53 and 2**53, "
                f"got {value!r}."
            )
    elif typ == "boolean" and not isinstance(value, bool):
        raise PayloadError(f"field features.{col} must be true or false, got {value!r}.")
    elif typ == "string" and not isinstance(value, str):
        raise PayloadError(f"field features.{col} must be a string, got {value!r}.")


def payload_frame(
    payloads: list[Mapping[str, Any]],
    required: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
    vocabulary: Mapping[str, frozenset[str]] | None = None,
) -> pd.DataFrame:
    """Feature payloads -> a frame with every required column, checked by
    :func:`check_payload` (nulls replaced by their registry default).

    Raises
    ------
    PayloadError
        Naming the payload item and the field (``features.<name>``) that is wrong.
    """
    rows = []
    for i, payload in enumerate(payloads):
        try:
            rows.append(check_payload(payload, required, defaults, vocabulary))
        except PayloadError as exc:
            raise PayloadError(f"item {i}: {exc}") from None
    return typed_payload_frame(rows, required)


def typed_payload_frame(rows: list[Mapping[str, Any]], required: Mapping[str, str]) -> pd.DataFrame:
    """Checked payloads (:func:`check_payload`) -> a frame, numeric columns as float64."""
    frame = pd.DataFrame.from_records(list(rows), columns=list(required))
    numeric = {
        col: pd.to_numeric(frame[col]).astype("float64")
        for col, typ in required.items()
        if typ in _NUMERIC
    }
    return frame.assign(**numeric) if numeric else frame


# --- scoring ----------------------------------------------------------------------------------


class ProfileScorer:
    """Scores feature rows into the flat profile frame (see module docstring).

    Parameters
    ----------
    champions
        Loaded champion models by name (``churn``, ``clv``, ``nbo``).
    population
        The snapshot's population context.
    config
        Serving config (top-k offers, horizon).

    When the NBO bandit explores, each customer gets one Thompson decision per decision period
    (``bandit.decision_period`` of ``configs/nbo.yaml``): the service's endpoints and batch
    scoring rank a customer's offers alike (see :func:`customer360.models.nbo.recommend`).
    """

    def __init__(
        self,
        champions: Mapping[str, Champion],
        population: Population,
        config: ServingConfig,
    ) -> None:
        self.champions = dict(champions)
        self.population = population
        self.config = config
        self.model_versions = {n: c.version for n, c in self.champions.items()}
        self.required = required_payload_columns(self.champions, population)
        self.defaults = payload_defaults(self.required)
        # The profile's models without the pyfunc layer (issue 17); None: pyfunc path.
        self.direct = DirectModels.build(self.champions, getattr(config, "reasons", "path"))
        # What recommend() reads: ids, the propensity model's inputs, the eligibility features.
        self.nbo_columns = list(
            dict.fromkeys(
                [
                    "customer_id",
                    "as_of",
                    *self.champions["nbo"].input_columns,
                    *population.nbo_config.eligibility.open_issue_features,
                ]
            )
        )

    @functools.cached_property
    def vocabulary(self) -> dict[str, frozenset[str]]:
        """:func:`payload_vocabulary` of the population, built on the first payload (batch
        scoring never needs it)."""
        return payload_vocabulary(self.required, self.population.classify_base)

    def check_payload(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """:func:`check_payload` against this scorer's columns, defaults and vocabulary, plus
        the consistency classification needs (a buyer has a recency).

        Raises
        ------
        PayloadError
            Naming the field that is wrong.
        """
        checked = check_payload(payload, self.required, self.defaults, self.vocabulary)
        recency = self.population.segments_config.rfm.recency_feature
        orders = checked.get("txn__orders__all")
        if recency in checked and checked[recency] is None and orders:
            raise PayloadError(
                f"field features.{recency} is null but features.txn__orders__all is {orders}: "
                "a customer with orders has a recency; send it, or 0 orders."
            )
        return checked

    def conform(self, features: pd.DataFrame) -> pd.DataFrame:
        """:func:`conform` to every champion's signature."""
        return conform(features, self.champions.values())

    def enrich(self, features: pd.DataFrame) -> pd.DataFrame:
        """Join the population's ``prob__*`` scores onto rows looked up by id (the models are
        stacked on them); a no-op when the rows already carry them."""
        prob = self.population.prob
        if all(c in features.columns for c in prob.columns):
            return features
        scores = prob.reindex(features["customer_id"].to_numpy()).reset_index(drop=True)
        rest = features.drop(columns=[c for c in prob.columns if c in features.columns])
        return pd.concat([rest.reset_index(drop=True), scores], axis=1)

    # Each part is vectorised over the rows of ``features`` (enriched, or payloads).
    def churn(self, features: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` and ``reason_1..3`` per row."""
        if self.direct is not None:
            return self.direct.churn(features)
        out = self.champions["churn"].predict(features)
        if "churn_probability" not in out.columns:
            out = out.rename(columns={out.columns[0]: "churn_probability"})
        frame = pd.DataFrame({"churn_probability": out["churn_probability"].astype(float)})
        for col in REASON_COLUMNS:
            frame[col] = out[col].astype(object).to_numpy() if col in out.columns else None
        return frame

    def clv(self, features: pd.DataFrame) -> pd.DataFrame:
        """``clv_ml`` per row."""
        if self.direct is not None:
            return self.direct.clv(features)
        out = self.champions["clv"].predict(features)
        col = "clv_ml" if "clv_ml" in out.columns else out.columns[0]
        return pd.DataFrame({"clv_ml": out[col].astype(float).to_numpy()})

    def prob_for(self, features: pd.DataFrame) -> pd.DataFrame:
        """The ``prob__*`` scores of (enriched or payload) rows; null where a payload lacks
        them."""
        cols = list(self.population.prob.columns)
        out = pd.DataFrame(np.nan, index=range(len(features)), columns=cols)
        for col in cols:
            if col in features:
                out[col] = pd.to_numeric(features[col], errors="coerce").to_numpy()
        return out

    def classifications(self, features: pd.DataFrame, *, payload: bool) -> pd.DataFrame:
        if payload:
            classes = self.population.classify_payload(features)
        else:
            classes = self.population.classifications.reindex(features["customer_id"].to_numpy())
        return classes.reset_index(drop=True)

    def ranking(self, features: pd.DataFrame, scores: pd.DataFrame, *, payload: bool) -> Any:
        """The :class:`~customer360.models.nbo.OfferRanking` of every row's offers, decided
        now (same row order).

        ``scores`` holds ``value_segment``, ``churn_probability`` and ``clv_ml`` per row (the
        segment rules and the optional retention term need them)."""
        from customer360.models.nbo import rank_offers

        pop = self.population
        decision = pop.nbo_config.decision
        keep = [c for c in self.nbo_columns if c in features.columns]
        frame = features[keep].assign(
            value_segment=scores["value_segment"].to_numpy(),
            **{
                decision.churn_column: scores["churn_probability"].to_numpy(),
                decision.clv_column: scores["clv_ml"].to_numpy(),
            },
        )
        if payload:
            frame["customer_id"] = [f"__payload_{i}" for i in range(len(frame))]
        ids_before = frame["customer_id"].to_numpy()
        # The features are as of the snapshot; the decision happens now, so feedback recorded
        # since (held / recently rejected / contact cap) counts, as in NBO's recommend_for.
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        snapshot = pd.to_datetime(frame["as_of"]) if "as_of" in frame else pd.Timestamp(pop.as_of)
        frame["as_of"] = np.maximum(
            pd.Series(snapshot, index=frame.index).to_numpy(dtype="datetime64[us]"),
            np.datetime64(now, "us"),
        )
        use_bandit = pop.nbo_config.bandit.exploration > 0 or pop.bandit.total > 0
        # the estimator itself, or the pyfunc (which casts the pair frame to the signature)
        model = self.direct.nbo_model if self.direct else self.champions["nbo"]
        return rank_offers(
            frame,
            pop.offers,
            model,
            pop.nbo_config,
            None if payload else pop.history_of(ids_before),
            self.config.top_k_offers,
            bandit=pop.bandit if use_bandit else None,
            decided_at=now,
            num_threads=lightgbm_threads(len(frame) * len(pop.offers)),
        )

    def offer_frame(self, ranking: Any, n: int, *, exclusions: bool) -> pd.DataFrame:
        """Top offers of ``ranking`` (over ``n`` rows) as wide columns
        ``offer_<rank>_<field>`` and, when ``exclusions``, a column ``excluded`` listing every
        excluded offer with its reason."""
        offers = self.population.offers
        out = pd.DataFrame(
            offer_columns(top_offers(ranking, n, self.config.top_k_offers), offers)
        )
        if exclusions:
            out["excluded"] = excluded_offers(ranking.codes, offers, n)
        return out

    def parts(
        self, features: pd.DataFrame, *, payload: bool = False
    ) -> tuple[pd.DataFrame, Any]:
        """:meth:`score`'s two halves: :meth:`base` and the :meth:`ranking` of the offers."""
        features = features.reset_index(drop=True)
        if not payload:
            features = self.enrich(features)
        flat = self.base(features, payload=payload)
        return flat, self.ranking(features, flat, payload=payload)

    def score(
        self, features: pd.DataFrame, *, payload: bool = False, exclusions: bool = True
    ) -> pd.DataFrame:
        """The flat profile frame for ``features`` (one row each, same order).

        Columns: ``customer_id``, ``as_of``, ``seg__*`` (classifications), ``value_segment``,
        ``churn_probability``, ``reason_1..3``, ``clv_ml``, ``prob__*``,
        ``offer_<rank>_{id,p_accept,expected_value,score,reason}`` and, with ``exclusions``,
        ``excluded`` (a list per row).
        """
        flat, ranking = self.parts(features, payload=payload)
        offers = self.offer_frame(ranking, len(flat), exclusions=exclusions)
        return pd.concat([flat, offers], axis=1)

    def base(self, features: pd.DataFrame, *, payload: bool = False) -> pd.DataFrame:
        """The profile frame without the offers: what depends only on the snapshot.
        ``features`` are enriched rows (or payloads), index 0..n-1."""
        classes = self.classifications(features, payload=payload)
        return pd.concat(
            [
                id_columns(features),
                classes.add_prefix("seg__"),
                pd.DataFrame({"value_segment": classes["value_segment"].to_numpy()}),
                self.churn(features),
                self.clv(features),
                self.prob_for(features),
            ],
            axis=1,
        )

    # --- feedback -----------------------------------------------------------------------------

    def offer_ids(self) -> set[str]:
        return set(self.population.offers["offer_id"].astype(str))

    def record_feedback(
        self,
        db_path: str,
        customer_id: str,
        offer_id: str,
        accepted: bool,
        segment: str,
        event_id: str | None = None,
    ) -> tuple[str, bool]:
        """Append the feedback to the warehouse's durable log, then to the in-memory bandit
        state and offer history, so the next recommendation already learns from it (and the
        held / recently-rejected rules see it).

        Returns ``(event_id, replayed)``: an ``event_id`` already in the log is a client's
        retry, stored once and counted once (``replayed`` True); the same id naming another
        customer, offer or answer raises :class:`FeedbackConflict`.
        """
        from customer360.models.bandit import connect_with_retry, find_feedback, record_feedback

        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        con = connect_with_retry(db_path, timeout_s=10.0)
        try:
            stored = find_feedback(con, event_id) if event_id else None
            if stored is not None:
                given = {"customer_id": customer_id, "offer_id": offer_id, "accepted": accepted}
                if stored != given:
                    raise FeedbackConflict(
                        f"event_id {event_id!r} was already recorded for another event "
                        f"(offer {stored['offer_id']!r}, accepted={stored['accepted']}); send "
                        "a new event_id for a new event."
                    )
                return event_id, True
            fid = record_feedback(
                con, customer_id, offer_id, accepted, now.to_pydatetime(), segment,
                feedback_id=event_id,
            )
        finally:
            con.close()
        pop = self.population
        row = pd.DataFrame(
            {"segment": [segment], "offer_id": [offer_id], "accepted": [bool(accepted)]}
        )
        pop.bandit = pop.bandit.updated(row)
        channel = pop.offers.loc[pop.offers["offer_id"] == offer_id, "channel"]
        event = pd.DataFrame(
            {
                "customer_id": [customer_id],
                "offer_id": [offer_id],
                "ts": [now],
                "channel": [channel.iloc[0] if len(channel) else None],
                "accepted": [bool(accepted)],
            }
        )
        pop.history = pd.concat([pop.history, event.astype(pop.history.dtypes)], ignore_index=True)
        return fid, False

    def never_eligible(self, customer_id: str, offer_id: str) -> str | None:
        """Why ``offer_id`` cannot have been offered to ``customer_id`` (its segment rule
        excludes the customer's value segment), or None. Feedback on such a pair is refused:
        the service never recommends it, so it is a client's mistake, not a customer's answer.
        """
        offers = self.population.offers
        row = offers.loc[offers["offer_id"].astype(str) == offer_id, "eligible_segments"]
        if not len(row):
            return None
        segment = str(self.population.classifications.at[customer_id, "value_segment"])
        allowed = str(row.iloc[0] if pd.notna(row.iloc[0]) else "").split("|")
        if segment in allowed:
            return None
        return (
            f"offer {offer_id!r} is open to value segments {'|'.join(allowed) or '(none)'} "
            f"only, and customer {customer_id!r} is in segment {segment!r}: it was never "
            "eligible, so it cannot have been offered (check the offer id)."
        )

    def channels(self) -> set[str]:
        return set(self.population.offers["channel"].dropna().astype(str))


class ProfileTable:
    """Every served customer's flat profile row, computed at start-up (issue 17): what
    ``/customer360`` and ``/next_best_offer`` by id answer, looked up instead of scored.

    :meth:`build` runs :meth:`ProfileScorer.parts` over the served snapshot in batch scoring's
    chunks and keeps, as numpy arrays, the profile without offers (:meth:`ProfileScorer.base`;
    text columns as small integer codes into their distinct values), the top offers'
    numbers (:func:`top_offers`) and every customer x offer exclusion code. The offers depend
    on the request only through time (the decision period of the bandit's draw, the held /
    rejected / contact-cap windows) and through feedback recorded since, so a stored row stays
    the answer while

    - the decision period (``bandit.decision_period``) is the one of the build (only when the
      bandit takes part in the ranking),
    - no history event of the customer has crossed a window edge since the build (each row
      keeps the first instant one does: ``valid_until``),
    - no feedback was recorded for the customer, nor (the bandit's posterior moved) for its
      value segment, since the build (:meth:`touched`).

    :meth:`fresh` says which rows hold; :meth:`rows` answers them, spelled out by the same
    helpers as the full path (:func:`offer_columns`, :func:`excluded_offers`); the service
    scores the others in full (:meth:`ProfileScorer.score`). An answer is therefore always
    the one the full path would give.

    Examples
    --------
    >>> table = ProfileTable.build(scorer, snapshot)  # doctest: +SKIP
    >>> ok = table.fresh(np.array([0, 5]))  # doctest: +SKIP
    >>> answers = table.rows(np.array([0, 5])[ok])  # doctest: +SKIP
    """

    def __init__(
        self,
        columns: dict[str, tuple[np.ndarray, np.ndarray | None]],
        top: dict[str, np.ndarray],
        excluded: np.ndarray,
        offers: pd.DataFrame,
        segments: tuple[np.ndarray, np.ndarray],
        valid_until: np.ndarray,
        period: str | None,
        period_name: str,
        use_bandit: bool,
    ) -> None:
        self.columns = columns
        self.top = top
        self.excluded = excluded
        self.offers = offers
        self.segment_codes, self.segment_levels = segments
        self.valid_until = valid_until
        self.period = period  # None: the period rolled over during the build
        self.period_name = period_name
        self.use_bandit = use_bandit
        self.stale = np.zeros(len(valid_until), dtype=bool)
        self.stale_segments = np.zeros(len(self.segment_levels), dtype=bool)
        self.all_stale = False

    @classmethod
    def build(
        cls, scorer: ProfileScorer, snapshot: pd.DataFrame, chunk_size: int | None = None
    ) -> ProfileTable | None:
        """The table over the rows of the (enriched, conformed) served snapshot; None when the
        champions are not our estimators or there is no row (the service then scores each
        request in full)."""
        from customer360.models.bandit import decision_period_key

        if scorer.direct is None or not len(snapshot):
            return None
        pop = scorer.population
        period_name = pop.nbo_config.bandit.decision_period
        size = chunk_size or scorer.config.chunk_size
        k = scorer.config.top_k_offers
        use_bandit = pop.nbo_config.bandit.exploration > 0 or pop.bandit.total > 0
        started = pd.Timestamp.now(tz="UTC").tz_localize(None)
        bases, tops, codes = [], [], []
        for start in range(0, len(snapshot), size):
            base, ranking = scorer.parts(snapshot.iloc[start : start + size])
            bases.append(base)
            tops.append(top_offers(ranking, len(base), k))
            codes.append(ranking.codes.reshape(len(base), len(pop.offers)))
        finished = pd.Timestamp.now(tz="UTC").tz_localize(None)
        base = pd.concat(bases, ignore_index=True)
        period = decision_period_key(started, period_name)
        if decision_period_key(finished, period_name) != period:
            period = None
        segment_codes, segment_levels = pd.factorize(
            base["value_segment"].to_numpy(dtype=object), use_na_sentinel=False
        )
        return cls(
            {c: _compact(base[c]) for c in base.columns},
            {name: np.concatenate([t[name] for t in tops]) for name in tops[0]},
            np.concatenate(codes),
            pop.offers,
            (segment_codes.astype(np.int32), np.asarray(segment_levels, dtype=object)),
            _valid_until(pop, snapshot["customer_id"].astype(str), started),
            period,
            period_name,
            use_bandit,
        )

    def __len__(self) -> int:
        return len(self.valid_until)

    @property
    def nbytes(self) -> int:
        """Memory of the table: its arrays plus the distinct text values (each counted, even
        where the snapshot holds the same string, as the customer ids)."""
        import sys

        arrays = [self.excluded, self.valid_until, self.stale, self.segment_codes,
                  *self.top.values(), *(a for c in self.columns.values() for a in c
                                        if a is not None)]
        texts = [v for _, uniques in self.columns.values() if uniques is not None
                 for v in uniques]
        return int(sum(a.nbytes for a in arrays) + sum(sys.getsizeof(v) for v in texts))

    @property
    def segment(self) -> np.ndarray:
        """Each row's value segment."""
        return self.segment_levels[self.segment_codes]

    def touched(self, row: int) -> None:
        """Feedback is being recorded for snapshot row ``row``: its history changes, and so
        does the bandit's posterior of its value segment's offers."""
        self.stale[row] = True
        if self.use_bandit:
            self.stale_segments[self.segment_codes[row]] = True
        else:  # the bandit starts ranking everyone (its posterior replaces P(accept))
            self.all_stale = True

    def fresh(self, rows: np.ndarray, now: pd.Timestamp | None = None) -> np.ndarray:
        """Which of the snapshot rows ``rows`` the table still answers at ``now`` (default:
        now, UTC; see the class)."""
        from customer360.models.bandit import decision_period_key

        rows = np.asarray(rows, dtype=np.intp)
        now = pd.Timestamp.now(tz="UTC").tz_localize(None) if now is None else now
        if self.all_stale or (
            self.use_bandit and decision_period_key(now, self.period_name) != self.period
        ):
            return np.zeros(len(rows), dtype=bool)
        return (
            (self.valid_until[rows] > np.int64(now.value))
            & ~self.stale[rows]
            & ~self.stale_segments[self.segment_codes[rows]]
        )

    def rows(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """The flat profile rows (as :meth:`ProfileScorer.score`'s ``to_dict('records')``,
        ``excluded`` included) of the snapshot rows ``rows``."""
        rows = np.asarray(rows, dtype=np.intp)
        values = {
            name: (codes[rows] if uniques is None else uniques[codes[rows]]).tolist()
            for name, (codes, uniques) in self.columns.items()
        }
        offers = offer_columns({n: a[rows] for n, a in self.top.items()}, self.offers)
        values.update((name, col.tolist()) for name, col in offers.items())
        values["excluded"] = excluded_offers(self.excluded[rows], self.offers, len(rows))
        return [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]


def _compact(column: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """A column as (values, None) when numpy holds it as numbers, else (the smallest integer
    codes, the distinct values as ``to_dict`` gives them, with a trailing None that code -1,
    a missing value, picks)."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "biuf":
        return np.ascontiguousarray(column.to_numpy()), None
    codes, uniques = pd.factorize(column.astype(object).to_numpy(), use_na_sentinel=True)
    dtype = np.int8 if len(uniques) < 2**7 else np.int16 if len(uniques) < 2**15 else np.int32
    return codes.astype(dtype), np.append(np.asarray(uniques, dtype=object), None)


def _valid_until(population: Population, ids: pd.Series, started: pd.Timestamp) -> np.ndarray:
    """Per snapshot row, the first instant (epoch ns) at or after ``started`` when one of the
    customer's history events enters the decision (``ts``) or leaves a window of the
    eligibility rules (``ts`` + rejected / contact window); int64 max when none does."""
    rules = population.nbo_config.eligibility
    until = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
    history = population.history
    if not len(history):
        return until
    row = pd.Index(ids).get_indexer(history["customer_id"].astype(str))
    ts = pd.to_datetime(history["ts"]).to_numpy(dtype="datetime64[ns]").view(np.int64)
    day = np.int64(86_400 * 10**9)
    edges = np.concatenate(
        [ts, ts + rules.rejected_window_days * day, ts + rules.contact_window_days * day]
    )
    rows = np.tile(row, 3)
    keep = (rows >= 0) & (edges >= np.int64(started.value))
    np.minimum.at(until, rows[keep], edges[keep])
    return until


class FeedbackConflict(Customer360Error):
    """An event id already recorded for a different event."""


def id_columns(features: pd.DataFrame) -> pd.DataFrame:
    """``customer_id`` and ``as_of`` (a date) of each row; null for payload rows."""
    n = len(features)
    ids = features["customer_id"].to_numpy() if "customer_id" in features else [None] * n
    if "as_of" in features:
        as_of = pd.to_datetime(features["as_of"]).dt.date.to_numpy()
    else:
        as_of = [None] * n
    return pd.DataFrame({"customer_id": ids, "as_of": as_of})




def top_offers(ranking: Any, n: int, k: int) -> dict[str, np.ndarray]:
    """The top ``k`` offers of an :class:`~customer360.models.nbo.OfferRanking` over ``n``
    customer rows as ``(n, k)`` arrays, column ``j`` rank ``j + 1``: ``offer`` (catalogue
    position, -1 where a customer has fewer eligible offers), ``p``, ``retention``, ``ev`` and
    ``score`` (NaN there)."""
    keep = ranking.keep
    at = (ranking.cust_idx[keep], ranking.rank - 1)
    offer = np.full((n, k), -1, dtype=np.int32)
    offer[at] = ranking.offer_idx[keep]
    out = {"offer": offer}
    for name in ("p", "retention", "ev", "score"):
        values = getattr(ranking, name)
        col = np.full((n, k), np.nan, dtype=values.dtype)
        col[at] = values[keep]
        out[name] = col
    return out


def offer_columns(top: Mapping[str, np.ndarray], offers: pd.DataFrame) -> dict[str, np.ndarray]:
    """:func:`top_offers` arrays as wide columns ``offer_<rank>_<field>`` (null where a
    customer has fewer eligible offers), the reason spelled out by
    :func:`~customer360.models.nbo.recommendation_reasons` as the ranking's own."""
    from customer360.models.nbo import recommendation_reasons

    offer = top["offer"]
    hit = offer >= 0
    ids = np.full(offer.shape, None, dtype=object)
    ids[hit] = offers["offer_id"].astype(object).to_numpy()[offer[hit]]
    reasons = np.full(offer.shape, None, dtype=object)
    margin = offers["margin"].to_numpy(dtype=float)[offer[hit]]
    reasons[hit] = recommendation_reasons(
        top["p"][hit], margin, top["retention"][hit], top["ev"][hit]
    )
    sources = {"id": ids, "p_accept": top["p"], "expected_value": top["ev"],
               "score": top["score"], "reason": reasons}
    return {
        f"offer_{j + 1}_{name}": values[:, j]
        for j in range(offer.shape[1])
        for name, values in sources.items()
    }


def excluded_offers(codes: np.ndarray, offers: pd.DataFrame, n: int) -> list[list[dict[str, str]]]:
    """Excluded offers and their reasons per customer row, in catalogue order, from the
    exclusion ``codes`` of the ``n`` rows x the catalogue (customer-major, as
    :func:`~customer360.models.nbo.exclusion_codes`; service answers only: a few rows)."""
    from customer360.models.nbo import exclusion_text

    n_o = len(offers)
    codes = np.asarray(codes).ravel()
    pos = np.flatnonzero(codes)
    reasons = exclusion_text(codes[pos])
    offer_ids = offers["offer_id"].to_numpy()[pos % n_o]
    out: list[list[dict[str, str]]] = [[] for _ in range(n)]
    for row, offer_id, reason in zip(pos // n_o, offer_ids, reasons, strict=True):
        out[row].append({"offer_id": str(offer_id), "reason": str(reason)})
    return out


def lightgbm_threads(rows: int) -> int:
    """LightGBM threads for a prediction on ``rows`` rows: one for a few rows (handing them to
    OpenMP costs more than it saves), every core for a batch chunk."""
    # Imported here, not at the top: models.tabular imports MLflow, and batch_spark imports
    # this module before it takes its own folder off sys.path under spark-submit, where this
    # file would shadow the standard library's ``profile`` that MLflow's import chain needs.
    from customer360.models.tabular import threads_for

    return threads_for(rows, BATCH_THREAD_ROWS)


BATCH_THREAD_ROWS = 2_000


# --- flat row -> nested profile ---------------------------------------------------------------


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def churn_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "customer_id": row.get("customer_id"),
        "as_of": _clean(row.get("as_of")),
        "churn_probability": float(row["churn_probability"]),
        "reasons": [str(row[c]) for c in REASON_COLUMNS if _clean(row.get(c)) is not None],
    }


def clv_from_row(row: Mapping[str, Any], horizon_days: int) -> dict[str, Any]:
    purchases = f"{PROB_PREFIX}expected_purchases__{horizon_days}d"
    return {
        "customer_id": row.get("customer_id"),
        "as_of": _clean(row.get("as_of")),
        "clv_ml": float(row["clv_ml"]),
        "prob_clv": _clean(row.get("prob__clv")),
        "p_alive": _clean(row.get("prob__p_alive")),
        "expected_purchases": _clean(row.get(purchases)),
        "expected_spend": _clean(row.get("prob__expected_spend")),
        "horizon_days": horizon_days,
    }


def offers_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    offers = []
    rank = 1
    while f"offer_{rank}_id" in row:
        if _clean(row[f"offer_{rank}_id"]) is not None:
            offers.append(
                {
                    "offer_id": row[f"offer_{rank}_id"],
                    "rank": rank,
                    "p_accept": _clean(row[f"offer_{rank}_p_accept"]),
                    "expected_value": _clean(row[f"offer_{rank}_expected_value"]),
                    "score": _clean(row[f"offer_{rank}_score"]),
                    "reasons": [row[f"offer_{rank}_reason"]],
                }
            )
        rank += 1
    excluded = row.get("excluded")
    return {
        "customer_id": row.get("customer_id"),
        "as_of": _clean(row.get("as_of")),
        "offers": offers,
        "excluded": list(excluded) if excluded is not None else [],
    }


def profile_from_row(
    row: Mapping[str, Any],
    policies: Mapping[str, Mapping[str, Any]],
    model_versions: Mapping[str, str],
    horizon_days: int,
    identity: str | None = None,
) -> dict[str, Any]:
    """The nested /customer360 answer from one row of the flat profile frame.

    ``identity`` is the customer's identity block as JSON text
    (:func:`customer360.identity.store.identity_json`; the batch profile's ``identity``
    column), or None."""
    classes = {k.removeprefix("seg__"): _clean(v) for k, v in row.items() if k.startswith("seg__")}
    segment = _clean(row.get("value_segment"))
    offers = offers_from_row(row)
    return {
        "customer_id": row.get("customer_id"),
        "as_of": _clean(row.get("as_of")),
        "classifications": classes,
        "value_segment": segment,
        "service_policy": dict(policies.get(segment, {})) if segment else {},
        "churn": churn_from_row(row),
        "clv": clv_from_row(row, horizon_days),
        "p_alive": _clean(row.get("prob__p_alive")),
        "offers": offers["offers"],
        "excluded": offers["excluded"],
        "model_versions": dict(model_versions),
        "identity": json.loads(identity) if identity else None,
    }


def unknown_customer(customer_id: str, as_of: dt.date) -> NotFoundError:
    """The not-found error for a customer id absent from the snapshot."""
    return NotFoundError(
        f"customer {customer_id!r} is not in the feature snapshot as of {as_of}; check the id, "
        "or rebuild the snapshot (`customer360 features build`) if the customer is new."
    )
