"""Series coding: a slice's residual layer coded given the previous slice of its volume (format 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medvae
from medvae import bitstream
from medvae.errors import BitstreamError, InputError, MedVAEError
from medvae.evaluation.learned import SeriesWithResidual
from medvae.io.slices import Slice
from medvae.residual.model import ResidualModel, residual_bits, slice_tensors, with_previous
from medvae.residual.training import Pair, series_pairs, train_residual
from medvae.residual.weights import Residual, calibrate_residual, load_residual, save_residual
from tests.conftest import small_residual, small_series_residual


def _volume(count=3, shape=(70, 61), dtype=np.int16, seed=0) -> list[np.ndarray]:
    """Consecutive 'slices': one anatomy drifting slowly, with noise of its own in each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lo = -1024 if np.iinfo(dtype).min < 0 else 0
    slices = []
    for k in range(count):
        anatomy = 600 * np.sin(xx / 7.0 + 0.1 * k) * np.cos(yy / 5.0)
        slices.append(np.clip(lo + 1000 + anatomy + rng.normal(0, 30, shape), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype))
    return slices


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    codec = medvae.load("medvae", quality=1)
    volume = _volume()
    codec.residual = small_residual(codec, volume[0])
    codec.series_residual = small_series_residual(codec, volume[1], volume[0])
    return codec


@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
@pytest.mark.parametrize("max_error", [0, 1, 7])
def test_a_series_round_trips_within_its_bound(codec, dtype, max_error):
    volume = _volume(dtype=dtype)
    files = codec.compress_series(volume, max_error=max_error)
    assert [bitstream.read_header(f).version for f in files] == [8, 9, 9]  # the first slice alone, then given the one before
    for decoded, image in zip(codec.decompress_series(files), volume):
        assert decoded.dtype == image.dtype
        assert np.abs(decoded.astype(np.int64) - image).max() <= max_error


def test_a_series_file_reads_the_previous_slice(codec):
    """Another previous slice gives other bytes (the model reads it), and the file decodes only
    with the slice it was coded with: without one, or with another, a clear BitstreamError."""
    a, b, c = _volume()
    data = codec.compress(b, max_error=0, previous=a)
    assert codec.compress(b, max_error=0, previous=c) != data
    assert bitstream.read_header(data).previous_crc == bitstream.pixels_crc(a)
    np.testing.assert_array_equal(codec.decompress(data, previous=a), b)
    np.testing.assert_array_equal(medvae.decompress(data, codec, previous=a), b)
    with pytest.raises(BitstreamError, match="previous slice"):
        codec.decompress(data)
    with pytest.raises(BitstreamError, match="not the one this file was coded with"):
        codec.decompress(data, previous=c)
    assert np.array_equal(codec.decompress(codec.compress(b, max_error=0), previous=c), b)  # a file coded alone ignores it


@pytest.mark.parametrize("cut", [1, 10, 200])
def test_damaged_series_files_raise(codec, cut):
    a, b, _ = _volume()
    data = codec.compress(b, max_error=2, previous=a)
    with pytest.raises(BitstreamError):
        codec.decompress(data[:-cut], previous=a)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1 << (cut % 8)
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(flipped), previous=a)


def test_series_coding_refuses_what_it_cannot_do(codec):
    a, b, _ = _volume()
    with pytest.raises(InputError, match="max_error"):
        codec.compress(b, previous=a)
    with pytest.raises(InputError, match="shape and dtype"):
        codec.compress(b, max_error=0, previous=a[:40])
    with pytest.raises(InputError, match="shape and dtype"):
        codec.compress(b, max_error=0, previous=a.astype(np.uint16))
    alone = medvae.load("medvae", quality=1)
    alone.residual, alone.series_residual = codec.residual, None
    with pytest.raises(InputError, match="series residual model"):
        alone.compress(b, max_error=0, previous=a)
    with pytest.raises(InputError, match="reads the previous slice"):
        medvae.Codec(alone.model, residual=codec.residual, series_residual=codec.residual)


def test_key_slices_bound_what_a_slice_needs(codec):
    """Every key_every-th slice is coded alone; 0 codes only the first alone; a bad value is refused."""
    volume = _volume(5)
    versions = lambda files: [bitstream.read_header(f).version for f in files]  # noqa: E731
    files = codec.compress_series(volume, max_error=0, key_every=2)
    assert versions(files) == [8, 9, 8, 9, 8]
    assert codec.decompress(files[2]).tolist() == volume[2].tolist()  # a key slice decodes alone
    assert versions(codec.compress_series(volume, max_error=0, key_every=0)) == [8, 9, 9, 9, 9]
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="key_every"):
            codec.compress_series(volume, max_error=0, key_every=bad)


