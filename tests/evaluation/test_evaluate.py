"""evaluate.py end to end on two tiny images; the loop, datasets, learned points and CLIs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from medvae.checkpoint import save_model
from medvae.cli import main
from medvae.errors import InputError, MedVAEError
from medvae.evaluation import expand
from medvae.evaluation.datasets import load_images
from medvae.io.slices import Slice
from medvae.evaluation.run import evaluate, read_summary
from tests.conftest import REPO, small_model

SPEC = ["jpeg2000=0.25,0.5,1,2,lossless", "jpegls=0,2,8", "spiht=0.5,1", "coiflet=0.5,1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two 64×72 'CT' slices as .npy, one 12-bit unsigned, one signed 16-bit, and a manifest."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :72]
    body = ((yy - 32) / 28.0) ** 2 + ((xx - 36) / 30.0) ** 2 < 1
    hu = np.where(body, 40 + 300 * np.sin(xx / 6.0) * np.cos(yy / 8.0), -1000) + rng.normal(0, 10, body.shape)
    np.save(root / "a.npy", np.clip(hu + 1024, 0, 4095).astype(np.uint16))
    np.save(root / "b.npy", np.clip(hu, -32768, 32767).astype(np.int16))
    (root / "MANIFEST.csv").write_text(
        "path,modality,patient,split\na.npy,CT,p1,test\nb.npy,CT,p2,test\na.npy,CT,p3,train\n"
    )
    save_model(small_model("medvae"), root / "tiny.pt")
    return root


def test_evaluate_py_writes_csv_json_and_plots(tiny, tmp_path, capsys):
    out = tmp_path / "results"
    cmd = [sys.executable, str(REPO / "evaluate.py"), "--data", str(tiny / "MANIFEST.csv"), "--split", "test",
           "--out", str(out), "--no-progress", "--visual-bpp", "1.0"]
    for spec in SPEC + [f"medvae={tiny / 'tiny.pt'}"]:
        cmd += ["--codecs", spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    n_points = 5 + 3 + 2 + 2 + 1
    assert len(rows) == 2 * n_points
    assert {r["patient"] for r in rows} == {"p1", "p2"}
    assert {r["file"] for r in rows} == {"a.npy", "b.npy"}
    assert all(r["error"] == "" for r in rows)
    for r in rows:  # bpp is real bytes
        assert float(r["bpp"]) == pytest.approx(8 * int(r["bytes"]) / (64 * 72), rel=1e-5)
        assert r["psnr_soft_tissue"] != ""  # CT rows carry windowed PSNR
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["codecs"]) == {"jpeg2000", "jpegls", "spiht", "coiflet", "medvae"}
    assert summary["codecs"]["medvae"]["learned"] is True
    j2k = summary["codecs"]["jpeg2000"]["points"]
    assert [p["lossless"] for p in j2k] == [False] * 4 + [True]
    assert j2k[-1]["exact"] == 2 and j2k[-1]["psnr"] is None
    assert all(p["complete"] and p["n_images"] == 2 for p in j2k)
    assert summary["codecs"]["jpegls"]["points"][1]["max_abs_error"] <= 8
    for name in ("rd_psnr", "rd_ms_ssim_db", "rd_psnr_soft_tissue", "visual"):
        for ext in ("png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, name
    assert "| jpeg2000 |" in proc.stdout

    # the summary feeds bd-rate and plot
    capsys.readouterr()
    assert main(["bd-rate", str(out / "summary.json"), "--anchor", "jpeg2000", "--json", "--method", "pchip"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "pchip" and set(report["bd_rate_percent"]) == {"jpegls", "spiht", "coiflet", "medvae"}
    assert main(["plot", str(out), "--out", str(tmp_path / "p"), "--metric", "psnr"]) == 0
    assert (tmp_path / "p" / "rd_psnr.svg").is_file()


def test_evaluate_loop_in_memory_and_learned_round_trip(tiny):
    images = load_images([tiny / "a.npy"], modality="CT")
    assert len(images) == 1 and images[0].modality == "CT"
    assert images[0].bits_stored == max(8, int(images[0].pixels.max()).bit_length())  # .npy: bits needed
    points = expand([f"medvae={tiny / 'tiny.pt'}", "jpegls=1"])
    result = evaluate(images, points, progress=False, keep=0)
    rows = {r["point"]: r for r in result.rows}
    learned = rows[points[0].label]
    assert learned["codec"] == "medvae" and learned["error"] == ""
    decoded, bpp = result.decoded[points[0].label]
    assert decoded.dtype == images[0].pixels.dtype and bpp == learned["bpp"]
    assert rows["jpegls[near=1]"]["max_abs_error"] == 1


def test_failed_points_are_recorded_not_fatal():
    image = Slice(pixels=np.full((32, 32), 7, np.uint8), bits_stored=8)
    result = evaluate([image], expand("jpegls=200"), progress=False)
    assert "NEAR" in result.rows[0]["error"]
    point = result.summary["codecs"]["jpegls"]["points"][0]
    assert point["n_failed"] == 1 and point["complete"] is False


def test_manifest_split_and_errors(tiny):
    assert len(load_images([tiny / "MANIFEST.csv"], "test")) == 2
    assert [im.patient for im in load_images([tiny / "MANIFEST.csv"], "train")] == ["p3"]
    with pytest.raises(InputError):
        load_images([tiny / "MANIFEST.csv"], "val")
    with pytest.raises(InputError):
        load_images([tiny / "missing"])
    with pytest.raises(MedVAEError, match="no shipped"):
        expand("bls2017")  # no weights are shipped for it: a clear error
    with pytest.raises(InputError):
        read_summary(tiny / "MANIFEST.csv")


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    status = main(["evaluate", "--data", str(tiny / "a.npy"), "--codecs", "webp", "--out", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown codec 'webp'" in err[0]


def test_merging_runs_of_the_same_images(tiny):
    from medvae.evaluation.run import merge_summaries

    images = load_images([tiny / "a.npy"])
    meta = {"images": [f"{im.file}#{im.index}" for im in images]}
    first = evaluate(images, expand("jpegls=0,1"), progress=False, meta=meta).summary
    second = evaluate(images, expand("jpeg=50"), progress=False, meta=meta).summary
    assert set(merge_summaries([first, second])["codecs"]) == {"jpegls", "jpeg"}
    with pytest.raises(InputError):
        merge_summaries([first, first])
    with pytest.raises(InputError):
        merge_summaries([first, {**second, "meta": {"images": ["other#0"]}}])


def test_the_package_docstring_example_imports_what_it_uses():
    """The ``>>> from ...`` lines of ``medvae.evaluation``'s example must run (they once raised ImportError)."""
    import medvae.evaluation

    lines = [line[4:] for line in medvae.evaluation.__doc__.splitlines() if line.startswith(">>> from ")]
    assert len(lines) >= 3
    for line in lines:
        exec(line, {})


