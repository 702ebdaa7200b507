"""The walkthrough notebook runs top to bottom (so it cannot rot)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01-customer360-walkthrough.ipynb"


@pytest.mark.server
def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
    import nbformat

    # A kernel spec for this interpreter (the venv), installed in a private folder.
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    install(prefix=str(tmp_path / "jupyter"), kernel_name="customer360-test")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    spec = KernelSpecManager().get_kernel_spec("customer360-test")
    assert spec.argv[0] == sys.executable
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, kernel_name="customer360-test", timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "service ready at http://127.0.0.1:" in outputs
    assert '"churn_probability"' in outputs
    assert "service stopped" in outputs
    images = sum(
        "image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert images >= 4
