"""A small linear least-squares solve that gives the same result on every machine.

The encoder-side fits (:mod:`medvae.correction`, :mod:`medvae.residual.adaptation`) sum their
normal equations exactly (integers below 2^53 in float64) and solve them here, one IEEE
operation after another in Python floats, never through a BLAS or LAPACK whose order of
operations depends on the machine: the same image gives the same coefficients everywhere.
"""

from __future__ import annotations

import math

import numpy as np


def solve(gram: np.ndarray, moment: np.ndarray) -> list[float]:
    """x with (gram + ridge)·x = moment, by Cholesky in Python floats (the same result on every
    machine); a small ridge keeps it defined where features vanish (a constant image)."""
    gram, moment = np.asarray(gram, np.float64).tolist(), np.asarray(moment, np.float64).tolist()
    n = len(moment)
    ridge = 1e-9 * max(gram[i][i] for i in range(n)) + 1e-12
    lower = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            s = gram[i][j] + (ridge if i == j else 0.0)
            for k in range(j):
                s -= lower[i][k] * lower[j][k]
            lower[i][j] = math.sqrt(s if s > 0.0 else ridge) if i == j else s / lower[j][j]
    z = [0.0] * n
    for i in range(n):
        z[i] = (moment[i] - sum(lower[i][k] * z[k] for k in range(i))) / lower[i][i]
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (z[i] - sum(lower[k][i] * x[k] for k in range(i + 1, n))) / lower[i][i]
    return x
