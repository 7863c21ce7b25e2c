"""benchmarks/fuzz.py: mutated files with a recomputed CRC never crash and never decode silently."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import benchmark_module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fuzz loop forks a child per case (Linux)")
def test_a_hundred_mutated_files_are_refused_or_decode_to_the_original():
    counts = benchmark_module("fuzz").run(100, seed=1)
    assert sum(counts.values()) == 100
    assert counts["crashed"] == 0 and counts["different"] == 0 and counts["limit"] == 0, counts
    assert counts["refused"] > 50  # most changes are read by the decoder and refused


def test_the_mutations_change_the_strings():
    import numpy as np

    fuzz = benchmark_module("fuzz")
    rng = np.random.default_rng(0)
    strings = [bytes(range(40)), bytes(range(10))]
    changed = [fuzz.mutate(strings, [b"x" * 5, b"y" * 3], rng) for _ in range(50)]
    assert sum(c != strings for c in changed) >= 45
