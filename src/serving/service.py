"""The customer360 BentoML service (BentoML 1.4 class style).

Run it with ``customer360 serve`` (or ``bentoml serve customer360.serving.service:Customer360``
with ``CUSTOMER360_DB`` and ``MLFLOW_TRACKING_URI`` set). At start-up it loads the ``champion``
versions of the registered models named in ``configs/serving.yaml`` and refuses to start,
naming what is missing, when any is absent. It then reads the latest feature snapshot through a
read-only connection, classifies the population and computes the probabilistic scores once,
and closes the connection: requests are answered from memory, and the warehouse stays free for
other readers. ``/feedback`` opens a short write connection per request (serialised in the
process, retried while another process holds the file).

Endpoints (all POST, JSON): ``/churn``, ``/clv``, ``/next_best_offer``, ``/customer360`` (one
customer, by ``customer_id`` or full ``features`` payload), their batch variants
``/churn_batch``, ``/clv_batch``, ``/next_best_offer_batch``, ``/customer360_batch`` (adaptive
batching; body ``{"customers": [...]}``), ``/feedback`` and ``/schema_info``. BentoML adds
``/healthz``, ``/livez``, ``/readyz``, ``/metrics`` and the OpenAPI page at ``/``
(``/docs.json``).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hmac
import logging
import os
import re
import time
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import bentoml
import numpy as np
import pandas as pd
from pydantic import BaseModel
from starlette.responses import JSONResponse

from customer360.errors import (
    CampaignError,
    Customer360Error,
    NotFoundError,
    WarehouseError,
)
from customer360.serving.campaign import (  # issue 16
    CampaignPlanRequest,
    CampaignPlanResult,
)
from customer360.serving.openapi import OpenAPIMiddleware
from customer360.serving.profile import (
    REASON_COLUMNS,
    ChurnLookup,
    FeedbackConflict,
    PayloadError,
    Population,
    ProfileScorer,
    ProfileTable,
    champion_versions,
    churn_from_row,
    clv_from_row,
    hash_id,
    id_columns,
    latest_as_of,
    load_champions,
    load_snapshot,
    offers_from_row,
    prob_horizons,
    profile_from_row,
    typed_payload_frame,
    unknown_customer,
)
from customer360.serving.sales import load_sales_models, score_sales
from customer360.serving.schemas import (
    EVENT_ID_PATTERN,
    SERVING_CONFIG,
    BatchItem,
    BatchRequest,
    ChurnResult,
    ClvResult,
    CustomerRequest,
    FeedbackRequest,
    FeedbackResult,
    LeadRequest,
    LeadScoreResult,
    NboResult,
    OpportunityRequest,
    OpportunityScoreResult,
    ProfileResult,
)
from customer360.serving.webapp import APP_PATH, webapp
from customer360.serving.webapp.reader import serialised_reader

log = logging.getLogger("customer360.serving")

# Paths answered without a token: health probes and the OpenAPI page (it describes, never
# returns, data).
OPEN_PATHS = frozenset(
    {"/healthz", "/livez", "/readyz", "/metrics", "/", "/docs.json", "/schema.json"}
)
OPEN_PREFIXES = ("/static_content/", "/assets/")


def _is_app_path(path: str) -> bool:
    """The web app (customer360.serving.webapp) checks its own session cookie: browsers send
    no bearer header."""
    return path == APP_PATH or path.startswith(APP_PATH + "/")


class BearerTokenMiddleware:
    """ASGI middleware: when the token env var is set, every non-health request needs
    ``Authorization: Bearer <token>`` (the scheme in any case, RFC 7235); otherwise 401 (no
    body is read, nothing is logged)."""

    def __init__(self, app: Any, env_var: str = SERVING_CONFIG.token_env_var) -> None:
        self.app = app
        self.env_var = env_var
        token = os.environ.get(env_var, "")
        self.expected = token.encode() if token else None

    def _authorised(self, header: bytes) -> bool:
        scheme, _, credentials = header.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            credentials.strip(), self.expected or b""
        )

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self.expected is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or _is_app_path(path):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if self._authorised(given):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {
                "error": "missing or invalid bearer token: send the header "
                f"'Authorization: Bearer <token>' with the value of ${self.env_var}"
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


class JsonOnlyMiddleware:
    """ASGI middleware: a POST whose body is not JSON gets 415 before any handler runs.

    BentoML would parse a ``text/plain`` or form body as JSON all the same, so a web page a user
    visits could write ``/feedback`` through a local service by a "simple" cross-site request
    (no CORS pre-flight for those content types). Only ``application/json`` (or ``+json``) is
    accepted; a POST without a body and without a ``Content-Type`` (``/schema_info``) passes.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        # The web app's own forms (CSRF-protected, /app/...) post form bodies by design.
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or _is_app_path(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type")
        if content_type is None:
            bodiless = headers.get(b"content-length", b"0").strip() == b"0"
            if bodiless and b"transfer-encoding" not in headers:
                await self.app(scope, receive, send)
                return
            media = "(none)"
        else:
            media = content_type.split(b";")[0].strip().lower().decode("latin-1")
            if media == "application/json" or (
                media.startswith("application/") and media.endswith("+json")
            ):
                await self.app(scope, receive, send)
                return
        response = JSONResponse(
            {
                "error": f"unsupported content type {media!r} on {scope.get('path', '')}: "
                "send the body as JSON with 'Content-Type: application/json'"
            },
            status_code=415,
            headers={"Accept": "application/json"},
        )
        await response(scope, receive, send)


class _RedactClientErrors(logging.Filter):
    """BentoML logs the traceback of every failed request; for client errors (validation, 4xx)
    that traceback would echo the request's values (customer ids among them). Keep only the
    error type."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            code = getattr(getattr(exc, "error_code", None), "value", 500)
            if type(exc).__name__ == "ValidationError" or code < 500:
                record.msg = f"{record.getMessage()}: client error {type(exc).__name__}"
                record.args = ()
                record.exc_info = None
                record.exc_text = None
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _install_logging() -> None:
    """Our log lines go through BentoML's handlers (same format, trace ids); client errors
    are logged without their content."""
    # MLflow warns on every call that NBO's pair frame has columns the model ignores.
    logging.getLogger("mlflow.models.utils").setLevel(logging.ERROR)
    ours = logging.getLogger("customer360")
    bento_handlers = logging.getLogger("bentoml").handlers
    if bento_handlers and not ours.handlers:
        for handler in bento_handlers:
            ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False
    redactor = _RedactClientErrors()
    for name in ("bentoml._internal.server.http_app", "_bentoml_impl.server.app", "bentoml"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactClientErrors) for f in logger.filters):
            logger.addFilter(redactor)


_BATCH_OPTIONS: dict[str, Any] = {
    "batchable": True,
    "input_spec": BatchRequest,
    "max_batch_size": SERVING_CONFIG.max_batch_size,
    "max_latency_ms": SERVING_CONFIG.max_latency_ms,
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


START_ERROR_ENV = "CUSTOMER360_START_ERROR_FILE"


def _stop_server_after_failed_start(exc: BaseException) -> None:
    """A worker that cannot start would be restarted forever by BentoML's process manager;
    stop the ``bentoml serve`` parent instead so the server exits with the error in its log.

    BentoML exits 0 on that SIGTERM, so the cause is first written (one line) to the file
    named by ``$CUSTOMER360_START_ERROR_FILE`` when set: ``customer360 serve`` reads it and
    exits 2 with that line.
    """
    import signal

    import psutil

    error_file = os.environ.get(START_ERROR_ENV)
    if error_file:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, Customer360Error):
            cause = f"{type(exc).__name__}: {cause}"
        try:
            with open(error_file, "w", encoding="utf-8") as fh:
                fh.write(cause + "\n")
        except OSError as write_exc:
            log.warning("could not write the start-up error to %s: %s", error_file, write_exc)

    try:
        parent = psutil.Process().parent()
        cmdline = " ".join(parent.cmdline()) if parent else ""
    except psutil.Error:
        return
    if parent is not None and "bentoml" in cmdline and "serve" in cmdline:
        log.error("customer360 service could not start; stopping the server (see the error)")
        parent.send_signal(signal.SIGTERM)


class _Coalescer:
    """Scores concurrent single-customer requests together.

    While one model call runs, the requests that arrive queue up and all go into the next
    call: one call per wave instead of one per request, so latency stays flat as concurrency
    grows. A lone request is scored at once (no waiting window). If a merged call fails, its
    requests are retried one by one so only the culprit gets the error. The batch endpoints
    use BentoML's adaptive batching instead.

    Waves run in a worker thread, except those ``inline(items)`` accepts: sub-millisecond
    work (``/churn`` by id from the lookup matrix) runs on the event loop, where handing it to
    a thread and back would cost more than the work itself.
    """

    def __init__(
        self,
        score: Callable[[list[CustomerRequest]], list],
        max_size: int,
        inline: Callable[[list[CustomerRequest]], bool] | None = None,
    ) -> None:
        self.score = score
        self.max_size = max_size
        self.inline = inline
        self.pending: list[tuple[CustomerRequest, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def submit(self, item: CustomerRequest) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # requests that arrived together join the first call
        while self.pending:
            wave, self.pending = self.pending[: self.max_size], self.pending[self.max_size :]
            items = [i for i, _ in wave]
            try:
                if self.inline is not None and self.inline(items):
                    results = self._score_each(items)
                else:
                    results = await anyio.to_thread.run_sync(self._score_each, items)
            except Exception as exc:
                results = [exc] * len(wave)
            for (_, future), result in zip(wave, results, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _score_each(self, items: list[CustomerRequest]) -> list:
        try:
            return self.score(items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        out: list = []
        for item in items:
            try:
                out.extend(self.score([item]))
            except Exception as exc:
                out.append(exc)
        return out


SERVICE_IMPORT = "customer360.serving.service:Customer360"
# Largest /churn-by-id wave scored on the event loop (beyond it, in a worker thread).
INLINE_MAX_ROWS = 64


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only the loopback interface (``127.0.0.0/8``, ``::1``,
    ``localhost``); anything else (``0.0.0.0``, a LAN address, a host name) is reachable from
    other machines."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, *, insecure_no_token: bool = False) -> None:
    """Refuse to serve on a non-loopback ``host`` without a bearer token (anyone on the network
    could read every profile and write feedback) unless ``insecure_no_token`` says so."""
    env_var = SERVING_CONFIG.token_env_var
    if is_loopback(host) or os.environ.get(env_var) or insecure_no_token:
        return
    raise Customer360Error(
        f"refusing to serve on {host}, which other machines can reach, without a token: anyone "
        f"on the network could read every customer profile and write feedback. Set ${env_var} "
        "(clients then send 'Authorization: Bearer <token>'), bind --host 127.0.0.1, or pass "
        "--insecure-no-token to serve without one anyway."
    )


def serve_command(
    db: str | os.PathLike | None,
    *,
    port: int,
    host: str = "127.0.0.1",
    start_error_file: str | os.PathLike | None = None,
    insecure_no_token: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` command line and environment that run this service.

    The warehouse path and the MLflow store are passed through the environment
    (``CUSTOMER360_DB``, ``MLFLOW_TRACKING_URI``, both made absolute), one worker. With
    ``start_error_file``, a worker that fails at start-up writes its cause there on one line
    (``$CUSTOMER360_START_ERROR_FILE``) before stopping the server. A
    non-loopback ``host`` needs the token env var set or ``insecure_no_token`` (see
    :func:`check_exposure`).
    """
    import sys
    from pathlib import Path

    from customer360.data.warehouse import resolve_db_path
    from customer360.training.tracking import tracking_uri

    check_exposure(host, insecure_no_token=insecure_no_token)

    db_path = resolve_db_path(db).resolve()
    if not db_path.exists():
        raise WarehouseError(
            f"Warehouse file {db_path} does not exist; pass --db or set CUSTOMER360_DB."
        )
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    env = {
        **os.environ,
        "CUSTOMER360_DB": str(db_path),
        "MLFLOW_TRACKING_URI": uri,
        "BENTOML_DO_NOT_TRACK": "True",
    }
    if start_error_file is not None:
        env[START_ERROR_ENV] = str(Path(start_error_file).resolve())
    cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--port", str(port),
           "--host", host]
    return cmd, env


