"""Lane-interleaved rANS over explicit integer intervals.

CompressAI's coder reads each symbol's probability from one of a fixed set of tables. The
residual layer's bounded laws (:mod:`medvae.residual.folding`) give each pixel its own
interval ``[start, start + freq)`` of ``2^16``, which no fixed table holds; this coder takes
the intervals directly. Symbols are coded in blocks (one per residual pass, known to the
decoder only once the block before is decoded); a block's symbol ``j`` goes to lane
``j mod L``, each lane an rANS state (32 bits, 16-bit words) that runs on from block to block,
so numpy advances all lanes at once and the Python loop runs ``n / L`` steps, not ``n``.

Why every machine writes and reads the same bytes: every step is an integer operation on
int64 arrays (shifts, products, integer division) with values below 2^33, no float and no
platform-dependent rounding. Why a damaged stream cannot pass silently: each lane starts at
the state :data:`LOWER`, and a decoder must end every lane there having read every word and
no more, else :class:`~medvae.errors.BitstreamError`; the container's pixel CRC checks the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medvae.errors import BitstreamError

#: Probabilities are integers out of 2^PRECISION.
PRECISION = 16
TOTAL = 1 << PRECISION
#: Each lane's state lives in [LOWER, LOWER · 2^16) and moves 16-bit words in and out.
LOWER = 1 << 16
#: An image gets ``ceil(pixels / PIXELS_PER_LANE)`` lanes, 4 bytes of final state each (0.008 bits
#: a pixel); each of the residual's four passes then advances every lane 1,024 steps.
PIXELS_PER_LANE = 4096


def lane_count(pixels: int) -> int:
    """Lanes for an image of ``pixels`` pixels (the decoder knows it from the header)."""
    return max(1, -(-pixels // PIXELS_PER_LANE))


def steps(n: int, lanes: int) -> int:
    """Steps of a block of ``n`` symbols: its symbols laid out as rows of ``lanes``."""
    return -(-n // lanes)


class Encoder:
    """Collects blocks of intervals, then writes them all (rANS codes backwards)."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (start, freq − 1) as uint16: 4 bytes a symbol until finish()

    def add(self, start: np.ndarray, freq: np.ndarray) -> None:
        """A block of symbols with intervals ``[start, start + freq)`` (1-D integers in coding
        order, ``freq ≥ 1``, ``start + freq ≤ 2^16``)."""
        start, freq = np.asarray(start, np.int64).reshape(-1), np.asarray(freq, np.int64).reshape(-1)
        if start.shape != freq.shape or (freq < 1).any() or (start < 0).any() or (start + freq > TOTAL).any():
            raise ValueError("every interval must lie in [0, 2^16) and hold at least one value")
        rows = steps(start.size, self.lanes)
        pad = rows * self.lanes - start.size  # spare lanes code [0, 2^16): they leave a state unchanged
        self.blocks.append((
            np.concatenate([start, np.zeros(pad, np.int64)]).astype(np.uint16).reshape(rows, self.lanes),
            np.concatenate([freq - 1, np.full(pad, TOTAL - 1, np.int64)]).astype(np.uint16).reshape(rows, self.lanes),
        ))

    def finish(self) -> bytes:
        """The stream: each lane's final state (u32), then the 16-bit words in reading order."""
        state = np.full(self.lanes, LOWER, np.int64)
        words: list[np.ndarray] = []
        for starts, freqs_less_one in reversed(self.blocks):
            starts, freqs = starts.astype(np.int64), freqs_less_one.astype(np.int64) + 1
            limits = freqs << 16  # keep the state below 2^32 after coding
            for t in range(starts.shape[0] - 1, -1, -1):
                out = (state >= limits[t]).nonzero()[0]
                if out.size:
                    moved = state[out]
                    words.append(moved & 0xFFFF)
                    state[out] = moved >> 16
                quotient, remainder = np.divmod(state, freqs[t])
                state = (quotient << 16) + remainder + starts[t]
        stream = np.concatenate(words)[::-1] if words else np.zeros(0, np.int64)
        return state.astype("<u4").tobytes() + stream.astype("<u2").tobytes()


#: ``interval(t, slots)``: for row ``t`` of a block (its symbols ``t·L … t·L + L − 1``), each
#: lane's symbol holding its slot (in ``[0, 2^16)``) and that symbol's ``(start, freq)``; a symbol
#: is any integer the caller names it by (:mod:`medvae.residual.folding` gives places in its tables).
Lookup = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class Decoder:
    """Reads the blocks of a stream :class:`Encoder` wrote, in order."""

    def __init__(self, data: bytes, lanes: int):
        if len(data) < 4 * lanes or (len(data) - 4 * lanes) % 2:
            raise BitstreamError(f"corrupted residual stream: {len(data)} bytes cannot hold {lanes} lane states and 16-bit words")
        self.state = np.frombuffer(data, "<u4", lanes).astype(np.int64)
        self.words = np.frombuffer(data, "<u2", offset=4 * lanes).astype(np.int64)
        self.read = 0
        if (self.state < LOWER).any():
            raise BitstreamError("corrupted residual stream: a lane state below the coder's range")

    @property
    def lanes(self) -> int:
        return self.state.size

    def block(self, n: int, interval: Lookup) -> np.ndarray:
        """The next block's ``n`` symbols (int64). ``interval`` is asked for every lane of each row;
        the last row's spare lanes then take the padding's interval, whatever it answers."""
        lanes = self.state.size
        rows = steps(n, lanes)
        symbols = np.empty((rows, lanes), np.int64)
        spare = np.arange(lanes) >= n - (rows - 1) * lanes
        state, words, read = self.state, self.words, self.read
        for t in range(rows):
            slot = state & (TOTAL - 1)
            symbols[t], start, freq = interval(t, slot)
            if t == rows - 1:
                start, freq = np.where(spare, 0, start), np.where(spare, TOTAL, freq)
            state = freq * (state >> 16) + slot - start
            refill = (state < LOWER).nonzero()[0][::-1]  # the encoder wrote this row's words in lane order, reversed since
            if refill.size:
                if read + refill.size > words.size:
                    raise BitstreamError("truncated residual stream")
                state[refill] = (state[refill] << 16) | words[read : read + refill.size]
                read += refill.size
        self.state, self.read = state, read
        return symbols.reshape(-1)[:n]

    def finish(self) -> None:
        """Raise :class:`BitstreamError` unless the stream ended where its encoder began."""
        if self.read != self.words.size or (self.state != LOWER).any():
            raise BitstreamError("corrupted residual stream: it does not end where its encoder began")
