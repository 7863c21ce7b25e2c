"""The epoch sampler: deterministic per (seed, epoch), and balanced by patient when asked."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from medvae.errors import MedVAEError
from medvae.training.sampler import EpochSampler, patient_weights, sample_weights


def test_epochs_repeat_per_seed_and_cover_the_dataset():
    first, again = EpochSampler(10, 40, seed=3), EpochSampler(10, 40, seed=3)
    assert list(first) == list(again) and len(list(first)) == 40
    assert sorted(set(first)) == list(range(10))  # without weights: reshuffled copies
    first.set_epoch(1)
    assert list(first) != list(again)


def test_patient_balance_draws_a_one_slice_patient_as_often_as_a_volume():
    """A CT volume of 300 slices and one radiograph: drawn by slice, the radiograph comes once in
    301 draws; balanced by patient, about half of them."""
    patients = ["ct-volume"] * 300 + ["radiograph"]
    weights = patient_weights(patients)
    assert weights[0] == pytest.approx(1 / 300) and weights[-1] == 1.0
    balanced = Counter(patients[i] for i in EpochSampler(len(patients), 4000, seed=0, weights=weights))
    plain = Counter(patients[i] for i in EpochSampler(len(patients), 4000, seed=0))
    assert 0.45 < balanced["radiograph"] / 4000 < 0.55
    assert plain["radiograph"] < 30
    assert list(EpochSampler(len(patients), 50, seed=0, weights=weights)) == list(EpochSampler(len(patients), 50, seed=0, weights=weights))


def test_square_root_balance_gives_a_patient_a_share_growing_as_the_root_of_its_slices():
    patients = ["ct-volume"] * 100 + ["radiograph"]
    weights = patient_weights(patients, power=0.5)
    draws = Counter(patients[i] for i in EpochSampler(len(patients), 11000, seed=1, weights=weights))
    assert 0.07 < draws["radiograph"] / 11000 < 0.11  # 1 / (1 + sqrt(100)) = 0.091


def test_weights_must_match_the_dataset():
    with pytest.raises(ValueError, match="weights"):
        EpochSampler(3, 10, seed=0, weights=[1.0, 1.0])


def test_modality_weights_multiply_a_modality_s_share():
    """100 CT slices of one patient and a radiograph, square-root balanced: the radiograph's weight
    is 1 against the volume's 10; weighting CR by 5 makes it 5, a third of the draws. Without a
    balance or modality weights the sampler reshuffles (no weights)."""
    records = [SimpleNamespace(patient="ct", modality="CT")] * 100 + [SimpleNamespace(patient="rg", modality="CR")]
    plain = sample_weights(records, 0.5, None)
    weighted = sample_weights(records, 0.5, {"cr": 5})
    assert sum(plain[:100]) == pytest.approx(10) and plain[-1] == 1.0
    assert weighted[:100] == plain[:100] and weighted[-1] == 5.0
    draws = Counter(records[i].modality for i in EpochSampler(len(records), 6000, seed=2, weights=weighted))
    assert 0.30 < draws["CR"] / 6000 < 0.37  # 5 / 15
    assert sample_weights(records, None, None) is None
    assert sample_weights(records, None, {"CR": 2})[-1] == 2.0 and sample_weights(records, None, {"CR": 2})[0] == 1.0
    for bad in (0, -1, float("nan"), "many", True):
        with pytest.raises(MedVAEError, match="modality_weights.CR"):
            sample_weights(records, 0.5, {"CR": bad})
    with pytest.raises(MedVAEError, match="names XR, which no training slice has"):  # a typo is not ignored
        sample_weights(records, 0.5, {"XR": 5})
    with pytest.raises(MedVAEError, match="must be a mapping"):
        sample_weights(records, 0.5, ["CR", 5])
