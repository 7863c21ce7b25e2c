"""The residual layer's entropy coding (format 8): lane rANS over the bounded laws."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae import bitstream
from medvae.errors import BitstreamError
from medvae.residual import folding, rans
from medvae.residual.tables import COUNT
from tests.conftest import small_residual


def _table_lookup(cdf_start: np.ndarray, freq_of: np.ndarray):
    """A Lookup over one law."""
    cdf = np.concatenate([cdf_start, [rans.TOTAL]])

    def lookup(_, slot):
        symbol = np.searchsorted(cdf, slot, side="right") - 1
        return symbol, cdf[symbol], freq_of[symbol]

    return lookup


@pytest.mark.parametrize("blocks", [[0], [1], [5, 0, 3], [4096, 4097], [30_000, 1, 12_345]])
def test_lane_rans_round_trips_blocks_and_costs_the_entropy_plus_its_lane_states(blocks):
    rng = np.random.default_rng(sum(blocks))
    lanes = rans.lane_count(sum(blocks))
    encoder = rans.Encoder(lanes)
    laws = []
    for n in blocks:
        weights = rng.gamma(0.3, size=12)
        freq = 1 + (weights / weights.sum() * (rans.TOTAL - 12)).astype(np.int64)
        freq[np.argmax(freq)] += rans.TOTAL - freq.sum()
        start = np.concatenate([[0], np.cumsum(freq)[:-1]])
        drawn = rng.choice(12, n, p=freq / rans.TOTAL)
        encoder.add(start[drawn], freq[drawn])
        laws.append((drawn, start, freq))
    data = encoder.finish()
    entropy_bytes = sum(-np.log2(freq[drawn] / rans.TOTAL).sum() for drawn, _, freq in laws) / 8
    assert len(data) <= 4 * lanes + entropy_bytes * 1.01 + 2 * lanes
    decoder = rans.Decoder(data, lanes)
    for drawn, start, freq in laws:
        np.testing.assert_array_equal(decoder.block(drawn.size, _table_lookup(start, freq)), drawn)
    decoder.finish()


def test_lane_rans_refuses_damaged_streams():
    rng = np.random.default_rng(0)
    weights = rng.gamma(0.3, size=12)
    freq = 1 + (weights / weights.sum() * (rans.TOTAL - 12)).astype(np.int64)
    freq[np.argmax(freq)] += rans.TOTAL - freq.sum()
    start = np.concatenate([[0], np.cumsum(freq)[:-1]])
    drawn = rng.choice(12, 9000, p=freq / rans.TOTAL)
    lanes = rans.lane_count(drawn.size)
    encoder = rans.Encoder(lanes)
    encoder.add(start[drawn], freq[drawn])
    data = encoder.finish()

    def decode(stream: bytes) -> np.ndarray:
        decoder = rans.Decoder(stream, lanes)
        out = decoder.block(drawn.size, _table_lookup(start, freq))
        decoder.finish()
        return out

    np.testing.assert_array_equal(decode(data), drawn)
    for damaged in (data[:-2], data + b"\0\0", data[:3], b"", bytes(4 * lanes) + data[4 * lanes :]):
        with pytest.raises(BitstreamError):
            decode(damaged)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x04
    try:
        out = decode(bytes(flipped))
    except BitstreamError:
        pass
    else:  # rANS is a bijection: a changed stream that ends well decodes to other symbols (the pixel CRC's to catch)
        assert not np.array_equal(out, drawn)
    with pytest.raises(ValueError):
        rans.Encoder(1).add(np.array([0]), np.array([0]))


def test_bounded_laws_give_each_pixel_a_partition_of_the_whole_interval():
    """For every table and symbol range (inside, across and beyond the table), the intervals of
    the positions a pixel can take tile [0, 2^16) exactly: the law is a law, and the decoder's
    search finds each one."""
    rng = np.random.default_rng(5)
    index = np.repeat(np.arange(0, COUNT, 3), 12)
    width = folding._tables().width[index]
    centre = rng.integers(-3, 4, index.size) * (width + 2) // 2
    q_low = centre - rng.integers(0, 6, index.size) * (1 + width // 3)
    q_high = q_low + rng.integers(0, 6, index.size) * (1 + width // 3)
    laws = folding.BoundedLaws(index, q_low, q_high)
    lookup = laws.rows(laws.index.size)
    for i in range(index.size):
        symbols = np.arange(q_low[i], q_high[i] + 1)
        positions = np.unique(np.where(np.abs(symbols) <= width[i], symbols + width[i], laws.escape[i]))
        pick = np.full(positions.size, i)
        start, freq = laws.at(pick).intervals(positions)
        order = np.argsort(start)
        edges = np.concatenate([start[order], [rans.TOTAL]])
        assert start[order][0] == 0 and (freq >= 1).all()
        np.testing.assert_array_equal(edges[1:], start[order] + freq[order])  # contiguous, no gap, no overlap
    for slot in (0, 1, 777, rans.TOTAL // 2, rans.TOTAL - 1):
        place, start, freq = lookup(0, np.full(index.size, slot))
        position = place - laws.first  # the lookup names symbols by their place in the flat tables
        assert ((start <= slot) & (slot < start + freq)).all()
        assert ((position >= laws.low) & (position <= laws.high) | (position == laws.escape) & laws.escape_allowed).all()


def test_pixels_at_the_range_ends_take_the_mass_beyond_them(codec_q1):
    """An image with a sixth of its pixels clipped at its lowest value (a CT's air): each such pixel
    is coded with the mass of every symbol at or below it, no pixel with less than its table
    gives it, and the stream costs what these laws say."""
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(200, 60, (64, 64)), 0, None).astype(np.uint16)
    image[:, :20] = np.clip(rng.normal(0, 10, (64, 20)), 0, None).astype(np.uint16)
    codec_q1.residual = small_residual(codec_q1, image)
    captured = []
    original = folding.encode

    def spy(encoder, escapes, laws, q):
        captured.append((laws, q))
        original(encoder, escapes, laws, q)

    folding.encode = spy
    try:
        data = codec_q1.compress(image, max_error=0)
    finally:
        folding.encode = original
    np.testing.assert_array_equal(codec_q1.decompress(data), image)
    flat = folding._tables().flat
    bits = at_low = coded = 0
    for laws, q in captured:
        position = laws.positions(q)
        freq = laws.intervals(position)[1]
        plain = flat[laws.first + position + 1] - flat[laws.first + position]
        low = (position == laws.low) & (position != laws.escape)
        assert (freq >= plain).all()
        np.testing.assert_array_equal(freq[low], flat[laws.first + position + 1][low])  # all the mass at or below
        bits += -np.log2(freq / rans.TOTAL).sum()
        at_low, coded = at_low + low.sum(), coded + q.size
    assert at_low > 0.15 * coded
    stream = bitstream.read_header(data).residual_strings[0]
    assert len(stream) <= bits / 8 * 1.01 + 6 * rans.lane_count(image.size)


def test_exactly_restored_pixels_are_not_coded(codec_q1):
    """Scanner padding, which the base restores exactly, adds no residual symbol: a padded image
    codes its residual in about the bytes of its tissue alone."""
    rng = np.random.default_rng(4)
    tissue = rng.normal(1000, 40, (64, 64)).astype(np.int16)
    padded = np.full((64, 128), -2000, np.int16)
    padded[:, :64] = tissue
    codec_q1.residual = small_residual(codec_q1, tissue)
    with_padding = codec_q1.compress(padded, max_error=0, padding_value=-2000)
    np.testing.assert_array_equal(codec_q1.decompress(with_padding), padded)
    alone = codec_q1.compress(tissue, max_error=0)
    sizes = [len(bitstream.read_header(d).residual_strings[0]) for d in (with_padding, alone)]
    assert sizes[0] < 1.1 * sizes[1]


@pytest.fixture
def codec_q1() -> medvae.Codec:
    return medvae.load("medvae", quality=1)


def test_an_escaped_value_beyond_the_pixels_bounds_is_refused():
    """Only an escape can carry a symbol out of its pixel's range; the decoder checks it, so a
    damaged escape is a BitstreamError, not a pixel silently clipped to its bound."""
    index = np.array([COUNT // 2])
    width = int(folding._tables().width[index[0]])
    laws = folding.BoundedLaws(index, np.array([-10**6]), np.array([width + 3]))  # the range reaches past the table
    encoder, escapes = rans.Encoder(1), folding.Escapes()
    q = np.array([width + 2])  # escaped, within the range
    folding.encode(encoder, escapes, laws, q)
    stream, written = encoder.finish(), bytes(escapes.written)

    def decode(escape_bytes: bytes) -> np.ndarray:
        decoder, taken = rans.Decoder(stream, 1), folding.Escapes(escape_bytes)
        out = folding.decode(decoder, taken, laws)
        decoder.finish(), taken.finish()
        return out

    np.testing.assert_array_equal(decode(written), q)
    for damaged in (bytes([2 * 12]), b"\x80", b"\xff" * 5 + b"\x01", written + b"\0"):  # beyond the range, truncated, overlong, extra
        with pytest.raises(BitstreamError):
            decode(damaged)
    with pytest.raises(ValueError):  # the writer refuses what its reader would
        escapes.write(np.array([2**40]), laws, np.array([True]))
