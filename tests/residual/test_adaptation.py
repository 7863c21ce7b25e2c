"""The per-image adaptation of the residual laws (medvae.residual.adaptation, formats 12 to 17).

The decoder's arithmetic is checked against the stated formulas in Python integers, the fit
against what it claims (fewer bytes where the image's residuals follow a structure the model
does not know; the same coefficients whatever order the sums run in), and the files against
damage. The cross-ISA job (tests/exact) decodes and re-encodes adapted files identically.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal, getcontext

import numpy as np
import pytest

import medvae
from medvae import bitstream
from medvae.cli.info import describe, format_text
from medvae.errors import BitstreamError
from medvae.io.slices import manifest_slices
from medvae.residual import adaptation
from medvae.residual.adaptation import Adaptation, PassAdaptation, feature_count, features, neighbours, within_reach
from medvae.residual.folding import symbol_range, table_widths
from medvae.residual.model import PHASES
from medvae.residual.tables import COUNT, LAWS, LOG2_MIN, STEPS
from tests.conftest import CORPUS, small_residual

MANIFEST = CORPUS / "MANIFEST.csv"


def _textured(shape=(96, 88), seed=0, dtype=np.int16) -> np.ndarray:
    """A body whose noise is smooth (correlated over a few pixels), as a soft reconstruction
    kernel makes it: each residual is close to its neighbours', which an untrained model does not know."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 40, (shape[0] + 4, shape[1] + 4))
    smooth = sum(noise[dy : dy + shape[0], dx : dx + shape[1]] for dy in range(5) for dx in range(5)) / 5
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = 1000 + 300 * np.sin(xx / 9.0) + smooth
    return np.clip(np.round(image), 0, 4095).astype(dtype)


@pytest.fixture(scope="module")
def codecs() -> tuple[medvae.Codec, medvae.Codec]:
    adapted = medvae.load("medvae", quality=1, noise_step=False)  # the formats of the adaptation: 15 to 17, not 28
    plain = medvae.load("medvae", quality=1, adaptation=False, noise_step=False)
    adapted.residual = plain.residual = small_residual(adapted, _textured(seed=9))
    return adapted, plain


def test_each_pass_reads_exactly_the_neighbours_earlier_passes_decoded():
    assert [len(neighbours(p)) for p in range(4)] == [0, 4, 12, 16]  # of the 24 in the 5×5 window: none, the diagonals, ..., all but its own phase
    for p, phase in enumerate(PHASES):
        for dy, dx in neighbours(p):
            assert ((phase[0] + dy) % 2, (phase[1] + dx) % 2) in PHASES[:p]
        assert feature_count(p, previous=2) == 2 + len(neighbours(p)) + len(adaptation.CURVATURES) + 2


@pytest.mark.parametrize("shape", [(12, 10), (11, 9)])
def test_features_are_the_stated_integers_pixel_by_pixel(shape):
    """Each feature at each pixel of a pass, from the formulas: the mean, 1, decoded residuals at
    the neighbours (0 outside the image), the base's second differences and each previous slice
    less the base (the base's nearest pixel outside the image)."""
    rng = np.random.default_rng(1)
    even = tuple(s + s % 2 for s in shape)
    decoded = rng.integers(-3000, 3000, even).astype(np.int32)
    base = rng.integers(0, 60000, even).astype(np.int32)
    previous = rng.integers(0, 60000, (2, *even)).astype(np.int32)
    clamp = lambda v: max(-adaptation.FEATURE_LIMIT, min(adaptation.FEATURE_LIMIT, v))  # noqa: E731
    at = lambda a, y, x: int(a[min(max(y, 0), even[0] - 1), min(max(x, 0), even[1] - 1)])  # noqa: E731
    for p, phase in enumerate(PHASES):
        rows, cols = (shape[0] - phase[0] + 1) // 2, (shape[1] - phase[1] + 1) // 2
        mean = rng.integers(-2**21, 2**21, (rows, cols))
        planes = list(features(p, mean, decoded, base, previous))
        assert len(planes) == feature_count(p, 2)
        for i in range(rows):
            for j in range(cols):
                y, x = 2 * i + phase[0], 2 * j + phase[1]
                inside = lambda yy, xx: 0 <= yy < even[0] and 0 <= xx < even[1]  # noqa: E731
                expected = [clamp(int(mean[i, j])), 1]
                expected += [int(decoded[y + dy, x + dx]) if inside(y + dy, x + dx) else 0 for dy, dx in neighbours(p)]
                expected += [clamp(at(base, y + dy, x + dx) + at(base, y - dy, x - dx) - 2 * at(base, y, x)) for dy, dx in adaptation.CURVATURES]
                expected += [clamp(at(plane, y, x) - at(base, y, x)) for plane in previous]
                assert [int(plane[i, j]) for plane in planes] == expected
        for row_step in (2, 3):  # the rows the fit reads, computed alone
            sampled = list(features(p, mean, decoded, base, previous, row_step))
            assert all(np.array_equal(part, plane[::row_step]) for part, plane in zip(sampled, planes, strict=True))


