"""write_decoded_dicom: exact round trips, lossy-compression tags, validators' verdicts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

import medvae.io as mio
from medvae.errors import InputError
from tests.conftest import CORPUS

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CORPUS_CT = CORPUS / "ct/totalseg-abdomen/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016573.dcm"
CORPUS_MR = CORPUS / "mr/dwv-bbmri/bbmri-53323131.dcm"
CORPUS_SIGNED = CORPUS / "ct/pydicom-data/693_UNCR.dcm"


def _corpus_file(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"sample corpus file not found: {path}")
    return path


def _eight_bit_source(folder: Path) -> Path:
    """MR_small re-stored as 8-bit unsigned (BitsAllocated 8, BitsStored 8)."""
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
    ds.set_pixel_data((ds.pixel_array >> 4).astype(np.uint8), "MONOCHROME2", 8)
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)
    path = folder / "mr8.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _lossy_version(pixels: np.ndarray, seed: int = 0) -> np.ndarray:
    """What a lossy decoder might return: the image plus noise, kept in its value range."""
    noise = np.random.default_rng(seed).integers(-9, 10, size=pixels.shape)
    lo, hi = int(pixels.min()), int(pixels.max())
    return np.clip(pixels.astype(np.int64) + noise, lo, hi).astype(pixels.dtype)


def _sources(tmp: Path) -> dict[str, Path]:
    return {
        "CT_small int16": PYDICOM_FILES / "CT_small.dcm",
        "MR_small int16": PYDICOM_FILES / "MR_small.dcm",
        "8-bit uint8": _eight_bit_source(tmp),
    }


@pytest.mark.parametrize("kind", ["CT_small int16", "MR_small int16", "8-bit uint8", "corpus uint16 J2K",
                                  "corpus int16 14-bit negative"])
def test_round_trip_is_exact(tmp_path, kind):
    sources = _sources(tmp_path)
    sources["corpus uint16 J2K"] = CORPUS_CT
    sources["corpus int16 14-bit negative"] = CORPUS_SIGNED
    source = _corpus_file(sources[kind]) if kind.startswith("corpus") else sources[kind]
    stack = mio.read(source)
    decoded = _lossy_version(stack.pixels[0])
    out = mio.write_decoded_dicom(decoded, stack.datasets[0], tmp_path / "out.dcm", compression_ratio=10.0)
    back = mio.read(out)
    assert back.pixels.dtype == stack.pixels.dtype
    assert np.array_equal(back.pixels[0], decoded)
    assert not np.array_equal(decoded, stack.pixels[0])  # the test really wrote new values
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    for keyword in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "Rows", "Columns",
                    "PhotometricInterpretation", "PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert ds.get(keyword) == src.get(keyword), keyword
    assert not ds.file_meta.TransferSyntaxUID.is_compressed


def test_negative_stored_values_round_trip(tmp_path):
    """int16 stored values below zero (HU of air with intercept 0) survive."""
    stack = mio.read(PYDICOM_FILES / "CT_small.dcm")
    decoded = (stack.pixels[0].astype(np.int32) - 1500).astype(np.int16)
    assert decoded.min() < -1000
    out = mio.write_decoded_dicom(decoded, stack.datasets[0], tmp_path / "neg.dcm", compression_ratio=8)
    assert np.array_equal(mio.read(out).pixels[0], decoded)


def test_lossy_tags_and_derivation_are_declared(tmp_path):
    stack = mio.read(PYDICOM_FILES / "CT_small.dcm")
    src = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    out = mio.write_decoded_dicom(stack.pixels[0], stack.datasets[0], tmp_path / "ct.dcm",
                                  compression_ratio=23.456, method="MEDVAE")
    ds = pydicom.dcmread(out)
    assert ds.LossyImageCompression == "01"
    assert [float(v) for v in _values(ds.LossyImageCompressionRatio)] == [23.456]
    assert list(_values(ds.LossyImageCompressionMethod)) == ["MEDVAE"]
    assert ds.ImageType[0] == "DERIVED" and list(ds.ImageType[1:]) == list(src.ImageType[1:])
    assert "MedVAE" in ds.DerivationDescription and "23.46" in ds.DerivationDescription
    assert ds.DerivationCodeSequence[-1].CodeValue == "113040"
    assert ds.SourceImageSequence[-1].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == src.SOPClassUID and ds.PatientName == src.PatientName


def test_earlier_lossy_steps_are_kept(tmp_path):
    """Compressing an already lossy image appends the new ratio and method."""
    stack = mio.read(PYDICOM_FILES / "CT_small.dcm")
    first = mio.write_decoded_dicom(stack.pixels[0], stack.datasets[0], tmp_path / "1.dcm", compression_ratio=5)
    again = mio.read(first)
    second = mio.write_decoded_dicom(again.pixels[0], again.datasets[0], tmp_path / "2.dcm", compression_ratio=4)
    ds = pydicom.dcmread(second)
    assert [float(v) for v in ds.LossyImageCompressionRatio] == [5.0, 4.0]
    assert list(ds.LossyImageCompressionMethod) == ["MEDVAE", "MEDVAE"]
    assert len(ds.DerivationCodeSequence) == 2 and len(ds.SourceImageSequence) == 2


def test_multiframe_source_needs_all_frames(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
    frames = np.stack([ds.pixel_array, ds.pixel_array[:, ::-1]]).astype(np.int16)
    ds.set_pixel_data(frames, "MONOCHROME2", 16)
    ds.save_as(tmp_path / "multi.dcm")
    stack = mio.read(tmp_path / "multi.dcm")
    with pytest.raises(InputError, match="does not match the source"):
        mio.write_decoded_dicom(stack.pixels[0], stack.datasets[0], tmp_path / "one.dcm", compression_ratio=3)
    out = mio.write_decoded_dicom(stack.pixels, stack.datasets[0], tmp_path / "all.dcm", compression_ratio=3)
    assert np.array_equal(mio.read(out).pixels, frames) and pydicom.dcmread(out).NumberOfFrames == 2


def test_values_outside_bits_stored_are_refused(tmp_path):
    stack = mio.read(_eight_bit_source(tmp_path))
    with pytest.raises(InputError, match="do not fit the source's BitsStored 8"):
        mio.write_decoded_dicom(stack.pixels[0].astype(np.uint16) + 300, stack.datasets[0], tmp_path / "x.dcm",
                                compression_ratio=2)
    assert not (tmp_path / "x.dcm").exists()


def test_source_is_never_overwritten_and_no_temp_files_remain(tmp_path):
    source = tmp_path / "src.dcm"
    shutil.copy(PYDICOM_FILES / "MR_small.dcm", source)
    before = source.read_bytes()
    stack = mio.read(source)
    with pytest.raises(InputError, match="refusing to overwrite"):
        mio.write_decoded_dicom(stack.pixels[0], pydicom.dcmread(source), source, compression_ratio=2)
    assert source.read_bytes() == before
    mio.write_decoded_dicom(stack.pixels[0], stack.datasets[0], tmp_path / "out.dcm", compression_ratio=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcm", "src.dcm"]


@pytest.mark.skipif(not (CORPUS / "MANIFEST.csv").is_file(), reason=f"sample corpus not found at {CORPUS}")
def test_write_like_writes_a_series_back_under_source_names(tmp_path):
    stack = mio.read(CORPUS / "mr/dwv-bbmri")
    decoded = _lossy_version(stack.pixels, seed=4)
    written = mio.write_like(decoded, stack, tmp_path / "out", compression_ratio=12.0,
                             series_instance_uid=pydicom.uid.generate_uid())
    assert sorted(p.name for p in written) == sorted(p.name for p in stack.paths)
    back = mio.read(tmp_path / "out")
    assert np.array_equal(back.pixels, decoded)
    assert len({ds.SeriesInstanceUID for ds in back.datasets}) == 1
    assert back.datasets[0].SeriesInstanceUID != stack.datasets[0].SeriesInstanceUID


# --- validators --------------------------------------------------------------------------


def _dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not on PATH")
@pytest.mark.parametrize("kind", ["CT_small", "MR_small", "8-bit", "corpus CT (JPEG 2000 source)", "corpus MR"])
def test_dciodvfy_reports_no_new_errors(tmp_path, kind):
    sources = {"CT_small": PYDICOM_FILES / "CT_small.dcm", "MR_small": PYDICOM_FILES / "MR_small.dcm",
               "8-bit": _eight_bit_source(tmp_path), "corpus CT (JPEG 2000 source)": CORPUS_CT, "corpus MR": CORPUS_MR}
    source = _corpus_file(sources[kind]) if kind.startswith("corpus") else sources[kind]
    stack = mio.read(source)
    out = mio.write_decoded_dicom(_lossy_version(stack.pixels[0]), stack.datasets[0], tmp_path / "out.dcm",
                                  compression_ratio=9.5)
    new = _dciodvfy_errors(out) - _dciodvfy_errors(source)
    assert not new, f"dciodvfy errors the output adds: {sorted(new)}"


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmdump (Debian package dcmtk) not on PATH")
def test_dcmtk_reads_the_output(tmp_path):
    stack = mio.read(PYDICOM_FILES / "CT_small.dcm")
    out = mio.write_decoded_dicom(stack.pixels[0], stack.datasets[0], tmp_path / "out.dcm", compression_ratio=7)
    result = subprocess.run(["dcmdump", "-q", "+P", "LossyImageCompression", "+P", "BitsStored", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    assert "[01]" in result.stdout and "16" in result.stdout


def _values(value):
    return value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes must not leave owner-only (0600) files behind."""
    import os

    from medvae.io.files import atomic_path

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o644


