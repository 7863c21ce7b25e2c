"""Shared fixtures: small untrained models (fast on 2 CPU cores) and the corpus location."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medvae
from medvae import zoo

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "corpus"
FAMILIES = ("bls2017", "balle2018", "bls-residual", "medvae", "medvae-vr", "medvae-vbr", "medvae-ctx")


def benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` (a script, not a package) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_model(name: str, seed: int = 0):
    """An untrained model of family ``name`` with few channels, deterministic weights."""
    torch.manual_seed(seed)
    model = medvae.models.create(name, N=16, M=24)
    if name == "medvae-ctx":  # its context starts at zero (exactly medvae-vr): make it matter
        with torch.no_grad():
            model.scale_head.context[-1].weight.normal_(0, 0.05)
            model.scale_head.context[-1].bias.normal_(0, 0.5)
    return model


def small_residual(codec: medvae.Codec, image: np.ndarray, seed: int = 3):
    """An untrained residual model (8 channels) for ``codec``'s base, calibrated on ``image``:
    the bound and the exactness must hold for any weights."""
    from medvae.residual.model import ResidualModel
    from medvae.residual.weights import Residual, calibrate_residual

    torch.manual_seed(seed)
    model = ResidualModel(channels=8)
    base, value_range, _ = codec.base_layer(image)
    return Residual(model, calibrate_residual(model, [(image, base, value_range)]))


def small_series_residual(
    codec: medvae.Codec, image: np.ndarray, previous: np.ndarray, seed: int = 4, bounds: bool = False, count: int = 1
):
    """An untrained series residual model (8 channels, reading the ``count`` previous slices, and
    with ``bounds`` the error bounds of its context) for ``codec``'s base, calibrated on ``image``
    after ``previous`` (one slice, or ``count`` of them stacked, nearest first)."""
    from medvae.residual.model import ResidualModel
    from medvae.residual.weights import Residual, calibrate_residual

    torch.manual_seed(seed)
    model = ResidualModel(channels=8, previous=count, bounds=bounds)
    base, value_range, _ = codec.base_layer(image)
    return Residual(model, calibrate_residual(model, [(image, base, value_range, previous)]))


@pytest.fixture(scope="session", params=FAMILIES)
def family_codec(request) -> medvae.Codec:
    return medvae.Codec(small_model(request.param))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> str:
    """A tiny untrained medvae (fast on 2 cores), saved as a checkpoint file for the CLI tests."""
    from medvae.checkpoint import save_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_model(small_model("medvae"), path)
    return str(path)


@pytest.fixture()
def ct_like() -> np.ndarray:
    """A 96×80 int16 'CT' with air, soft tissue, bone and the int16 extremes present."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :80]
    image = np.full((96, 80), -1024, np.int16)
    body = (yy - 48) ** 2 / 40**2 + (xx - 40) ** 2 / 34**2 < 1
    image[body] = 40 + rng.normal(0, 20, body.sum()).astype(np.int16)
    image[40:50, 30:45] = 1200
    return image


@pytest.fixture()
def one_torch_thread():
    """Coding runs with the caller's threads; one keeps refinement tests quick on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def syntheses(monkeypatch) -> list:
    """A list that grows by one each time a codec runs its synthesis transform over an image
    (:func:`medvae.exact.image.pixel_rows`, as :class:`medvae.Codec` calls it)."""
    from medvae import codec

    calls: list = []
    synthesis = codec.pixel_rows
    monkeypatch.setattr(codec, "pixel_rows", lambda *a, **k: calls.append(1) or synthesis(*a, **k))
    return calls


@pytest.fixture()
def weights_dir(tmp_path, monkeypatch):
    """An empty shipped-weights folder that :mod:`medvae.zoo` reads instead of the package's."""
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "weights")  # where medvae.load looks
    monkeypatch.setattr(zoo, "OPTIONAL_WEIGHTS", {})  # and no optional weights package
    zoo.index.cache_clear()
    yield tmp_path / "weights"
    zoo.index.cache_clear()


def pytest_report_header(config) -> str:
    """Say when the optional ladder weights are missing: the tests of qualities 1–4, 6, 7 need them."""
    if len(zoo.weights_dirs()) > 1:
        return "medvae-ladder: installed"
    return "medvae-ladder: NOT installed; tests of the ladder's qualities 1-4, 6, 7 skip or fail (pip install -e packages/medvae-ladder)"
