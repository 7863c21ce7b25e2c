"""Video codecs on series (x264, x265 through ffmpeg) and ``evaluate --series``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from medvae.cli import main
from medvae.errors import InputError
from medvae.evaluation import expand
from medvae.evaluation.datasets import group_series
from medvae.evaluation.run import evaluate
from medvae.evaluation.video import VideoCodec
from medvae.io.slices import Slice

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg (Debian package ffmpeg, with libx264 and libx265) not on PATH"
)


def _series(slices: int = 6, shape: tuple[int, int] = (61, 47), seed: int = 0) -> np.ndarray:
    """A CT-like int16 series in HU (negative values, air at −1024, a 12-bit range), slowly
    changing from slice to slice, with odd sizes."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 < 1
    out = []
    for s in range(slices):
        hu = np.where(body, 40 + 300 * np.sin(xx / 5 + s / 10) * np.cos(yy / 7), -1024) + rng.normal(0, 8, shape)
        out.append(hu)
    volume = np.clip(np.stack(out), -1024, 3071).astype(np.int16)
    volume[0, 0, 0], volume[-1, -1, -1] = -1024, 3071  # the full 12-bit range
    return volume


FAMILIES = ["x264=16", "x264-ssim=16", "x264-8bit=16", "x265=12", "x265-intra=12"]


@pytest.mark.parametrize("spec", FAMILIES)
def test_each_video_codec_round_trips_a_signed_series_with_its_real_bytes(spec):
    volume = _series()
    (point,) = expand(spec)
    data = point.encode_series(volume, 16)
    decoded = point.decode_series(data)
    assert decoded.shape == volume.shape and decoded.dtype == np.int16
    error = np.abs(decoded.astype(int) - volume)
    assert 0 < error.mean() < 40 and decoded.min() >= -1024 and decoded.max() <= 3071
    assert point.decode(point.encode(volume[2], 16)).shape == volume[2].shape  # one slice: a one-frame stream
    dropped = {"x264": 2, "x264-ssim": 2, "x264-8bit": 4}.get(point.family, 0)
    assert point.notes(volume) == (f"coded at {point.depth} bits: {dropped} least significant bit(s) dropped" if dropped else "")


@pytest.mark.parametrize("family", ["x265", "x265-intra"])
def test_x265_lossless_at_12_bits_is_exact_and_refuses_a_wider_range(family):
    volume = _series(4)
    (point,) = expand(f"{family}=lossless")
    np.testing.assert_array_equal(point.decode_series(point.encode_series(volume, 16)), volume)
    wide = volume.copy()
    wide[1, 5, 5] = 9000  # 10,025 values: 14 bits
    with pytest.raises(InputError, match="codes 12 bits"):
        point.encode_series(wide, 16)


def test_inter_prediction_spends_fewer_bits_than_intra_on_alike_slices():
    volume = _series(8, (64, 64))
    inter, intra = expand("x265=12,x265-intra=12")
    assert len(inter.encode_series(volume)) < 0.8 * len(intra.encode_series(volume))


def test_a_damaged_stream_raises_input_error():
    (point,) = expand("x265=12")
    data = point.encode_series(_series(3))
    with pytest.raises(InputError):
        point.decode_series(data[:10])
    with pytest.raises(InputError):
        point.decode_series(data[:40])  # the header and a piece of the stream: frames missing


def _slices(volume: np.ndarray, positions: list[float]) -> list[Slice]:
    """One file per slice, given in scrambled order, each with a DICOM position."""
    out = []
    for i, z in enumerate(positions):
        ds = pydicom.Dataset()
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, z], [1, 0, 0, 0, 1, 0]
        out.append(Slice(volume[i], 16, "CT", "p1", f"series/{i:03d}.dcm", 0, "test", dataset=ds))
    return out


def test_series_are_grouped_and_ordered_by_position():
    volume = _series(5)
    order = [3, 0, 4, 1, 2]
    images = _slices(volume[order], [float(z) for z in order])  # slice i at z = i, shuffled
    other = Slice(volume[0], 16, "CT", "p2", "elsewhere/x.dcm")
    second = _slices(volume[:2], [0.0, 1.0])  # another series in the same folder
    for image in second:
        image.dataset.SeriesInstanceUID = "1.2.3"
    groups = group_series(images + [other] + second)
    assert [[images[i].dataset.ImagePositionPatient[2] for i in g] for g in groups[:1]] == [[0, 1, 2, 3, 4]]
    assert groups[1:] == [[5], [6, 7]]


def test_evaluate_with_series_codes_each_series_once_and_shares_its_bytes():
    volume = _series(4)
    images = _slices(volume, [0.0, 1.0, 2.0, 3.0])
    points = expand("x265=12,jpeg2000=1")
    result = evaluate(images, points, progress=False, series=group_series(images))
    video = [r for r in result.rows if r["codec"] == "x265"]
    data = points[0].encode_series(volume, 16)
    assert len(video) == 4 and {r["bytes"] for r in video} == {len(data) / 4}
    per_slice = [r for r in result.rows if r["codec"] == "jpeg2000"]
    assert len({r["bytes"] for r in per_slice}) > 1  # coded slice by slice
    assert all(r["psnr"] > 40 and not r["error"] for r in result.rows)


def test_evaluate_cli_series_flag(tmp_path):
    volume = _series(3, (48, 40))
    path = tmp_path / "vol.npy"
    np.save(path, volume)
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(path), "--codecs", "x265=18,jpegls=0", "--series", "--out", str(out),
                 "--no-plots", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["series"] == [[f"{path}#{i}" for i in range(3)]]
    assert summary["codecs"]["x265"]["points"][0]["n_images"] == 3


def test_video_codecs_are_series_codecs():
    assert all(isinstance(p, VideoCodec) and p.series for p in expand(",".join(FAMILIES)))
    assert not any(getattr(p, "series", False) for p in expand("jpeg2000=1,jpegls=0"))
