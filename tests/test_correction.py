"""The correction of the reconstruction (medvae.correction, format 11): exact, fitted, carried."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae import bitstream, correction
from medvae.errors import BitstreamError
from tests.conftest import small_model

NONE = correction.pack(np.zeros(correction.TONE_KNOTS, np.int64), np.zeros(len(correction.TAPS), np.int64))


def _reference(decoded: np.ndarray, value_range: tuple[int, int], block: bytes) -> np.ndarray:
    """The correction pixel by pixel in Python integers, as the module docstring states it."""
    tone, taps = (list(map(int, v)) for v in correction.unpack(block))
    lo, hi = value_range
    h, w = decoded.shape
    out = np.empty_like(decoded)
    for y in range(h):
        for x in range(w):
            r = int(decoded[y, x])
            position = (min(max(r, lo), hi) - lo) * (correction.TONE_KNOTS - 1)
            k = min(position // (hi - lo), correction.TONE_KNOTS - 2)
            f = position - k * (hi - lo)
            total = tone[k] * (hi - lo - f) + tone[k + 1] * f  # in 2^-16 pixel
            for (dy, dx), tap in zip(correction.TAPS, taps):
                neighbour = int(decoded[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)])
                total += tap * 2 ** (16 - correction.TAP_SHIFT) * (neighbour - r)
            out[y, x] = min(max(r + (total + 2**15) // 2**16, lo), hi)
    return out


@pytest.mark.parametrize("dtype, value_range", [(np.uint16, (0, 4095)), (np.int16, (-1024, 3071)), (np.uint8, (3, 250))])
def test_the_correction_is_the_stated_integer_formula_band_by_band(monkeypatch, dtype, value_range):
    rng = np.random.default_rng(1)
    lo, hi = value_range
    decoded = rng.integers(lo, hi + 1, (37, 23)).astype(dtype)
    block = correction.pack(rng.integers(-3000, 3000, correction.TONE_KNOTS), rng.integers(-400, 400, len(correction.TAPS)))
    monkeypatch.setattr(correction, "BAND_ROWS", 8)  # bands and their halos, as a large image has them
    corrected = correction.apply(decoded, value_range, block)
    assert corrected.dtype == decoded.dtype and not np.array_equal(corrected, decoded)
    np.testing.assert_array_equal(corrected, _reference(decoded, value_range, block))
    np.testing.assert_array_equal(correction.apply(decoded, value_range, NONE), decoded)  # all zero: unchanged


def test_the_fit_undoes_a_tone_bias_and_a_blur_and_never_makes_an_image_worse():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:256, :256]
    image = (1500 + 1200 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 3, (256, 256))).round().astype(np.uint16)
    blurred = (image.astype(float) + np.roll(image, 1, 0) + np.roll(image, 1, 1) + np.roll(image, -1, 1)) / 4
    decoded = np.clip(blurred - 0.004 * (blurred - 300) + rng.normal(0, 1, image.shape), 0, 4095).round().astype(np.uint16)
    value_range = (int(image.min()), int(image.max()))
    decoded = np.clip(decoded, *value_range)
    block = correction.fit(image, decoded, value_range)
    before = np.square(image.astype(float) - decoded).mean()
    after = np.square(image.astype(float) - correction.apply(decoded, value_range, block)).mean()
    assert after < 0.5 * before, (before, after)
    assert correction.fit(image, image, value_range) == NONE  # nothing to correct: the block of no correction


def test_the_fit_leaves_out_the_pixels_the_file_restores_exactly():
    rng = np.random.default_rng(3)
    image = rng.integers(100, 200, (256, 256)).astype(np.uint16)
    decoded = image.copy()
    exact = np.zeros(image.shape, bool)
    exact[:, :128] = True
    decoded[:, :128] = 150  # wrong where the file restores the pixels anyway: nothing to fit there
    assert correction.fit(image, decoded, (100, 199), exact) == NONE
    assert correction.fit(image, decoded, (100, 199)) != NONE


def test_a_corrected_file_carries_its_block_and_decodes_to_the_pixels_its_encoder_measured():
    codec = medvae.Codec(small_model("medvae-vr", seed=4))
    rng = np.random.default_rng(5)
    small = rng.integers(0, 4096, (256, 256)).astype(np.uint16)  # 65,536 pixels: no block
    large = rng.integers(0, 4096, (256, 512)).astype(np.uint16)  # 131,072: a block
    assert bitstream.read_header(codec.compress(small, quality=3)).version == bitstream.VARIABLE_RATE_VERSION
    data, pixels = codec.compress_with_pixels(large, quality=3, bits_stored=12)
    header = bitstream.read_header(data)
    assert header.version == bitstream.CORRECTED_VERSION and len(header.correction) == correction.BLOCK_BYTES
    np.testing.assert_array_equal(codec.decompress(data), pixels)
    assert header.psnr == pytest.approx(medvae.metrics.psnr(large, pixels, 12), abs=0.006)  # the corrected pixels'
    assert codec.quality_coder(large, bits_stored=12).size(3) == len(data)  # the block's length is known ahead
    plain = medvae.Codec(codec.model, correction=False).compress(large, quality=3, bits_stored=12)
    assert bitstream.read_header(plain).version == bitstream.VARIABLE_RATE_VERSION
    assert len(plain) == len(data) - correction.BLOCK_BYTES
    assert codec.decompress(plain).shape == large.shape  # a decoder follows the file either way


def test_a_damaged_correction_block_is_refused():
    with pytest.raises(BitstreamError, match="correction block"):
        correction.unpack(NONE[:-1])
    codec = medvae.Codec(small_model("medvae-vr", seed=4))
    data = codec.compress(np.random.default_rng(6).integers(0, 4096, (256, 512)).astype(np.uint16), quality=2)
    with pytest.raises(BitstreamError):  # one coefficient changed: the container's CRC, else the pixels' CRC
        codec.decompress(data[:-30] + bytes([data[-30] ^ 1]) + data[-29:])


def test_the_command_line_writes_a_corrected_file_and_info_reports_its_block(tmp_path, capsys):
    from medvae.cli import main

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:256, :512]
    image = (2000 + 800 * np.sin(xx / 9) * np.cos(yy / 13) + rng.normal(0, 40, (256, 512))).clip(0, 4095).astype(np.uint16)
    np.save(tmp_path / "a.npy", image)
    assert main(["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "out"), "--quality", "3"]) == 0
    data = (tmp_path / "out" / "a.mvae").read_bytes()
    assert bitstream.read_header(data).version == bitstream.CORRECTED_VERSION
    capsys.readouterr()
    assert main(["info", str(tmp_path / "out" / "a.mvae")]) == 0
    assert f"correction {correction.BLOCK_BYTES} bytes: intensity offsets and a filter" in capsys.readouterr().out
    np.testing.assert_array_equal(medvae.decompress(data), medvae.load("medvae-ctx").decompress(data))
