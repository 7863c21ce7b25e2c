"""tools/export_weights.py: a checkpoint shipped as float16 weights still codes exactly."""

from __future__ import annotations

import numpy as np

import medvae
from medvae import zoo
from medvae.checkpoint import save_model
from tests.conftest import small_model
from tools.export_weights import export


def test_float16_storage_keeps_coding_exact(weights_dir, tmp_path, ct_like):
    save_model(small_model("balle2018"), tmp_path / "b.pt")
    target = export(tmp_path / "b.pt", 3, weights_dir=weights_dir)
    assert target.stat().st_size < (tmp_path / "b.pt").stat().st_size
    encoder, decoder = medvae.load("balle2018", quality=3), medvae.load("balle2018", quality=3)
    assert encoder.fingerprint == zoo.index()["balle2018"]["qualities"]["3"]["fingerprint"]
    np.testing.assert_array_equal(decoder.decompress(encoder.compress(ct_like)), encoder.reconstruct(ct_like)[0])