def test_the_correction_is_the_floor_formula_in_python_integers():
    rng = np.random.default_rng(2)
    planes = [rng.integers(-adaptation.FEATURE_LIMIT, adaptation.FEATURE_LIMIT + 1, (7, 5)) for _ in range(6)]
    coefficients = rng.integers(-32767, 32768, 6)
    mean, index = rng.integers(-500, 500, (7, 5)), rng.integers(0, COUNT, (7, 5))
    for shift in (0, 1, 13, adaptation.SHIFT_LIMIT):
        for index_shift in (-3, 0, 5):
            adapted_mean, adapted_index = PassAdaptation(index_shift, shift, coefficients).apply(lambda: iter(planes), mean, index)
            for i in range(7):
                for j in range(5):
                    total = sum(int(c) * int(f[i, j]) for c, f in zip(coefficients, planes))
                    assert adapted_mean[i, j] == int(mean[i, j]) + total // 2**shift + (1 if shift and total % 2**shift >= 2 ** (shift - 1) else 0)
                    assert adapted_index[i, j] == min(max(int(index[i, j]) + index_shift, 0), COUNT - 1)


def test_the_fit_sums_its_normal_equations_exactly():
    """At the limits the fit allows (features and targets ±2^11, weights 2^9, 2^15 pixels), float64
    sums of its normal equations equal the exact integer sums: any order gives the same system,
    so every machine fits the same coefficients."""
    n = adaptation.FIT_PIXELS
    rng = np.random.default_rng(3)
    X = rng.choice([-adaptation._FIT_LIMIT, adaptation._FIT_LIMIT], (n, 3)).astype(np.int64)
    X[:, 0] = adaptation._FIT_LIMIT
    weights = np.full(n, 1 << 9, np.int64)
    gram = X.astype(np.float64).T @ (X.astype(np.float64) * weights[:, None])
    exact = [[sum(int(v) for v in X[:, a] * X[:, b] * weights) for b in range(3)] for a in range(3)]
    assert gram.tolist() == exact and max(max(row) for row in exact) < 2**53


def test_table_scales_are_the_floored_powers_of_two():
    getcontext().prec = 50
    expected = [int((Decimal(2) ** (Decimal(LOG2_MIN) + (Decimal(i) + Decimal("0.5")) / STEPS + 8)).to_integral_value(rounding="ROUND_FLOOR"))
                for i in range(COUNT)]
    assert adaptation._scales().tolist() == expected


def test_an_image_whose_residuals_follow_their_neighbours_codes_smaller_adapted(codecs):
    adapted, plain = codecs
    image = _textured(seed=4)
    for max_error in (0, 2):
        with_block, without = adapted.compress(image, max_error=max_error), plain.compress(image, max_error=max_error)
        assert (bitstream.read_header(with_block).version, bitstream.read_header(without).version) == (15, 8)
        assert len(with_block) < 0.97 * len(without)
        for data in (with_block, without):
            error = np.abs(adapted.decompress(data).astype(np.int64) - image)
            assert error.max() <= max_error
        block = Adaptation.from_bytes(bitstream.read_header(with_block).residual_strings[2])
        assert block.active and any(p.coefficients is not None for p in block.passes)


def test_a_block_that_would_not_pay_is_not_written(codecs):
    adapted, _ = codecs
    image = np.full((16, 14), 777, np.int16)  # a constant slice: its residual costs nothing to speak of
    assert bitstream.read_header(adapted.compress(image, max_error=0)).version == 8


