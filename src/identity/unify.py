"""Unify source records from files: standardise, infer roles, match with Splink, cluster, report.

This is the bring-your-own-files path (``customer360 unify``); it needs no warehouse. One file
deduplicates; several link and deduplicate across them (or only link, with ``link_only``).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from customer360.config import StrictModel, load_config
from customer360.errors import IdentityError
from customer360.identity.roles import (
    affordable_blocking,
    blocking_columns,
    build_settings,
    exact_pair_counts,
    forms_column,
    infer_roles,
    person_conflict_sql,
    standardise_frame,
    training_blocks,
)

log = logging.getLogger(__name__)


class IdentityConfig(StrictModel):
    """Thresholds and training budgets of identity resolution (configs/identity.yaml)."""

    match_threshold: float = Field(0.9, gt=0, lt=1)
    review_threshold: float = Field(0.5, gt=0, lt=1)
    default_phone_region: str = "GB"
    u_max_pairs: int = Field(1_000_000, gt=0)
    em_max_iterations: int = Field(25, gt=0)
    deterministic_recall: float = Field(0.7, gt=0, le=1)
    seed: int = 42
    # Generated blocking rules that would compare more pairs a record than this are dropped
    # (roles.affordable_blocking); not applied to an expert's settings file.
    max_pairs_per_record: float = Field(20.0, gt=0)

    # Golden records (issue 14 item 3): one rule per attribute; attributes not named use
    # default_rule. Rules: source_priority, most_recent, most_complete, most_frequent.
    survivorship: dict[str, Literal["source_priority", "most_recent", "most_complete",
                                    "most_frequent"]] = Field(default_factory=dict)
    default_rule: Literal["source_priority", "most_recent", "most_complete",
                          "most_frequent"] = "most_recent"
    source_priority: list[str] = Field(
        default_factory=lambda: ["crm", "b2b", "webshop", "callcentre", "pos"])

    # The unified id as the warehouse key (issue 14 item 6). master_system: a source system
    # whose record ids are the warehouse's existing customers.customer_id; a new cluster holding
    # one of its records adopts that id instead of minting a U-id. New unified customers get a
    # customers row from their golden record (when master_system is set or every customers
    # row is a unified id, e.g. none yet), with these placeholders for the columns no source
    # record carries.
    master_system: str | None = None
    new_customer_region: Literal["north", "south", "east", "west", "central"] = "central"
    new_customer_channel: Literal["paid_digital", "organic_content", "referral", "live_event",
                                  "partner", "direct"] = "direct"

    @model_validator(mode="after")
    def _review_below_match(self) -> IdentityConfig:
        if self.review_threshold > self.match_threshold:
            raise ValueError(
                f"review_threshold {self.review_threshold} is above match_threshold "
                f"{self.match_threshold}; the review band lies below the match cut"
            )
        return self


def load_identity_config(path: str | Path | None = None) -> IdentityConfig:
    """Parse configs/identity.yaml (or ``path``) into :class:`IdentityConfig`."""
    return load_config(path or "identity", IdentityConfig)


def read_records(path: Path, id_col: str) -> pd.DataFrame:
    """Read one CSV, TSV or Parquet file of source records, every column as text (only an
    empty field is missing), through :func:`customer360.data.files.read_file`.

    Raises :class:`IdentityError` when the file is missing, empty, lacks ``id_col`` or repeats an
    id.
    """
    from customer360.data.files import read_file

    frame = read_file(path, what="Records file", error=IdentityError, dtype="string",
                      blanks_only=True)
    if id_col not in frame.columns:
        raise IdentityError(
            f"Records file {path} has no id column {id_col!r} (columns: "
            f"{', '.join(map(str, frame.columns))}); pass the right one with --id-col."
        )
    ids = frame[id_col]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0]) + 2
        raise IdentityError(
            f"Records file {path}: id column {id_col!r} is empty on line {row}; every record "
            "needs an id."
        )
    dup = ids[ids.duplicated()]
    if not dup.empty:
        raise IdentityError(
            f"Records file {path}: id {dup.iloc[0]!r} in column {id_col!r} appears more than "
            f"once ({dup.nunique()} ids repeat); ids must be unique within a file."
        )
    return frame


def _pair_metrics(tp: float, predicted: float, actual: float) -> dict[str, float]:
    precision = tp / predicted if predicted else 1.0
    recall = tp / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_positives": int(tp),
            "predicted_pairs": int(predicted), "true_pairs": int(actual)}


def _pairs_within(frame: pd.DataFrame, keys: list[str]) -> float:
    sizes = frame.groupby(keys, sort=False).size().to_numpy(dtype=np.float64)
    return float((sizes * (sizes - 1) / 2).sum())


def evaluate(
    clusters: pd.DataFrame, edges: pd.DataFrame, truth: pd.DataFrame, *, link_only: bool
) -> dict[str, Any]:
    """Pairwise (scored edges) and cluster (pairs inside clusters) precision, recall and F1.

    ``clusters`` has ``source``, ``record_id``, ``customer_id``; ``edges`` the matched pairs
    (``source_l``, ``record_id_l``, ``source_r``, ``record_id_r``); ``truth`` maps ``source``,
    ``record_id`` to ``truth``. With ``link_only`` pairs inside one source do not count.

    Examples
    --------
    >>> c = pd.DataFrame({"source": ["a"] * 3, "record_id": ["1", "2", "3"],
    ...                   "customer_id": ["x", "x", "y"]})
    >>> t = c.assign(truth=["p", "p", "p"])[["source", "record_id", "truth"]]
    >>> e = pd.DataFrame({"source_l": ["a"], "record_id_l": ["1"], "source_r": ["a"],
    ...                   "record_id_r": ["2"]})
    >>> round(evaluate(c, e, t, link_only=False)["cluster"]["recall"], 3)
    0.333
    """
    keyed = clusters.merge(truth, on=["source", "record_id"], how="left", validate="1:1")
    if keyed["truth"].isna().any():
        keyed["truth"] = keyed["truth"].fillna(keyed["source"] + "\x1f" + keyed["record_id"])

    def count(keys: list[str]) -> float:
        total = _pairs_within(keyed, keys)
        return total - _pairs_within(keyed, [*keys, "source"]) if link_only else total

    cluster = _pair_metrics(count(["customer_id", "truth"]), count(["customer_id"]),
                            count(["truth"]))
    lookup = truth.set_index(["source", "record_id"])["truth"]
    left = lookup.reindex(pd.MultiIndex.from_frame(edges[["source_l", "record_id_l"]])).to_numpy()
    right = lookup.reindex(pd.MultiIndex.from_frame(edges[["source_r", "record_id_r"]])).to_numpy()
    tp = float(np.sum((left == right) & pd.notna(left)))
    pairwise = _pair_metrics(tp, float(len(edges)), count(["truth"]))
    return {"pairwise": pairwise, "cluster": cluster}


def unify_frames(
    frames: dict[str, pd.DataFrame],
    *,
    id_col: str,
    mapping: dict[str, str] | None = None,
    link_only: bool = False,
    truth_col: str | None = None,
    threshold: float | None = None,
    settings_path: Path | None = None,
    config: IdentityConfig | None = None,
) -> dict[str, Any]:
    """Match the records of ``frames`` (source name -> records) and cluster them.

    Returns a dict with ``clusters``, ``pairs`` (frames), ``settings`` (the trained Splink
    model as a dict, to save next to the run) and ``report`` (JSON-ready).
    """
    import splink
    from splink import DuckDBAPI, Linker

    config = config or IdentityConfig()
    threshold = config.match_threshold if threshold is None else threshold
    if not 0 < threshold < 1:
        raise IdentityError(f"--threshold {threshold}: a match probability must be in (0, 1).")
    review = min(config.review_threshold, threshold)
    if link_only and len(frames) < 2:
        raise IdentityError("--link-only needs at least two --records files to link across.")
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    combined = pd.concat(frames.values(), ignore_index=True)
    roles, tables = _standardised_tables(frames, id_col, truth_col, mapping, config)
    seconds["standardise"] = time.perf_counter() - started

    t0 = time.perf_counter()
    link_type = ("link_only" if link_only else "link_and_dedupe") if len(frames) > 1 else (
        "dedupe_only")
    db_api = DuckDBAPI()
    dfs = [
        db_api.register(t, dataset_display_name=s, table_name=f"c360_records_{i}")
        for i, (s, t) in enumerate(tables.items())
    ]
    dropped: list[dict[str, Any]] = []
    combined_std = pd.concat(tables.values(), ignore_index=True)
    if settings_path is not None:
        try:
            settings: Any = json.loads(Path(settings_path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise IdentityError(
                f"Settings file {settings_path} is not readable JSON ({exc}); pass the "
                "settings.json a previous run wrote, or a Splink settings dict saved as JSON."
            ) from exc
        if not isinstance(settings, dict) or not settings.get("comparisons"):
            raise IdentityError(
                f"Settings file {settings_path} has no 'comparisons'; pass a Splink settings "
                "dict (e.g. the settings.json a previous run wrote)."
            )
        settings["link_type"] = link_type
        trained = "m_probability" in json.dumps(settings)
    else:
        blocking, dropped = affordable_blocking(combined_std, blocking_columns(roles),
                                                config.max_pairs_per_record)
        settings = build_settings(roles, link_type, max_iterations=config.em_max_iterations,
                                  blocking=blocking)
        trained = False
    linker = Linker(dfs, settings, log_level=None)
    # An expert's trained settings: nothing trained here.
    training = {"em_blocks": [], "em_blocks_skipped": [], "name_block_pairs_per_record": None}
    if not trained:
        training = train_linker(linker, roles, config, combined_std)
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scored = linker.inference.predict(threshold_match_probability=review)
    seconds["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs, conflict = flagged_pairs(linker, scored, roles)
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        _without_conflicts(linker, scored, conflict), threshold_match_probability=threshold
    ).as_pandas_dataframe()
    seconds["cluster"] = time.perf_counter() - t0
    candidates = _count_candidates(linker)

    if link_type == "dedupe_only":
        # One source: Splink leaves the source column out of its output.
        (only,) = frames
        pairs = pairs.assign(source_l=only, source_r=only)
        clustered = clustered.assign(source=only)
    clusters = pd.DataFrame({
        "source": clustered["source"].astype("string"),
        "record_id": clustered["record_id"].astype("string"),
        "customer_id": clustered["cluster_id"].astype("string"),
    })
    out_pairs = pd.DataFrame({
        "source_l": pairs["source_l"].astype("string"),
        "record_id_l": pairs["record_id_l"].astype("string"),
        "source_r": pairs["source_r"].astype("string"),
        "record_id_r": pairs["record_id_r"].astype("string"),
        "match_probability": pairs["match_probability"].astype("float64"),
        "match_weight": pairs["match_weight"].astype("float64"),
        "person_conflict": pairs["person_conflict"].astype(bool),
    })
    compared = [c.removeprefix("mw_std_") for c in pairs.columns if c.startswith("mw_std_")]
    for column in compared:
        # Splink's per-comparison weight (log2 Bayes factor) plus its term-frequency adjustment.
        weight = pairs[f"mw_std_{column}"].astype("float64")
        tf = f"mw_tf_adj_std_{column}"
        if tf in pairs.columns:
            weight = weight + pairs[tf].astype("float64").fillna(0.0)
        out_pairs[f"mw_{column}"] = weight.to_numpy()

    sizes = clusters["customer_id"].value_counts()
    model = json.loads(json.dumps(linker.misc.save_model_to_json(), default=str))
    comparisons = []
    for comp in model["comparisons"]:
        column = comp["output_column_name"].removeprefix("std_")
        levels = comp["comparison_levels"]
        comparisons.append({
            "column": column,
            "role": roles.get(column),
            "comparison": comp.get("comparison_description"),
            "levels": [lv.get("label_for_charts") for lv in levels],
            "term_frequency_adjustments": any(lv.get("tf_adjustment_column") for lv in levels),
        })
    report: dict[str, Any] = {
        "records": int(len(combined)),
        "sources": {s: int(len(f)) for s, f in frames.items()},
        "link_type": link_type,
        "candidate_pairs": candidates,
        "scored_pairs_at_review_threshold": int(len(out_pairs)),
        "matched_pairs": int(_matched(out_pairs, threshold).sum()),
        "person_conflicts_not_merged": int(
            (out_pairs["person_conflict"] & (out_pairs["match_probability"] >= threshold)).sum()),
        "clusters": int(len(sizes)),
        "largest_cluster": int(sizes.max()),
        "thresholds": {"match": threshold, "review": review},
        "comparisons": comparisons,
        "blocking_rules": [
            b["blocking_rule"] for b in model["blocking_rules_to_generate_predictions"]
        ],
        "blocking_rules_dropped": dropped,
        "max_pairs_per_record": config.max_pairs_per_record,
        "probability_two_random_records_match": model["probability_two_random_records_match"],
        **training,
        "settings_source": str(settings_path) if settings_path else "generated from roles",
        "splink_version": splink.__version__,
    }
    if truth_col:
        truth = pd.concat(
            [pd.DataFrame({"source": s, "record_id": f[id_col].astype("string"),
                           "truth": f[truth_col].astype("string")}) for s, f in frames.items()],
            ignore_index=True,
        )
        t0 = time.perf_counter()
        edges = out_pairs[_matched(out_pairs, threshold)]
        report["quality"] = evaluate(clusters, edges, truth, link_only=link_only)
        seconds["evaluate"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    report["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return {"clusters": clusters, "pairs": out_pairs, "settings": model, "report": report}


def prediction_columns(linker: Any, scored: Any) -> list[str]:
    """The column names of Splink's predictions ``scored`` (no rows read)."""
    return list(linker.misc.query_sql(f"select * from {scored.physical_name} limit 0",
                                      output_type="pandas").columns)


