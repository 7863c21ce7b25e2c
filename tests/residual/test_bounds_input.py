"""Residual models that read the error bound of their context (trained for near-lossless coding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medvae
from medvae.cli.train_residual import _max_errors
from medvae.errors import MedVAEError
from medvae.residual.coder import pass_bounds
from medvae.residual import tables
from medvae.residual.model import (
    BOUND_CHANNELS, CONTEXT_GAIN, ResidualModel, residual_bits, slice_tensors, table_width, with_bounds, with_previous,
)
from medvae.residual.training import Pair, train_residual
from medvae.residual.weights import Residual, calibrate_residual, load_residual, save_residual
from tests.residual.test_series import _volume


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    return medvae.load("medvae", quality=1)


@pytest.fixture(scope="module")
def slices(codec):
    volume = _volume(count=2, shape=(66, 58))
    base, value_range, exact = codec.base_layer(volume[1])
    return volume, base, value_range, exact


def _bounds_model(seed: int = 0, previous: bool = False) -> ResidualModel:
    """An untrained model whose bound inputs weigh as much as its other inputs."""
    torch.manual_seed(seed)
    model = ResidualModel(channels=8, previous=previous, bounds=True)
    with torch.no_grad():
        model.net[0].weight[:, -BOUND_CHANNELS:] = 0.5 * torch.randn_like(model.net[0].weight[:, -BOUND_CHANNELS:])
    return model


def _float_bits(model, image, base, value_range, max_error, previous=None) -> float:
    x, b, lo, hi = slice_tensors(image, base, value_range)
    before = None if previous is None else slice_tensors(previous, base, value_range)[0]
    with torch.no_grad():
        return float(residual_bits(model, x, b, lo, hi, before, max_error).sum())


def test_with_bounds_computes_what_the_model_did(slices):
    """The new inputs start at zero weight: the same float bits at every bound, and the exact
    coder (under the same plan) writes the same bytes, so training starts from the trained model."""
    volume, base, value_range, exact = slices
    image = volume[1]
    torch.manual_seed(2)
    plain = ResidualModel(channels=8)
    reading = with_bounds(plain)
    assert reading.bounds and not plain.bounds
    plan = calibrate_residual(plain, [(image, base, value_range)])
    for max_error in (0, 3):
        assert _float_bits(reading, image, base, value_range, max_error) == pytest.approx(_float_bits(plain, image, base, value_range, max_error), rel=1e-6)
        assert (
            Residual(reading, plan).coder.encode(image, base, value_range, max_error, exact=exact)[0]
            == Residual(plain, plan).coder.encode(image, base, value_range, max_error, exact=exact)[0]
        )
    both = with_previous(reading)  # the previous slice's inputs go before the bounds'
    assert both.previous and both.bounds
    assert _float_bits(both, image, base, value_range, 2, volume[0]) == pytest.approx(_float_bits(plain, image, base, value_range, 2), rel=1e-6)
    with pytest.raises(ValueError):
        with_bounds(reading)


@pytest.mark.parametrize("previous", [False, True])
@pytest.mark.parametrize("max_error, tighter", [(0, 0), (1, 0), (2, 3), (7, 1)])
def test_a_bounds_model_round_trips_within_its_bound(slices, previous, max_error, tighter):
    volume, base, value_range, exact = slices
    image, before = volume[1], volume[0] if previous else None
    model = _bounds_model(previous=previous)
    residual = Residual(model, calibrate_residual(model, [(image, base, value_range, before)]))
    strings, final = residual.coder.encode(image, base, value_range, max_error, tighter, exact=exact, previous=before)
    decoded = residual.coder.decode(strings, base, value_range, max_error, tighter, exact=exact, previous=before)
    np.testing.assert_array_equal(decoded, final)
    assert np.abs(decoded.astype(np.int64) - image).max() <= max_error


def test_the_coder_reads_the_bounds(slices):
    """Near-lossless, the bound inputs change the laws (other bytes than with them zeroed);
    lossless they are zero, so the bytes are the same."""
    volume, base, value_range, exact = slices
    image = volume[1]
    model = _bounds_model()
    blind = _bounds_model()
    with torch.no_grad():
        blind.net[0].weight[:, -BOUND_CHANNELS:] = 0.0
    plan = calibrate_residual(model, [(image, base, value_range)])
    encode = lambda m, t: Residual(m, plan).coder.encode(image, base, value_range, t, exact=exact)[0]  # noqa: E731
    assert encode(model, 0) == encode(blind, 0)
    assert encode(model, 4) != encode(blind, 4)


@pytest.mark.parametrize("max_error", [2, 5])
def test_the_near_lossless_loss_is_the_coded_size(codec, max_error):
    """The float model's bits at bound τ (its later passes reading residuals as decoded, pixels
    within τ of a bound moved to it as the encoder moves them) match the real bytes, on a slice
    whose air (a third of it) lies at its lowest value, as a CT's does."""
    image = _volume(count=1, shape=(66, 58))[0]
    image[:, :20] = image.min()  # air, clipped at the lowest value
    base, value_range, exact = codec.base_layer(image)
    model = _bounds_model(seed=1)
    with torch.no_grad():  # scales of the residual's own size, as a trained model would roughly give
        model.net[-1].bias[1::2] = float(np.log2(np.abs(image.astype(np.int64) - base).mean() / (value_range[1] - value_range[0])))
    residual = Residual(model, calibrate_residual(model, [(image, base, value_range)]))
    estimate = _float_bits(model, image, base, value_range, max_error) / 8
    coded = sum(map(len, residual.coder.encode(image, base, value_range, max_error, exact=exact, adapt=False)[0]))  # the laws the loss models
    assert abs(coded - estimate) < 0.03 * estimate + 16


