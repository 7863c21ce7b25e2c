"""Bit packing and a canonical Huffman code, for the wavelet baselines.

No maintained package provides a numpy-speed canonical Huffman coder with a
compact transmitted table (dahuffman is pure Python and symbol-at-a-time), so
this small one is ours. Packing is vectorized; decoding reads through 64-bit
windows so each symbol costs a few Python integer operations.
"""

from __future__ import annotations

import heapq

import numpy as np

from medvae.errors import InputError

#: Longest Huffman code we allow (the table stores lengths in 4 bits as len − 1).
MAX_CODE_LENGTH = 16


def pack_bits(values: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate ``lengths[i]`` low bits of ``values[i]``, MSB first, zero-padded to bytes.

    Lengths may be 0 (the item contributes nothing) and at most 57.
    """
    values = np.asarray(values, dtype=np.uint64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return b""
    item = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    j = np.arange(total, dtype=np.int64) - starts[item]
    shift = (lengths[item] - 1 - j).astype(np.uint64)
    bits = ((values[item] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes()


class BitReader:
    """Random-access peek of up to 56 bits at any bit position of a byte string."""

    def __init__(self, data: bytes):
        buf = np.frombuffer(bytes(data) + b"\0" * 8, dtype=np.uint8).astype(np.uint64)
        n = len(data) + 1
        window = np.zeros(n, dtype=np.uint64)
        for k in range(8):
            window = (window << np.uint64(8)) | buf[k : k + n]
        self.windows = window.tolist()  # Python ints: fast scalar indexing
        self.n_bits = 8 * len(data)

    def peek(self, pos: int, n: int) -> int:
        """The ``n`` bits starting at bit ``pos`` as an integer (zeros past the end)."""
        return (self.windows[pos >> 3] >> (64 - (pos & 7) - n)) & ((1 << n) - 1)


def code_lengths(freq: np.ndarray, limit: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code lengths for symbol frequencies (0 = unused), at most ``limit`` bits.

    Too-long codes are avoided the way libjpeg does it in spirit: frequencies are
    flattened (halved, floor 1) until the longest code fits.
    """
    freq = np.asarray(freq, dtype=np.int64).copy()
    used = np.flatnonzero(freq)
    lengths = np.zeros(len(freq), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    while True:
        heap = [(int(freq[s]), i, [int(s)]) for i, s in enumerate(used)]
        heapq.heapify(heap)
        depth = dict.fromkeys(used.tolist(), 0)
        tie = len(heap)
        while len(heap) > 1:
            f1, _, a = heapq.heappop(heap)
            f2, _, b = heapq.heappop(heap)
            for s in a + b:
                depth[s] += 1
            heapq.heappush(heap, (f1 + f2, tie, a + b))
            tie += 1
        for s, d in depth.items():
            lengths[s] = d
        if lengths.max() <= limit:
            return lengths
        freq[used] = np.maximum(freq[used] // 2, 1)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of every symbol (by length, then symbol value); 0 for unused."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def pack_table(lengths: np.ndarray) -> bytes:
    """Transmit code lengths: a presence bitmap of the alphabet, then 4 bits (len − 1) per used symbol."""
    lengths = np.asarray(lengths, dtype=np.int64)
    used = lengths > 0
    if lengths.max(initial=0) > MAX_CODE_LENGTH:
        raise ValueError("code too long for the table format")
    bitmap = np.packbits(used.astype(np.uint8)).tobytes()
    nibbles = (lengths[used] - 1).astype(np.uint8)
    if len(nibbles) % 2:
        nibbles = np.append(nibbles, 0)
    return bitmap + ((nibbles[0::2] << 4) | nibbles[1::2]).astype(np.uint8).tobytes()


def unpack_table(data: bytes, alphabet: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`pack_table`: (code lengths, bytes consumed)."""
    n_map = (alphabet + 7) // 8
    if len(data) < n_map:
        raise InputError("truncated Huffman table")
    used = np.unpackbits(np.frombuffer(data[:n_map], np.uint8))[:alphabet].astype(bool)
    n_used = int(used.sum())
    n_nib = (n_used + 1) // 2
    if len(data) < n_map + n_nib:
        raise InputError("truncated Huffman table")
    packed = np.frombuffer(data[n_map : n_map + n_nib], np.uint8)
    nibbles = np.stack([packed >> 4, packed & 15], axis=1).ravel()[:n_used]
    lengths = np.zeros(alphabet, dtype=np.int64)
    lengths[used] = nibbles.astype(np.int64) + 1
    return lengths, n_map + n_nib


def decode_table(lengths: np.ndarray) -> tuple[list[int], list[int], int]:
    """Lookup tables for decoding: (symbol, length) for every ``maxlen``-bit prefix, and maxlen."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = canonical_codes(lengths)
    maxlen = int(lengths.max(initial=1))
    sym = np.full(1 << maxlen, -1, dtype=np.int64)
    ln = np.zeros(1 << maxlen, dtype=np.int64)
    for s in np.flatnonzero(lengths).tolist():
        span = maxlen - int(lengths[s])
        start = int(codes[s]) << span
        sym[start : start + (1 << span)] = s
        ln[start : start + (1 << span)] = lengths[s]
    return sym.tolist(), ln.tolist(), maxlen