def _db_path() -> str:
    from customer360.data.warehouse import resolve_db_path

    return str(resolve_db_path(None))


@bentoml.service(
    name="customer360",
    workers=1,
    traffic={"timeout": 60},
)
class Customer360:
    """Churn, CLV, next best offer and the integrated customer profile."""

    def __init__(self) -> None:
        try:
            self._start()
        except Exception as exc:
            _stop_server_after_failed_start(exc)
            raise

    def _start(self) -> None:
        from customer360.data.warehouse import connect
        from customer360.identity.store import identity_json

        _install_logging()
        self.config = SERVING_CONFIG
        self.champions = load_champions(self.config.models, self.config.alias)
        self.db_path = _db_path()
        with connect(self.db_path, read_only=True) as con:
            snapshot = load_snapshot(con)
            as_of = pd.Timestamp(snapshot["as_of"].iloc[0]).date()
            population = Population.build(
                con, snapshot, as_of, self.config, prob_horizons=prob_horizons(self.champions)
            )
            # issue 14: each unified customer's identity block (JSON text, parsed per answer).
            identity = identity_json(con)
            # issue 15: open leads and opportunities scored once (when their models exist)
            self.sales = score_sales(con, as_of, load_sales_models(self.config.alias))
        self.identity = dict(zip(identity["customer_id"], identity["identity"], strict=True))
        self.as_of = as_of
        self.scorer = ProfileScorer(self.champions, population, self.config)
        # Rows carry their prob__ scores from the start: requests only slice.
        self.snapshot = self.scorer.conform(self.scorer.enrich(snapshot))
        self.row_of = pd.Index(snapshot["customer_id"].astype(str))
        self.ids = self.row_of.to_numpy(dtype=object)
        # /churn by id reads the churn model's inputs from one typed matrix (no pandas per
        # request); None when the champion is not our ChurnClassifier (pyfunc path then).
        direct = self.scorer.direct  # /churn gives the profile's reasons (reasons: path|exact)
        self.churn_lookup = ChurnLookup.build(
            self.scorer.champions["churn"], self.snapshot, direct.attribution if direct else None
        )
        # /customer360 and /next_best_offer by id: every customer's profile, offers included,
        # scored once here in batch scoring's chunks (issue 17); a request looks its row up
        # while the row holds (same decision period, no window edge or feedback since), else
        # scores it in full.
        started = time.perf_counter()
        self.profiles = ProfileTable.build(self.scorer, self.snapshot)
        table_s = time.perf_counter() - started
        # The web app's kept-open read-only connection and the write lock that closes it
        # (DuckDB: no read-only and read-write handle on one file in one process at once).
        self.reader, self.write_lock = serialised_reader(self.db_path)
        self.coalescers = {
            name: _Coalescer(
                functools.partial(self._score, part=part), self.config.max_batch_size, inline
            )
            for name, part, inline in (
                ("churn", self._churn_part, self._churn_inline),
                ("clv", self._clv_part, None),
                ("full", self._full_part, None),
            )
        }
        if self.profiles is not None:
            log.info(
                "profiles of %d customers scored in %.1f s, held as arrays (%.1f MiB, %.0f "
                "bytes a customer)",
                len(self.profiles),
                table_s,
                self.profiles.nbytes / 2**20,
                self.profiles.nbytes / max(len(self.profiles), 1),
            )
        if self.churn_lookup is not None:
            log.info(
                "churn inputs held as a %d x %d float64 matrix (%.1f MiB)",
                *self.churn_lookup.matrix.shape,
                self.churn_lookup.nbytes / 2**20,
            )
        log.info(
            "customer360 service ready: %d customers as of %s, models %s",
            len(snapshot),
            as_of,
            self.scorer.model_versions,
        )
        # What start-up loaded lives as long as the worker: keep it out of the cyclic garbage
        # collector, whose full passes over it (~0.3 s at 20,000 customers, growing with the
        # snapshot) would otherwise stall every request in flight now and then.
        gc.collect()
        gc.freeze()

    @bentoml.on_shutdown
    def close_reader(self) -> None:
        """Release the warehouse file when the worker stops."""
        with self.write_lock:  # closes the reader once no read or write is in flight
            pass

    @bentoml.on_deployment
    def refuse_unless_ready() -> None:
        """Runs once in the main ``bentoml serve`` process before any worker starts, so a
        missing champion or feature snapshot stops the server with one clear message instead
        of a worker that keeps failing and restarting."""
        from customer360.data.warehouse import connect

        champion_versions(SERVING_CONFIG.models, SERVING_CONFIG.alias)
        with connect(_db_path(), read_only=True) as con:
            latest_as_of(con)

    # --- resolving requests -------------------------------------------------------------------

    def _score(
        self, items: list[CustomerRequest], part: Callable[[pd.DataFrame, bool], pd.DataFrame]
    ) -> list[dict[str, Any] | str]:
        """Score each item with ``part(frame, payload)``; an item that cannot be scored becomes
        its error message (a string) without failing the others. Ids go through
        :meth:`_by_rows` (``part`` on their snapshot rows, or the churn lookup)."""
        out: list[dict[str, Any] | str] = [""] * len(items)
        by_id = [i for i, it in enumerate(items) if it.customer_id is not None]
        if by_id:
            pos = self.row_of.get_indexer([items[i].customer_id for i in by_id])
            known = [i for i, p in zip(by_id, pos, strict=True) if p >= 0]
            for i in set(by_id) - set(known):
                out[i] = str(unknown_customer(items[i].customer_id, self.as_of))
            if known:
                for i, row in zip(known, self._by_rows(pos[pos >= 0], part), strict=True):
                    out[i] = row
        # Every payload is checked on its own before the valid ones are scored together: a bad
        # item answers only itself (the others may be other clients' requests, merged).
        scorer = self.scorer
        good: list[int] = []
        payloads = []
        for i, it in enumerate(items):
            if it.features is None:
                continue
            try:
                payloads.append(scorer.check_payload(it.features))
            except PayloadError as exc:
                out[i] = str(exc)
                continue
            good.append(i)
        if good:
            for i, row in zip(good, self._payload_rows(payloads, part), strict=True):
                out[i] = row
        return out

    def _payload_rows(self, payloads: list[dict], part: Callable) -> list[dict[str, Any] | str]:
        """Flat result rows of checked payloads scored together; should the merged call still
        refuse (a contract the checks do not cover), each payload is scored alone, so only
        the culprit gets the error (its message: a 400)."""
        required = self.scorer.required
        try:
            return part(typed_payload_frame(payloads, required), True).to_dict("records")
        except Customer360Error as exc:
            if len(payloads) == 1:
                return [str(exc)]
        out: list[dict[str, Any] | str] = []
        for p in payloads:
            try:
                out.extend(part(typed_payload_frame([p], required), True).to_dict("records"))
            except Customer360Error as exc:
                out.append(str(exc))
        return out

    async def _one(
        self,
        item: CustomerRequest,
        part: str,
        shape: Callable[[dict], dict],
        model: type[BaseModel],
    ) -> Any:
        """Answer a single-customer request: 200 with ``model(**shape(row))``, 404/400 naming
        the problem, 500 (logged without ids) for anything unexpected."""
        try:
            result = await self.coalescers[part].submit(item)
        except Customer360Error as exc:
            return _error(400, str(exc))
        except Exception as exc:  # no request may take the worker down
            return self._unexpected(exc, item.customer_id)
        if isinstance(result, str):
            status = 404 if item.customer_id is not None else 400
            return _error(status, result)
        try:
            return model(**shape(result))
        except Exception as exc:
            return self._unexpected(exc, item.customer_id)

    def _many(self, items: list[CustomerRequest], part, shape) -> list[BatchItem]:
        try:
            results = self._score(items, part)
        except Exception:  # adaptive batching merged other clients' items: retry one by one
            results = [self._score_alone(it, part) for it in items]
        return [
            BatchItem(customer_id=it.customer_id, error=r)
            if isinstance(r, str)
            else BatchItem(customer_id=it.customer_id, result=shape(r))
            for it, r in zip(items, results, strict=True)
        ]

    def _score_alone(self, item: CustomerRequest, part: Callable) -> dict[str, Any] | str:
        """One item of a failed merged batch, scored alone; its error message if it fails."""
        try:
            return self._score([item], part)[0]
        except Exception as exc:
            self._unexpected(exc, item.customer_id)
            return "internal error while scoring this item; see the server log"

    def _unexpected(self, exc: Exception, customer_id: str | None) -> JSONResponse:
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error(
            "unexpected %s while serving customer %s\n%s",
            type(exc).__name__,
            hash_id(customer_id) if customer_id else "-",
            frames,
        )
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    def _churn_inline(self, items: list[CustomerRequest]) -> bool:
        """Whether a /churn wave is cheap enough for the event loop: ids only, answered from
        the lookup, at most ``INLINE_MAX_ROWS`` of them (about 0.4 ms a row)."""
        return (
            self.churn_lookup is not None
            and len(items) <= INLINE_MAX_ROWS
            and all(it.customer_id is not None for it in items)
        )

    def _by_rows(self, rows: np.ndarray, part: Callable) -> list[dict[str, Any]]:
        """Flat result rows of the snapshot rows ``rows``: churn from the lookup when there
        is one, the full profile from the profile table for the rows it still holds (issue
        17), everything else through ``part`` on the snapshot's rows."""
        if part == self._churn_part and self.churn_lookup is not None:
            probability, reasons = self.churn_lookup.predict(rows)
            ids = self.ids[rows]
            return [
                {
                    "customer_id": ids[j],
                    "as_of": self.as_of,
                    "churn_probability": float(probability[j]),
                    **dict(zip(REASON_COLUMNS, reasons[j], strict=True)),
                }
                for j in range(len(rows))
            ]
        if part == self._full_part and self.profiles is not None:
            fresh = self.profiles.fresh(rows)
            if fresh.all():
                return self.profiles.rows(rows)
            out: list[dict[str, Any]] = [{}] * len(rows)
            stale = np.flatnonzero(~fresh)
            # once per customer: a wave may ask for one twice, and ranking wants it once
            once, again = np.unique(rows[stale], return_inverse=True)
            records = part(self.snapshot.iloc[once], False).to_dict("records")
            scored = [records[i] for i in again]
            if fresh.any():
                looked_up = self.profiles.rows(rows[fresh])
                for j, row in zip(np.flatnonzero(fresh), looked_up, strict=True):
                    out[j] = row
            for j, row in zip(stale, scored, strict=True):
                out[j] = row
            return out
        return part(self.snapshot.iloc[rows], False).to_dict("records")

    # The scoring parts: each takes the feature rows and whether they came as payloads.
    def _churn_part(self, frame: pd.DataFrame, payload: bool) -> pd.DataFrame:
        return pd.concat([id_columns(frame), self.scorer.churn(frame)], axis=1)

    def _clv_part(self, frame: pd.DataFrame, payload: bool) -> pd.DataFrame:
        scorer = self.scorer
        prob = scorer.prob_for(frame)
        return pd.concat([id_columns(frame), scorer.clv(frame), prob], axis=1)

    def _full_part(self, frame: pd.DataFrame, payload: bool) -> pd.DataFrame:
        return self.scorer.score(frame, payload=payload)

    def _clv_shape(self, row: dict) -> dict:
        return clv_from_row(row, self.config.prob_horizon_days)

    def _profile_shape(self, row: dict) -> dict:
        return profile_from_row(
            row,
            self.scorer.population.policies,
            self.scorer.model_versions,
            self.config.prob_horizon_days,
            identity=self.identity.get(row.get("customer_id")),
        ) | self.sales.profile_parts(row.get("customer_id"))

    # --- single-customer endpoints ------------------------------------------------------------

    @bentoml.api(input_spec=CustomerRequest)
    async def churn(
        self, customer_id: str | None = None, features: dict | None = None
    ) -> ChurnResult:
        """Churn probability and its top three reason codes."""
        item = CustomerRequest(customer_id=customer_id, features=features)
        return await self._one(item, "churn", churn_from_row, ChurnResult)

    @bentoml.api(input_spec=CustomerRequest)
    async def clv(
        self, customer_id: str | None = None, features: dict | None = None
    ) -> ClvResult:
        """ML CLV next to the probabilistic (BG/NBD + Gamma-Gamma) CLV and P(alive)."""
        item = CustomerRequest(customer_id=customer_id, features=features)
        return await self._one(item, "clv", self._clv_shape, ClvResult)

    @bentoml.api(input_spec=CustomerRequest)
    async def next_best_offer(
        self, customer_id: str | None = None, features: dict | None = None
    ) -> NboResult:
        """Top offers with expected value and eligibility reasons, and the excluded offers."""
        item = CustomerRequest(customer_id=customer_id, features=features)
        return await self._one(item, "full", offers_from_row, NboResult)

    @bentoml.api(input_spec=CustomerRequest)
    async def customer360(
        self, customer_id: str | None = None, features: dict | None = None
    ) -> ProfileResult:
        """The integrated profile: classifications, segment and service policy, churn with
        reasons, CLV (ML and probabilistic), P(alive), top offers."""
        item = CustomerRequest(customer_id=customer_id, features=features)
        return await self._one(item, "full", self._profile_shape, ProfileResult)

    # --- batch endpoints (adaptive batching merges concurrent requests) ----------------------

    @bentoml.api(**_BATCH_OPTIONS)
    def churn_batch(self, customers: list[CustomerRequest]) -> list[BatchItem[ChurnResult]]:
        """/churn for a list of customers; unknown ids come back as per-item errors."""
        return self._many(customers, self._churn_part, churn_from_row)

    @bentoml.api(**_BATCH_OPTIONS)
    def clv_batch(self, customers: list[CustomerRequest]) -> list[BatchItem[ClvResult]]:
        """/clv for a list of customers."""
        return self._many(customers, self._clv_part, self._clv_shape)

    @bentoml.api(**_BATCH_OPTIONS)
    def next_best_offer_batch(
        self, customers: list[CustomerRequest]
    ) -> list[BatchItem[NboResult]]:
        """/next_best_offer for a list of customers."""
        return self._many(customers, self._full_part, offers_from_row)

    @bentoml.api(**_BATCH_OPTIONS)
    def customer360_batch(
        self, customers: list[CustomerRequest]
    ) -> list[BatchItem[ProfileResult]]:
        """/customer360 for a list of customers."""
        return self._many(customers, self._full_part, self._profile_shape)

    # --- feedback ------------------------------------------------------------------------------

    @bentoml.api(input_spec=FeedbackRequest)
    def feedback(
        self,
        customer_id: str,
        offer_id: str,
        accepted: bool,
        channel: str | None = None,
        event_id: str | None = None,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> FeedbackResult:
        """Record an offer's acceptance or rejection durably (the NBO feedback log in the
        warehouse) and feed it to the NBO learning layer.

        Idempotent by ``event_id`` (or the ``Idempotency-Key`` header): a resend stores
        nothing more and answers the same (header ``Idempotent-Replayed: true``). Refused:
        an unknown customer or offer (404), a channel not in the catalogue (400), an offer
        the customer's segment was never eligible for (422), an event id reused for another
        event (409). The answer is sent only once the event is committed to the warehouse.
        """
        answer = self._feedback(customer_id, offer_id, accepted, channel, event_id, ctx)
        if ctx is not None and isinstance(answer, JSONResponse):
            # with a context, BentoML answers with the context's status, not the response's
            ctx.response.status_code = answer.status_code
        return answer

    def _feedback(
        self,
        customer_id: str,
        offer_id: str,
        accepted: bool,
        channel: str | None,
        event_id: str | None,
        ctx: bentoml.Context | None,
    ) -> FeedbackResult | JSONResponse:
        header_id = ctx.request.headers.get("idempotency-key") if ctx is not None else None
        if header_id is not None:
            header_id = header_id.strip()
            if not re.fullmatch(EVENT_ID_PATTERN, header_id):
                return _error(
                    400, "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : ~ -."
                )
            if event_id is not None and event_id != header_id:
                return _error(
                    400, f"event_id {event_id!r} and the Idempotency-Key header {header_id!r} "
                    "differ; send one of them, or the same value in both."
                )
            event_id = header_id
        if customer_id not in self.row_of:
            return _error(404, str(unknown_customer(customer_id, self.as_of)))
        known_offers = self.scorer.offer_ids()
        if known_offers and offer_id not in known_offers:
            return _error(
                404, f"offer {offer_id!r} is not in the offer catalogue (configs/nbo.yaml)."
            )
        channels = self.scorer.channels()
        if channel is not None and channels and channel not in channels:
            return _error(
                400, f"channel {channel!r} is not a channel of the offer catalogue; use one of "
                f"{sorted(channels)} or leave it out."
            )
        not_eligible = self.scorer.never_eligible(customer_id, offer_id)
        if not_eligible:
            return _error(422, not_eligible)
        segment = self.scorer.population.classifications.at[customer_id, "value_segment"]
        try:
            with self.write_lock:
                if self.profiles is not None:  # before the bandit moves: no stale answer
                    self.profiles.touched(self.row_of.get_loc(customer_id))
                event_id, replayed = self.scorer.record_feedback(
                    self.db_path, customer_id, offer_id, accepted, str(segment), event_id
                )
        except FeedbackConflict as exc:
            return _error(409, str(exc))
        except WarehouseError as exc:
            log.warning("feedback for customer %s not stored: %s", hash_id(customer_id), exc)
            return _error(503, "the warehouse is busy (another process holds it); retry later")
        except NotFoundError as exc:
            return _error(404, str(exc))
        except Exception as exc:
            return self._unexpected(exc, customer_id)
        if replayed:
            if ctx is not None:
                ctx.response.headers["Idempotent-Replayed"] = "true"
            log.info("feedback replayed for customer %s offer %s", hash_id(customer_id), offer_id)
        else:
            log.info("feedback stored for customer %s offer %s", hash_id(customer_id), offer_id)
        return FeedbackResult(
            recorded=True,
            customer_id=customer_id,
            offer_id=offer_id,
            accepted=accepted,
            event_id=event_id,
        )

    @bentoml.api
    def schema_info(self) -> dict:
        """The feature columns a payload must hold, the snapshot date and the model versions."""
        return {
            "as_of": self.as_of.isoformat(),
            "customers": len(self.snapshot),
            "model_versions": self.scorer.model_versions,
            "feature_columns": self.scorer.required,
            "max_batch_size": self.config.max_batch_size,
        }

    # --- issue 15: leads and opportunities (added block) --------------------------------------

    def _sales_answer(self, score: Callable[[], dict], model: type[BaseModel]) -> Any:
        try:
            return model(**score())
        except NotFoundError as exc:
            return _error(404, str(exc))
        except PayloadError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # no request may take the worker down
            return self._unexpected(exc, None)

    @bentoml.api(input_spec=LeadRequest)
    def lead_score(
        self, lead_id: str | None = None, features: dict | None = None
    ) -> LeadScoreResult:
        """A lead's conversion probability, score 1-100, grade A-D, reasons for and against
        and trend, by ``lead_id`` (scored at start-up) or from its ``features``."""
        return self._sales_answer(lambda: self.sales.lead(lead_id, features), LeadScoreResult)

    @bentoml.api(input_spec=OpportunityRequest)
    def opportunity_score(
        self, opportunity_id: str | None = None, features: dict | None = None
    ) -> OpportunityScoreResult:
        """An open opportunity's win probability at its stage and expected close date with
        its interval, by ``opportunity_id`` or from its ``features``."""
        return self._sales_answer(lambda: self.sales.opportunity(opportunity_id, features),
                                  OpportunityScoreResult)

    # --- issue 16: the campaign planner (added block) -----------------------------------------

    @bentoml.api(input_spec=CampaignPlanRequest)
    def campaign_plan(
        self,
        budget: float,
        cost_per_contact: float,
        action: str = "retention",
        segments: list[str] | None = None,
        limit: int = 100,
    ) -> CampaignPlanResult:
        """Who to contact for a budget and cost per contact, best expected incremental margin
        first, from the ranking `customer360 campaign plan` stored; with that run's backtest
        of the strategies."""
        from customer360.data.warehouse import connect
        from customer360.serving.campaign import plan_from_scores

        request = CampaignPlanRequest(action=action, budget=budget,
                                      cost_per_contact=cost_per_contact, segments=segments,
                                      limit=limit)
        try:
            with self.write_lock, connect(self.db_path, read_only=True) as con:
                return plan_from_scores(con, request)
        except (ValueError, CampaignError) as exc:
            return _error(400, str(exc))
        except NotFoundError as exc:
            return _error(404, str(exc))
        except WarehouseError as exc:
            log.warning("campaign plan not read: %s", exc)
            return _error(503, "the warehouse is busy (another process holds it); retry later")


Customer360.add_asgi_middleware(BearerTokenMiddleware)
Customer360.add_asgi_middleware(JsonOnlyMiddleware)
Customer360.add_asgi_middleware(OpenAPIMiddleware)
Customer360.mount_asgi_app(webapp, path=APP_PATH)