def test_blocks_round_trip_and_damaged_ones_are_refused():
    rng = np.random.default_rng(5)
    block = Adaptation((
        PassAdaptation(2, law=1), PassAdaptation(-1, 14, rng.integers(-32767, 32768, feature_count(1, 1))),
        PassAdaptation(law=1, reach=True), PassAdaptation(0, 30, rng.integers(-5, 5, feature_count(3, 1)), law=1),
    ))
    data = block.to_bytes()
    assert data[0] == 0b01_11_00_01  # passes 3, 2, 1, 0, two bits each (reach, law), pass 0 the lowest
    again = Adaptation.from_bytes(data, previous=1)
    assert again.to_bytes() == data and [p.index_shift for p in again.passes] == [2, -1, 0, 0]
    assert [p.law for p in again.passes] == [1, 0, 1, 1] and [p.reach for p in again.passes] == [False, False, True, False]
    assert again.active
    for damaged, previous in ((data[:-1], 1), (data + b"\0", 1), (data, 0), (data, 2), (data[:1] + b"\0\x1f" + data[3:], 1), (b"", 1)):
        with pytest.raises(BitstreamError):
            Adaptation.from_bytes(damaged, previous)
    with pytest.raises(ValueError, match="Laplace"):  # formats 12 to 14 have no byte for the laws
        block.to_bytes(laws=False)
    with pytest.raises(ValueError, match="reach"):
        Adaptation((PassAdaptation(reach=True),) + (PassAdaptation(),) * 3).to_bytes(laws=False)
    assert Adaptation((PassAdaptation(reach=True),) + (PassAdaptation(),) * 3).active
    laplace = block._replace(passes=tuple(p._replace(law=0, reach=False) for p in block.passes))
    old_layout = Adaptation.from_bytes(laplace.to_bytes(laws=False), previous=1, laws=False)  # formats 12 to 14
    assert old_layout.to_bytes() == laplace.to_bytes() and old_layout.to_bytes(laws=False) == laplace.to_bytes()[1:]
    assert Adaptation((PassAdaptation(law=1),) + (PassAdaptation(),) * 3).active and not Adaptation((PassAdaptation(),) * 4).active


def test_within_reach_puts_every_possible_symbol_of_a_pixel_on_its_table():
    """A mean far beyond a pixel's bounds is clipped just far enough that the bound's symbol is
    the table's end (no escape needed); a mean within reach is left alone."""
    width = table_widths()
    index = np.array([0, 0, 5, COUNT + 7, 3])
    low, high = np.array([-10, -10, 0, 0, -3]), np.array([40, 40, 0, 9, 3])
    for step in (1, 3, 5):
        mean = np.array([-10 - step * int(width[0]) - 50, 40 + step * (int(width[0]) + 1), 1000, -(10**6), 2])
        clipped = within_reach(mean, index, low, high, step)
        assert clipped[-1] == 2  # within reach: unchanged
        assert clipped[0] == -10 - step * width[0] and clipped[1] == 40 + step * width[0]
        q_low, q_high = symbol_range(clipped, low, high, step)
        assert (q_low <= width[index]).all() and (q_high >= -width[index]).all()  # the range meets the table
        assert (q_low == width[index])[:1].all() and (q_high == -width[index])[1:2].all()  # just: the nearest end
        outside_before = symbol_range(mean, low, high, step)
        assert (outside_before[0][:1] > width[0]).all() and (outside_before[1][1:2] < -width[0]).all()


def test_a_law_is_an_offset_into_the_tables_of_every_family():
    mean, index = np.array([[5, -3]]), np.array([[0, COUNT - 1]])
    planes = lambda: iter(())  # noqa: E731
    for law in range(len(LAWS)):
        adapted_mean, adapted_index = PassAdaptation(index_shift=1, law=law).apply(planes, mean, index)
        assert adapted_mean is mean and adapted_index.tolist() == [[1 + law * COUNT, COUNT - 1 + law * COUNT]]


def test_damaged_adapted_files_raise_and_never_decode_to_another_image(codecs):
    adapted, _ = codecs
    image = _textured(seed=6)
    data = adapted.compress(image, max_error=0)
    header, strings, meta = bitstream.unpack(data)

    def repack(residual_strings) -> bytes:
        fields = {**header.__dict__, "residual_strings": tuple(residual_strings)}
        fields.pop("n_bytes"), fields.pop("metadata_bytes"), fields.pop("version")
        return bitstream.pack(bitstream.Header(**fields), strings, meta)  # a valid container CRC

    rans, escapes, block = header.residual_strings
    forged_blocks = [block[:-2], block + b"\0\0", bytes([block[0] ^ 1]) + block[1:], block[:2] + bytes([block[2] ^ 0x40]) + block[3:]]
    for forged in [repack((rans, escapes, b)) for b in forged_blocks] + [repack((rans, escapes))]:
        try:
            again = adapted.decompress(forged)
        except BitstreamError:
            continue
        np.testing.assert_array_equal(again, image)  # never a silently different image
    container = bytearray(data)
    container[4] = 8  # an adapted file claiming format 8: three strings where two belong
    body = bytes(container[:-4])
    with pytest.raises(BitstreamError, match="residual strings"):
        bitstream.unpack(body + bitstream._CRC.pack(__import__("zlib").crc32(body)))


