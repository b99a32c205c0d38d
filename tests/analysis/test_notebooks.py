"""The notebooks run top to bottom (executed with nbclient on their own small settings).

Notebook 01 (one block by hand, ~10 s) runs in the default suite; 02, 03 and 04 (about
20-60 s each on 2 CPU cores) are marked slow.
"""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(ROOT, "notebooks")


def _run(name):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    committed_pngs = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                         if "image/png" in o.get("data", {}))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}})
    client.execute()  # raises CellExecutionError on the first failing cell
    pngs = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert pngs == committed_pngs > 0  # the committed copy is executed, with its figures embedded
    return nb


def _stream_text(nb):
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")


def test_notebook_01_backprop_through_a_skip():
    text = _stream_text(_run("01_backprop_through_a_skip.ipynb"))
    assert "max |by hand - engine| =" in text
    diff = float(text.split("max |by hand - engine| =")[1].split()[0])
    assert diff < 1e-10


@pytest.mark.slow
def test_notebook_02_gradient_norms():
    text = _stream_text(_run("02_gradient_norms.ipynb"))
    assert "plain56" in text and "resnet56" in text


@pytest.mark.slow
def test_notebook_03_train_a_cifar_resnet():
    text = _stream_text(_run("03_train_a_cifar_resnet.ipynb"))
    assert "epoch 3:" in text


@pytest.mark.slow
def test_notebook_04_gradient_flow_during_training():
    text = _stream_text(_run("04_gradient_flow_during_training.ipynb"))
    assert "plain20: 20 tracked steps" in text and "resnet20: 20 tracked steps" in text
    assert text.count("median log10 ratio") == 4
