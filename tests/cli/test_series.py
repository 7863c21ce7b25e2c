"""``medvae compress --lossless --series``: a volume's slices, each coded given the one before."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvae import bitstream, metrics, prediction
from medvae.cli import main
from medvae.series import KEY_EVERY


def _volume(count: int) -> np.ndarray:
    """A small int16 'CT' volume: one anatomy drifting from slice to slice, noise of its own in each."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :72]
    return np.stack([
        (40 + 500 * np.sin(xx / 6.0 + 0.15 * k) * np.cos(yy / 5.0) + rng.normal(0, 20, yy.shape)).astype(np.int16)
        for k in range(count)
    ])


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A volume of KEY_EVERY + 2 slices through compress --lossless --series (two workers) and decompress."""
    root = tmp_path_factory.mktemp("series")
    volume = _volume(KEY_EVERY + 2)
    np.save(root / "vol.npy", volume)
    assert main(["compress", str(root / "vol.npy"), "-o", str(root / "c"), "--lossless", "--series"]) == 0
    assert main(["decompress", str(root / "c"), "-o", str(root / "d"), "--workers", "2"]) == 0
    return root, volume


def test_a_volume_round_trips_slice_by_slice(coded):
    root, volume = coded
    files = sorted((root / "c" / "vol").glob("slice_*.mvae"))
    versions = [bitstream.layout(bitstream.read_header(f.read_bytes()).version) for f in files]  # adapted or not
    series = bitstream.TWO_PREVIOUS_VERSION  # the shipped series model reads the two slices before
    assert versions == [8] + [series] * (KEY_EVERY - 1) + [8, series]  # key slices alone, the others given the ones before
    for k, path in enumerate(sorted((root / "d" / "vol").glob("slice_*.npy"))):
        np.testing.assert_array_equal(np.load(path), volume[k])


def test_info_says_a_file_follows_its_previous_slice(coded, capsys):
    root, _ = coded
    assert main(["info", str(root / "c" / "vol" / "slice_0003.mvae"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["previous_slice_crc"] is not None
    assert record["format"] in bitstream.PREDICTED_VERSIONS and record["base_predicted_pairs"] > 0  # its base coded against the slice before
    assert record["base_step"] == prediction.base_step(record["max_error"]) / prediction.UNIT_STEP > 1  # and more coarsely
    assert main(["info", str(root / "c" / "vol" / "slice_0003.mvae")]) == 0
    text = capsys.readouterr().out
    assert "coded given the previous slice" in text and "coded against the previous slice's" in text
    assert f"latent quantized with step {record['base_step']:g}" in text


def test_info_names_both_slices_a_two_slice_file_read(tmp_path, capsys):
    import medvae
    from tests.conftest import small_series_residual

    volume = _volume(3)
    codec = medvae.load("medvae", quality=1)
    codec.series_residual = small_series_residual(codec, volume[2], volume[1::-1], count=2)
    (tmp_path / "s.mvae").write_bytes(codec.compress(volume[2], max_error=0, previous=[volume[1], volume[0]]))
    assert main(["info", str(tmp_path / "s.mvae"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert (record["previous_slice_crc"], record["earlier_slice_crc"]) == tuple(f"{bitstream.pixels_crc(v):08x}" for v in volume[1::-1])
    assert main(["info", str(tmp_path / "s.mvae")]) == 0
    assert "and the one before it" in capsys.readouterr().out


def test_a_series_file_without_its_previous_slice_fails_clearly(coded, tmp_path, capsys):
    root, _ = coded
    shutil.copy(root / "c" / "vol" / "slice_0003.mvae", tmp_path / "slice_0003.mvae")
    assert main(["decompress", str(tmp_path / "slice_0003.mvae"), "-o", str(tmp_path / "d")]) == 1
    assert "coded given the slice before it" in capsys.readouterr().err
    assert not (tmp_path / "d" / "slice_0003.npy").exists()


def test_series_needs_a_bound_or_a_target(tmp_path, capsys):
    np.save(tmp_path / "vol.npy", _volume(2))
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--series"]) == 2
    assert "add --lossless, --max-error, --ratio, --bpp or --psnr" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("key_every, layouts", [(2, "KSKSK"), (5, "KSSSS"), (1, "KKKKK")])
def test_key_every_sets_which_slices_are_coded_alone(tmp_path, key_every, layouts):
    volume = _volume(5)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--max-error", "1", "--series",
                 "--key-every", str(key_every)]) == 0
    files = sorted((tmp_path / "c" / "vol").glob("slice_*.mvae"))
    headers = [bitstream.read_header(f.read_bytes()) for f in files]
    assert "".join("K" if h.previous_crc is None else "S" for h in headers) == layouts
    assert main(["decompress", str(tmp_path / "c" / "vol" / "slice_0004.mvae"), "-o", str(tmp_path / "d")]) == 0  # the chain back to its key slice
    assert np.abs(np.load(tmp_path / "d" / "slice_0004.npy").astype(int) - volume[4]).max() <= 1


@pytest.mark.parametrize("arguments, message", [
    (["--series", "--key-every", "0"], "--key-every must be 1 to 4096 (1: every slice alone), got 0"),
    (["--series", "--key-every", "4097"], "--key-every must be 1 to 4096"),
    (["--key-every", "4"], "--key-every sets how often --series codes a slice alone: add --series"),
])
def test_key_every_out_of_range_or_without_series_is_a_usage_error(tmp_path, capsys, arguments, message):
    np.save(tmp_path / "vol.npy", _volume(2))
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--lossless", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_rate_control_along_a_series(tmp_path, capsys):
    """``--series --psnr``: past the lossy model's reach, rate control's near-lossless files code
    each slice given the ones before (format 10: the third slice reads two); every slice meets the target, decoded from the folder."""
    volume = _volume(3)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--series", "--psnr", "70"]) == 0
    files = sorted((tmp_path / "c" / "vol").glob("slice_*.mvae"))
    headers = [bitstream.read_header(f.read_bytes()) for f in files]
    assert [bitstream.layout(h.version) for h in headers] == [8, 10, 10]
    assert headers[2].earlier_crc == headers[0].pixels_crc != headers[2].previous_crc  # the CLI passed both slices
    captured = capsys.readouterr()
    assert "PSNR 70 dB: optimized, step" in captured.out + captured.err  # the rate note (optimized near-lossless)
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d")]) == 0
    for k, path in enumerate(sorted((tmp_path / "d" / "vol").glob("slice_*.npy"))):
        assert metrics.psnr(volume[k], np.load(path), 16) >= 70


def test_a_dicom_series_of_one_file_per_slice_round_trips(tmp_path):
    """Files named against their anatomical order: coded in slice order (by Image Position), each
    given the ones before; decoded back, each file finding its previous ones by their pixel CRCs."""
    volume = _volume(3)[:, :, :64].astype(np.uint16) + 1000
    source = tmp_path / "in"
    source.mkdir()
    for k, name in enumerate(["c.dcm", "a.dcm", "b.dcm"]):  # anatomical order c, a, b
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 12, 11
        ds.PixelData = volume[k].tobytes()
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(source / name)
    assert main(["compress", str(source), "-o", str(tmp_path / "c"), "--lossless", "--series"]) == 0
    versions = {name: bitstream.layout(bitstream.read_header((tmp_path / "c" / f"{name}.mvae").read_bytes()).version) for name in "cab"}
    assert versions == {"c": 8, "a": 10, "b": 10}
    assert main(["compress", str(source), "-o", str(tmp_path / "x"), "--lossless", "--series", "--workers", "2"]) == 2
    assert main(["decompress", str(tmp_path / "c" / "b.mvae"), str(tmp_path / "c" / "a.mvae"), "-o", str(tmp_path / "d")]) == 0
    for k, name in enumerate("cab"):
        if name != "c":
            np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "d" / f"{name}.dcm").pixel_array, volume[k])


def test_identical_slices_do_not_send_decoding_round_in_circles(tmp_path):
    """Blank slices decode to the same pixels, so a file's previous one is found by its CRC among
    several: each is taken once, the chain reaches its key slice, and each file reads the slices
    it was coded given by their CRCs (the chain may pass another blank file than the one coded)."""
    import medvae

    blank, first = np.full((32, 40), 7, np.int16), _volume(1)[0, :32, :40]
    volume = [first, blank, blank, blank]
    files = medvae.load("medvae").compress_series(volume, max_error=0, key_every=0)
    (tmp_path / "c").mkdir()
    for name, data in zip("adbc", files):  # names against the coding order
        (tmp_path / "c" / f"{name}.mvae").write_bytes(data)
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--workers", "1"]) == 0
    for name, image in zip("adbc", volume):
        np.testing.assert_array_equal(np.load(tmp_path / "d" / f"{name}.npy"), image)


def test_a_damaged_dicom_header_is_coded_alone_not_a_crash(tmp_path):
    from medvae.cli.files import Task
    from medvae.cli.series_order import series_order

    raw = (tmp_path / "good.dcm")
    pydicom.dcmread(get_testdata_file("CT_small.dcm")).save_as(raw)
    data = raw.read_bytes()
    rows = data.index(b"\x28\x00\x10\x00")  # (0028,0010) Rows, explicit VR little endian: "US", length 2
    (tmp_path / "bad.dcm").write_bytes(data[:rows] + b"\x28\x00\x08\x00IS\x02\x00ab" + data[rows:])  # Number of Frames "ab"
    tasks = [Task(tmp_path / "bad.dcm", tmp_path / "out" / "bad")]
    assert series_order(tasks) == (tasks, {})


def test_a_slice_after_a_lossy_choice_reads_only_that_slice(tmp_path):
    """Rate control along a series may code a slice lossily (a constant slice meets any PSNR so):
    its file reads no slice, so the next file reads it alone, and the folder decodes."""
    volume = _volume(3)
    volume[1] = 1000
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--series", "--psnr", "70"]) == 0
    headers = [bitstream.read_header(f.read_bytes()) for f in sorted((tmp_path / "c" / "vol").glob("slice_*.mvae"))]
    assert headers[1].previous_crc is None and headers[1].max_error is None  # lossy
    assert headers[2].previous_crc == headers[2].earlier_crc == headers[1].pixels_crc
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d")]) == 0
    for k, path in enumerate(sorted((tmp_path / "d" / "vol").glob("slice_*.npy"))):
        assert metrics.psnr(volume[k], np.load(path), 16) >= 70