def conflict_rule(
    linker: Any, scored: Any, roles: dict[str, str], columns: list[str] | None = None
) -> str | None:
    """:func:`person_conflict_sql` for these predictions, or ``None`` when it does not apply
    (no single given-name column, or an expert's settings without the retained gamma columns).
    ``columns``: the predictions' columns when the caller has them already."""
    conflict = person_conflict_sql(roles, linker.misc.save_model_to_json())
    if conflict:
        columns = columns if columns is not None else prediction_columns(linker, scored)
        if not all(g in columns for g in re.findall(r"gamma_\w+", conflict)):
            conflict = None
    return conflict


def flagged_pairs(
    linker: Any, scored: Any, roles: dict[str, str]
) -> tuple[pd.DataFrame, str | None]:
    """Splink's scored pairs as pandas with ``person_conflict`` (:func:`person_conflict_sql`),
    read in one query so each flag stays on its own pair, and the rule's SQL
    (:func:`conflict_rule`)."""
    conflict = conflict_rule(linker, scored, roles)
    if conflict is None:
        return scored.as_pandas_dataframe().assign(person_conflict=False), None
    return linker.misc.query_sql(
        f"select *, coalesce({conflict}, false) as person_conflict from {scored.physical_name}",
        output_type="pandas"), conflict


