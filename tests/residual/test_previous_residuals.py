"""Series models that also read the previous slices' residuals against their own bases
(``ResidualModel(previous_residuals=True)``, ``Codec.base_of``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import medvae
from medvae.errors import MedVAEError
from medvae.io.slices import Slice
from medvae.residual.model import (
    ResidualModel,
    previous_tensor,
    residual_bits,
    slice_tensors,
    with_bounds,
    with_previous,
    with_previous_residuals,
)
from medvae.residual.training import Pair, series_pairs, train_residual
from medvae.residual.weights import Residual, calibrate_residual, load_residual, save_residual
from tests.conftest import small_residual, small_series_residual
from tests.residual.test_series import _volume


def _fresh(codec: medvae.Codec) -> medvae.Codec:
    """The codec with no base kept (a process that has coded nothing yet)."""
    fresh = copy.copy(codec)
    fresh._bases = {}
    return fresh


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    """The q1 base with an untrained two-slice model that reads the previous residuals, its new
    inputs given weights (an untrained model must round-trip as exactly as a trained one)."""
    codec = medvae.load("medvae", quality=1)
    a, b, c = _volume()
    codec.residual = small_residual(codec, a)
    two = small_series_residual(codec, c, np.stack([b, a]), seed=5, count=2, bounds=True)
    model = with_previous_residuals(two.model)
    torch.manual_seed(6)
    with torch.no_grad():
        model.net[0].weight[:, -8:].normal_(0, 0.1)
    pair = Pair(c, codec.base_layer(c).pixels, codec.base_layer(c).value_range, np.stack([b, a]), np.stack([codec.base_of(b), codec.base_of(a)]))
    codec.series_residual = Residual(model, calibrate_residual(model, [pair]))
    return codec


def test_the_base_of_a_slice_is_its_default_base_layer_and_a_few_are_kept(codec):
    volume = _volume(6)
    fresh = _fresh(codec)
    for image in volume:
        np.testing.assert_array_equal(fresh.base_of(image), codec.base_layer(image).pixels)
    assert len(fresh._bases) == fresh.KEPT_BASES
    kept = fresh.base_of(volume[-1])
    assert fresh.base_of(volume[-1].copy()) is kept  # the same pixels: not coded again


@pytest.mark.parametrize("max_error", [0, 2])
def test_a_series_reading_the_previous_residuals_round_trips_on_a_fresh_decoder(codec, max_error):
    """The decoder computes the previous slices' bases from the decoded slices alone: a codec
    that never saw the encoder's bases decodes every slice within the bound."""
    volume = _volume(5)
    files = codec.compress_series(volume, max_error=max_error, key_every=3)
    for decoded, image in zip(_fresh(codec).decompress_series(files), volume):
        assert np.abs(decoded.astype(np.int64) - image).max() <= max_error


def test_the_encoder_keeps_a_lossless_slice_base_as_its_pixels_base(codec, monkeypatch):
    """A lossless slice's base is the base of its pixels (default options): the encoder keeps it
    for the next slice instead of coding it again, and the files are those written when every
    base is coded afresh."""
    volume = _volume(4)
    files = _fresh(codec).compress_series(volume, max_error=0)
    with monkeypatch.context() as patch:
        patch.setattr(medvae.Codec, "_remember_base", lambda *args: None)
        assert _fresh(codec).compress_series(volume, max_error=0) == files
    calls, real = [], medvae.Codec.base_layer
    monkeypatch.setattr(medvae.Codec, "base_layer", lambda self, image, padding_value=None: calls.append(1) or real(self, image, padding_value))
    assert _fresh(codec).compress_series(volume, max_error=0) == files
    assert calls == []  # every base the model read was the encoder's own


def test_previous_residual_inputs_start_at_zero_weights(codec):
    """``with_previous_residuals``: the model computes what the series model it was made from
    computed, whatever the bases; it needs a series model, and comes after its other inputs."""
    a, b, c = _volume()
    base, value_range, _ = codec.base_layer(c)
    two = ResidualModel(channels=8, previous=2, bounds=True)
    reads = with_previous_residuals(two)
    assert reads.net[0].in_channels == two.net[0].in_channels + 8
    x, x_base, lo, hi = slice_tensors(c, base, value_range)
    slices = previous_tensor(np.stack([b, a]), x.shape[-2:])
    with torch.no_grad():
        bits = float(residual_bits(two, x, x_base, lo, hi, slices, 2))
        for bases in (np.stack([b, a]), np.stack([a, c])):
            both = torch.cat([slices, previous_tensor(bases, x.shape[-2:])], 1)
            assert float(residual_bits(reads, x, x_base, lo, hi, both, 2)) == bits
        with pytest.raises(ValueError, match="their bases"):
            residual_bits(reads, x, x_base, lo, hi, slices)
    with pytest.raises(ValueError, match="series model"):
        with_previous_residuals(ResidualModel(channels=8))
    with pytest.raises(ValueError, match="series model"):
        ResidualModel(channels=8, previous_residuals=True)
    with pytest.raises(ValueError):
        with_previous_residuals(reads)
    with pytest.raises(ValueError, match="before"):
        with_bounds(with_previous_residuals(ResidualModel(channels=8, previous=1)))
    with pytest.raises(ValueError, match="before"):
        with_previous(with_previous_residuals(ResidualModel(channels=8, previous=1)), 2)


def test_training_pairs_carry_the_previous_slices_bases(codec):
    volume = _volume(4)
    slices = [Slice(v, 12, "CT", "p", "vol.nii", i) for i, v in enumerate(volume)]
    pairs = [Pair(s.pixels, s.pixels // 2, (-1024, 2000)) for s in slices]
    chosen = series_pairs(pairs, slices, count=2, bases=True)
    for p, (near, far) in zip(chosen, [(0, 0), (1, 0), (2, 1)]):
        np.testing.assert_array_equal(p.previous_bases, np.stack([pairs[near].base, pairs[far].base]))
        assert p.previous_input.shape == (4, *volume[0].shape)
    model = with_previous_residuals(ResidualModel(channels=8, previous=2))
    with pytest.raises(MedVAEError, match="bases"):
        train_residual(series_pairs(pairs, slices, count=2), model=model, steps=1)
    with pytest.raises(MedVAEError, match="bases"):
        train_residual(chosen, model=ResidualModel(channels=8, previous=2), steps=1)
    trained, log = train_residual(chosen, model=model, steps=2, batch=2, crop=32, log_every=2)
    assert trained.previous_residuals and log[-1]["step"] == 2
    assert calibrate_residual(trained, chosen[:1])


def test_models_reading_the_previous_residuals_save_and_load(codec, tmp_path):
    save_residual(codec.series_residual, tmp_path / "own.pt")
    loaded = load_residual(tmp_path / "own.pt")
    assert loaded.model.previous_residuals and loaded.fingerprint == codec.series_residual.fingerprint
