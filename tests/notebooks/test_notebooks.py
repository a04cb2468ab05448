"""Both notebooks run headless (nbclient) on the tracked demo model at small size; the review's verdicts are
read back from MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import nbformat
import pytest
from nbclient import NotebookClient

from monai_patronus.tracking import CANDIDATE, CHAMPION, load_review
from tests.bundles._workflow import BUNDLES

pytestmark = pytest.mark.slow  # trains a model or runs a CLI / notebook kernel

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, parameters: dict, workdir: Path) -> nbformat.NotebookNode:
    """Run a notebook with ``parameters`` injected after its ``parameters`` cell (as papermill does)."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    book.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("# injected by the test\n" + source))
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return book


def _outputs(book) -> str:
    text = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") + json.dumps(out.get("data", {}).get("text/markdown", "")))
    return "\n".join(text)


def _common(tracked_demo, tmp_path):
    return {
        "tracking_uri": tracked_demo["tracking_uri"],
        "model_name": tracked_demo["model_name"],
        "alias": CANDIDATE,
        "bundle_dir": str(BUNDLES / "patronus_demo"),
        "dataset_dir": str(tracked_demo["dataset_dir"]),
        "num_inference_steps": 3,
        "output_dir": str(tmp_path / "out"),
    }


def test_review_notebook_saves_verdicts_to_mlflow(tracked_demo, tmp_path):
    verdicts = {k: ("accept", "anatomy") for k in range(32)} | {2: ("spurious", "corner artefact")}
    book = execute(
        "prototype_review.ipynb",
        _common(tracked_demo, tmp_path)
        | {
            "key_file": str(tracked_demo["output_dir"] / "pseudonym.key"),
            "prototypes": [0, 1, 2],
            "num_images": 2,
            "reviewer": "notebook test",
            "verdicts": verdicts,
            "promote": True,
        },
        tmp_path,
    )
    text = _outputs(book)
    assert "the fingerprint matches" in text and "Not promoted" in text and "flagged prototypes" in text
    for figure in ("real_patches.png", "explain/gallery.png", "emergence.png"):
        assert (tmp_path / "out" / figure).is_file(), figure
    review = load_review(tracked_demo["model_name"], CANDIDATE, tracked_demo["tracking_uri"])  # read back from MLflow
    assert review["reviewer"] == "notebook test" and review["status"] == "flagged"
    assert review["verdicts"]["2"] == {"verdict": "spurious", "comment": "corner artefact"}
    assert review["verdicts"]["0"]["verdict"] == "accept" and review["unreviewed"] == []
    aliases = mlflow.MlflowClient(tracked_demo["tracking_uri"]).get_registered_model(tracked_demo["model_name"]).aliases
    assert CHAMPION not in aliases  # a flagged prototype keeps the model from deployment


def test_shortcut_notebook_writes_the_report(tracked_demo, tmp_path):
    book = execute(
        "shortcut_diagnosis.ipynb",
        _common(tracked_demo, tmp_path) | {"num_pairs": 1, "num_counterfactual": 2, "top_n": 2},
        tmp_path,
    )
    report = json.loads((tmp_path / "out" / "shortcuts.json").read_text())
    assert report["pairs"] and set(report["pairs"][0]["attributes"]) <= {"sagittal", "coronal", "axial", "upper_half"}
    assert (tmp_path / "out" / "auroc_heatmap.png").is_file()
    first = report["pairs"][0]
    # the demo's plane attributes exclude each other (phi about -0.5 on the random held-out split), so no probe
    # fitted on them is an independent judge: the counterfactual is refused, with the reason in the report
    assert first["counterfactual"] is None and first["counterfactual_skipped"]
    assert "Counterfactual not run" in (tmp_path / "out" / "shortcuts.md").read_text()
    assert not list((tmp_path / "out").glob("counterfactual_*.png"))
    assert "Shortcut report: patronus-demo" in _outputs(book)


@pytest.mark.parametrize("name", ["prototype_review.ipynb", "shortcut_diagnosis.ipynb"])
def test_notebooks_are_saved_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(book)
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code")
