"""A real notebook: nbclient runs ``examples/walkthrough.ipynb`` and a notebook that shows
each API result, in a kernel on this interpreter, offline; every result it displays
carries ``text/html`` (and text and JSON beside it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import optinspect

nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
pytest.importorskip("ipykernel", reason="the test extra installs ipykernel")

WALKTHROUGH = Path(__file__).resolve().parents[1] / "examples" / "walkthrough.ipynb"
#: A name of our own, so no kernel the user installed (another Python) answers instead.
KERNEL = "optinspect-test"
#: The seconds one cell may take: the tiny model loads and runs in a few.
CELL_TIMEOUT = 120

#: One cell per API function, each ending in the result it shows.
EACH_RESULT = [
    'import optinspect as oi\nmodel = oi.load("tiny", quant="none")\ntext = "Hello there, world"',
    'oi.trace(model, text, layer=0)',
    'oi.trace(model, [text, "a second one"])',
    'oi.lens(model, text, top_k=2)',
    'oi.compare(model, text, against="none", against_dtype="float16")',
    'oi.outliers(model, text, threshold=1.0)',
    'oi.attention(model, text, layer=-1)',
    'oi.calibrate(model, [text, "a second one"])',
    'oi.params(model)',
    'oi.params("facebook/opt-1.3b", by="layer")',
    'oi.tree(model, depth=3)',
    'oi.report(model, text, compare="8bit")',
]  # fmt: skip


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec that runs ipykernel on this interpreter, importing this optinspect,
    with IPython's and Jupyter's folders in ``tmp_path`` (no profile, no startup file)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    source = str(Path(optinspect.__file__).resolve().parents[1])
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel_json = {"argv": argv, "display_name": KERNEL, "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel_json))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", source)
    return KERNEL


def run_notebook(notebook: Any, kernel: str, folder: Path) -> Any:
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    return notebook


def shown_outputs(notebook: Any) -> list[tuple[int, dict[str, Any]]]:
    """Every result a cell displayed, with its cell's index; errors fail the test."""
    shown = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"cell {index}: {output}"
            if output["output_type"] in ("execute_result", "display_data"):
                shown.append((index, output["data"]))
    return shown


def test_the_walkthrough_is_stored_without_outputs() -> None:
    notebook = nbformat.read(WALKTHROUGH, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the walk-through has no code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source


@pytest.mark.slow
def test_the_walkthrough_runs(kernel: str, tmp_path: Path) -> None:
    notebook = run_notebook(nbformat.read(WALKTHROUGH, as_version=4), kernel, tmp_path)
    shown = shown_outputs(notebook)
    results = [data for _, data in shown if "application/json" in data]
    assert len(results) >= 6, "the walk-through shows a result of each analysis"
    for index, data in shown:
        if "application/json" in data:  # optinspect's results; model.info is a plain repr
            assert {"text/html", "text/plain"} <= set(data), f"cell {index}"
    assert (tmp_path / "walkthrough-report.html").stat().st_size > 0  # report.save


@pytest.mark.slow
def test_every_api_result_shows_itself_in_a_notebook(kernel: str, tmp_path: Path) -> None:
    cells = [nbformat.v4.new_code_cell(source) for source in EACH_RESULT]
    notebook = run_notebook(nbformat.v4.new_notebook(cells=cells), kernel, tmp_path)
    shown = shown_outputs(notebook)
    # one output each: rich drew nothing into the notebook on its own
    assert [index for index, _ in shown] == list(range(1, len(cells)))
    for index, data in shown:
        assert {"text/html", "text/plain", "application/json"} <= set(data), f"cell {index}"
        assert data["text/html"].lstrip().startswith("<"), f"cell {index}"
        assert data["text/plain"].strip(), f"cell {index}"
        json.dumps(data["application/json"], allow_nan=False)
