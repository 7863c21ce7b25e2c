"""``medvae demo``: the README's main job, run with a tiny checkpoint."""

from __future__ import annotations

import re

import imagecodecs
import numpy as np
import pydicom
import pytest

import medvae
from medvae import io as mio
from medvae import metrics
from medvae.cli import main
from medvae.cli.demo import find_sample


def row(stdout: str, name: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if re.match(rf"{name}\s{{2,}}\d", line))
    return re.split(r"\s{2,}", line[len(name):].strip())


def test_demo_compresses_restores_and_compares(tmp_path, checkpoint, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", checkpoint, "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    sample, _ = find_sample()
    stem = sample.name[: -len(".dcm")]
    mvae, dicom, png = out / f"{stem}.mvae", out / f"{stem}_restored.dcm", out / f"{stem}_comparison.png"
    assert sorted(p.name for p in out.iterdir()) == sorted([mvae.name, dicom.name, png.name])

    stack = mio.read(sample)
    original = stack.pixels[0]
    restored = mio.read(dicom).pixels[0]
    header = medvae.read_header(mvae.read_bytes())
    image_bytes = header.n_bytes - header.metadata_bytes

    # the MedVAE row is what the files say
    nbytes, bpp, ratio, psnr, *rest = row(stdout, "MedVAE")
    assert int(nbytes.replace(",", "")) == image_bytes
    assert float(bpp) == pytest.approx(8 * image_bytes / original.size, abs=5e-4)
    assert float(ratio.removesuffix(":1")) == pytest.approx(
        metrics.compression_ratio(image_bytes, original.shape, stack.bits_stored), abs=0.05)
    assert float(psnr.split()[0]) == pytest.approx(metrics.psnr(original, restored, stack.bits_stored), abs=0.005)
    assert int(rest[-1]) == metrics.max_abs_error(original, restored)
    assert f"PSNR ({stack.bits_stored}-bit)" in stdout

    # JPEG 2000 at (at most) the same size
    j2k_bytes = int(row(stdout, "JPEG 2000")[0].replace(",", ""))
    assert 0.5 * image_bytes < j2k_bytes <= image_bytes or "larger than MedVAE's" in stdout

    # the restored DICOM keeps the source's attributes and declares the lossy step
    back, source = pydicom.dcmread(dicom), pydicom.dcmread(sample)
    assert back.LossyImageCompression == "01" and back.PatientID == source.PatientID
    assert np.array_equal(restored, medvae.load(checkpoint).decompress(mvae.read_bytes()))
    # the side-by-side PNG is an RGB(A) picture wider than tall (panels side by side)
    picture = imagecodecs.png_decode(png.read_bytes())
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0]

    # a second run refuses to overwrite
    assert main(["demo", "--model", checkpoint, "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_demo_without_weights_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from medvae import zoo

    monkeypatch.setattr(zoo, "index", lambda: {})  # as before the weights ship
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["medvae: error: no shipped weights for 'medvae' (shipped: none); pass --model CHECKPOINT"]
    assert not (tmp_path / "demo").exists()
