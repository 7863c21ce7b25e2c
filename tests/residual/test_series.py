"""Series coding: a slice's residual layer coded given the previous slice of its volume (format 9),
or the two slices before it (format 10)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

import medvae
from medvae import bitstream, prediction
from medvae.errors import BitstreamError, InputError, KeptFileError, MedVAEError
from medvae.evaluation.learned import SeriesWithResidual
from medvae.io.slices import Slice
from medvae.residual.model import ResidualModel, previous_tensor, residual_bits, slice_tensors, with_previous
from medvae.residual.training import Pair, series_pairs, train_residual
from medvae.residual.weights import Residual, calibrate_residual, load_residual, save_residual
from medvae.series import CHAIN_TRIAL, Neighbours, StepSearch, as_slices, choice_of, coding_plan, previous_planes
from tests.conftest import small_residual, small_series_residual


def _volume(count=3, shape=(70, 61), dtype=np.int16, seed=0) -> list[np.ndarray]:
    """Consecutive 'slices': one anatomy drifting slowly, with noise of its own in each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lo = -1024 if np.iinfo(dtype).min < 0 else 0
    slices = []
    for k in range(count):
        anatomy = 600 * np.sin(xx / 7.0 + 0.1 * k) * np.cos(yy / 5.0)
        slices.append(np.clip(lo + 1000 + anatomy + rng.normal(0, 30, shape), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype))
    return slices


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    codec = medvae.load("medvae", quality=1)
    volume = _volume()
    codec.residual = small_residual(codec, volume[0])
    codec.series_residual = small_series_residual(codec, volume[1], volume[0])
    return codec


@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
@pytest.mark.parametrize("max_error", [0, 1, 7])
def test_a_series_round_trips_within_its_bound(codec, dtype, max_error):
    volume = _volume(dtype=dtype)
    files = codec.compress_series(volume, max_error=max_error)
    assert [bitstream.layout(bitstream.read_header(f).version) for f in files] == [9, 8, 9]  # the middle slice alone, the others given it
    for decoded, image in zip(codec.decompress_series(files), volume):
        assert decoded.dtype == image.dtype
        assert np.abs(decoded.astype(np.int64) - image).max() <= max_error


def test_a_series_file_reads_the_previous_slice(codec):
    """Another previous slice gives other bytes (the model reads it), and the file decodes only
    with the slice it was coded with: without one, or with another, a clear BitstreamError."""
    a, b, c = _volume()
    data = codec.compress(b, max_error=0, previous=a)
    assert codec.compress(b, max_error=0, previous=c) != data
    assert bitstream.read_header(data).previous_crc == bitstream.pixels_crc(a)
    np.testing.assert_array_equal(codec.decompress(data, previous=a), b)
    np.testing.assert_array_equal(medvae.decompress(data, codec, previous=a), b)
    with pytest.raises(BitstreamError, match="previous slice"):
        codec.decompress(data)
    with pytest.raises(BitstreamError, match="not the one this file was coded with"):
        codec.decompress(data, previous=c)
    assert np.array_equal(codec.decompress(codec.compress(b, max_error=0), previous=c), b)  # a file coded alone ignores it


@pytest.mark.parametrize("cut", [1, 10, 200])
def test_damaged_series_files_raise(codec, cut):
    a, b, _ = _volume()
    data = codec.compress(b, max_error=2, previous=a)
    with pytest.raises(BitstreamError):
        codec.decompress(data[:-cut], previous=a)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1 << (cut % 8)
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(flipped), previous=a)


def test_series_coding_refuses_what_it_cannot_do(codec):
    a, b, _ = _volume()
    with pytest.raises(InputError, match="max_error"):
        codec.compress(b, previous=a)
    with pytest.raises(InputError, match="shape and dtype"):
        codec.compress(b, max_error=0, previous=a[:40])
    with pytest.raises(InputError, match="shape and dtype"):
        codec.compress(b, max_error=0, previous=a.astype(np.uint16))
    alone = medvae.load("medvae", quality=1)
    alone.residual, alone.series_residual = codec.residual, None
    with pytest.raises(InputError, match="series residual model"):
        alone.compress(b, max_error=0, previous=a)
    with pytest.raises(InputError, match="reads the previous slice"):
        medvae.Codec(alone.model, residual=codec.residual, series_residual=codec.residual)