def _matched(pairs: pd.DataFrame, threshold: float) -> pd.Series:
    """Pairs that merge: at or above the threshold and without a person conflict."""
    return (pairs["match_probability"] >= threshold) & ~pairs["person_conflict"]


def _without_conflicts(linker: Any, scored: Any, conflict: str | None) -> Any:
    """Splink's predictions without the pairs :func:`person_conflict_sql` forbids to merge."""
    if conflict is None:
        return scored
    return linker.misc.query_sql(
        f"select * from {scored.physical_name} where not coalesce({conflict}, false)")


def _standardised_tables(
    frames: dict[str, pd.DataFrame], id_col: str, truth_col: str | None,
    mapping: dict[str, str] | None, config: IdentityConfig,
) -> tuple[dict[str, str], dict[str, pd.DataFrame]]:
    """The inferred roles and, per source, ``record_id``, ``source`` and ``std_<column>``."""
    combined = pd.concat(frames.values(), ignore_index=True)
    exclude = tuple(c for c in (id_col, truth_col) if c)
    if truth_col and truth_col not in combined.columns:
        raise IdentityError(
            f"--truth-col {truth_col!r} is not a column of the records; name an existing one."
        )
    roles = infer_roles(combined, exclude=exclude, overrides=mapping)
    std_cols = [f"std_{c}" for c in roles]
    forms = [forms_column(c) for c, r in roles.items() if r == "given_name"]
    tables = {}
    for source, frame in frames.items():
        # A column only some files have is missing in the others (Splink treats nulls as such).
        clean = standardise_frame(
            frame.reindex(columns=combined.columns), roles, config.default_phone_region
        )
        tables[source] = pd.DataFrame(
            {"record_id": frame[id_col].astype("string").to_numpy(), "source": source}
            | {c: clean[c].to_numpy() for c in std_cols}
            # The array keeps its list type (a numpy copy would hold untyped objects).
            | {c: clean[c].array for c in forms}
        )
    return roles, tables