def _pydicom_data_file(name: str) -> Path:
    """A file of the ``pydicom-data`` package (the test extra installs it); skipped without it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when it would have to download
        try:
            path = pydicom.data.get_testdata_file(name)
        except Exception:  # noqa: BLE001 - any failure to find it means: not installed
            path = None
    if not path:
        pytest.skip(f"{name} not available (pip install pydicom-data)")
    return Path(path)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not on PATH")
@pytest.mark.parametrize("name", ["emri_small.dcm", "emri_small_RLE.dcm"])
def test_enhanced_mr_outputs_add_no_dciodvfy_errors(tmp_path, checkpoint, name):
    """A 10-frame Enhanced MR through compress and decompress: each restored frame is a
    DERIVED single-frame Enhanced MR, which may not keep the MR Pulse Sequence attributes
    of an ORIGINAL image (17 new dciodvfy errors per output before they were dropped)."""
    from medvae.cli import main

    source = _pydicom_data_file(name)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(source, src / name)
    assert main(["compress", str(src), "-o", str(tmp_path / "c"), "--model", checkpoint]) == 0
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--model", checkpoint]) == 0
    outputs = sorted((tmp_path / "d").rglob("*.dcm"))
    assert len(outputs) == 10
    before = _dciodvfy_errors(source)
    for out in outputs[::3]:
        assert pydicom.dcmread(out).ImageType[0] == "DERIVED"
        new = _dciodvfy_errors(out) - before
        assert not new, f"{out.name}: dciodvfy errors the output adds: {sorted(new)}"


# --- lossless and near-lossless outputs ------------------------------------------------------


def test_lossless_output_is_the_source_instance_with_nothing_declared(tmp_path):
    stack = mio.read(PYDICOM_FILES / "CT_small.dcm")
    source = stack.datasets[0]
    out = mio.write_decoded_dicom(stack.pixels[0], source, tmp_path / "out.dcm", compression_ratio=2.1, max_error=0)
    ds = pydicom.dcmread(out)
    np.testing.assert_array_equal(ds.pixel_array, stack.pixels[0])
    assert ds.SOPInstanceUID == source.SOPInstanceUID
    assert list(ds.ImageType) == list(source.ImageType)
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "DerivationDescription"):
        assert ds.get(keyword) == source.get(keyword), keyword


def test_near_lossless_output_declares_the_bound(tmp_path):
    stack = mio.read(PYDICOM_FILES / "CT_small.dcm")
    decoded = np.clip(stack.pixels[0].astype(int) + 2, -32768, 32767).astype(stack.pixels.dtype)
    out = mio.write_decoded_dicom(decoded, stack.datasets[0], tmp_path / "out.dcm", compression_ratio=4.5, max_error=2)
    ds = pydicom.dcmread(out)
    assert ds.LossyImageCompression == "01" and ds.SOPInstanceUID != stack.datasets[0].SOPInstanceUID
    assert "near-lossless, max error 2" in ds.DerivationDescription and "MEDVAE" in ds.DerivationDescription


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not on PATH")
@pytest.mark.parametrize("max_error", [0, 3])
def test_lossless_and_near_lossless_outputs_add_no_dciodvfy_errors(tmp_path, max_error):
    source = PYDICOM_FILES / "MR_small.dcm"
    stack = mio.read(source)
    decoded = stack.pixels[0] if max_error == 0 else np.maximum(stack.pixels[0], 3) - 3
    out = mio.write_decoded_dicom(decoded.astype(stack.pixels.dtype), stack.datasets[0], tmp_path / "out.dcm",
                                  compression_ratio=3.0, max_error=max_error)
    new = _dciodvfy_errors(out) - _dciodvfy_errors(source)
    assert not new, f"dciodvfy errors the output adds: {sorted(new)}"
