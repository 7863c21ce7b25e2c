"""The four model families: registry, shapes, and decoders that read only the bitstream."""

import numpy as np
import pytest
import torch

import medvae
from medvae.errors import MedVAEError
from tests.conftest import FAMILIES, small_model


def test_registry_lists_the_four_families():
    assert set(FAMILIES) <= set(medvae.models.available())


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(MedVAEError, match="unknown model 'nope'"):
        medvae.models.create("nope")


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_shapes_and_parameters(name):
    model = medvae.models.create(name, N=16, M=24, in_channels=2)
    assert {k: model.config[k] for k in ("N", "M", "in_channels")} == {"N": 16, "M": 24, "in_channels": 2}
    x = torch.rand(2, 2, 64, 64)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    expected_latents = {"y"} if name.startswith("bls") else {"y", "z"}
    assert set(out["likelihoods"]) == expected_latents
    assert all(((lik > 0) & (lik <= 1)).all() for lik in out["likelihoods"].values())


@pytest.mark.parametrize("name", FAMILIES)
def test_docstring_draws_the_data_flow(name):
    doc = type(medvae.models.create(name, N=8, M=8)).__doc__
    assert "code-block:: none" in doc and "g_a" in doc and "g_s" in doc


@pytest.mark.parametrize("name", FAMILIES)
def test_decoder_needs_only_strings_and_weights(name):
    """A second instance that only loads the weights decodes the first one's strings exactly."""
    encoder = small_model(name).eval()
    encoder.update()
    decoder = medvae.models.create(name, N=16, M=24).eval()
    decoder.load_state_dict(encoder.state_dict())
    x = torch.rand(1, 1, 64, 64)
    if name == "medvae-ctx":  # coded only by its exact twin: through two codecs
        image = (x[0, 0].numpy() * 4095).astype(np.uint16)
        data = medvae.Codec(encoder).compress(image)
        np.testing.assert_array_equal(medvae.Codec(decoder).decompress(data), medvae.Codec(encoder).decompress(data))
        return
    with torch.no_grad():
        coded = encoder.compress(x)
        reference = encoder(x)["x_hat"]
        decoded = decoder.decompress(coded["strings"], coded["shape"])["x_hat"]
    assert torch.equal(decoded, reference)


def test_residual_families_differ_from_their_baselines():
    """bls-residual and medvae really add the residual skip-fusion path."""
    for base, residual in (("bls2017", "bls-residual"), ("balle2018", "medvae")):
        plain = set(small_model(base).state_dict())
        fused = set(small_model(residual).state_dict())
        assert any(k.startswith("fusion.") for k in fused - plain)
    assert any(k.startswith("h_s.skip") for k in small_model("medvae").state_dict())
