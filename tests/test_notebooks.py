"""Every notebook under notebooks/ runs top to bottom (nbclient, a python3 kernel on this
interpreter) and is committed with its outputs cleared."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat", reason='needs the test extra: pip install -e ".[test]"')
nbclient = pytest.importorskip("nbclient", reason='needs the test extra: pip install -e ".[test]"')
pytest.importorskip("ipykernel", reason='needs the test extra: pip install -e ".[test]"')
pytest.importorskip("matplotlib", reason='needs the test extra: pip install -e ".[test]"')

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 4 and "04_report.ipynb" in names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_cleared(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has stored outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, data_dir, tmp_path, monkeypatch):
    # the kernel is a child process: it inherits this environment (data, threads, headless
    # plots, and PYTHONPATH so it imports the same loglm as the tests)
    monkeypatch.setenv("LOGLM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("LOGLM_NUM_THREADS", "2")
    monkeypatch.setenv("LOGLM_RESULTS_DIR", str(REPO / "docs" / "results"))
    monkeypatch.setenv("PYTHONPATH", ":".join(p for p in sys.path if p))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the cell and traceback on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
