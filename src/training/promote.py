"""Promotion gate: move the ``champion`` alias to the ``challenger`` only when it is better on
the same test data.

Every training run stores the identity of its test snapshot (tag ``test_snapshot``), its
primary test metric (tag ``primary_metric``, metric ``test_<name>``) and, when a champion
existed at training time, the champion's metrics on the challenger's own test rows
(``champion_test_<name>``, tag ``champion_version_evaluated``). Promotion compares either
the two runs' metrics when their test snapshots are identical, or the challenger's metric with
the champion's re-scored metric; otherwise it refuses, because the figures would not be
comparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from customer360.errors import NotFoundError
from customer360.training.common import (
    CHALLENGER,
    CHAMPION,
    TAG_CHAMPION_EVALUATED,
    TAG_GREATER_IS_BETTER,
    TAG_PRIMARY_METRIC,
    TAG_TEST_SNAPSHOT,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of :func:`promote`; ``message`` states both figures."""

    model_name: str
    promoted: bool
    challenger_version: str
    champion_version: str | None
    metric: str | None
    challenger_value: float | None
    champion_value: float | None
    message: str


def alias_version(client, model_name: str, alias: str):
    """The model version behind ``model_name@alias``, or a clear :class:`NotFoundError`."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise NotFoundError(
            f"No registered model {model_name!r}. Registered models: "
            f"{', '.join(names) or 'none'}. Train one first (`customer360 train ...`)."
        ) from None
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        aliases = sorted(client.get_registered_model(model_name).aliases)
        raise NotFoundError(
            f"Model {model_name!r} has no version with alias @{alias}. Its aliases: "
            f"{', '.join('@' + a for a in aliases) or 'none'}. Refer to a model as NAME "
            "(= NAME@champion), NAME@ALIAS or NAME/VERSION."
        ) from None


def promote(
    model_name: str,
    *,
    challenger_alias: str = CHALLENGER,
    champion_alias: str = CHAMPION,
) -> PromotionDecision:
    """Point ``champion_alias`` at the ``challenger_alias`` version if it beats the champion on
    the same test data (or if there is no champion yet).

    Returns the decision; ``decision.promoted`` is False when the challenger does not beat the
    champion or the two cannot be compared on the same data (the message says why and gives
    both figures).

    Examples
    --------
    >>> decision = promote("churn")                       # doctest: +SKIP
    >>> decision.promoted, decision.message               # doctest: +SKIP
    (True, 'churn v2 is now @champion: test roc_auc 0.9191 > 0.9153 of v1 ...')
    """
    import mlflow

    from customer360.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    client = mlflow.MlflowClient()
    challenger = alias_version(client, model_name, challenger_alias)
    ch_run = client.get_run(challenger.run_id)
    metric = ch_run.data.tags.get(TAG_PRIMARY_METRIC)
    greater = ch_run.data.tags.get(TAG_GREATER_IS_BETTER, "true") == "true"
    ch_value = ch_run.data.metrics.get(f"test_{metric}") if metric else None
    try:
        champion = alias_version(client, model_name, champion_alias)
    except NotFoundError:
        champion = None

    def decide(promoted: bool, message: str, champ_value=None) -> PromotionDecision:
        if promoted:
            client.set_registered_model_alias(model_name, champion_alias, challenger.version)
        log.info(message)
        return PromotionDecision(
            model_name=model_name,
            promoted=promoted,
            challenger_version=str(challenger.version),
            champion_version=None if champion is None else str(champion.version),
            metric=metric,
            challenger_value=ch_value,
            champion_value=champ_value,
            message=message,
        )

    if champion is None:
        return decide(
            True,
            f"{model_name} v{challenger.version} is now @{champion_alias} (there was no "
            f"champion yet; its test {metric} is {_fmt(ch_value)}).",
        )
    if str(champion.version) == str(challenger.version):
        return decide(
            False,
            f"{model_name} v{challenger.version} is already @{champion_alias}; nothing to do.",
        )
    if metric is None or ch_value is None:
        return decide(
            False,
            f"The challenger run {challenger.run_id} records no primary test metric, so it "
            "cannot be compared with the champion; retrain it with `customer360 train`.",
        )
    champ_run = client.get_run(champion.run_id)
    same_snapshot = champ_run.data.tags.get(TAG_TEST_SNAPSHOT) == ch_run.data.tags.get(
        TAG_TEST_SNAPSHOT
    )
    if same_snapshot and f"test_{metric}" in champ_run.data.metrics:
        champ_value = champ_run.data.metrics[f"test_{metric}"]
        basis = f"the same test snapshot ({ch_run.data.tags.get(TAG_TEST_SNAPSHOT)})"
    elif ch_run.data.tags.get(TAG_CHAMPION_EVALUATED) == str(champion.version) and (
        f"champion_test_{metric}" in ch_run.data.metrics
    ):
        champ_value = ch_run.data.metrics[f"champion_test_{metric}"]
        basis = "the challenger's test snapshot (champion re-scored on it at training time)"
    else:
        return decide(
            False,
            f"Cannot compare {model_name} v{challenger.version} with champion "
            f"v{champion.version} on the same test data: they were tested on different "
            f"snapshots and the challenger's run did not score this champion. Retrain the "
            "challenger (training scores the current champion on its test data), then promote.",
        )
    beats = ch_value > champ_value if greater else ch_value < champ_value
    figures = (
        f"test {metric} {_fmt(ch_value)} (challenger v{challenger.version}) vs "
        f"{_fmt(champ_value)} (champion v{champion.version}) on {basis}"
    )
    if beats:
        return decide(
            True,
            f"Promoted {model_name} v{challenger.version} to @{champion_alias}: {figures}.",
            champ_value,
        )
    return decide(
        False,
        f"Refused: {model_name} v{challenger.version} does not beat the champion: {figures}.",
        champ_value,
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