def test_evaluation_reports_get_the_usual_permissions(tmp_path):
    """The CSV and JSON reports go through the project's one atomic writer: mode as the umask says
    (they were once left owner-only, 0600)."""
    import os

    from medvae.evaluation.run import write_csv, write_summary

    umask = os.umask(0o022)
    try:
        paths = [write_csv([], tmp_path / "rows.csv"), write_summary({"codecs": {}}, tmp_path / "summary.json")]
    finally:
        os.umask(umask)
    assert [p.stat().st_mode & 0o777 for p in paths] == [0o644, 0o644]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "summary.json"]  # no temporary left


def test_evaluation_reads_a_manifest_as_training_does(tmp_path):
    """One manifest reader (medvae.io.manifest): split names in any case, patients in one split only."""
    import numpy as np
    import pytest

    from medvae.errors import InputError
    from medvae.evaluation.datasets import images_from_manifest

    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((16, 16), np.uint16))
    manifest = tmp_path / "MANIFEST.csv"
    manifest.write_text("path,modality,patient,split\na.npy,CT,p1,Test\nb.npy,CT,p2,train\n")
    assert [image.file for image in images_from_manifest(manifest, "test")] == ["a.npy"]
    manifest.write_text("path,modality,patient,split\na.npy,CT,p1,test\nb.npy,CT,p1,train\n")
    with pytest.raises(InputError, match="patient p1 is in both"):
        images_from_manifest(manifest, "test")