def _for_spark(table: pd.DataFrame) -> pd.DataFrame:
    """Plain Python values Spark infers its types from: ``None`` for missing, a list for a
    name-forms array (its numpy form is no type Spark knows)."""
    out = table.astype(object).where(table.notna(), None)
    for column in table.columns:
        if isinstance(table[column].dtype, pd.ArrowDtype):
            out[column] = pd.Series(table[column].tolist(), index=table.index,
                                    dtype=object).where(table[column].notna(), None)
    return out


def spark_clusters(
    spark: Any,
    frames: dict[str, pd.DataFrame],
    *,
    id_col: str,
    settings: dict[str, Any],
    mapping: dict[str, str] | None = None,
    threshold: float | None = None,
    config: IdentityConfig | None = None,
) -> pd.DataFrame:
    """Cluster ``frames`` on Spark with a model trained by :func:`unify_frames` (its
    ``settings``, i.e. ``settings.json``): the same comparisons, levels, m and u, blocking
    rules and thresholds, with the SQL re-rendered in Spark's dialect.

    ``spark`` needs Splink's similarity UDF jar (``spark.jars`` =
    ``splink.backends.spark.similarity_jar_location()``) and a checkpoint directory. Returns
    ``source``, ``record_id``, ``customer_id`` like ``unify_frames``'s ``clusters``.

    Examples
    --------
    >>> run = unify_frames({"crm": frame}, id_col="id")  # doctest: +SKIP
    >>> spark_clusters(spark, {"crm": frame}, id_col="id",
    ...                settings=run["settings"])  # doctest: +SKIP
    """
    from splink import Linker, SparkAPI

    config = config or IdentityConfig()
    threshold = config.match_threshold if threshold is None else threshold
    roles, tables = _standardised_tables(frames, id_col, None, mapping, config)
    api = SparkAPI(spark_session=spark)
    # Names of this call's own: a Spark session keeps registered views, and a second call in
    # it must not collide with the first's.
    run = uuid.uuid4().hex[:12]
    dfs = [
        api.register(spark.createDataFrame(_for_spark(t)),
                     dataset_display_name=s, table_name=f"c360_records_{run}_{i}")
        for i, (s, t) in enumerate(tables.items())
    ]
    trained = json.loads(json.dumps(settings))
    # The same settings built for Spark give each level's SQL in its dialect; the trained
    # parameters are kept (comparisons and levels come in the same order from the roles).
    spark_sql = Linker(dfs, build_settings(roles, trained["link_type"], dialect="spark"),
                       log_level=None).misc.save_model_to_json()
    if [len(c["comparison_levels"]) for c in spark_sql["comparisons"]] != [
            len(c["comparison_levels"]) for c in trained["comparisons"]]:
        raise IdentityError(
            "The settings were not generated from these records' roles by this version "
            "(comparisons or their levels differ, e.g. a model trained before the nickname "
            "level); pass the settings.json of a run over the same columns, or retrain.")
    for mine, theirs in zip(trained["comparisons"], spark_sql["comparisons"], strict=True):
        for level, spark_level in zip(mine["comparison_levels"], theirs["comparison_levels"],
                                      strict=True):
            level["sql_condition"] = spark_level["sql_condition"]
    # The rules the model was trained with (some generated rules may have been dropped as too
    # coarse for its records), in Spark's dialect.
    kept = {frozenset(re.findall(r"std_\w+", b["blocking_rule"]))
            for b in trained["blocking_rules_to_generate_predictions"]}
    trained["blocking_rules_to_generate_predictions"] = [
        b for b in spark_sql["blocking_rules_to_generate_predictions"]
        if frozenset(re.findall(r"std_\w+", b["blocking_rule"])) in kept]
    trained["sql_dialect"] = "spark"
    linker = Linker(dfs, trained, log_level=None)
    scored = linker.inference.predict(
        threshold_match_probability=min(config.review_threshold, threshold))
    conflict = person_conflict_sql(roles, trained)
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        _without_conflicts(linker, scored, conflict),
        threshold_match_probability=threshold).as_pandas_dataframe()
    if trained["link_type"] == "dedupe_only":
        (only,) = frames
        clustered = clustered.assign(source=only)
    return pd.DataFrame({
        "source": clustered["source"].astype("string"),
        "record_id": clustered["record_id"].astype("string"),
        "customer_id": clustered["cluster_id"].astype("string"),
    })