def test_info_shows_the_adaptation(codecs, tmp_path):
    adapted, _ = codecs
    path = tmp_path / "a.mvae"
    path.write_bytes(adapted.compress(_textured(seed=7), max_error=0))
    info = describe(path)
    assert info["format"] == 15 and info["adaptation_bytes"] == len(bitstream.read_header(path.read_bytes()).residual_strings[2])
    assert f"adaptation {info['adaptation_bytes']} bytes" in format_text(info)
    block = Adaptation.from_bytes(bitstream.read_header(path.read_bytes()).residual_strings[2])
    assert info["residual_laws"] == [LAWS[p.law] for p in block.passes] and "mixed" in info["residual_laws"]
    assert f"laws {', '.join(info['residual_laws'])}" in " ".join(format_text(info).split())


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
@pytest.mark.parametrize("first", [4, 9])
def test_near_lossless_adaptation_does_not_buy_bits_with_more_fidelity_than_they_are_worth(first):
    """Near-losslessly the encoder weighs each pass's squared error in bits (four times a uniform
    quantizer's slope, 6/(ln 2·(2τ + 1)²)). On a CT series slice coded at τ = 8 given its two
    previous slices as decoded at τ = 8 (what rate control to 60 dB does), a choice by bits alone
    saved 0.7–1.1 % of the bytes and lost up to 0.18 dB: its bits plus the slope times its squared
    error came 0.3–0.6 % above the plain file's. Weighed, they stay within 0.1 % of the plain
    file's, or below (the passes are chosen one after another, so not always below)."""
    volume = [s.pixels for s in manifest_slices(MANIFEST, "test") if s.patient == "totalseg-abdomen"]
    adapted, plain = medvae.load("medvae"), medvae.load("medvae", adaptation=False)
    decoded: list[np.ndarray] = []
    for k in (first, first + 1):
        decoded.insert(0, adapted.compress_with_pixels(volume[k], max_error=8, previous=decoded or None)[1])
    image, weigh = volume[first + 2], 6 / (np.log(2) * 17**2)

    def cost(codec: medvae.Codec) -> float:
        data, pixels = codec.compress_with_pixels(image, max_error=8, previous=decoded)
        return 8 * len(data) + weigh * float(np.square(pixels.astype(np.int64) - image).sum())

    assert cost(adapted) <= 1.001 * cost(plain)


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
@pytest.mark.parametrize("max_error", [0, 1])
def test_passes_whose_means_leave_the_tables_reach_clip_them_and_decode_only_so(max_error, monkeypatch, tmp_path):
    """On the edge of a CT slice (the table, air at the lowest value) the network sets some means
    so far beyond a pixel's bounds that every value it can take lies past its table: an escape each,
    a byte or more. The encoder clips those means (:func:`within_reach`) and flags the pass; the
    file then escapes less and is smaller, decodes within the bound, and a decoder that ignored the
    flag would read other residuals, which the pixel CRC refuses rather than return another image."""
    image = next(s.pixels for s in manifest_slices(MANIFEST, "test") if s.patient == "totalseg-abdomen")[320:384, :64].copy()
    codec = medvae.load("medvae")
    data = codec.compress(image, max_error=max_error)
    header, strings, metadata = bitstream.unpack(data)
    block = Adaptation.from_bytes(header.residual_strings[2])
    assert any(p.reach for p in block.passes)
    (tmp_path / "reach.mvae").write_bytes(data)
    laws = describe(tmp_path / "reach.mvae")["residual_laws"]
    assert laws == [LAWS[p.law] + (" (means within reach)" if p.reach else "") for p in block.passes]
    with monkeypatch.context() as patch:  # the encoder without the clip: no pass flagged, more escaped
        patch.setattr(adaptation, "within_reach", lambda mean, *_: mean)
        unclipped = bitstream.unpack(codec.compress(image, max_error=max_error))[0]
    assert not any(p.reach for p in Adaptation.from_bytes(unclipped.residual_strings[2]).passes)
    assert len(header.residual_strings[1]) < len(unclipped.residual_strings[1])
    assert sum(map(len, header.residual_strings)) < sum(map(len, unclipped.residual_strings))
    assert np.abs(codec.decompress(data).astype(np.int64) - image).max() <= max_error
    unreached = block._replace(passes=tuple(p._replace(reach=False) for p in block.passes)).to_bytes()
    forged = dataclasses.replace(header, residual_strings=(*header.residual_strings[:2], unreached))
    with pytest.raises(BitstreamError):
        codec.decompress(bitstream.pack(forged, strings, metadata))
