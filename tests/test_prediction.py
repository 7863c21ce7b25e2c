"""A series slice's base latent coded against the analysis of the slice before (formats 21 to 26)."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import medvae
from medvae import bitstream, prediction
from medvae.errors import BitstreamError
from medvae.evaluation.datasets import load_images
from medvae.exact.fixed import Fixed, Stored
from tests.conftest import CORPUS

MANIFEST = CORPUS / "MANIFEST.csv"


def _phantom(shift: int, seed: int, shape=(128, 128)) -> np.ndarray:
    """A CT-like slice: a body with texture, noise and a bone, moved ``shift`` pixels (the next slice of a volume)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, -1000.0)
    body = (yy - 64) ** 2 / 50**2 + (xx - 64 - shift) ** 2 / 56**2 < 1
    image[body] = 40 + 30 * np.sin((xx[body] - shift) / 7.0) + rng.normal(0, 10, body.sum())
    image[(yy - 70) ** 2 + (xx - 60 - shift) ** 2 < 80] = 1200
    return np.round(image).astype(np.int16)


@pytest.fixture(scope="module")
def codecs() -> tuple[medvae.Codec, medvae.Codec]:
    """The shipped default, and the same without the prediction (the formats of the release before)."""
    return medvae.load("medvae"), medvae.load("medvae", base_prediction=False)


@pytest.mark.parametrize("max_error", [0, 2])
def test_a_predicted_base_decodes_within_the_bound_in_fewer_bytes(codecs, max_error):
    """A series slice's file is smaller than the unpredicted one and keeps the bound; its block holds
    a nibble per channel and bucket and the step of y (coarser than the unit); the first slice of a
    series has none."""
    predicted, plain = codecs
    before, image = _phantom(0, 1), _phantom(1, 2)
    data, old = predicted.compress(image, max_error=max_error, previous=before), plain.compress(image, max_error=max_error, previous=before)
    header, old_header = bitstream.read_header(data), bitstream.read_header(old)
    assert header.version in bitstream.PREDICTED_VERSIONS and bitstream.PREDICTED_VERSIONS[header.version] == old_header.version
    nibble_bytes = (predicted.twin.y_channels * prediction.BUCKETS + 1) // 2
    options, step, hyper = prediction.read(header.base_prediction, predicted.twin.y_channels)
    assert len(header.base_prediction) == nibble_bytes + 1 + (hyper is not None)  # a nibble per channel and bucket, the step, z's table
    noise = prediction.noise_step(image, header.value_range)  # the coarser of the bound's step and the noise's
    assert step == max(prediction.base_step(max_error), noise) > prediction.UNIT_STEP == prediction.block_step(old_header.base_prediction or b"")
    assert prediction.predicted_count(header.base_prediction) == np.count_nonzero(options) > 0
    assert len(data) < len(old)
    decoded = predicted.decompress(data, previous=before)
    assert np.abs(decoded.astype(np.int64) - image).max() <= max_error
    np.testing.assert_array_equal(plain.decompress(data, previous=before), decoded)  # decoding follows the file
    first = predicted.compress_series([before, image], max_error=max_error)[0]
    assert not bitstream.read_header(first).base_prediction


def test_at_the_unit_step_the_prediction_changes_how_y_is_coded_not_y(codecs, monkeypatch):
    """With y at the unit step (as the release before coded it), the predicted file decodes to the
    very pixels of the unpredicted one, in fewer bytes: the prediction only codes y; the step
    is what changes the base."""
    predicted, plain = codecs
    monkeypatch.setattr(prediction, "base_step", lambda max_error: prediction.UNIT_STEP)
    monkeypatch.setattr(prediction, "noise_step", lambda image, value_range: prediction.UNIT_STEP)
    before, image = _phantom(0, 1), _phantom(1, 2)
    data, old = predicted.compress(image, max_error=2, previous=before), plain.compress(image, max_error=2, previous=before)
    nibble_bytes = (predicted.twin.y_channels * prediction.BUCKETS + 1) // 2
    assert len(bitstream.read_header(data).base_prediction) in (nibble_bytes, nibble_bytes + 2)  # no step byte but before z's table
    assert len(data) < len(old)
    np.testing.assert_array_equal(predicted.decompress(data, previous=before), plain.decompress(old, previous=before))