@pytest.mark.parametrize("max_error", [0, 2])
def test_the_loss_charges_no_escape_the_coder_does_not_write(codec, max_error):
    """At the narrowest tables (a confident model in air), a pixel whose mean lies a step or more
    beyond its lower bound codes its bound's symbol inside the table, at no cost; the loss read
    the tables one symbol narrower than they are and charged it an escape byte (8 bits: a float
    cost 18 % above the real bytes in the shipped model's second pass at τ = 2)."""
    image = _volume(count=1, shape=(66, 58))[0]
    image[:, :40] = image.min()  # mostly air, clipped at the lowest value
    base, value_range, exact = codec.base_layer(image)
    span = value_range[1] - value_range[0]
    model = ResidualModel(channels=8)
    with torch.no_grad():  # every law: mean 11 grey levels below the base, scale 0.3 grey levels
        model.net[-1].weight.zero_()
        model.net[-1].bias.copy_(torch.tensor([-11.0 * CONTEXT_GAIN / span, float(np.log2(0.3 / span))] * 4))
    residual = Residual(model, calibrate_residual(model, [(image, base, value_range)]))
    estimate = _float_bits(model, image, base, value_range, max_error) / 8
    coded = sum(map(len, residual.coder.encode(image, base, value_range, max_error, exact=exact, adapt=False)[0]))  # the laws the loss models
    assert abs(coded - estimate) < 0.03 * estimate + 16


def test_table_width_is_the_width_of_the_table_the_coder_picks():
    widths = [-offset for offset in tables.tables()[2]]
    scales = torch.exp2(tables.LOG2_MIN + (torch.arange(tables.COUNT, dtype=torch.float64) + 0.5) / tables.STEPS)
    assert table_width(scales).tolist() == widths
    assert widths[4] == 1 and table_width(torch.tensor([0.067])).item() == 1  # where the continuous width read 0.24


def test_near_lossless_training(slices, tmp_path):
    """Training for several bounds needs a model that reads them, lowers the near-lossless cost,
    and the saved model keeps the bound inputs."""
    volume, base, value_range, _ = slices
    pairs = [Pair(volume[1], base, value_range)]
    with pytest.raises(MedVAEError, match="reads the error bounds"):
        train_residual(pairs, steps=1, batch=2, crop=32, max_errors=(0, 2), model=ResidualModel(channels=8))
    with pytest.raises(MedVAEError, match="error bounds of 0 or more"):
        train_residual(pairs, steps=1, batch=2, crop=32, max_errors=(-1,), model=_bounds_model())
    start = _bounds_model(seed=3)
    before = _float_bits(start, volume[1], base, value_range, 2)
    model, log = train_residual(pairs, steps=40, batch=4, crop=32, lr=3e-3, max_errors=(0, 2), model=start, log_every=40)
    assert _float_bits(model, volume[1], base, value_range, 2) < before
    path = tmp_path / "bounds.pt"
    save_residual(Residual(model, calibrate_residual(model, pairs)), path)
    assert load_residual(path).model.bounds


def test_max_errors_option():
    assert _max_errors("0,1,2,4,8") == (0, 1, 2, 4, 8)
    for bad in ("", "1,x", "-1", "0,,2"):
        with pytest.raises(SystemExit, match="--max-errors"):
            _max_errors(bad)


def test_the_first_pass_reads_the_bound(slices):
    """Every pixel's bound is known before any pass: the first pass of a model that reads the
    bounds depends on τ, and a first pass computed for (τ, tighter passes) codes as the encoder alone does."""
    volume, base, value_range, exact = slices
    image = volume[1]
    model = _bounds_model(seed=5)
    coder = Residual(model, calibrate_residual(model, [(image, base, value_range)])).coder
    for max_error, tighter in ((3, 0), (3, 2)):
        first = coder.first_pass(base, value_range, bounds=pass_bounds(max_error, tighter))
        reused, alone = (coder.encode(image, base, value_range, max_error, tighter, f, exact) for f in (first, None))
        assert reused[0] == alone[0] and np.array_equal(reused[1], alone[1])
    assert not np.array_equal(coder.first_pass(base, value_range, bounds=pass_bounds(3)).log2_scale, coder.first_pass(base, value_range).log2_scale)
