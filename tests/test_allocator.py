"""The malloc tuning of :mod:`medvae.allocator`: coding reuses its freed buffers instead of
page-faulting new ones."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from medvae.allocator import ENVIRONMENT

GLIBC = sys.platform.startswith("linux") and "libc.so.6" in (ctypes.util.find_library("c") or "")

# A 512×512 slice coded losslessly twice in a fresh process; prints whether malloc was tuned and
# the minor page faults of the second encode plus decode.
SECOND_CODING_FAULTS = """
import resource, numpy as np, medvae
from medvae.allocator import keep_freed_memory
codec = medvae.load("medvae")
yy, xx = np.mgrid[:512, :512]
body = (yy - 256) ** 2 + (xx - 256) ** 2 < 200**2
image = (np.where(body, 1000 + 40 * np.sin(xx / 9.0), 0) + np.random.default_rng(0).integers(0, 30, (512, 512))).astype(np.uint16)
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert (codec.decompress(codec.compress(image, max_error=0)) == image).all()
print(keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_coding(environment: str) -> tuple[bool, int]:
    env = dict(os.environ, **{ENVIRONMENT: environment})
    run = subprocess.run([sys.executable, "-c", SECOND_CODING_FAULTS], env=env, capture_output=True, text=True, check=True)
    tuned, faults = run.stdout.split()[-2:]
    return tuned == "True", int(faults)


@pytest.mark.skipif(not GLIBC, reason="the malloc tuning is for glibc")
def test_coding_again_reuses_freed_memory_without_page_faults():
    tuned, faults = _second_coding("1")
    assert tuned and faults < 5_000  # 0 here: every buffer comes back from the heap, already mapped
    untuned, faults = _second_coding("0")  # glibc as it is hands buffers back and faults them again
    assert not untuned and faults > 50_000  # 140,000-210,000 here


def test_the_environment_variable_turns_the_tuning_off():
    env = dict(os.environ, **{ENVIRONMENT: "0"})
    code = "from medvae.allocator import keep_freed_memory; print(keep_freed_memory())"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()[-1] == "False"