def test_a_slice_of_another_size_starts_the_series_again(codec):
    a, b, _ = _volume()
    small = _volume(shape=(40, 44), seed=3)[0]
    files = codec.compress_series([a, small, b], max_error=0)
    assert [bitstream.read_header(f).version for f in files] == [8, 8, 8]
    for decoded, image in zip(codec.decompress_series(files), [a, small, b]):
        np.testing.assert_array_equal(decoded, image)


def test_a_series_model_made_from_a_plain_one_codes_what_it_coded(codec):
    """``with_previous`` adds the previous slice's inputs with zero weights: the float bits and
    the exact coder's bytes are those of the model it was made from, whatever the previous slice."""
    a, b, c = _volume()
    base, value_range, exact = codec.base_layer(b)
    plain = codec.residual
    series_model = with_previous(plain.model)
    assert calibrate_residual(series_model, [(b, base, value_range, a)]) == calibrate_residual(plain.model, [(b, base, value_range)])
    series = Residual(series_model, plain.plan)
    x, x_base, lo, hi = slice_tensors(b, base, value_range)
    with torch.no_grad():
        bits = float(residual_bits(plain.model, x, x_base, lo, hi))
        for previous in (a, c):
            assert float(residual_bits(series_model, x, x_base, lo, hi, slice_tensors(previous, base, value_range)[0])) == bits
    strings, _ = plain.coder.encode(b, base, value_range, 1, exact=exact)
    for previous in (a, c):
        assert series.coder.encode(b, base, value_range, 1, exact=exact, previous=previous)[0] == strings
    with pytest.raises(ValueError, match="already"):
        with_previous(series_model)


def test_series_models_save_and_load(codec, tmp_path):
    save_residual(codec.series_residual, tmp_path / "series.pt")
    loaded = load_residual(tmp_path / "series.pt")
    assert loaded.model.previous and loaded.fingerprint == codec.series_residual.fingerprint


def test_series_training_pairs_are_consecutive_slices_of_a_series(codec):
    """A volume's slices follow each other in order; a slice of another patient's file does not."""
    volume = _volume(4)
    slices = [Slice(v, 12, "CT", "p", "vol.nii", i) for i, v in enumerate(volume[:3])] + [Slice(volume[3], 12, "CT", "q", "other/a.dcm", 0)]
    slices[0], slices[2] = slices[2], slices[0]  # listed out of order: the series is ordered
    pairs = [Pair(s.pixels, s.pixels, (-1024, 2000)) for s in slices]
    chosen = series_pairs(pairs, slices)
    assert [(p.image is volume[k], p.previous is volume[k - 1]) for p, k in zip(chosen, (1, 2))] == [(True, True)] * 2
    assert len(chosen) == 2
    with pytest.raises(MedVAEError, match="series"):
        train_residual(pairs, model=ResidualModel(channels=8, previous=True), steps=1)
    with pytest.raises(MedVAEError, match="series"):
        train_residual(chosen, model=ResidualModel(channels=8), steps=1)
    model, log = train_residual(chosen, model=ResidualModel(channels=8, previous=True), steps=2, batch=2, crop=32, log_every=2)
    assert model.previous and log[-1]["step"] == 2


def test_the_evaluation_codes_a_series_as_compress_series_does(codec):
    """``medvae-series`` in the evaluation registry: the stream is the slices' files, each after
    its length; a damaged stream raises."""
    volume = np.stack(_volume(3))
    point = SeriesWithResidual(codec, 1)
    data = point.encode_series(volume, 12)
    files = codec.compress_series(list(volume), max_error=1, bits_stored=12)
    assert len(data) == sum(len(f) + 4 for f in files)
    decoded = point.decode_series(data)
    assert decoded.shape == volume.shape and np.abs(decoded.astype(int) - volume).max() <= 1
    np.testing.assert_array_equal(point.decode(point.encode(volume[0], 12)), codec.decompress(codec.compress(volume[0], max_error=1, bits_stored=12)))
    for damaged in (data[:2], data[:-3]):
        with pytest.raises(BitstreamError):
            point.decode_series(damaged)
