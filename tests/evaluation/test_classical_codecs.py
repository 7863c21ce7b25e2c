"""Classical codecs: native-depth round trips, exact lossless modes, near-lossless bounds."""

from __future__ import annotations

import numpy as np
import pytest

from medvae import metrics
from medvae.errors import InputError
from medvae.evaluation import bits, codecs, coiflet, spiht
from medvae.evaluation.codecs import check_depth, expand, parse_spec
from medvae.evaluation.htj2k import HTJ2K
from medvae.evaluation.jpeg import JPEG
from medvae.evaluation.jpeg2000 import JPEG2000
from medvae.evaluation.jpegls import JPEGLS
from medvae.evaluation.jpegxl import JPEGXL
from medvae.evaluation.rle import RLE

H, W = 72, 88


def _phantom(seed: int = 0) -> np.ndarray:
    """A smooth CT-like field in [0, 1] with texture and an edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    body = ((yy - H / 2) / (0.45 * H)) ** 2 + ((xx - W / 2) / (0.45 * W)) ** 2 < 1
    x = 0.1 + 0.5 * body + 0.15 * np.sin(xx / 7.0) * np.cos(yy / 5.0) * body
    return np.clip(x + rng.normal(0, 0.002, x.shape), 0, 1)


@pytest.fixture(scope="module")
def images() -> dict[str, tuple[np.ndarray, int]]:
    x = _phantom()
    return {
        "u12": (np.rint(x * 4095).astype(np.uint16), 12),
        "u16": (np.rint(x * 65535).astype(np.uint16), 16),
        "s16": (np.rint(x * 60000 - 30000).astype(np.int16), 16),
    }


LOSSY = [
    JPEG2000(1.0), JPEGXL(0.5), JPEGLS(4), JPEG(90),
    spiht.SPIHT(1.0), coiflet.Coiflet(1.0),
]
LOSSLESS = [
    JPEG2000(None, lossless=True), JPEGXL(None, lossless=True), JPEGLS(0), JPEG(None, lossless=True), RLE(), HTJ2K(),
]


@pytest.mark.parametrize("point", LOSSY, ids=lambda p: p.label)
@pytest.mark.parametrize("kind", ["u12", "u16", "s16"])
def test_lossy_round_trip_at_native_depth(point, kind, images):
    image, bits_stored = images[kind]
    data = point.encode(image, bits_stored)
    decoded = point.decode(data)
    assert decoded.shape == image.shape and decoded.dtype == image.dtype
    peak_psnr = metrics.psnr(image, decoded, bits_stored)
    assert peak_psnr > 30.0, f"{point.label} {kind}: {peak_psnr:.1f} dB"  # gross errors (sign, offset) give < 15
    # native depth: decoded values use the low bits (a codec that quietly worked
    # at 8 bits and scaled back would give values on a coarse grid)
    if not point.notes(image, bits_stored):
        assert len(np.unique(decoded.astype(np.int64) % 16)) == 16
    if point.knob == "bpp":  # rate-targeted codecs stay at or under the target
        assert metrics.bpp(len(data), image.shape) <= point.value * 1.02


@pytest.mark.parametrize("point", LOSSLESS, ids=lambda p: p.label)
@pytest.mark.parametrize("kind", ["u12", "u16", "s16", "u8"])
def test_lossless_modes_are_exact(point, kind, images):
    if kind == "u8":
        image, bits_stored = (images["u12"][0] >> 4).astype(np.uint8), 8
    else:
        image, bits_stored = images[kind]
    decoded = point.decode(point.encode(image, bits_stored))
    assert decoded.dtype == image.dtype
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("near", [1, 2, 4, 7])
@pytest.mark.parametrize("kind", ["u12", "s16"])
def test_jpegls_near_lossless_bound(near, kind, images):
    image, bits_stored = images[kind]
    point = JPEGLS(near)
    data = point.encode(image, bits_stored)
    decoded = point.decode(data)
    err = metrics.max_abs_error(image, decoded)
    assert 0 < err <= near
    assert len(data) < len(JPEGLS(0).encode(image, bits_stored))


def test_jpegls_near_too_large_for_8_bits_is_an_input_error():
    with pytest.raises(InputError):
        JPEGLS(200).encode(np.zeros((16, 16), np.uint8), 8)


def test_jpeg_12_bit_and_16_bit_handling(images):
    u12, _ = images["u12"]
    assert JPEG(100).notes(u12, 12) == ""
    assert metrics.max_abs_error(u12, JPEG(100).decode(JPEG(100).encode(u12, 12))) <= 4
    # 16-bit data whose range fits 12 bits: offset by the minimum, no bits lost
    narrow = (u12.astype(np.int32) - 1024).astype(np.int16)
    assert JPEG(100).notes(narrow, 16) == ""
    assert metrics.max_abs_error(narrow, JPEG(100).decode(JPEG(100).encode(narrow, 16))) <= 4
    # a full 16-bit range cannot be coded at 12 bits: it is shifted, and says so
    u16, _ = images["u16"]
    assert "shifted right by 4" in JPEG(100).notes(u16, 16)
    assert metrics.max_abs_error(u16, JPEG(100).decode(JPEG(100).encode(u16, 16))) >= 8


def test_check_depth_rejects_values_outside_bits_stored():
    with pytest.raises(InputError):
        check_depth(np.full((8, 8), 5000, np.uint16), 12)
    with pytest.raises(InputError):
        check_depth(np.full((8, 8), -3000, np.int16), 12)
    with pytest.raises(InputError):
        check_depth(np.zeros((8, 8), np.float32), 12)
    assert check_depth(np.full((8, 8), -2048, np.int16), 12)[1:] == (12, True)


def test_rate_increases_quality(images):
    image, b = images["u12"]
    for family in (spiht.SPIHT, coiflet.Coiflet, JPEG2000):
        psnrs = [metrics.psnr(image, family(r).decode(family(r).encode(image, b)), b) for r in (0.25, 1.0, 3.0)]
        assert psnrs[0] < psnrs[1] < psnrs[2], (family.family, psnrs)


# ------------------------------------------------------------------------- SPIHT


def test_spiht_is_embedded_and_spends_the_budget_exactly(images):
    image, b = images["u12"]
    low = spiht.SPIHT(0.5).encode(image, b)
    high = spiht.SPIHT(1.5).encode(image, b)
    assert len(low) == int(0.5 * H * W / 8) and len(high) == int(1.5 * H * W / 8)
    assert high.startswith(low)  # a prefix of the stream is the lower-rate stream


def test_spiht_descendant_maxima_match_brute_force():
    rng = np.random.default_rng(3)
    levels, hp, wp = 3, 16, 24
    mag = rng.integers(0, 1000, (hp, wp))
    max_d, max_l = spiht.descendant_maxima(mag, levels)
    h0, w0 = hp >> levels, wp >> levels

    def kids(i, j):
        if i < h0 and j < w0:
            return [(i, j + w0), (i + h0, j), (i + h0, j + w0)]
        if 2 * i >= hp or 2 * j >= wp or (i < hp // 2 and j < wp // 2) is False:
            return []
        return [(2 * i, 2 * j), (2 * i, 2 * j + 1), (2 * i + 1, 2 * j), (2 * i + 1, 2 * j + 1)]

    def descendants(i, j):
        out = []
        for c in kids(i, j):
            out += [c] + descendants(*c)
        return out

    for i in range(hp):
        for j in range(wp):
            d = descendants(i, j)
            g = [x for c in kids(i, j) for x in descendants(*c)]
            assert max_d[i, j] == max((mag[x] for x in d), default=0)
            assert max_l[i, j] == max((mag[x] for x in g), default=0)


def test_spiht_high_rate_is_near_exact(images):
    image, b = images["u12"]
    decoded = spiht.SPIHT(16.0).decode(spiht.SPIHT(16.0).encode(image, b))
    assert metrics.max_abs_error(image, decoded) <= 2


# ------------------------------------------------------------ coiflet, Huffman


def test_coefficient_coder_round_trip():
    rng = np.random.default_rng(1)
    q = np.zeros(5000, dtype=np.int64)
    idx = rng.choice(5000, 400, replace=False)
    q[idx] = rng.integers(-70000, 70000, 400)
    q[10:20] = [1, -1, 2, -2, 3, -3, 1 << 20, -(1 << 20), 0, 5]  # runs of zeros above 16 elsewhere
    q[-1] = 7  # no trailing zeros
    np.testing.assert_array_equal(coiflet.decode_coefficients(coiflet.encode_coefficients(q), len(q)), q)
    zeros = np.zeros(300, dtype=np.int64)
    np.testing.assert_array_equal(coiflet.decode_coefficients(coiflet.encode_coefficients(zeros), 300), zeros)


def test_huffman_code_is_prefix_free_and_optimal_for_dyadic_frequencies():
    freq = np.array([8, 4, 2, 1, 1, 0, 0])
    lengths = bits.code_lengths(freq)
    np.testing.assert_array_equal(lengths, [1, 2, 3, 4, 4, 0, 0])
    codes = bits.canonical_codes(lengths)
    words = [format(int(codes[s]), f"0{lengths[s]}b") for s in range(5)]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    # length limit: a Fibonacci-like distribution would need > 16 bits
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    limited = bits.code_lengths(np.array(fib))
    assert limited.max() <= bits.MAX_CODE_LENGTH
    assert np.sum(2.0 ** -limited) <= 1.0  # Kraft
    table, used = bits.unpack_table(bits.pack_table(limited), len(limited))
    np.testing.assert_array_equal(table, limited)


def test_coiflet_counts_its_table_and_hits_the_target(images):
    image, b = images["u12"]
    data = coiflet.Coiflet(0.75).encode(image, b)
    assert 0.6 < metrics.bpp(len(data), image.shape) <= 0.75


# ----------------------------------------------------------------------- registry


def test_spec_parsing():
    assert parse_spec("jpeg2000") == [("jpeg2000", [])]
    assert parse_spec("jpegls=0,2,4,jpegxl") == [("jpegls", ["0", "2", "4"]), ("jpegxl", [])]
    assert parse_spec(["medvae=a.pt,b/c.pt", "spiht=0.5"]) == [("medvae", ["a.pt", "b/c.pt"]), ("spiht", ["0.5"])]
    with pytest.raises(InputError):
        parse_spec("webp")
    with pytest.raises(InputError):
        expand("jpegls=2,2")
    with pytest.raises(InputError):
        expand("spiht=lossless")
    assert [p.label for p in expand("rle,htj2k")] == ["rle[lossless]", "htj2k[lossless]"]
    with pytest.raises(InputError):
        expand("rle=0.5")


def test_default_sweeps_have_enough_points():
    for name in ("jpeg2000", "jpegxl", "jpegls", "jpeg", "spiht", "coiflet"):
        lossy = [p for p in codecs.sweep(name) if not p.lossless]
        assert len(lossy) >= 6, name
    bpps = [p.value for p in codecs.sweep("spiht")]
    assert min(bpps) <= 0.05 and max(bpps) >= 3.0
