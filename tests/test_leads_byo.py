"""Bring your own leads table (issue 15): CLI train -> predict round trip on messy columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from customer360.cli import app


def messy_leads(n: int = 800, seed: int = 5) -> pd.DataFrame:
    """A CRM lead export: text numbers with spaces and thousands separators, blanks, N/A,
    mixed-case categories, free text, and Yes/No labels (two blank)."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(4, n)
    size = rng.choice(["small", "medium", "large"], n)
    budget = rng.gamma(2.0, 5000.0, n)
    logit = -1.5 + 0.35 * visits + 1.0 * (size == "large") + 0.8 * (budget > 12000)
    converted = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({
        "Lead ID": [f"L{i:05d}" for i in range(n)],
        "web visits": [f" {v} " for v in visits],
        "Company Size": [s.upper() if i % 9 == 0 else f"{s} " for i, s in enumerate(size)],
        "budget": [f"{v:,.0f}" for v in budget],
        "comment": [f"call back {i}" for i in range(n)],
        "Converted": np.where(converted, "Yes", "no "),
    })
    frame.loc[::31, "budget"] = " "
    frame.loc[7::43, "web visits"] = "N/A"
    frame.loc[[2, 500], "Converted"] = ""
    return frame


def test_byo_leads_round_trip_with_messy_columns(tmp_path):
    table = tmp_path / "leads.csv"
    messy_leads().to_csv(table, index=False)
    runner = CliRunner()
    trained = runner.invoke(app, [
        "train", "leads", "--table", str(table), "--label", "Converted",
        "--positive-label", "yes", "--id-col", "Lead ID", "--model-name", "my_leads",
        "--trials", "1",
    ])
    assert trained.exit_code == 0, trained.output
    assert "logistic_regression" in trained.output and "lightgbm_untuned" in trained.output
    out = tmp_path / "scored.csv"
    scored_run = runner.invoke(app, ["predict", "--model", "my_leads", "--table", str(table),
                                     "--output", str(out)])
    assert scored_run.exit_code == 0, scored_run.output
    scored = pd.read_csv(out)
    assert list(scored.columns[:4]) == ["Lead ID", "probability", "score", "grade"]
    assert {"reason_positive_1", "reason_negative_1"} <= set(scored.columns)
    assert len(scored) == 800
    assert scored["score"].between(1, 100).all()
    assert set(scored["grade"]) <= {"A", "B", "C", "D"}
    assert (scored["score"] == np.clip(np.ceil(np.round(scored["probability"] * 100, 6)), 1,
                                       100)).all()
    truth = messy_leads()["Converted"].str.strip().eq("Yes")
    # the grades rank the leads: A converts more often than D
    by_grade = truth.groupby(scored["grade"]).mean()
    assert by_grade.get("A", 1.0) > by_grade.get("D", 0.0)