def test_key_slices_bound_what_a_slice_needs(codec):
    """Key slices sit in the middle of runs of 2·max_chain + 1 (the last run shorter), the others
    coded towards them; 0 codes every slice alone; a bad value is refused."""
    volume = _volume(5)
    versions = lambda files: [bitstream.layout(bitstream.read_header(f).version) for f in files]  # noqa: E731
    files = codec.compress_series(volume, max_error=0, max_chain=1)
    assert versions(files) == [9, 8, 9, 8, 9]
    headers = [bitstream.read_header(f) for f in files]
    crc = [bitstream.pixels_crc(v) for v in volume]
    assert [h.previous_crc for h in headers] == [crc[1], None, crc[1], None, crc[3]]  # slice 0 given slice 1: backward
    assert codec.decompress(files[3]).tolist() == volume[3].tolist()  # a key slice decodes alone
    assert codec.decompress(files[0], previous=volume[1]).tolist() == volume[0].tolist()
    assert versions(codec.compress_series(volume, max_error=0, max_chain=0)) == [8] * 5
    for bad in (-1, 1.5, True, 4097):
        with pytest.raises(InputError, match="max_chain"):
            codec.compress_series(volume, max_error=0, max_chain=bad)
    with pytest.raises(InputError, match="key_every is now max_chain"):
        codec.compress_series(volume, max_error=0, key_every=8)


