#!/usr/bin/env python
"""Fuzz the decoder: structured mutations of real ``.mvae`` files, container CRC recomputed.

Each case changes the entropy-coded strings the way a damaged or forged file would
(truncated, emptied, lengthened, bytes flipped or replaced, strings swapped or taken from
another file) or, one case in four, a header field (image and latent shapes, up to the
65535 limit, value range, dtype, the exceptions block), repacks it with a valid container CRC (anyone can do that; it is no
signature), and decodes it in a forked child process under a memory and a time limit.
Every outcome is counted:

* ``refused``: :class:`medvae.BitstreamError` (the pixel checksum or the entropy decoder);
* ``identical``: the original image came back (the change was in bytes never read);
* ``different``: another image came back with no error (must be 0);
* ``crashed``: the child died by a signal (must be 0); ``limit``: it hit the memory or time limit.

    python benchmarks/fuzz.py [--cases 20000] [--seed 0] [--quality 3]

A few hundred cases run in the test suite (``tests/benchmarks/test_fuzz.py``).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
from collections import Counter
from dataclasses import replace

import numpy as np

OUTCOMES = ("refused", "identical", "different", "crashed", "limit")
_EXIT = {"refused": 10, "identical": 11, "different": 12}


def mutate(strings: list[bytes], other: list[bytes], rng: np.random.Generator) -> list[bytes]:
    """One structured change of the strings (a new list)."""
    strings = list(strings)
    i = int(rng.integers(len(strings)))
    s = bytearray(strings[i])
    kind = int(rng.integers(8))
    if kind == 0:
        s = bytearray()
    elif kind == 1:
        s = s[: int(rng.integers(0, max(1, len(s))))]
    elif kind == 2:
        s += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind in (3, 4) and s:
        for _ in range(int(rng.integers(1, 9))):
            s[int(rng.integers(len(s)))] ^= int(rng.integers(1, 256))
    elif kind == 5:
        s = bytearray(rng.integers(0, 256, int(rng.integers(0, 2 * len(s) + 8)), dtype=np.uint8).tobytes())
    elif kind == 6 and len(strings) > 1:
        strings = strings[::-1]
        return strings
    else:
        s = bytearray(other[i % len(other)])
    strings[i] = bytes(s)
    return strings


def mutate_header(header, rng: np.random.Generator):
    """One changed header field (a new header): what a forger or a damaged disk can do."""
    kind = int(rng.integers(5))
    if kind == 0:  # another image size, its latent shape kept
        shape = tuple(int(v) for v in rng.integers(1, 65536, 2))
        return replace(header, shape=shape)
    if kind == 1:  # another image size with the latent shape that fits it
        shape = tuple(int(v) for v in rng.integers(1, [2048, 65536][int(rng.integers(2))], 2))
        stride = 64
        return replace(header, shape=shape, latent_shape=tuple(-(-v // stride) for v in shape))
    if kind == 2:
        lo = int(rng.integers(-40000, 40000))
        return replace(header, value_range=(lo, lo + int(rng.integers(-10, 70000))))
    if kind == 3:
        return replace(header, dtype=np.dtype(["uint8", "int16", "uint16"][int(rng.integers(3))]))
    raw = bytearray(header.exceptions or rng.integers(0, 256, 16, dtype=np.uint8).tobytes())
    for _ in range(int(rng.integers(1, 5))):
        raw[int(rng.integers(len(raw)))] ^= int(rng.integers(1, 256))
    return replace(header, exceptions=bytes(raw))


def decode_in_child(codec, data: bytes, expected: np.ndarray, memory: int, seconds: int) -> str:
    """Decode ``data`` in a forked child under the limits; the outcome's name."""
    import medvae

    pid = os.fork()
    if pid == 0:  # child
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            signal.alarm(seconds)
            try:
                decoded = codec.decompress(data)
            except medvae.BitstreamError:
                os._exit(_EXIT["refused"])
            except MemoryError:
                os._exit(13)
            os._exit(_EXIT["identical"] if np.array_equal(decoded, expected) else _EXIT["different"])
        except BaseException:
            os._exit(13)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "limit" if os.WTERMSIG(status) == signal.SIGALRM else "crashed"
    code = os.WEXITSTATUS(status)
    return {v: k for k, v in _EXIT.items()}.get(code, "limit")


def run(cases: int, seed: int = 0, quality: int = 3, memory: int = 4 * 2**30, seconds: int = 60) -> Counter:
    """Fuzz ``cases`` mutations; a Counter of outcomes."""
    import torch

    import medvae
    from medvae import bitstream

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    codec = medvae.load("medvae", quality)
    images = [rng.integers(0, 4096, (96, 128)).astype(np.uint16), np.tile(np.arange(128, dtype=np.uint16) * 30, (96, 1))]
    files = []
    for image in images:
        data = codec.compress(image)
        header, strings, meta = bitstream.unpack(data)
        files.append((header, strings, meta, codec.decompress(data)))
    counts: Counter = Counter()
    for case in range(cases):
        header, strings, meta, expected = files[case % len(files)]
        other = files[(case + 1) % len(files)][1]
        if rng.random() < 0.25:
            forged = bitstream.pack(mutate_header(header, rng), strings, meta)
        else:
            forged = bitstream.pack(header, mutate(strings, other, rng), meta)
        counts[decode_in_child(codec, forged, expected, memory, seconds)] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=3)
    args = parser.parse_args(argv)
    counts = run(args.cases, args.seed, args.quality)
    print(f"{args.cases} mutated files (shipped q{args.quality}, container CRC recomputed):")
    for outcome in OUTCOMES:
        print(f"  {outcome:>9s}: {counts[outcome]}")


if __name__ == "__main__":
    main()
