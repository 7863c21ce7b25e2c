"""Damaged inputs and interrupted runs: one clean line per file, never a partial output."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

import medvae
from medvae.checkpoint import save_model
from medvae.cli import main


@pytest.fixture(scope="module")
def mvae(tmp_path_factory, checkpoint) -> Path:
    """A good .mvae of CT_small.dcm (128×128), written by the command line."""
    out = tmp_path_factory.mktemp("good")
    assert main(["compress", get_testdata_file("CT_small.dcm"), "-o", str(out), "--model", checkpoint]) == 0
    return out / "CT_small.mvae"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncate", "truncated bitstream"),
        ("flip_image_bit", "checksum mismatch"),
        ("flip_metadata_bit", "checksum mismatch"),
        ("flip_magic", "not a MedVAE bitstream"),
        ("empty", "truncated bitstream"),
    ],
)
def test_damaged_mvae_fails_cleanly_in_decompress_and_info(tmp_path, mvae, checkpoint, capsys, damage, expected):
    data = bytearray(mvae.read_bytes())
    header = medvae.read_header(bytes(data))
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_image_bit":
        data[bytes(data).index(medvae.bitstream.unpack(bytes(data))[1][0]) + 2] ^= 0x10  # inside the entropy-coded strings
    elif damage == "flip_metadata_bit":
        data[len(data) - 4 - header.metadata_bytes // 2] ^= 0x01
    elif damage == "flip_magic":
        data[0] ^= 0x01
    else:
        data = bytearray()
    src = tmp_path / "in"
    src.mkdir()
    bad = src / "bad.mvae"
    bad.write_bytes(bytes(data))
    shutil.copy(mvae, src / "good.mvae")
    out = tmp_path / "out"

    assert main(["decompress", str(src), "-o", str(out), "--model", checkpoint]) == 1
    err = lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"{bad}: ") and expected in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["good.dcm"]  # the rest went on; nothing for the bad one

    assert main(["info", str(bad), str(src / "good.mvae")]) == 1
    captured = capsys.readouterr()
    err = lines(captured.err)
    assert len(err) == 1 and err[0].startswith(f"{bad}: ") and expected in err[0], err
    assert "good.mvae" in captured.out and "Traceback" not in captured.err


def test_weights_not_installed_say_how_to_decode(tmp_path, mvae, capsys):
    assert main(["decompress", str(mvae), "-o", str(tmp_path)]) == 1
    err = lines(capsys.readouterr().err)
    header = medvae.read_header(mvae.read_bytes())
    assert len(err) == 1 and f"needs 'medvae' weights {header.fingerprint}, which are not installed" in err[0]
    assert err[0].endswith("(--model CHECKPOINT)")
    assert list(tmp_path.iterdir()) == []


def test_wrong_weights_are_refused(tmp_path, mvae, capsys):
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_model(medvae.models.create("medvae", N=16, M=24), other)
    assert main(["decompress", str(mvae), "-o", str(tmp_path / "out"), "--model", str(other)]) == 1
    err = lines(capsys.readouterr().err)
    assert len(err) == 1 and "bitstream was written with 'medvae' weights" in err[0]


def test_info_shows_the_header(mvae, capsys):
    assert main(["info", str(mvae)]) == 0
    text = capsys.readouterr().out
    header = medvae.read_header(mvae.read_bytes())
    h, w = header.shape
    image_bytes = header.n_bytes - header.metadata_bytes
    assert f"model    medvae, weights {header.fingerprint} (not shipped" in text
    assert f"image    {h} x {w}, int16, {header.bits_stored} bits stored" in text
    assert f"mapping  stored values [{header.value_range[0]}, {header.value_range[1]}] -> [0, 1]" in text
    assert (f"bytes    {header.n_bytes:,} total = {image_bytes:,} image"
            f" + {header.metadata_bytes:,} source header") in text
    assert f"bpp      {8 * image_bytes / (h * w):.4f} image data, {8 * header.n_bytes / (h * w):.4f} whole file" in text
    assert "source   dicom CT_small.dcm (slice 1 of 1), CT, CT Image Storage" in text


EDGE_CASES = {
    # name: (how to make it from CT_small.dcm / MR_small.dcm, expected reason)
    "empty.dcm": "no pixel data",
    "text.dcm": "no pixel data",
    "truncated_in_header.dcm": "no pixel data",
    "truncated_in_pixels.dcm": "cannot decode pixel data",
    "unknown_syntax.dcm": "cannot decode pixel data (1.2.3.4.5.6)",
    "bits32.dcm": "BitsAllocated 32 is not supported",
    "rgb.dcm": "colour image (RGB",
}


def make_edge_cases(folder: Path) -> None:
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "text.dcm").write_text("hello, not DICOM\n")
    (folder / "truncated_in_header.dcm").write_bytes(raw[:300])
    (folder / "truncated_in_pixels.dcm").write_bytes(raw[: len(raw) // 2])
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    ds.save_as(folder / "unknown_syntax.dcm", enforce_file_format=False)
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.BitsAllocated = 32
    ds.save_as(folder / "bits32.dcm")
    shutil.copy(get_testdata_file("SC_rgb_small_odd.dcm"), folder / "rgb.dcm")
    # and two that must work: a multi-frame file and a DICOM file without suffix
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([pixels, pixels // 2, pixels // 3]).astype(pixels.dtype).tobytes()
    ds.save_as(folder / "multiframe.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), folder / "IM000001")


def test_bad_dicom_files_one_line_each_and_good_ones_round_trip(tmp_path, checkpoint, capsys):
    src, out, restored = tmp_path / "in", tmp_path / "out", tmp_path / "restored"
    src.mkdir()
    make_edge_cases(src)
    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint]) == 1
    err = lines(capsys.readouterr().err)
    assert len(err) == len(EDGE_CASES), err
    for line in err:
        path, _, reason = line.partition(": ")
        assert EDGE_CASES[Path(path).name] in reason, line
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "IM000001.mvae", "multiframe/slice_0000.mvae", "multiframe/slice_0001.mvae", "multiframe/slice_0002.mvae"]

    assert main(["decompress", str(out), "-o", str(restored), "--model", checkpoint]) == 0
    capsys.readouterr()
    frame = pydicom.dcmread(restored / "multiframe" / "slice_0002.dcm")
    assert frame.NumberOfFrames == 1 and frame.LossyImageCompression == "01"
    assert pydicom.dcmread(restored / "IM000001.dcm").PatientName == pydicom.dcmread(src / "IM000001").PatientName


# ------------------------------------------------------------- interruptions


def start_compress(src: Path, out: Path, checkpoint: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    return subprocess.Popen(
        [sys.executable, "-m", "medvae", "compress", str(src), "-o", str(out), "--model", checkpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def wait_for_first_output(proc: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.is_dir() and any(p.suffix == ".mvae" for p in out.iterdir()):
            return
        if proc.poll() is not None:
            pytest.fail(f"compress ended before it was interrupted: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no output appeared")


def check_only_complete_outputs(out: Path, checkpoint: str, n_inputs: int) -> int:
    """Every file in ``out`` (hidden ones included) is a complete, decodable .mvae; returns how many."""
    names = sorted(os.listdir(out))
    assert all(n.endswith(".mvae") and not n.startswith(".") for n in names), names
    assert 0 < len(names) < n_inputs, names  # really interrupted mid-run
    codec = medvae.load(checkpoint)
    for name in names:
        assert codec.decompress((out / name).read_bytes()).shape == (512, 512)
    return len(names)


@pytest.fixture(scope="module")
def many_slices(tmp_path_factory) -> Path:
    """Twelve 512×512 CT slices (copies of one), enough work to interrupt."""
    src = tmp_path_factory.mktemp("many")
    for i in range(12):
        shutil.copy(get_testdata_file("693_J2KI.dcm"), src / f"slice{i:02d}.dcm")
    return src


def test_killed_compress_leaves_no_partial_output(tmp_path, many_slices, checkpoint):
    out = tmp_path / "out"
    proc = start_compress(many_slices, out, checkpoint)
    wait_for_first_output(proc, out)
    time.sleep(0.15)  # somewhere in the middle of the next slice
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    check_only_complete_outputs(out, checkpoint, 12)


def test_terminated_compress_stops_cleanly(tmp_path, many_slices, checkpoint):
    out = tmp_path / "out"
    proc = start_compress(many_slices, out, checkpoint)
    wait_for_first_output(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert lines(stderr)[-1] == "medvae: interrupted" and "Traceback" not in stderr
    check_only_complete_outputs(out, checkpoint, 12)


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.is_file():
            found |= {int(c) for c in children.read_text().split()}
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_workers_die_with_a_killed_parent_and_leave_no_partial_output(tmp_path, many_slices, checkpoint):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medvae", "compress", str(many_slices), "-o", str(out), "--model", checkpoint, "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    wait_for_first_output(proc, out)
    workers = _children(proc.pid)
    assert workers, "no worker processes found"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() and "zombie" not in _state(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in _state(w)], "workers outlived their parent"
    check_only_complete_outputs(out, checkpoint, 12)


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:")).lower()
    except (OSError, StopIteration):
        return "gone"


def _no_model_loading(monkeypatch) -> None:
    """Make any model load fail loudly: what follows must not need one."""
    from medvae.cli import common

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    common.load_codec.cache_clear()
    monkeypatch.setattr(common, "load_codec", refuse)


def test_nothing_readable_means_no_model_load_and_no_summary(tmp_path, monkeypatch, capsys):
    _no_model_loading(monkeypatch)
    missing = tmp_path / "missing.dcm"
    assert main(["compress", str(missing), "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no all-zero summary
    assert lines(captured.err) == [f"{missing}: no such file or folder"]
    assert main(["decompress", str(tmp_path / "gone.mvae"), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("args, message", [
    (["--quality", "99"], "has no quality 99"),
    (["--model", "no-such-family"], "no shipped weights for 'no-such-family'"),
    (["--model", "runs/missing.pt"], "no such checkpoint: runs/missing.pt"),
])
def test_bad_model_options_fail_before_any_model_is_loaded(tmp_path, monkeypatch, capsys, args, message):
    _no_model_loading(monkeypatch)
    started = time.perf_counter()
    assert main(["compress", get_testdata_file("CT_small.dcm"), "-o", str(tmp_path / "out"), *args]) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_output_larger_than_its_input_gets_a_note(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "tiny.npy", np.arange(16, dtype=np.uint8).reshape(4, 4))  # 144 bytes
    np.save(src / "large.npy", np.random.default_rng(0).integers(0, 4096, (64, 64)).astype(np.uint16))
    assert main(["compress", str(src), "-o", str(tmp_path / "out"), "--model", checkpoint]) == 0
    err = capsys.readouterr().err
    tiny_out = (tmp_path / "out" / "tiny.mvae").stat().st_size
    assert tiny_out > (src / "tiny.npy").stat().st_size
    assert f"{src / 'tiny.npy'}: note: the output ({tiny_out:,} bytes) is larger than the input (144 bytes)" in err
    assert "large.npy" not in err  # 8 KB of 12-bit noise codes smaller


def test_default_workers_follow_cores_files_and_memory(monkeypatch):
    from medvae.cli import batch

    monkeypatch.setattr(batch, "cores", lambda: 16)
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_PHYS_PAGES": 2**22, "SC_PAGE_SIZE": 2**12}[name])  # 16 GiB
    assert batch.auto_workers(100, threads_per_worker=2) == 8  # compress: 2 threads a worker
    assert batch.auto_workers(100, threads_per_worker=1) == 8  # decompress: 16 cores, but 16 GiB / 2 GiB
    assert batch.auto_workers(6, threads_per_worker=1) == 3  # at most one worker per two files
    assert batch.auto_workers(1, threads_per_worker=1) == 1
    monkeypatch.setattr(batch, "cores", lambda: 2)
    assert batch.auto_workers(100, threads_per_worker=2) == 1  # this machine: measured fastest
    assert batch.auto_workers(100, threads_per_worker=1) == 2
