"""LEB128 varints (7 bits a byte, low bits first): the unsigned integers of the exception
block (:mod:`medvae.exceptions`) and of the residual layer's escapes (:mod:`medvae.residual.folding`)."""

from __future__ import annotations

import numpy as np


def write(values: np.ndarray, max_bytes: int = 9) -> bytes:
    """Non-negative integers as varints of at most ``max_bytes`` bytes each (9: any int64 ≥ 0).
    Raises ``ValueError`` for a value that does not fit, so a writer never makes what its reader refuses."""
    out = bytearray()
    limit = 1 << (7 * max_bytes)
    for v in np.asarray(values, np.int64).tolist():
        if not 0 <= v < limit:
            raise ValueError(f"varint {v} outside [0, 2^{7 * max_bytes})")
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def read(raw: bytes, pos: int, n: int, max_bytes: int = 9) -> tuple[np.ndarray, int]:
    """``n`` varints from ``raw[pos:]`` (int64) and the position after them. Raises ``ValueError``
    when ``raw`` ends inside them or one is longer than ``max_bytes`` (≤ 9, so every value fits int64)."""
    values = []
    for _ in range(n):
        v = shift = 0
        while True:
            if pos >= len(raw) or shift >= 7 * max_bytes:
                raise ValueError("truncated or overlong varint")
            byte = raw[pos]
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(v)
    return np.asarray(values, np.int64), pos
