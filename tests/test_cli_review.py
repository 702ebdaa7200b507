"""Review mends of the command line (items 6-11): shared option declarations, one model load
per `predict`, clear exits for an empty identity input, bad `--limit` and unplannable campaign
inputs, and a README table that matches `customer360 --help`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import typer.main
from typer.testing import CliRunner

from customer360.cli import app

ROOT = Path(__file__).resolve().parents[1]
BYO_OPTIONS = ("table", "label", "positive_label", "id_col", "model_name")


def cli_commands() -> set[str]:
    """Every leaf command of the app, as typed ("train churn")."""
    out: set[str] = set()

    def walk(cmd, prefix: str) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out.add(prefix)

    walk(typer.main.get_command(app), "")
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "customer360.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.fixture
def empty_warehouse(tmp_path) -> Path:
    from customer360.data.warehouse import connect

    db = tmp_path / "empty.duckdb"
    connect(db, create=True).close()
    return db


# --- 6: one declaration of the bring-your-own-table options ----------------------------------


def test_train_churn_and_leads_share_the_byo_option_declarations():
    group = typer.main.get_command(app).commands["train"]
    params = {
        name: {p.name: p for p in group.commands[name].params} for name in ("churn", "leads")
    }
    for option in BYO_OPTIONS:
        churn, leads = params["churn"][option], params["leads"][option]
        assert (churn.opts, churn.help) == (leads.opts, leads.help), option


# --- 7: predict loads the model once -----------------------------------------------------------


def test_predict_loads_the_registered_model_once(tmp_path, monkeypatch):
    from customer360.training.churn import load_churn_config, train_churn_table

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(
        churn=(rng.uniform(size=400) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(int))
    cfg = load_churn_config()
    cfg = cfg.model_copy(update={"n_jobs": 1, "blend_weights": [],
                                 "byo": cfg.byo.model_copy(update={"cv_folds": 3})})
    train_churn_table(frame, "churn", model_name="once", trials=0, config=cfg)
    source, out = tmp_path / "t.csv", tmp_path / "scored.csv"
    frame.drop(columns="churn").to_csv(source, index=False)

    loads = []
    real_load = mlflow.pyfunc.load_model
    monkeypatch.setattr(mlflow.pyfunc, "load_model",
                        lambda *a, **kw: loads.append(a) or real_load(*a, **kw))
    result = CliRunner().invoke(app, ["predict", "--model", "once", "--table", str(source),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 400
    assert len(loads) == 1, loads


# --- 8, 9: identity on an empty input, --limit -------------------------------------------------


def test_identity_run_on_empty_source_records_is_one_line_and_exit_2(empty_warehouse):
    done = run_cli("identity", "run", "--db", str(empty_warehouse))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "source_records is empty" in done.stderr + done.stdout


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_identity_review_refuses_a_limit_below_1(empty_warehouse, limit):
    result = CliRunner().invoke(app, ["identity", "review", "--limit", limit,
                                      "--db", str(empty_warehouse)])
    assert result.exit_code == 2 and "--limit" in result.output, result.output


# --- 10: campaign plan checks its inputs before fitting ----------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--budget", "1e300", "--cost-per-contact", "1"], "budget must be"),
    (["--budget", "0", "--cost-per-contact", "1"], "budget must be"),
    (["--budget", "100", "--cost-per-contact", "1e-300"], "cost per contact must be"),
    (["--budget", "100", "--cost-per-contact", "inf"], "cost per contact must be"),
    # one rule with /campaign_plan (at least a cent): 0 was accepted here and refused there
    (["--budget", "100", "--cost-per-contact", "0"], "cost per contact must be"),
    (["--budget", "100", "--cost-per-contact", "1", "--action", "bribe"], "action 'bribe'"),
    (["--budget", "100", "--cost-per-contact", "1", "--segments", "Z"], "unknown value segments"),
])
def test_campaign_plan_refuses_unplannable_inputs_before_fitting(empty_warehouse, args, message):
    """The warehouse has no campaigns: a check that ran after reading or fitting would fail on
    that instead."""
    done = run_cli("campaign", "plan", *args, "--db", str(empty_warehouse))
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert message in said and "Traceback" not in said, said
    assert len(said.strip().splitlines()) == 1, said


# --- 11: the README's command table --------------------------------------------------------------


def test_readme_command_table_lists_exactly_the_cli_commands():
    text = (ROOT / "README.md").read_text()
    table = text.split("| command | what it does |", 1)[1].split("\n\n", 1)[0]
    commands = cli_commands()
    documented = set()
    for line in table.splitlines()[1:]:
        first = line.split("|")[1]
        for span in re.findall(r"`([^`]+)`", first):
            words = span.split()
            name = words[0] if words[0] in commands else " ".join(words[:2])
            assert name in commands, f"README lists {span!r}, which is no command"
            documented.add(name)
    assert documented == commands, sorted(commands - documented)
