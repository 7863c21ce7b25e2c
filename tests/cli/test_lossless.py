"""``medvae compress --lossless / --max-error`` with the shipped default and its residual model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medvae
import medvae.io as mio
from medvae import bitstream
from medvae.cli import main

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    """CT_small.dcm and MR_small.dcm through compress --lossless / --max-error 2 and decompress."""
    root = tmp_path_factory.mktemp("lossless")
    (root / "in").mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(PYDICOM_FILES / name, root / "in" / name)
    out = {}
    for label, flag in (("lossless", ["--lossless"]), ("near", ["--max-error", "2"])):
        assert main(["compress", str(root / "in"), "-o", str(root / f"c-{label}"), *flag]) == 0
        assert main(["decompress", str(root / f"c-{label}"), "-o", str(root / f"d-{label}")]) == 0
        out[label] = root
    return root


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_lossless_dicom_has_the_source_pixel_data(restored, name):
    source = pydicom.dcmread(PYDICOM_FILES / name)
    out = pydicom.dcmread(restored / "d-lossless" / name)
    np.testing.assert_array_equal(out.pixel_array, source.pixel_array)
    assert out.SOPInstanceUID == source.SOPInstanceUID
    assert out.get("LossyImageCompression") == source.get("LossyImageCompression")
    header = bitstream.read_header((restored / "c-lossless" / name).with_suffix(".mvae").read_bytes())
    assert header.max_error == 0


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_near_lossless_dicom_keeps_the_bound_and_declares_it(restored, name):
    source = mio.read(PYDICOM_FILES / name).pixels[0]
    out = pydicom.dcmread(restored / "d-near" / name)
    assert np.abs(out.pixel_array.astype(int) - source).max() <= 2
    assert out.LossyImageCompression == "01" and "max error 2" in out.DerivationDescription


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not on PATH")
@pytest.mark.parametrize("mode", ["lossless", "near"])
def test_outputs_add_no_dciodvfy_errors(restored, mode):
    for name in ("CT_small.dcm", "MR_small.dcm"):
        new = _dciodvfy_errors(restored / f"d-{mode}" / name) - _dciodvfy_errors(PYDICOM_FILES / name)
        assert not new, f"{mode} {name}: {sorted(new)}"


def test_info_shows_the_mode(restored, capsys):
    path = restored / "c-near" / "CT_small.mvae"
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["mode"] == "near-lossless, max error 2 on every pixel" and info["max_error"] == 2
    assert main(["info", str(path)]) == 0
    assert "near-lossless, max error 2" in capsys.readouterr().out


def test_info_reads_a_file_without_importing_compressai(restored):
    """``medvae info`` reads headers: it needs no model, so it does not pay for importing
    CompressAI (which imports torch_geometric and torch._dynamo: seconds on every call)."""
    path = restored / "c-near" / "CT_small.mvae"
    code = f"import sys; from medvae.cli import main; assert main(['info', {str(path)!r}]) == 0; print('compressai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "near-lossless, max error 2" in result.stdout and result.stdout.strip().endswith("False")


def test_bound_options_are_checked_before_any_work(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", src)
    with pytest.raises(SystemExit):
        main(["compress", str(src), "-o", str(tmp_path / "o"), "--lossless", "--max-error", "2"])
    with pytest.raises(SystemExit):
        main(["compress", str(src), "-o", str(tmp_path / "o"), "--max-error", "-1"])
    assert main(["compress", str(src), "-o", str(tmp_path / "o"), "--lossless", "--model", checkpoint]) == 2
    assert "residual model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_module_level_compress_uses_the_shipped_residual_model():
    image = mio.read(PYDICOM_FILES / "CT_small.dcm").pixels[0]
    np.testing.assert_array_equal(medvae.decompress(medvae.compress(image, max_error=0)), image)