@pytest.mark.parametrize("count, max_chain", [(1, 7), (2, 7), (15, 7), (16, 7), (20, 7), (31, 7), (9, 1), (6, 0), (40, 3)])
def test_a_coding_plan_keeps_every_slice_within_max_chain_of_its_key_slice(count, max_chain):
    """Every slice once; each coded after the neighbour it reads; at most max_chain steps from a
    key slice; and one key slice per 2·max_chain + 1 slices, half as many as a key every max_chain + 1."""
    plan = coding_plan(count, max_chain)
    assert sorted(k for k, _ in plan) == list(range(count))
    coded, depth = set(), {}
    for k, reference in plan:
        assert reference is None or (abs(k - reference) == 1 and reference in coded)
        depth[k] = 0 if reference is None else depth[reference] + 1
        coded.add(k)
    assert max(depth.values()) <= max_chain
    assert sum(reference is None for _, reference in plan) == -(-count // (2 * max_chain + 1))


def test_a_slice_that_cannot_follow_starts_a_new_run():
    plan = coding_plan(7, 7, follows=[False, True, True, False, True, True, True])
    assert dict(plan) == {1: None, 0: 1, 2: 1, 4: None, 3: 4, 5: 4, 6: 5}


def test_neighbours_keep_a_slice_only_until_the_last_slice_that_reads_it():
    plan = coding_plan(5, 2)  # key 2; 1, 0 backward; 3, 4 forward
    neighbours, pixels = Neighbours(plan), {k: np.full((2, 2), k) for k in range(5)}
    kept = []
    for k, reference in plan:
        read = neighbours.given(reference)
        assert (read is None) == (reference is None)
        neighbours.coded(k, reference, pixels[k], None, b"")  # as if coded alone: it passes on only its pixels
        kept.append(sorted(neighbours._kept))
    assert kept == [[2], [1, 2], [2], [3], []]


def test_a_series_decodes_by_the_crcs_its_files_record(codec):
    """Each file is decoded once the slices it names are: files coded forward from the first
    slice (the layout of earlier releases) decode too, and a missing key slice is a clear error."""
    volume = _volume(4)
    forward = [codec.compress(volume[0], max_error=0)]
    forward += [codec.compress(volume[k], max_error=0, previous=volume[k - 1 :: -1][:2]) for k in range(1, 4)]
    for decoded, image in zip(codec.decompress_series(forward), volume):
        np.testing.assert_array_equal(decoded, image)
    files = codec.compress_series(volume, max_error=0)  # key slice 1
    assert bitstream.read_header(files[1]).previous_crc is None
    with pytest.raises(BitstreamError, match="none of the series' files decodes to"):
        codec.decompress_series(files[:1] + files[2:])
    a_given_b, b_given_a = codec.compress(volume[0], max_error=0, previous=volume[1]), codec.compress(volume[1], max_error=0, previous=volume[0])
    with pytest.raises(BitstreamError, match="none of the series' files decodes to"):  # a cycle: no key slice to start from
        codec.decompress_series([a_given_b, b_given_a])


def test_blank_slices_of_another_dtype_are_not_taken_for_each_other(codec):
    """All-zero int16 and uint16 slices have the same bytes and CRC: each run's files read their own."""
    a, b = _volume(3, dtype=np.int16), _volume(3, dtype=np.uint16, seed=1)
    a[1], b[1] = np.zeros_like(a[1]), np.zeros_like(b[1])  # each run's key slice
    for decoded, image in zip(codec.decompress_series(codec.compress_series(a + b, max_error=0)), a + b):
        assert decoded.dtype == image.dtype
        np.testing.assert_array_equal(decoded, image)


def test_a_file_waits_for_both_slices_it_read(codec2):
    """Slice 13 reads blank slice 12 and slice 11; blank pixels are decoded first (key slice 3),
    and slice 13 must still wait for slice 11, two steps from its own key slice (blank padding at
    both ends of a volume)."""
    volume = _volume(14)
    for k in (0, 1, 2, 3, 4, 5, 6, 12, 13):
        volume[k] = np.full_like(volume[k], -1024)
    files = codec2.compress_series(volume, max_error=0, max_chain=3)  # runs 0-6 (key 3) and 7-13 (key 10)
    header = bitstream.read_header(files[13])
    assert (header.previous_crc, header.earlier_crc) == (bitstream.pixels_crc(volume[12]), bitstream.pixels_crc(volume[11]))
    for decoded, image in zip(codec2.decompress_series(files), volume):
        np.testing.assert_array_equal(decoded, image)


def test_a_slice_of_another_size_starts_the_series_again(codec):
    a, b, _ = _volume()
    small = _volume(shape=(40, 44), seed=3)[0]
    files = codec.compress_series([a, small, b], max_error=0)
    assert [bitstream.layout(bitstream.read_header(f).version) for f in files] == [8, 8, 8]
    for decoded, image in zip(codec.decompress_series(files), [a, small, b]):
        np.testing.assert_array_equal(decoded, image)


def test_a_series_model_made_from_a_plain_one_codes_what_it_coded(codec):
    """``with_previous`` adds the previous slice's inputs with zero weights: the float bits and
    the exact coder's bytes are those of the model it was made from, whatever the previous slice."""
    a, b, c = _volume()
    base, value_range, exact = codec.base_layer(b)
    plain = codec.residual
    series_model = with_previous(plain.model)
    assert calibrate_residual(series_model, [(b, base, value_range, a)]) == calibrate_residual(plain.model, [(b, base, value_range)])
    series = Residual(series_model, plain.plan)
    x, x_base, lo, hi = slice_tensors(b, base, value_range)
    with torch.no_grad():
        bits = float(residual_bits(plain.model, x, x_base, lo, hi))
        for previous in (a, c):
            assert float(residual_bits(series_model, x, x_base, lo, hi, slice_tensors(previous, base, value_range)[0])) == bits
    strings, _ = plain.coder.encode(b, base, value_range, 1, exact=exact, adapt=False)  # the adaptation reads the previous slice
    for previous in (a, c):
        assert series.coder.encode(b, base, value_range, 1, exact=exact, previous=previous, adapt=False)[0] == strings
    with pytest.raises(ValueError, match="already"):
        with_previous(series_model)


def test_series_models_save_and_load(codec, tmp_path):
    save_residual(codec.series_residual, tmp_path / "series.pt")
    loaded = load_residual(tmp_path / "series.pt")
    assert loaded.model.previous and loaded.fingerprint == codec.series_residual.fingerprint


def test_series_training_pairs_are_consecutive_slices_of_a_series(codec):
    """A volume's slices follow each other in order; a slice of another patient's file does not."""
    volume = _volume(4)
    slices = [Slice(v, 12, "CT", "p", "vol.nii", i) for i, v in enumerate(volume[:3])] + [Slice(volume[3], 12, "CT", "q", "other/a.dcm", 0)]
    slices[0], slices[2] = slices[2], slices[0]  # listed out of order: the series is ordered
    pairs = [Pair(s.pixels, s.pixels, (-1024, 2000)) for s in slices]
    chosen = series_pairs(pairs, slices)
    assert [(p.image is volume[k], p.previous is volume[k - 1]) for p, k in zip(chosen, (1, 2))] == [(True, True)] * 2
    assert len(chosen) == 2
    with pytest.raises(MedVAEError, match="series"):
        train_residual(pairs, model=ResidualModel(channels=8, previous=True), steps=1)
    with pytest.raises(MedVAEError, match="series"):
        train_residual(chosen, model=ResidualModel(channels=8), steps=1)
    model, log = train_residual(chosen, model=ResidualModel(channels=8, previous=True), steps=2, batch=2, crop=32, log_every=2)
    assert model.previous and log[-1]["step"] == 2


def test_the_evaluation_codes_a_series_as_compress_series_does(codec):
    """``medvae-series`` in the evaluation registry: the stream is the slices' files, each after
    its length; a damaged stream raises."""
    volume = np.stack(_volume(3))
    point = SeriesWithResidual(codec, 1)
    data = point.encode_series(volume, 12)
    files = codec.compress_series(list(volume), max_error=1, bits_stored=12)
    assert len(data) == sum(len(f) + 4 for f in files)
    decoded = point.decode_series(data)
    assert decoded.shape == volume.shape and np.abs(decoded.astype(int) - volume).max() <= 1
    np.testing.assert_array_equal(point.decode(point.encode(volume[0], 12)), codec.decompress(codec.compress(volume[0], max_error=1, bits_stored=12)))
    for damaged in (data[:2], data[:-3]):
        with pytest.raises(BitstreamError):
            point.decode_series(damaged)


def test_the_evaluation_refines_the_bases_when_asked(codec):
    """``refine_steps``: the bases are refined first (``compress_series(refine_steps=…)``'s
    files), under a family name of their own, within the bound as ever."""
    volume = np.stack(_volume(2))
    point = SeriesWithResidual(codec, 1, refine_steps=2)
    assert point.family == "medvae-series (refined)" and SeriesWithResidual(codec, 1).family == "medvae-series"
    data = point.encode_series(volume, 12)
    files = codec.compress_series(list(volume), max_error=1, bits_stored=12, refine_steps=2)
    assert data == b"".join(len(f).to_bytes(4, "little") + f for f in files)
    assert files != codec.compress_series(list(volume), max_error=1, bits_stored=12)
    assert np.abs(point.decode_series(data).astype(int) - volume).max() <= 1


# --- two previous slices (format 10) -----------------------------------------------------------


@pytest.fixture(scope="module")
def codec2(codec) -> medvae.Codec:
    """The codec with a series model that reads the two slices before a slice (untrained)."""
    two = copy.copy(codec)
    a, b, c = _volume()
    two.series_residual = small_series_residual(codec, c, np.stack([b, a]), seed=5, count=2)
    return two


@pytest.mark.parametrize("max_error", [0, 2])
def test_a_series_read_two_slices_back_round_trips(codec2, max_error):
    """Format 10 records the CRCs of both slices the model read: the slice after a key slice
    reads the key slice twice, the later ones the two slices before them."""
    volume = _volume(5)
    files = codec2.compress_series(volume, max_error=max_error, max_chain=2)
    headers = [bitstream.read_header(f) for f in files]
    assert [bitstream.layout(h.version) for h in headers] == [10, 10, 8, 10, 10]
    crc = [bitstream.pixels_crc(v) if max_error == 0 else None for v in volume]
    if max_error == 0:  # key slice 2; slices 1 and 0 coded backward from it, 3 and 4 forward
        assert [(h.previous_crc, h.earlier_crc) for h in headers] == [(crc[1], crc[2]), (crc[2], crc[2]), (None, None), (crc[2], crc[2]), (crc[3], crc[2])]
    for decoded, image in zip(codec2.decompress_series(files), volume):
        assert np.abs(decoded.astype(np.int64) - image).max() <= max_error


def test_a_two_slice_file_decodes_only_with_the_slices_it_read(codec2):
    a, b, c = _volume()
    data = codec2.compress(c, max_error=0, previous=[b, a])
    assert data != codec2.compress(c, max_error=0, previous=[b, b])  # the model reads the second slice
    np.testing.assert_array_equal(codec2.decompress(data, previous=[b, a]), c)
    np.testing.assert_array_equal(codec2.decompress(data, previous=np.stack([b, a, c])), c)  # a 3-D array: nearest first
    with pytest.raises(BitstreamError, match="two slices before it"):
        codec2.decompress(data, previous=b)
    with pytest.raises(BitstreamError, match="slice before the previous one"):
        codec2.decompress(data, previous=[b, c])
    with pytest.raises(BitstreamError, match="previous slice given"):
        codec2.decompress(data, previous=[a, b])
    after_key = codec2.compress(b, max_error=0, previous=a)  # one slice given: read twice
    assert after_key == codec2.compress(b, max_error=0, previous=[a, a])
    np.testing.assert_array_equal(codec2.decompress(after_key, previous=a), b)
    np.testing.assert_array_equal(codec2.decompress(after_key, previous=[a, c]), b)  # the second is not read
    with pytest.raises(InputError, match="shape and dtype"):
        codec2.compress(c, max_error=0, previous=[b, a[:40]])
    with pytest.raises(InputError, match="previous= takes"):
        codec2.compress(c, max_error=0, previous=[])
    with pytest.raises(BitstreamError, match="residual model"):  # a one-slice model's file is not a two-slice model's
        codec2.decompress(bitstream.pack(dataclasses.replace(bitstream.read_header(data), earlier_crc=None), *_strings(data)), previous=[b, a])


def _strings(data: bytes) -> tuple[list[bytes], bytes]:
    _, strings, metadata = bitstream.unpack(data)
    return strings, metadata


def test_a_model_reading_two_slices_starts_as_the_one_it_was_made_from(codec):
    """``with_previous(model, 2)``: the second slice's inputs start at zero weights, so the float
    bits are the one-slice model's whatever the second slice; models read 0 to 2 slices."""
    a, b, c = _volume()
    base, value_range, _ = codec.base_layer(c)
    one = codec.series_residual.model
    two = with_previous(one, 2)
    assert two.previous == 2 and two.net[0].in_channels == one.net[0].in_channels + 4
    x, x_base, lo, hi = slice_tensors(c, base, value_range)
    with torch.no_grad():
        bits = float(residual_bits(one, x, x_base, lo, hi, previous_tensor(b, x.shape[-2:])))
        for earlier in (a, c):
            assert float(residual_bits(two, x, x_base, lo, hi, previous_tensor(np.stack([b, earlier]), x.shape[-2:]))) == bits
    with pytest.raises(ValueError, match="already"):
        with_previous(two, 2)
    with pytest.raises(ValueError, match="0 to 2"):
        ResidualModel(channels=8, previous=3)
    assert with_previous(codec.residual.model, 2).previous == 2  # a plain model straight to two


def test_two_slice_training_pairs_hold_the_slices_before_nearest_first(codec):
    volume = _volume(4)
    slices = [Slice(v, 12, "CT", "p", "vol.nii", i) for i, v in enumerate(volume)]
    pairs = [Pair(s.pixels, s.pixels, (-1024, 2000)) for s in slices]
    chosen = series_pairs(pairs, slices, count=2)
    assert [p.previous.shape for p in chosen] == [(2, *volume[0].shape)] * 3
    expected = [(0, 0), (1, 0), (2, 1)]  # the second slice reads the first twice
    for p, k, (near, far) in zip(chosen, (1, 2, 3), expected):
        assert p.image is volume[k] and np.array_equal(p.previous[0], volume[near]) and np.array_equal(p.previous[1], volume[far])
    with pytest.raises(MedVAEError, match="2 previous"):
        train_residual(series_pairs(pairs, slices), model=ResidualModel(channels=8, previous=2), steps=1)
    model, log = train_residual(chosen, model=ResidualModel(channels=8, previous=2), steps=2, batch=2, crop=32, log_every=2)
    assert model.previous == 2 and log[-1]["step"] == 2
    assert calibrate_residual(model, chosen[:1])  # calibration reads both slices


def test_two_slice_models_save_and_load(codec2, tmp_path):
    save_residual(codec2.series_residual, tmp_path / "two.pt")
    loaded = load_residual(tmp_path / "two.pt")
    assert loaded.model.previous == 2 and loaded.fingerprint == codec2.series_residual.fingerprint


def test_previous_planes_repeat_the_farthest_slice_given():
    a, b, c = (np.full((3, 2), v, np.int16) for v in (1, 2, 3))
    assert previous_planes([a], 2)[:, 0, 0].tolist() == [1, 1]
    assert previous_planes([a, b, c], 2)[:, 0, 0].tolist() == [1, 2]
    assert previous_planes([a, b], 1).shape == (1, 3, 2)
    with pytest.raises(InputError):
        previous_planes([], 2)
    assert as_slices(None) is None and len(as_slices(a)) == 1 and len(as_slices(np.stack([a, b]))) == 2
    with pytest.raises(InputError, match="previous= takes"):
        as_slices(np.zeros(5))


def test_training_bases_at_a_step_are_the_bases_series_slices_are_coded_on(codec):
    """A series slice's base has y at the bound's step (:func:`medvae.prediction.base_step`):
    ``base_pairs(..., base_step=s)`` (``medvae train-residual --base-step s``) trains on the very
    pixels the coder builds the residual on, not on those of the unit step."""
    from medvae import prediction
    from medvae.residual.training import base_pairs

    before, image = _volume(2, shape=(96, 80))
    step = prediction.block_step(medvae.read_header(codec.compress(image, max_error=2, previous=before)).base_prediction)
    coded_on = codec.bounded_coder(image, previous=before).base(2)  # the base of bounds 1 and 2
    assert step >= prediction.base_step(2) == prediction.base_step(1) != prediction.UNIT_STEP  # or the coarser step of its noise
    slices = [Slice(image, 12, "CT", "p", "vol.nii", 1)]
    [pair] = base_pairs(codec, slices, progress=False, base_step=step)
    np.testing.assert_array_equal(pair.base, coded_on)
    assert not np.array_equal(pair.base, base_pairs(codec, slices, progress=False)[0].base)


# --- independent chains in worker processes (medvae.workers) ----------------------------------


def test_chains_coded_in_worker_processes_give_the_same_files_and_slices(codec2):
    volume = _volume(7)
    files = codec2.compress_series(volume, max_error=1, max_chain=2, workers=1)
    assert codec2.compress_series(volume, max_error=1, max_chain=2, workers=2) == files
    decoded = codec2.decompress_series(files, workers=2)
    for image, alone in zip(decoded, codec2.decompress_series(files, workers=1)):
        np.testing.assert_array_equal(image, alone)


def test_slices_coded_alone_run_in_worker_processes_too(codec, monkeypatch):
    """With max_chain=0 every slice is a key slice: they are independent, so they go to the
    workers as the chains do (the count the coder asks for is the key slices'), with the same files."""
    from medvae import workers

    volume = _volume(4)
    asked = []
    monkeypatch.setattr("medvae.codec.worker_count", lambda n, device, width: asked.append(width) or workers.worker_count(n, device, width))
    files = codec.compress_series(volume, max_error=1, max_chain=0, workers=2)
    assert asked == [4] and files == codec.compress_series(volume, max_error=1, max_chain=0, workers=1)
    assert [image.tolist() for image in codec.decompress_series(files, workers=2)] == [
        image.tolist() for image in codec.decompress_series(files, workers=1)]
    assert asked[-1] == 4


@pytest.mark.parametrize("workers", [1, 2])
def test_each_file_is_handed_over_once_chosen_with_its_own_options(codec2, workers):
    """``written`` gets every slice's file once, each after the slice it was coded given (so a
    caller writing them out as they come never writes a file before the one it reads), and
    ``slice_options`` reach their slice alone: each file carries its own metadata. Decoding hands
    over each image as ``decoded`` the same way."""
    volume = _volume(5)
    handed: list[tuple[int, bytes]] = []
    files = codec2.compress_series(volume, max_error=1, max_chain=2, workers=workers, written=lambda k, data: handed.append((k, data)),
                                   slice_options=[{"metadata": f"slice {k}".encode()} for k in range(5)])
    assert sorted(k for k, _ in handed) == list(range(5)) and dict(handed) == dict(enumerate(files))
    order = [k for k, _ in handed]
    for k, reference in coding_plan(5, 2):
        assert reference is None or order.index(reference) < order.index(k)
    assert [bitstream.unpack(f)[2] for f in files] == [f"slice {k}".encode() for k in range(5)]
    plain = codec2.compress_series(volume, max_error=1, max_chain=2, workers=1)
    assert [bitstream.unpack(f)[1] for f in files] == [bitstream.unpack(f)[1] for f in plain]  # the same strings
    with pytest.raises(InputError, match="slice_options holds 2 mappings for 5 slices"):
        codec2.compress_series(volume, max_error=1, slice_options=[{}, {}])
    images: dict[int, np.ndarray] = {}
    decoded = codec2.decompress_series(files, workers=workers, decoded=lambda k, image: images.setdefault(k, image))
    assert sorted(images) == list(range(5)) and all(images[k] is decoded[k] for k in range(5))


def test_a_resumed_series_keeps_the_files_written_and_codes_the_rest_as_an_uninterrupted_run(codec2, monkeypatch):
    """``kept``: the files an interrupted run wrote are returned as they are and not handed over;
    a kept file is decoded only where a slice to code reads it (through its chain), its chain's
    step read back from it; so the slices coded give the files an uninterrupted run gives. The
    chains' first slices are made to keep the coarser step (CHAIN_TRIAL), which the later slices
    then follow only if the resumed run reads it back. Independent chains still run side by side."""
    def keep_the_coarser(self, k, coarser_step, result):  # StepSearch.offer, choosing the last candidate
        offered = self._offered.setdefault(k, {})
        offered[coarser_step] = result
        if len(offered) < len(self.candidates(k)):
            return None
        del self._offered[k]
        self._chosen[k] = self.candidates(k)[-1]
        return offered[self._chosen[k]]

    monkeypatch.setattr(StepSearch, "offer", keep_the_coarser)
    volume = _volume(5)  # max_chain 2: key slice 2, chains 1, 0 and 3, 4
    whole = codec2.compress_series(volume, max_error=2, max_chain=2, workers=1)
    assert [codec2.step_choice(volume[k], whole[k]) for k in (1, 3, 0, 4)] == [CHAIN_TRIAL] * 4
    decoded, handed, widths = [], [], []
    decompress, worker_count = codec2.decompress, medvae.codec.worker_count
    monkeypatch.setattr(codec2, "decompress", lambda data, **kw: decoded.append(data) or decompress(data, **kw))
    monkeypatch.setattr(medvae.codec, "worker_count", lambda workers, device, width: widths.append(width) or worker_count(workers, device, width))
    for kept, read, width in (({1: whole[1], 2: whole[2], 3: whole[3]}, [1, 2, 3], 2), ({0: whole[0], 1: whole[1]}, [], 2)):
        decoded.clear(), handed.clear()
        files = codec2.compress_series(volume, max_error=2, max_chain=2, workers=1, kept=kept,
                                       written=lambda k, data: handed.append(k))
        assert files == whole and sorted(handed) == sorted(set(range(5)) - set(kept))
        assert sorted(whole.index(data) for data in decoded) == read and widths[-1] == width
    other = codec2.compress_series(_volume(5, seed=3), max_error=2, max_chain=2, workers=1)
    with pytest.raises(KeptFileError, match="the kept file of slice 2 is not a lossless or near-lossless file of that slice"):
        codec2.compress_series(volume, max_error=2, max_chain=2, workers=1, kept={2: other[2]})
    with pytest.raises(KeptFileError, match="the kept file of slice 2 does not decode as this series codes it"):
        codec2.compress_series(volume, max_error=2, max_chain=2, workers=1, kept={2: whole[1]})  # slice 1 follows 2
    with pytest.raises(InputError, match="kept maps slice indexes from 0 to 4"):
        codec2.compress_series(volume, max_error=2, max_chain=2, kept={5: whole[0]})


def test_any_files_kept_give_the_uninterrupted_run(codec2):
    """Whichever files an interrupted run left (random subsets of two runs, backward and forward
    chains), the resumed run returns the uninterrupted run's files and writes the others."""
    volume = _volume(7)  # max_chain 2: key slice 2 (chains 1, 0 and 3, 4), key slice 5 (chain 6)
    whole = codec2.compress_series(volume, max_error=1, max_chain=2, workers=1)
    rng = np.random.default_rng(1)
    for _ in range(4):
        kept = {int(k): whole[k] for k in rng.choice(7, size=int(rng.integers(1, 6)), replace=False)}
        handed = []
        files = codec2.compress_series(volume, max_error=1, max_chain=2, kept=kept, written=lambda k, data: handed.append(k))
        assert files == whole and sorted(handed) == sorted(set(range(7)) - set(kept)), sorted(kept)


def test_a_damaged_file_raises_from_a_worker_process(codec2):
    files = codec2.compress_series(_volume(5), max_error=0, max_chain=2, workers=1)
    damaged = bytearray(files[4])  # the last slice of a chain: read by no other
    damaged[len(damaged) // 2] ^= 4
    with pytest.raises(BitstreamError):
        codec2.decompress_series([*files[:4], bytes(damaged)], workers=2)


# --- the encoder's step search (medvae.series.StepSearch) ---------------------------------------


def test_each_chain_keeps_the_step_its_first_slice_codes_smaller():
    """The first slice of each chain is coded with the rule's step and CHAIN_TRIAL quarters
    coarser and keeps the smaller file (the rule's on a tie); the rest of the chain takes its
    choice; key slices are coded once, with the rule's."""
    plan = coding_plan(7, 2)  # key 2: chains 1, 0 and 3, 4; key 5 (a run of two): chain 6
    search = StepSearch(plan)
    assert [search.candidates(k) for k in (2, 1, 3)] == [(0,), (0, CHAIN_TRIAL), (0, CHAIN_TRIAL)]
    assert search.offer(1, CHAIN_TRIAL, (b"xx", None)) is None  # waits for the other candidate
    assert search.offer(1, 0, (b"xxx", None)) == (b"xx", None)
    assert search.offer(3, 0, (b"xx", None)) is None
    assert search.offer(3, CHAIN_TRIAL, (b"yy", None)) == (b"xx", None)  # a tie: the rule's
    assert [search.candidates(k) for k in (0, 4)] == [(CHAIN_TRIAL,), (0,)]
    assert StepSearch(plan, search=False).candidates(1) == (0,)
    resumed = StepSearch(plan)  # a run that finds slice 1 written before: its choice read back from its file
    assert not resumed.ready(0) and resumed.ready(1) and resumed.ready(2)
    resumed.adopt(1, choice_of(step=9, rule=7))
    assert resumed.ready(0) and resumed.candidates(0) == (CHAIN_TRIAL,)
    assert [choice_of(7, 7), choice_of(9, 7), choice_of(16, 16)] == [0, CHAIN_TRIAL, 0]


def test_a_series_files_steps_are_the_smaller_files_steps(codec2):
    """On a real coding: each chain's first slice holds whichever of its two steps gives the smaller
    file (the files compress() writes for each), the next slice of the chain is coded as much
    coarser as its first, and the files decode within the bound."""
    volume = _volume(5)
    files = codec2.compress_series(volume, max_error=2, max_chain=2)
    decoded = codec2.decompress_series(files)
    rule = codec2.compress_series(volume, max_error=2, max_chain=2, step_search=False)
    for first, key, later in ((1, 2, 0), (3, 2, 4)):
        tried = [codec2.compress(volume[first], max_error=2, previous=[decoded[key]], coarser_step=c) for c in (0, CHAIN_TRIAL)]
        assert files[first] == min(tried, key=len) and rule[first] == tried[0]
        chosen = (0, CHAIN_TRIAL)[tried.index(files[first])]
        assert files[later] == codec2.compress(volume[later], max_error=2, previous=[decoded[first], decoded[key]], coarser_step=chosen)
    for image, back in zip(volume, decoded):
        assert np.abs(back.astype(np.int64) - image).max() <= 2


def test_a_coarser_step_is_for_files_that_record_it(codec):
    a, b, _ = _volume()
    with pytest.raises(InputError, match="coarser_step"):
        codec.compress(b, coarser_step=1)  # lossy
    for bad in (-1, 13, 1.5, True):
        with pytest.raises(InputError, match="coarser_step"):
            codec.compress(b, max_error=0, coarser_step=bad)
    unpredicted = copy.copy(codec)
    unpredicted.base_prediction = False
    with pytest.raises(InputError, match="coarser_step"):
        unpredicted.compress(b, max_error=0, previous=a, coarser_step=2)
    data = codec.compress(b, max_error=0, previous=a, coarser_step=2)
    assert prediction.block_step(bitstream.read_header(data).base_prediction) == prediction.block_step(
        bitstream.read_header(codec.compress(b, max_error=0, previous=a)).base_prediction) + 2
    np.testing.assert_array_equal(codec.decompress(data, previous=a), b)
