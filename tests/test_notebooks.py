"""The lessons in notebooks/ (jupytext percent files) run top to bottom without an error, as a reader
would run them (from the repository root, on the real data)."""

from __future__ import annotations

import pytest

from conftest import ROOT, SHARED_DATA, shared

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
USES_DATA = {"03_fashion_mnist_cnn.py", "04_pooling_ablation.py", "05_transfer_learning.py"}


def test_the_lessons_are_there():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"][: len(NOTEBOOKS)]
    assert len(NOTEBOOKS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_an_error(path, tmp_path, monkeypatch, request):
    import jupytext
    import nbclient

    if path.name in USES_DATA:
        shared("fashion-mnist")
        monkeypatch.setenv("TFDS_DATA_DIR", str(request.getfixturevalue("fashion_data_dir")))
        monkeypatch.setenv("CNN_JAX_LOCAL_DATA", str(SHARED_DATA))
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
