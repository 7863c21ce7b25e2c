"""Scanner padding and isolated extremes: stored exactly, and the tissue coded as without them."""

from __future__ import annotations

import numpy as np
import torch
import pytest

import medvae
from medvae import bitstream
from medvae.exceptions import Exceptions, split


def _ct(shape=(160, 160), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(a CT-like slice in HU: noisy air, a body, bone; exactly -1024 outside the field-of-view
    circle, as reconstructions give; the circle mask)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (min(h, w) / 2) ** 2
    body = (yy - h / 2) ** 2 / (0.38 * h) ** 2 + (xx - w / 2) ** 2 / (0.3 * w) ** 2 < 1
    image = np.clip(-1000 + rng.normal(0, 15, shape), -1024, None).astype(np.int16)
    image[~fov] = -1024
    image[body] = (40 + rng.normal(0, 25, body.sum())).astype(np.int16)
    image[h // 2 - 8 : h // 2 + 8, w // 2 - 5 : w // 2 + 5] = 900
    return image, fov


@pytest.fixture(scope="module")
def codec():
    return medvae.load("medvae", 3)


@pytest.mark.parametrize("padding", [-2048, -32768])
def test_a_padding_ring_is_restored_exactly_and_the_tissue_decodes_as_without_it(codec, padding):
    reference, fov = _ct()
    padded = reference.copy()
    padded[~fov] = padding
    data = codec.compress(padded)
    decoded = codec.decompress(data)
    np.testing.assert_array_equal(decoded[~fov], padded[~fov])
    # the model sees the same image as for the unpadded slice, so the tissue decodes identically
    np.testing.assert_array_equal(decoded[fov], codec.decompress(codec.compress(reference))[fov])
    assert len(data) <= 1.05 * len(codec.compress(reference)) + 200


def test_the_dicom_padding_value_is_used_when_given(codec):
    reference, fov = _ct()
    padded = reference.copy()
    padded[~fov] = -2000
    _, found = split(padded, padding_value=-2000)
    assert found.padding_value == -2000 and found.mask.sum() == (padded == -2000).sum()
    np.testing.assert_array_equal(codec.decompress(codec.compress(padded, padding_value=-2000)) == -2000, padded == -2000)


def test_one_extreme_pixel_is_restored_exactly_and_does_not_stretch_the_mapping(codec):
    reference, fov = _ct()
    spiked = reference.copy()
    spiked[40, 60] = 32767
    data = codec.compress(spiked)
    decoded = codec.decompress(data)
    assert decoded[40, 60] == 32767
    assert medvae.read_header(data).value_range == (-1024, 900)
    plain = codec.decompress(codec.compress(reference))
    keep = np.ones(reference.shape, bool)
    keep[40, 60] = False
    assert np.abs(decoded[keep].astype(int) - plain[keep]).max() <= 50  # only the spike's neighbourhood moves


@pytest.mark.parametrize("kind", ["ct air border", "mr background", "many bright pixels"])
def test_ordinary_images_have_no_exceptions(kind):
    rng = np.random.default_rng(2)
    if kind == "ct air border":
        image, _ = _ct()
    elif kind == "mr background":
        image = rng.poisson(3, (96, 96)).astype(np.uint16)
        image[20:70, 20:70] += 800
    else:  # a large implant: anatomy, coded by the model
        image, _ = _ct()
        image[60:100, 60:100] = 3000
    model_image, exceptions = split(image)
    assert not exceptions and np.array_equal(model_image, image)


def test_exception_blocks_round_trip_and_damage_is_refused():
    image, fov = _ct((64, 80))
    image[~fov] = -3024
    image[10, 40] = 30000
    _, exceptions = split(image)
    assert exceptions.padding_value == -3024 and exceptions.index.tolist() == [10 * 80 + 40]
    back = Exceptions.unpack(exceptions.pack(), image.shape)
    np.testing.assert_array_equal(back.mask, exceptions.mask)
    assert back.value.tolist() == [30000]
    import zlib

    overlong = b"\0\0\0\0\0" + b"\0\0\0\0" + b"\x01\0\0\0" + b"\xff" * 9 + b"\x7f" + b"\0\0\0\0"  # one extreme, its gap of 70 bits
    for bad in (b"", exceptions.pack()[:-3], zlib.compress(b"\x01\0\0\0\0\xff\xff\xff\xff"), zlib.compress(overlong)):
        with pytest.raises(medvae.BitstreamError):
            Exceptions.unpack(bad, image.shape)
    with pytest.raises(medvae.BitstreamError):
        Exceptions.unpack(exceptions.pack(), (image.shape[0] + 1, image.shape[1]))


def test_a_forged_exception_block_never_decodes_silently(codec):
    image, fov = _ct((128, 128))
    image[~fov] = -2048
    data = codec.compress(image)
    header, strings, metadata = bitstream.unpack(data)
    other = Exceptions(-2047, Exceptions.unpack(header.exceptions, header.shape).mask)  # another padding value
    forged = bitstream.pack(bitstream.Header(**{**header.__dict__, "exceptions": other.pack()}), strings, metadata)
    with pytest.raises(medvae.BitstreamError, match="checksum"):
        codec.decompress(forged)


def test_medvae_info_shows_what_is_stored_exactly(codec, tmp_path):
    from medvae.cli.info import describe, format_text

    image, fov = _ct()
    image[~fov] = -2048
    image[50, 70] = 32000
    path = tmp_path / "padded.mvae"
    path.write_bytes(codec.compress(image))
    info = describe(path)
    assert info["exceptions"]["padding_value"] == -2048 and info["exceptions"]["padding_pixels"] == int((~fov).sum())
    assert info["exceptions"]["extreme_pixels"] == 1
    assert f"padding -2048 on {int((~fov).sum()):,} pixels, 1 extreme pixel(s)" in format_text(info)


def test_order_statistics_from_the_histogram_are_numpys():
    from medvae.exceptions import _histogram, _kth, _quantile

    rng = np.random.default_rng(7)
    for values in (rng.integers(-3000, 3000, 1001).astype(np.int16), rng.integers(0, 7, 64).astype(np.uint8), np.array([5], np.uint16)):
        counts, offset = _histogram(values[None])
        for k in {0, 1, values.size // 2, values.size - 1} & set(range(values.size)):
            assert _kth(counts, k) + offset == np.partition(values, k)[k]
        for q in (0.001, 0.5, 0.999):
            assert _quantile(counts, q) + offset == pytest.approx(np.quantile(values, q), abs=1e-9)


def test_the_model_reads_each_region_as_the_whole_filled_image_holds_it():
    """The codec never makes the filled image whole: each tile fills its own region. Regions
    that cross the border (repeated last rows and columns) must read what the whole one holds."""
    from medvae.exact.image import NormalizedImage
    from medvae.exceptions import find

    image, fov = _ct((100, 96))
    image[~fov] = -2048
    image[3, 4], image[50, 89], image[99, 0] = 32767, -30000, 32000  # extremes, two on the border, one below the padding
    exceptions = find(image)
    model_image, _ = split(image)
    assert exceptions.index.size == 3 and exceptions.padding_pixels == int((image == -2048).sum())
    lo, hi = exceptions.value_range
    lazy, whole = NormalizedImage(image, lo, hi, 16, exceptions=exceptions), NormalizedImage(model_image, lo, hi, 16)
    for r0, r1, c0, c1 in [(0, 112, 0, 96), (0, 7, 0, 9), (48, 60, 80, 96), (90, 112, 0, 5), (40, 41, 20, 60)]:
        assert torch.equal(lazy.real(r0, r1, c0, c1), whole.real(r0, r1, c0, c1))
    assert (model_image >= lo).all() and (model_image <= hi).all() and model_image.min() == lo


def test_finding_padding_and_extremes_makes_no_image_sized_copy():
    """A 8192×8192 slice is 128 MiB: statistics come from a histogram and the mask is packed."""
    import tracemalloc

    from medvae.exceptions import find

    h = w = 4096
    yy, xx = np.ogrid[:h, :w]
    image = np.full((h, w), 1000, np.uint16)
    image[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 > (h / 2) ** 2] = 0  # a padding ring
    image[100, 1000] = 60000
    tracemalloc.start()
    exceptions = find(image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert exceptions.padding_value == 0 and exceptions.index.tolist() == [100 * w + 1000]
    assert peak < image.nbytes / 4, f"{peak / 2**20:.1f} MiB for a {image.nbytes / 2**20:.0f} MiB image"
