"""A trained, served-ready environment for the serving, batch and notebook tests.

Built once per test session (the first module asking builds it, the others reuse it): a copy
of the small synthetic warehouse with a feature snapshot, an MLflow store holding the real
``churn``, ``clv``, ``nbo``, ``leads`` and ``opportunities`` models trained with minimal
settings and promoted to ``champion``, and a config folder whose NBO bandit does not explore
(exploration 0), so that answers are deterministic and batch output can be compared with
single requests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
# The servers' log-hash key (random per process otherwise): tests recompute a logged hash.
LOG_HASH_KEY = "serving-tests-log-key"


def log_hash(customer_id: str) -> str:
    """``hash_id`` as the test servers compute it."""
    import hashlib
    import hmac

    return hmac.new(LOG_HASH_KEY.encode(), customer_id.encode(), hashlib.sha256).hexdigest()[:12]


@dataclass(frozen=True)
class ServingEnv:
    db: Path  # read-only master copy: copy it before writing
    tracking_uri: str
    config_dir: Path
    as_of: str

    def env(self, db: Path | None = None, **extra: str) -> dict[str, str]:
        """Environment for a process using this store, these configs and ``db``."""
        out = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "CUSTOMER360_CONFIG_DIR": str(self.config_dir),
            "CUSTOMER360_DB": str(db or self.db),
            "BENTOML_DO_NOT_TRACK": "True",
            "CUSTOMER360_LOG_HASH_KEY": LOG_HASH_KEY,
        }
        out.pop("CUSTOMER360_API_TOKEN", None)
        out.update(extra)
        return out

    def copy_db(self, dest: Path) -> Path:
        shutil.copy(self.db, dest)
        os.chmod(dest, 0o644)
        return dest


@contextmanager
def _environ(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _configs(dest: Path) -> Path:
    """The repo's configs with the NBO bandit greedy (exploration 0) and small training."""
    shutil.copytree(REPO / "configs", dest, ignore=shutil.ignore_patterns("__init__.py"))
    nbo = yaml.safe_load((dest / "nbo.yaml").read_text())
    nbo["bandit"]["exploration"] = 0.0
    (dest / "nbo.yaml").write_text(yaml.safe_dump(nbo))
    # Exact TreeSHAP reasons, so answers equal the registered pyfuncs' (and Spark's) bit for
    # bit; the fast path reasons are tested in tests/test_batch_fast.py (issue 17).
    serving = yaml.safe_load((dest / "serving.yaml").read_text())
    serving["reasons"] = "exact"
    (dest / "serving.yaml").write_text(yaml.safe_dump(serving))
    for name in ("churn", "clv"):
        path = dest / f"{name}.yaml"
        if not path.exists():
            continue
        cfg = yaml.safe_load(path.read_text())
        small = {"num_boost_round": 40, "early_stopping_rounds": 5, "n_jobs": 1,
                 "untuned_rounds": 20, "trials": 1,
                 # one straight-line linear candidate: the family choice is tested in
                 # test_churn.py; serving takes whichever family wins
                 "linear_c": [1.0], "linear_knots": [0], "linear_top": 1}
        cfg.update({k: v for k, v in small.items() if k in cfg})
        if "snapshots" in cfg and "count" in cfg["snapshots"]:
            # fewest snapshots that still leave a training date after purging overlaps
            horizon_steps = -(-cfg["horizon_days"] // cfg["snapshots"]["step_days"])
            cfg["snapshots"]["count"] = 1 + 2 * horizon_steps
        path.write_text(yaml.safe_dump(cfg))
    # issue 15: the lead and opportunity models with minimal settings (one backtest month)
    leads = yaml.safe_load((dest / "leads.yaml").read_text())
    leads.update({"trials": 0, "backtest_months": 1, "forecast_draws": 200})
    (dest / "leads.yaml").write_text(yaml.safe_dump(leads))
    return dest


def build_env(base: Path, master_db: Path) -> ServingEnv:
    """Create (or reuse, when already built in this session) the environment under ``base``."""
    done = base / "READY"
    store = base / "mlruns"
    db = base / "warehouse.duckdb"
    config_dir = base / "configs"
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    if done.exists():
        return ServingEnv(db, tracking_uri, config_dir, done.read_text().strip())
    base.mkdir(parents=True, exist_ok=True)
    store.mkdir(exist_ok=True)
    shutil.copy(master_db, db)
    os.chmod(db, 0o644)
    _configs(config_dir)
    with _environ(
        MLFLOW_TRACKING_URI=tracking_uri,
        CUSTOMER360_CONFIG_DIR=str(config_dir),
        CUSTOMER360_DB=str(db),
    ):
        from customer360.data.warehouse import connect, get_meta
        from customer360.features import build_features
        from customer360.features.assembler import SNAPSHOT_TABLE, write_outputs
        from customer360.training.churn import train_churn
        from customer360.training.clv import train_clv
        from customer360.training.leads import train_leads
        from customer360.training.nbo import train_nbo
        from customer360.training.opportunities import train_opportunities
        from customer360.training.promote import promote

        with connect(db) as con:
            as_of = get_meta(con, "today")
            write_outputs(build_features(con, as_of), con=con, table=SNAPSHOT_TABLE)
            train_churn(con, trials=1)
            train_clv(con, trials=1)
            train_nbo(con, trials=0)
            train_leads(con, trials=0)  # issue 15: /lead_score, /opportunity_score, B2B parts
            train_opportunities(con, trials=0)
        for name in ("churn", "clv", "nbo", "leads", "opportunities"):
            decision = promote(name)  # first versions are @champion from training already
            assert decision.champion_version in (None, decision.challenger_version), name
    os.chmod(db, 0o444)
    done.write_text(as_of)
    return ServingEnv(db, tracking_uri, config_dir, as_of)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real ``bentoml serve`` of the service on a free loopback port."""

    def __init__(self, env: ServingEnv, db: Path, log: Path, token: str | None = None) -> None:
        from customer360.serving.service import serve_command

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        extra = {"CUSTOMER360_API_TOKEN": token} if token else {}
        environ = env.env(db, **extra)
        with _environ(**{k: environ[k] for k in ("MLFLOW_TRACKING_URI", "CUSTOMER360_DB")}):
            cmd, run_env = serve_command(db, port=self.port)
        run_env.update(environ)
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, env=run_env, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=REPO,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.log.read_text()[-4000:]}")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def post(self, path: str, json=None, content=None, headers=None, **kw) -> httpx.Response:
        hdrs = {**self.headers(), **(headers or {})}
        if content is not None:
            hdrs.setdefault("Content-Type", "application/json")
        return httpx.post(
            f"{self.url}/{path.lstrip('/')}", json=json, content=content, headers=hdrs,
            timeout=60.0, **kw,
        )

    def __enter__(self) -> Server:
        """``with Server(...) as srv:`` waits until it is ready and stops it on the way out."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)
        self._log_file.close()


def add_identities(con) -> None:
    """Source records for 30 warehouse customers, resolved with the CRM as master system:
    each customer's first record is its CRM record, whose id is the customer id (issue 14)."""
    import numpy as np

    from customer360.data.synthetic_identity import generate_source_records
    from customer360.data.warehouse import insert_frame
    from customer360.identity.store import resolve
    from customer360.identity.unify import load_identity_config

    people = con.execute(
        "SELECT customer_id, customer_type = 'B2B' FROM customers WHERE customer_id IN "
        "(SELECT customer_id FROM feature_snapshots) ORDER BY customer_id LIMIT 30").fetchall()
    ids = [p[0] for p in people]
    records, truth = generate_source_records(len(ids), seed=7, entity_ids=ids,
                                             is_b2b=np.array([p[1] for p in people]))
    first = ~truth["entity_id"].duplicated().to_numpy()
    system = np.where(first, "crm", np.where(records["source_system"] == "crm", "callcentre",
                                             records["source_system"]))
    record_id = np.where(first, truth["entity_id"], records["source_record_id"])
    records = records.assign(source_system=system, source_record_id=record_id)
    records["record_key"] = records["source_system"] + ":" + records["source_record_id"]
    insert_frame(con, "source_records", records)
    config = load_identity_config().model_copy(update={"master_system": "crm"})
    resolve(con, config=config, run_id="webapp")


CHROMIUM = os.environ.get("CUSTOMER360_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@contextmanager
def chromium():
    """Debian's Chromium under Playwright, closed on exit; without it the browser tests skip
    (fail under CI, where `make test` installs it)."""
    import pytest

    if not Path(CHROMIUM).exists():
        message = (f"no Chromium at {CHROMIUM}: install Debian's package `chromium` "
                   "(apt-get install chromium), or run `make test`, which does")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_in(browser, url: str, token: str):
    """A new 1280 x 900 tab of ``browser`` that opened ``url``, was sent to the login page,
    gave ``token`` and is back on ``url`` with the session cookie."""
    tab = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    tab.goto(url)
    assert "/app/login" in tab.url, tab.url
    tab.fill("#token", token)
    tab.click("button[type=submit]")
    tab.wait_for_url(url)
    return tab
