"""Widening a trained latent keeps the model's function; fine-tuning starts from parameters only."""

from __future__ import annotations

import pytest
import torch

import medvae
from medvae.checkpoint import load_model, save_model
from medvae.models.widen import initialize_from, widen_latent
from tests.conftest import small_model


def _trained_like(name: str):
    """A small model with non-trivial weights everywhere, so zeroed/copied slices matter."""
    model = small_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name", ["balle2018", "medvae"])
def test_widened_model_computes_the_same_image_and_old_likelihoods(name):
    model = _trained_like(name)
    wide = widen_latent(model, 40).eval()
    assert wide.config["M"] == 40 and wide.g_a[-1].out_channels == 40
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        before, after = model(x), wide(x)
    torch.testing.assert_close(after["x_hat"], before["x_hat"], atol=1e-5, rtol=0)
    torch.testing.assert_close(after["likelihoods"]["z"], before["likelihoods"]["z"])
    torch.testing.assert_close(after["likelihoods"]["y"][:, :24], before["likelihoods"]["y"], atol=1e-6, rtol=0)
    # The new channels are live: they carry values and are trainable, not dead zeros.
    assert after["likelihoods"]["y"][:, 24:].shape[1] == 16
    assert wide.g_a[-1].weight[24:].abs().sum() > 0


def test_widened_model_codes_real_bitstreams(ct_like):
    codec = medvae.Codec(widen_latent(_trained_like("medvae"), 32), update_tables=True)
    data = codec.compress(ct_like)
    assert codec.decompress(data).shape == ct_like.shape


def test_widen_refuses_narrowing_and_factorized_latents():
    with pytest.raises(medvae.MedVAEError, match="cannot narrow"):
        widen_latent(small_model("medvae"), 16)
    with pytest.raises(medvae.MedVAEError, match="per-channel entropy bottleneck"):
        widen_latent(small_model("bls2017"), 32)


def test_half_precision_checkpoint_keeps_entropy_model_bounds_exact(tmp_path):
    save_model(small_model("medvae"), tmp_path / "h.pt", half=True)
    record = torch.load(tmp_path / "h.pt", weights_only=False)
    assert record["state_dict"]["g_a.0.weight"].dtype == torch.float16
    assert record["state_dict"]["gaussian_conditional.likelihood_lower_bound.bound"].item() == pytest.approx(1e-9)


def test_initialize_from_copies_parameters_and_widens(tmp_path):
    source = _trained_like("medvae")
    save_model(source, tmp_path / "h.pt", half=True)
    target = medvae.models.create("medvae", N=16, M=32)
    initialize_from(target, load_model(tmp_path / "h.pt"))
    torch.testing.assert_close(target.g_s[0].weight[:24], source.g_s[0].weight.half().float())
    assert target.g_s[0].weight[24:].abs().sum() == 0
    # A training-mode pass gives a finite rate: no bound was rounded to zero on the way.
    target.train()
    out = target(torch.rand(2, 1, 64, 64))
    bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
    assert torch.isfinite(bits)


def test_initialize_from_refuses_another_family_or_size():
    with pytest.raises(medvae.MedVAEError, match="from 'balle2018' weights"):
        initialize_from(small_model("medvae"), small_model("balle2018"))
    with pytest.raises(medvae.MedVAEError, match="cannot start a model"):
        initialize_from(medvae.models.create("medvae", N=8, M=24), small_model("medvae"))