def train_linker(
    linker: Any, roles: dict[str, str], config: IdentityConfig, records: pd.DataFrame
) -> dict[str, Any]:
    """Train a fresh linker: prior from an exact rule, u by random sampling, m by EM per block.

    An EM block whose run drives a level's m to exactly 0 (Splink refuses it) is retried on the
    next candidate block. ``records``: the linker's standardised input as one frame (the
    name block's pairs are counted there). Returns ``em_blocks`` (the blocks EM trained on),
    ``em_blocks_skipped`` (those that could not be used, also logged, never hidden) and
    ``name_block_pairs_per_record`` (what decided whether the name block is narrowed by the
    postcode; ``None`` when there is nothing to narrow by).
    """
    from splink import block_on
    from splink.internals.exceptions import EMTrainingException  # no public import path

    blocks = training_blocks(roles)
    narrow = training_blocks(roles, narrow_names=True)
    crowding = None
    if narrow != blocks:
        # Namesakes (one given name and surname, two people) grow with the square of the
        # population, true pairs with it. Once the name block holds more pairs than there are
        # records, namesakes dominate it and EM puts every pair in the "match" class (148k
        # generated records: 8 pairs a record, 96 % namesakes, and a date-of-birth match
        # then weighed nothing); agreeing on the postcode too leaves few namesakes.
        # Counted within all records: for links across sources an upper bound.
        crowding = exact_pair_counts(records, [blocks[0]])[0] / max(len(records), 1)
        if crowding > 1:
            blocks = narrow
    deterministic = [block_on(*sum(blocks, []))]
    linker.training.estimate_probability_two_random_records_match(
        deterministic, recall=config.deterministic_recall
    )
    linker.training.estimate_u_using_random_sampling(
        max_pairs=config.u_max_pairs, seed=config.seed
    )
    skipped, used = [], []
    # Company-name and id columns are empty on every person's record: a fallback block on
    # them trains on the few company records only, so those blocks come last.
    sparse = {f"std_{c}" for c, r in roles.items() if r in ("full_name", "id")}
    fallbacks = sorted((g for g in blocking_columns(roles) if g not in blocks),
                       key=lambda g: bool(set(g) & sparse))
    for block in blocks:
        for candidate in _fallback_order(block, fallbacks):
            # Splink 5.0 deactivates the block's own comparisons on the linker's settings for
            # the session and restores them only when EM succeeds: a failed run would leave the
            # model without those comparisons (e.g. no name comparison at all, so relatives
            # sharing contact data merge). Keep a copy and put it back on failure.
            saved = linker._settings_obj.core_model_settings.copy()
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(*candidate)
                )
                used.append(" & ".join(candidate))
                break
            except (ValueError, EMTrainingException) as exc:
                # ValueError: a level's m driven to 0; EMTrainingException: no pairs agree on
                # the block (e.g. a column that is empty on every record).
                linker._settings_obj.core_model_settings = saved
                log.warning("EM on block %s failed (%s); trying the next block", candidate,
                            str(exc).splitlines()[0])
                skipped.append(" & ".join(candidate))
    if not used:
        raise IdentityError(
            "No training block of these records has pairs to learn from (tried: "
            f"{'; '.join(skipped)}): too few records agree on any name, date, postcode, email, "
            "phone or id. Check that the columns hold values (see --map ROLE=COLUMN), or pass "
            "the settings.json of a run trained on similar records (--settings).")
    return {"em_blocks": used, "em_blocks_skipped": skipped,
            "name_block_pairs_per_record": None if crowding is None else round(crowding, 3)}


