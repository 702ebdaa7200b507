"""Packaging: `bentoml build` works from the repo (scripts/build_bento.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_bentoml_build_from_the_repo(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
           "PY": str(REPO / ".venv/bin/python")}
    run = subprocess.run(["scripts/build_bento.sh"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (bento,) = [p for p in (tmp_path / "bentoml" / "bentos" / "customer360").iterdir()
                if p.is_dir()]
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "customer360.serving.service:Customer360"
    assert info["services"][0]["config"]["workers"] == 1
    routes = {r["route"] for r in info["schema"]["routes"]}
    assert {"/churn", "/clv", "/next_best_offer", "/customer360", "/feedback",
            "/churn_batch"} <= routes
    assert list((bento / "env" / "python" / "wheels").glob("customer360-*.whl"))
    assert (bento / "src" / "configs" / "serving.yaml").is_file()
    assert not (bento / "src" / "tests").exists()
