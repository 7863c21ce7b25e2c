"""Source metadata (what a .mvae remembers of its source) and the CLI's file helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvae import io as mio
from medvae import source_metadata as sm
from medvae.cli import batch
from medvae.cli.files import UsageError, plan, slice_paths, strip_suffix
from medvae.io.files import publish
from medvae.cli.restore import render
from medvae.errors import BitstreamError, InputError


def _roundtrip(stack, index: int) -> sm.SourceInfo:
    return sm.unpack(sm.pack(sm.from_stack(stack, index)))


def test_dicom_header_survives_and_restores_with_lossy_tags(tmp_path):
    src = get_testdata_file("MR_small_bigendian.dcm")
    stack = mio.read(src)
    info = _roundtrip(stack, 0)
    assert (info.format, info.name, info.slice, info.slices) == ("dicom", "MR_small_bigendian.dcm", 0, 1)
    assert info.bits_stored == stack.bits_stored and info.signed == stack.signed
    original = pydicom.dcmread(src, stop_before_pixels=True)
    for keyword in ("PatientName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns",
                    "PixelSpacing", "ImagePositionPatient"):
        assert info.dataset.get(keyword) == original.get(keyword), keyword
    assert "PixelData" not in info.dataset

    decoded = np.clip(stack.pixels[0].astype(np.int32) + 3, None, 2**15 - 1).astype(np.int16)
    out = tmp_path / "x.dcm"
    out.write_bytes(render(decoded, info, compression_ratio=12.5))
    back = pydicom.dcmread(out)
    assert np.array_equal(back.pixel_array, decoded)
    assert back.LossyImageCompression == "01"
    assert float(back.LossyImageCompressionRatio[-1] if back["LossyImageCompressionRatio"].VM > 1
                 else back.LossyImageCompressionRatio) == pytest.approx(12.5)
    assert back.SOPInstanceUID != original.SOPInstanceUID
    assert back.StudyInstanceUID == original.StudyInstanceUID


def test_command_set_elements_are_dropped():
    # brain_001.dcm of the corpus carries group 0000 (command set) elements, which
    # pydicom refuses to write into a file; our stored header must not carry them.
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
    ds.add_new(0x00000002, "UI", "1.2.3")
    ds.add_new(0x00100000, "UL", 42)  # a group length
    kept = sm.frame_dataset(ds, 0)
    assert 0x00000002 not in kept and 0x00100000 not in kept
    assert sm.dataset_from_bytes(sm.dataset_bytes(kept)).PatientName == ds.PatientName


def test_multiframe_dataset_keeps_one_frame():
    ds = pydicom.Dataset()
    ds.NumberOfFrames = 3
    ds.PerFrameFunctionalGroupsSequence = [pydicom.Dataset() for _ in range(3)]
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item.FrameLabel = f"frame{i}"
    ds.FrameTimeVector = [0.0, 10.0, 20.0]
    one = sm.frame_dataset(ds, 2)
    assert one.NumberOfFrames == 1
    assert [item.FrameLabel for item in one.PerFrameFunctionalGroupsSequence] == ["frame2"]
    assert one["FrameTimeVector"].VM == 1 and float(one.FrameTimeVector) == 20.0
    assert ds.NumberOfFrames == 3  # the source is not modified


def test_nifti_slice_keeps_its_place_in_space(tmp_path):
    import nibabel as nib

    affine = np.array([[0.8, 0, 0, -100], [0, 0.8, 0, 50], [0, 0, 2.5, -30], [0, 0, 0, 1]])
    volume = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)  # (i, j, k)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    stack = mio.read(path)
    info = _roundtrip(stack, 3)
    assert (info.format, info.slice, info.slices) == ("nifti", 3, 5)
    out = tmp_path / "slice.nii.gz"
    out.write_bytes(render(stack.pixels[3], info, compression_ratio=1.0))
    image = nib.load(out)
    assert image.shape[:2] == (4, 6)
    assert np.array_equal(np.asanyarray(image.dataobj)[..., 0], volume[..., 3])
    # voxel (0, 0, 0) of the slice is where voxel (0, 0, 3) of the volume was
    assert np.allclose(image.affine @ [0, 0, 0, 1], affine @ [0, 0, 3, 1])


def test_nrrd_slice_origin_moves_with_the_slice(tmp_path):
    import nrrd

    volume = np.arange(5 * 4 * 3, dtype=np.uint16).reshape(5, 4, 3)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.5, 0.5, 3.0]),
              "space origin": np.array([10.0, 20.0, 30.0]), "kinds": ["domain"] * 3}
    path = tmp_path / "v.nrrd"
    nrrd.write(str(path), volume, header)
    stack = mio.read(path)
    info = _roundtrip(stack, 2)
    assert np.allclose(info.nrrd_header["space origin"], [10.0, 20.0, 36.0])
    out = tmp_path / "slice.nrrd"
    out.write_bytes(render(stack.pixels[2], info, compression_ratio=1.0))
    data, back = nrrd.read(str(out))
    assert np.array_equal(data[..., 0], volume[..., 2])
    assert np.allclose(back["space origin"], [10.0, 20.0, 36.0])


def test_without_metadata_restores_npy(tmp_path):
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    out = tmp_path / "x.npy"
    out.write_bytes(render(image, None, compression_ratio=1.0))
    assert np.array_equal(np.load(out), image)


@pytest.mark.parametrize("damage", ["magic", "version", "zlib", "truncate"])
def test_damaged_metadata_is_a_bitstream_error(damage):
    data = bytearray(sm.pack(sm.from_stack(mio.read(get_testdata_file("CT_small.dcm")), 0)))
    if damage == "magic":
        data[0] ^= 0xFF
    elif damage == "version":
        data[3] = 99
    elif damage == "zlib":
        data[20] ^= 0x55
    else:
        data = data[: len(data) // 2]
    with pytest.raises(BitstreamError):
        sm.unpack(bytes(data))


def test_render_names_the_output_in_its_errors():
    info = sm.from_stack(mio.read(get_testdata_file("CT_small.dcm")), 0)
    with pytest.raises(InputError, match=r"^out/x\.dcm: decoded image shape"):
        render(np.zeros((3, 3), np.int16), info, compression_ratio=2.0, name="out/x.dcm")


# ------------------------------------------------------------------ files.py


def test_strip_suffix():
    assert strip_suffix("x.dcm") == "x"
    assert strip_suffix("CT.nii.gz") == "CT"
    assert strip_suffix("IM00001") == "IM00001"
    assert strip_suffix("1.2.840.113619.2") == "1.2.840.113619.2"  # dotted DICOM names keep every part
    assert strip_suffix("x.mvae") == "x"


def test_slice_paths(tmp_path):
    assert slice_paths(tmp_path / "a", 1, ".mvae") == [tmp_path / "a.mvae"]
    assert slice_paths(tmp_path / "a", 3, ".mvae")[2] == tmp_path / "a" / "slice_0002.mvae"
    assert slice_paths(tmp_path / "a", 12000, ".mvae")[-1].name == "slice_11999.mvae"


def test_plan_mirrors_folders_and_reports_problems(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/a.dcm", "in/sub/b.dcm", "in/sub/b.png", "in/.hidden.dcm", "single.dcm"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    tasks, problems = plan([tmp_path / "in", tmp_path / "single.dcm", tmp_path / "missing", tmp_path / "empty"],
                           tmp_path / "out")
    bases = {t.source.relative_to(tmp_path).as_posix(): t.base.relative_to(tmp_path).as_posix() for t in tasks}
    assert bases == {"in/a.dcm": "out/a", "in/sub/b.dcm": "out/sub/b", "single.dcm": "out/single"}
    reasons = {p.source.name: p.reason for p in problems}
    assert "clashes with" in reasons["b.png"]
    assert reasons["missing"] == "no such file or folder"
    assert reasons["empty"] == "no input files in this folder"


@pytest.mark.parametrize("out", ["in", "in/out", "in/sub/deeper"])
def test_plan_refuses_output_inside_an_input_folder(tmp_path, out):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    with pytest.raises(UsageError, match="inside input folder"):
        plan([tmp_path / "in"], tmp_path / out)


def test_publish_never_replaces_without_overwrite_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "d" / "x.mvae"
    publish(target, b"first")
    with pytest.raises(FileExistsError):
        publish(target, b"second")
    assert target.read_bytes() == b"first"
    publish(target, b"third", overwrite=True)
    assert target.read_bytes() == b"third"
    assert os.listdir(target.parent) == ["x.mvae"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.parametrize("overwrite", [False, True])
def test_publish_killed_mid_write_leaves_nothing_behind(tmp_path, overwrite):
    """SIGKILL half-way through writing: no partial file, no temporary file, old file intact."""
    import subprocess
    import sys
    import textwrap

    if overwrite:
        (tmp_path / "x.mvae").write_bytes(b"old")
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from medvae.io import files

        def half_then_die(fd, data):
            os.write(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

        files._write_all = half_then_die
        files.publish(Path({str(tmp_path)!r}) / "x.mvae", b"x" * 100000, overwrite={overwrite})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert os.listdir(tmp_path) == (["x.mvae"] if overwrite else [])
    if overwrite:
        assert (tmp_path / "x.mvae").read_bytes() == b"old"


def test_publish_fallback_path_behaves_the_same(tmp_path, monkeypatch):
    from medvae.io import files

    monkeypatch.setattr(files, "_publish_tmpfile", lambda *a: False)
    target = tmp_path / "x.mvae"
    publish(target, b"first")
    with pytest.raises(FileExistsError):
        publish(target, b"second")
    publish(target, b"third", overwrite=True)
    assert target.read_bytes() == b"third"
    assert os.listdir(tmp_path) == ["x.mvae"]


def test_reason_is_one_line_without_the_repeated_path():
    path = Path("scans/a.dcm")
    assert batch.reason(InputError(f"{path}: colour image (RGB)\nmore detail"), path) == "colour image (RGB)"
    assert batch.reason(KeyError("boom"), path).startswith("unexpected KeyError")
    assert "--force" in batch.reason(FileExistsError("out/a.mvae exists"), path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