def test_the_step_quantizes_y_and_its_scales_alike(codecs):
    """y at step s (in quarters) is coded as the integer nearest 4·y / s (halves up) under the tables
    of the scale 4·σ / s, and decodes to s/4 times its symbols: the twin's symbols, values and
    table indexes at a step, against those definitions in exact rational arithmetic."""
    twin = codecs[0].twin
    frac = 12
    ties = [9216, -9216, -2560]  # halves: 1.5 and -1.5 at step 6, -0.5 at step 5 (rounded up: 2, -1, 0)
    raw = [-7000, -2559, 0, 1, 2561, 5120, 123456, -123457, *ties]
    values = torch.tensor([raw], dtype=torch.int32)
    for step in (5, 6, 7, 8):
        symbols = twin._symbols(Stored(values.clone(), frac), step=step)
        expected = [math.floor(Fraction(v, 2**frac) * Fraction(4, step) + Fraction(1, 2)) for v in raw]
        assert symbols[0].tolist() == expected
        back = twin._values(symbols.clone(), frac, step=step)
        assert back.values[0].tolist() == [q * step * 2**frac // 4 for q in expected]  # exact: f >= 2
    table = [Fraction(float(t)) for t in twin.scale_table]
    sigma = [1, 9, 40, 451, 452, 3000, 90000, 10**6]
    scales = Fixed(torch.tensor([sigma], dtype=torch.int64), 10)
    for step in (4, 5, 6, 7):
        expected = [sum(t * step < 4 * Fraction(v, 2**10) for t in table) for v in sigma]
        assert twin._indexes(scales, step)[0].tolist() == expected
    assert twin._indexes(scales, 4).tolist() != twin._indexes(scales, 7).tolist()


def test_the_encoder_takes_only_what_pays(codecs):
    """Given a slice that shares nothing with this one, the prediction may still narrow the tables
    of channels the two leave at 0, but never costs more than the block it writes; where nothing
    at all gains, no block is written, and y is coded as without prediction."""
    predicted, plain = codecs
    image, unrelated = _phantom(0, 1), np.random.default_rng(5).integers(-1000, 1500, (128, 128)).astype(np.int16)
    data, old = predicted.compress(image, max_error=0, previous=unrelated), plain.compress(image, max_error=0, previous=unrelated)
    y_bytes = lambda f: sum(map(len, bitstream.unpack(f)[1]))  # noqa: E731
    assert y_bytes(data) <= y_bytes(old) + 8  # rANS flushes whole words
    np.testing.assert_array_equal(predicted.decompress(data, previous=unrelated), image)
    coder = predicted.twin._coders[1]
    zeros = torch.zeros((1, 2, 4, 4), dtype=torch.int32)  # at the narrowest table, and far from the prediction
    assert not prediction.choose(zeros, zeros + 50, zeros, coder).any()
    assert prediction.choose(zeros, zeros, zeros + 30, coder).any()  # a correct prediction narrows wide tables


def test_a_predicted_file_decodes_only_with_its_slice_and_block(codecs):
    """Without the previous slice, with another one, or with its block damaged (its length, no
    option predicting, or the options changed), a clear BitstreamError, never other pixels."""
    predicted, _ = codecs
    before, image = _phantom(0, 1), _phantom(1, 2)
    data = predicted.compress(image, max_error=0, previous=before)
    with pytest.raises(BitstreamError, match="previous slice"):
        predicted.decompress(data)
    with pytest.raises(BitstreamError, match="not the one this file was coded with"):
        predicted.decompress(data, previous=_phantom(1, 3))
    header, strings, metadata = bitstream.unpack(data)
    block = header.base_prediction
    forged = [block[:-1], block + b"\0", bytes(len(block)), bytes(b ^ 0x11 for b in block)]
    for bad in forged:
        damaged = bitstream.pack(dataclasses.replace(header, base_prediction=bad), strings, metadata)
        with pytest.raises(BitstreamError):
            predicted.decompress(damaged, previous=before)


def test_the_container_keeps_the_block_only_for_series_slices():
    header = bitstream.Header(model="medvae", fingerprint="00" * 8, dtype=np.dtype(np.int16), shape=(8, 8), value_range=(0, 9),
                              latent_shape=(1, 1), pixels_crc=0, max_error=0, residual_fingerprint="11" * 8,
                              residual_strings=(b"a", b"b"), previous_crc=7, base_prediction=b"\x01\x00\x03")
    data = bitstream.pack(header, [b"y", b"z"])
    read = bitstream.read_header(data)
    assert (read.version, read.base_prediction, bitstream.layout(read.version)) == (21, b"\x01\x00\x03", bitstream.SERIES_RESIDUAL_VERSION)
    with pytest.raises(ValueError, match="series"):
        bitstream.pack(dataclasses.replace(header, previous_crc=None), [b"y", b"z"])
    empty = bytearray(data)
    at = data.index(b"\x03\x00\x01\x00\x03")  # the block's u16 length, then the block
    empty[at : at + 5] = b"\x00\x00"
    body = bytes(empty[:-4])
    with pytest.raises(BitstreamError, match="empty base prediction"):
        bitstream.unpack(body + bitstream._CRC.pack(__import__("zlib").crc32(body)))


def test_the_cost_the_encoder_weighs_is_what_the_coder_writes(codecs):
    """:func:`medvae.prediction.symbol_costs` against CompressAI's rANS: symbols drawn around the
    tables, escapes of every length included, cost their bytes to within the coder's 8-byte flush."""
    coder = codecs[0].twin._coders[1]
    rng = np.random.default_rng(0)
    shape = (1, 4, 16, 16)
    indexes = torch.from_numpy(rng.integers(0, coder._cdf_length.numel(), shape).astype(np.int32))
    symbols = torch.from_numpy(np.round(rng.laplace(0, 3, shape) * rng.choice([1, 1, 1, 40, 4000], shape)).astype(np.int32))
    cdf, lengths, offsets = coder._quantized_cdf.tolist(), coder._cdf_length.reshape(-1).int().tolist(), coder._offset.reshape(-1).int().tolist()
    for channel in range(4):
        string = coder.entropy_coder.encode_with_indexes(
            symbols[0, channel].reshape(-1).tolist(), indexes[0, channel].reshape(-1).tolist(), cdf, lengths, offsets)
        bits = prediction.symbol_costs(symbols[:, channel : channel + 1], indexes[:, channel : channel + 1], coder).sum() / 2**16
        assert bits / 8 <= len(string) <= bits / 8 + 8


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
def test_on_a_ct_series_the_base_costs_a_fifth_less(codecs):
    """Two consecutive slices of the corpus' CT test series: the predicted file is smaller by at
    least a fifth of what the base cost (measured: about a quarter), and decodes losslessly; near
    losslessly, the coarser step of y makes a smaller file than the unit step."""
    predicted, plain = codecs
    series = [s for s in load_images([MANIFEST], "test", modality="CT") if s.patient == "totalseg-abdomen"][:2]
    before, image = (s.pixels for s in series)
    base = len(plain.compress(image))
    data, old = predicted.compress(image, max_error=0, previous=before), plain.compress(image, max_error=0, previous=before)
    assert len(old) - len(data) >= 0.2 * base
    np.testing.assert_array_equal(predicted.decompress(data, previous=before), image)
    near = predicted.compress(image, max_error=2, previous=before)
    with pytest.MonkeyPatch.context() as patch:  # y at the unit step, as the release before coded it
        patch.setattr(prediction, "base_step", lambda max_error: prediction.UNIT_STEP)
        patch.setattr(prediction, "noise_step", lambda image, value_range: prediction.UNIT_STEP)
        unit = predicted.compress(image, max_error=2, previous=before)
    assert len(near) < len(unit)  # measured over the test series: 1.2-1.6 % smaller at bounds 1 to 4


def test_the_block_holds_a_nibble_per_channel_and_bucket_the_step_and_zs_table():
    """:func:`medvae.prediction.pack` and :func:`read` round trip any options, step and z's table;
    an odd count's padding nibble must be 0; a block predicting nothing at the unit step, a step
    out of range, or the unit step written out without z's table after it, is refused (the
    encoder writes none of them)."""
    options = np.random.default_rng(1).integers(0, 16, (8, prediction.BUCKETS))
    for step in prediction.STEPS:
        for hyper in (None, 0, 7, 255):
            block = prediction.pack(options, step, hyper)
            opts, read_step, read_hyper = prediction.read(block, 8)
            np.testing.assert_array_equal(opts, options)
            assert read_step == step == prediction.block_step(block)
            assert read_hyper == hyper == prediction.block_hyper(block)
            assert prediction.predicted_count(block) == np.count_nonzero(options)
    assert len(prediction.pack(options)) == 12 and len(prediction.pack(options, 6)) == 13  # the unit step is not written
    assert prediction.pack(options, prediction.UNIT_STEP, 3)[12:] == bytes([prediction.UNIT_STEP, 3])  # but before z's table
    odd = options[:7]
    padded = bytearray(prediction.pack(odd))
    padded[-1] |= 0x10
    with pytest.raises(BitstreamError, match="padding"):
        prediction.read(bytes(padded), 7)
    zeros = np.zeros((8, prediction.BUCKETS), int)
    with pytest.raises(BitstreamError, match="no symbol"):
        prediction.read(prediction.pack(zeros), 8)
    assert prediction.read(prediction.pack(zeros, 6), 8)[1] == 6  # a coarser y alone is worth a block
    assert prediction.read(prediction.pack(zeros, prediction.UNIT_STEP, 5), 8)[2] == 5  # and a predicted z alone
    with pytest.raises(BitstreamError, match="bytes"):
        prediction.read(prediction.pack(options, 6, 5) + b"\0", 8)
    for bad in (prediction.pack(options) + bytes([prediction.UNIT_STEP]), prediction.pack(options) + bytes([3]),
                prediction.pack(options) + bytes([max(prediction.STEPS) + 1])):
        with pytest.raises(BitstreamError, match="step"):
            prediction.read(bad, 8)
    steps = [prediction.base_step(t) for t in (0, 1, 2, 4, 8, 100)]
    assert steps == sorted(steps) and set(steps) <= set(prediction.STEPS) and steps[0] > prediction.UNIT_STEP
    indexes = torch.tensor([0, 11, 12, 23, 24, 63], dtype=torch.int32)
    assert prediction.bucket_of(indexes).tolist() == [0, 0, 1, 1, 2, 2]


def test_z_is_coded_against_the_previous_slices_where_it_pays(codecs):
    """z's difference from the previous slice's z costs the fewest bits under the table
    :func:`medvae.prediction.choose_hyper` picks (each table's exact cost, against CompressAI's
    rANS), and is not coded so where z alone costs less."""
    twin = codecs[0].twin
    bottleneck, conditional = twin._coders[0], twin._coders[1]
    rng = np.random.default_rng(3)
    z = torch.from_numpy(rng.integers(-2, 3, (1, bottleneck._quantized_cdf.size(0), 4, 4)).astype(np.int32))
    near = z + torch.from_numpy((rng.random(z.shape) < 0.05).astype(np.int32))  # 95 % of symbols equal
    hyper = prediction.choose_hyper(z, near, bottleneck, conditional)
    assert hyper is not None
    cdf, lengths, offsets = conditional._quantized_cdf.tolist(), conditional._cdf_length.reshape(-1).int().tolist(), conditional._offset.reshape(-1).int().tolist()
    size = lambda i: len(conditional.entropy_coder.encode_with_indexes((z - near).reshape(-1).tolist(), [i] * z.numel(), cdf, lengths, offsets))  # noqa: E731
    assert size(hyper) <= min(size(i) for i in range(conditional._quantized_cdf.size(0))) + 8  # within the coder's flush
    medians = torch.zeros_like(z)  # z at its medians, which the bottleneck codes in few bits; a prediction far off
    assert prediction.choose_hyper(medians, torch.from_numpy(rng.integers(-40, 41, z.shape).astype(np.int32)), bottleneck, conditional) is None


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
def test_on_a_ct_series_z_costs_a_third_of_what_it_did(codecs, monkeypatch):
    """Two consecutive slices of the corpus' CT test series: the predicted z's string is under
    half the bottleneck's (measured: about 150 bytes against 400), the file decodes within its
    bound, and a block naming another table, or one that does not exist, is refused (the pixel
    CRC, or the table check), never decoded to other pixels."""
    predicted, _ = codecs
    series = [s for s in load_images([MANIFEST], "test", modality="CT") if s.patient == "totalseg-abdomen"][:2]
    before, image = (s.pixels for s in series)
    data = predicted.compress(image, max_error=1, previous=before)
    header, strings, metadata = bitstream.unpack(data)
    hyper = prediction.block_hyper(header.base_prediction)
    assert hyper is not None
    np.testing.assert_array_equal(predicted.decompress(data, previous=before), predicted.decompress(data, previous=before))
    assert np.abs(predicted.decompress(data, previous=before).astype(np.int64) - image).max() <= 1
    with monkeypatch.context() as patch:
        patch.setattr(prediction, "choose_hyper", lambda *args: None)
        alone = bitstream.unpack(predicted.compress(image, max_error=1, previous=before))[1]
    assert len(strings[-1]) < 0.5 * len(alone[-1])  # z's string is the last
    for forged in (hyper + 1, 200):
        block = header.base_prediction[:-1] + bytes([forged])
        damaged = bitstream.pack(dataclasses.replace(header, base_prediction=block), strings, metadata)
        with pytest.raises(BitstreamError):
            predicted.decompress(damaged, previous=before)
