"""The public API: load checkpoints, module-level compress/decompress, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae.checkpoint import save_model
from tests.conftest import small_model


def test_load_checkpoint_and_module_level_functions(tmp_path, ct_like):
    model = small_model("bls-residual")
    save_model(model, tmp_path / "m.pt", half=False)
    codec = medvae.load(tmp_path / "m.pt")
    assert codec.name == "bls-residual"
    data = medvae.compress(ct_like, model=tmp_path / "m.pt")
    assert data == codec.compress(ct_like)
    np.testing.assert_array_equal(medvae.decompress(data, model=codec), codec.decompress(data))
    np.testing.assert_array_equal(medvae.decompress(data, model=str(tmp_path / "m.pt")), codec.decompress(data))


def test_half_precision_checkpoint_decodes_what_it_encodes(tmp_path, ct_like):
    save_model(small_model("medvae"), tmp_path / "h.pt", half=True)
    first, second = medvae.load(tmp_path / "h.pt"), medvae.load(tmp_path / "h.pt")
    assert first.fingerprint == second.fingerprint
    np.testing.assert_array_equal(second.decompress(first.compress(ct_like)), first.reconstruct(ct_like)[0])


def test_missing_checkpoint_and_unknown_names(tmp_path):
    with pytest.raises(FileNotFoundError):
        medvae.load(tmp_path / "missing.pt")
    with pytest.raises(medvae.MedVAEError, match="no shipped weights for 'nothing'"):
        medvae.load("nothing")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(medvae.MedVAEError, match="not a readable checkpoint"):
        medvae.load(tmp_path / "junk.pt")


def test_codec_rejects_models_it_cannot_name():
    import torch

    with pytest.raises(TypeError):
        medvae.Codec(torch.nn.Conv2d(1, 1, 3))


def test_checkpoint_that_no_longer_fits_the_model_code_is_one_clear_error(tmp_path):
    import torch

    save_model(small_model("medvae"), tmp_path / "m.pt")
    record = torch.load(tmp_path / "m.pt", weights_only=False)
    record["state_dict"] = {k: v for k, v in record["state_dict"].items() if not k.startswith("fusion.")}
    torch.save(record, tmp_path / "old.pt")
    with pytest.raises(medvae.MedVAEError, match="does not fit") as info:
        medvae.load(tmp_path / "old.pt")
    assert "\n" not in str(info.value)
