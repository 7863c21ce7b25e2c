"""The notebooks run top to bottom (nbclient), so they never rot."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "rd_curves.ipynb", "lossless.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    # Run a copy inside a temporary notebooks/ folder so outputs stay out of the repo, with the
    # same relative position to the corpus as the real one (a link to it, where it is beside the
    # repository), so the notebooks run on corpus slices where they would, and on pydicom's else.
    work = tmp_path / "repo" / "notebooks"
    work.mkdir(parents=True)
    if (REPO.parent / "shared").is_dir():
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    shutil.copy(path, work / path.name)
    nb = nbformat.read(work / path.name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if path.stem == "lossless" and (REPO.parent / "shared" / "data" / "corpus").is_dir():  # the corpus series, not the fallback
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert "5 slice(s) of (512, 512) uint16, 12 bits stored" in text
    if path.stem == "rd_curves":
        assert (work / "rd_curves_output" / "rd_psnr.png").is_file()
