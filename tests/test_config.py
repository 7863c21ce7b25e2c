"""Configs: YAML over defaults, dotted overrides, unknown keys refused."""

import pytest

from medvae.config import load_config
from medvae.models import available
from medvae.errors import MedVAEError
from tests.conftest import REPO


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(REPO / "configs/tiny-cpu.yaml", ["loss.lmbda=0.05", "data.modalities=[CT]", "train.init_from=null"])
    assert cfg["loss"]["lmbda"] == 0.05
    assert cfg["data"]["modalities"] == ["CT"]
    assert cfg["train"]["init_from"] is None
    assert cfg["optim"]["aux_lr"] == 1e-3  # default filled in


def test_exponent_numbers_stay_numbers(tmp_path):
    # YAML 1.1 reads 1e-4 (no dot) as a string; Adam would then fail far from the cause.
    cfg = load_config(REPO / "configs/tiny-cpu.yaml", ["optim.lr=1e-4"])
    assert cfg["optim"]["lr"] == pytest.approx(1e-4)
    path = tmp_path / "c.yaml"
    path.write_text("optim: {aux_lr: 2e-3}\n")
    assert load_config(path)["optim"]["aux_lr"] == pytest.approx(2e-3)


@pytest.mark.parametrize("override", ["optim.lr=fast", "loss.lambda=1", "nope=1", "loss=3", "missing-equals"])
def test_bad_overrides_are_refused(override):
    with pytest.raises(MedVAEError):
        load_config(REPO / "configs/tiny-cpu.yaml", [override])


def test_every_shipped_config_loads():
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        cfg = load_config(path)
        assert cfg["model"]["name"] in available(), path