def _fallback_order(block: list[str], fallbacks: list[list[str]]) -> list[list[str]]:
    """``block`` first, then the fallbacks sharing a column with it, then the rest.

    A fallback that keeps part of the failed block trains nearly the same comparisons; one on a
    shared phone or email alone would train the names on household members too.

    >>> _fallback_order(["a", "b"], [["e"], ["a", "p"], ["b", "c"]])
    [['a', 'b'], ['a', 'p'], ['b', 'c'], ['e']]
    """
    near = [g for g in fallbacks if set(g) & set(block)]
    return [block, *near, *(g for g in fallbacks if g not in near)]


def _count_candidates(linker: Any) -> int | None:
    """Pairs the blocking rules generate (before scoring), counted by Splink without scoring."""
    try:
        blocked = linker.inference.compute_blocked_pairs_for_predict()
        n = linker.misc.query_sql(
            f"select count(*) as n from {blocked.physical_name}", output_type="pandas"
        )
        return int(n["n"].iloc[0])
    except Exception as exc:  # noqa: BLE001 - a count is a nicety, never a failure
        log.warning("could not count candidate pairs: %s", exc)
        return None


def unify_files(
    paths: list[Path], *, id_col: str, output: Path, **kwargs: Any
) -> dict[str, Any]:
    """Read ``paths``, unify them and write clusters, pairs, report, settings and plots to
    ``output``. Returns the report.

    Examples
    --------
    ``customer360 unify --records crm.csv --records shop.parquet --id-col id --output out/``
    """
    if not paths:
        raise IdentityError("No --records file given; pass at least one CSV or Parquet file.")
    frames: dict[str, pd.DataFrame] = {}
    for path in paths:
        source = Path(path).stem
        if source in frames:
            raise IdentityError(
                f"Two records files are both named {source!r} ({path}); the file name is the "
                "source name, so rename one."
            )
        frames[source] = read_records(Path(path), id_col)
    result = unify_frames(frames, id_col=id_col, **kwargs)
    output.mkdir(parents=True, exist_ok=True)
    result["clusters"].to_parquet(output / "clusters.parquet", index=False)
    result["pairs"].to_parquet(output / "pairs.parquet", index=False)
    (output / "settings.json").write_text(json.dumps(result["settings"], indent=2))
    from customer360.identity.plots import write_plots

    result["report"]["plots"] = write_plots(
        result["pairs"], result["clusters"], result["report"], output
    )
    (output / "report.json").write_text(json.dumps(result["report"], indent=2))
    return result["report"]
