"""Rate control: ``ratio``, ``bpp`` and ``psnr`` targets over the shipped qualities and
near-lossless error bounds; the figures reported are the file's own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import medvae
from medvae import bitstream, metrics
from medvae.cli import main
from medvae.errors import InputError
from medvae.rate_control import LARGEST_BOUND, NEAR_LOSSLESS, Ladder, Target, _bound_start, _first, compress_to, near_lossless_setting

BITS = 12


@pytest.fixture(scope="module")
def slice12() -> np.ndarray:
    """A 12-bit CT-like slice (uint16, stored as CT is: HU + 1024), 96×96."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:96, :96]
    body = (yy - 48) ** 2 / 42**2 + (xx - 48) ** 2 / 36**2 < 1
    hu = np.where(body, 40 + 60 * np.sin(xx / 7) + rng.normal(0, 12, body.shape), -1000)
    hu[40:52, 30:44] = 900
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def ladder() -> Ladder:
    return Ladder.shipped("medvae")


def _coded(image, codec, max_error=None, tighter_passes=0, optimize=False):
    data = codec.compress(image, bits_stored=BITS, max_error=max_error, tighter_passes=tighter_passes, optimize=optimize)
    return len(data), metrics.psnr(image, codec.decompress(data), BITS)


CURVES = ["straight", "concave", "log", "convex", "steps", "rough"]


@pytest.mark.parametrize("curve", CURVES)
def test_the_search_finds_the_first_candidate_that_meets_the_goal(curve):
    """Any rising curve, searched from anywhere or from nowhere: the answer is the first
    candidate at or above the goal (None when there is none), found with at most about three
    times bisection's codings (a steeply convex curve comes near that), fewer than bisection's 9 on
    smooth curves of 449 (straight, concave, and log-like as log(bpp) along the quality), and two
    when it starts at the answer."""
    rng = np.random.default_rng(CURVES.index(curve))
    for n in (1, 2, 3, 17, 449, 513):
        x = np.linspace(0, 1, n)
        values = {"straight": 10 * x, "concave": 10 * np.sqrt(x), "log": np.log(0.05 + 3 * x**1.5), "convex": np.expm1(20 * x), "steps": np.floor(8 * x),
                  "rough": np.cumsum(rng.exponential(1, n) * (rng.random(n) < 0.3))}[curve]
        for goal in (-1.0, *np.quantile(values, np.linspace(0, 1, 21)), values[-1] + 1):
            expected = next((i for i in range(n) if values[i] >= goal), None)
            for start in (None, 0, n - 1, n // 3, *((expected - 3, expected, expected + 3) if expected is not None else ())):
                coded = set()

                def value(i: int) -> float:
                    coded.add(i)
                    return float(values[i])

                found = _first([lambda i=i: value(i) for i in range(n)], goal, start)
                assert found == expected, (n, goal, start)
                assert len(coded) <= 4 + 3 * int(np.ceil(np.log2(n))), (n, goal, start, sorted(coded))
                if n > 100 and start is None and curve in ("straight", "concave", "log"):
                    assert len(coded) <= {"straight": 4, "concave": 6, "log": 8}[curve], (n, goal, sorted(coded))
                if start == expected and start:
                    assert sorted(coded) == [start - 1, start]


def test_the_search_interpolates_along_the_positions_it_is_given():
    """Near-lossless bounds are placed by −log(2τ + 1): a PSNR straight along that axis is found in
    a few codings, and the reversed, negated axis of a budget search finds the same boundary."""
    positions = [-np.log(2 * t - j / 2 + 1) for t, j in NEAR_LOSSLESS]
    psnr = [60 + 20 * p / np.log(10) for p in positions]  # error spread evenly over ±τ: −20·log10(2τ + 1) + c
    for goal in (30.5, 41.0, 52.3, 59.0):
        coded = []
        found = _first([lambda i=i: coded.append(i) or psnr[i] for i in range(len(psnr))], goal, None, positions)
        assert found == next(i for i, v in enumerate(psnr) if v >= goal) and len(coded) <= 5, (goal, coded)
        n = len(psnr)  # from the top down, as budgets are searched: the last value at or below the goal
        down = _first([lambda i=i: -psnr[n - 1 - i] for i in range(n)], -goal, None, [-p for p in positions[::-1]])
        assert n - 1 - down == max(i for i, v in enumerate(psnr) if v <= goal)


def test_a_psnr_search_over_the_bounds_starts_at_the_loosest_bound_the_bases_error_predicts_meets_it():
    rng = np.random.default_rng(7)
    base = rng.integers(1000, 3000, (64, 80)).astype(np.uint16)
    image = np.clip(base + np.round(rng.laplace(0, 9, base.shape)), 0, 4095).astype(np.uint16)  # the base's error: Laplace, b = 9

    def predicted(bound: int) -> float:  # r quantized around 0 at the residual layer's step
        r = image.astype(np.int64) - base
        step = 2 * bound + 1
        error = r - step * (np.sign(r) * ((np.abs(r) + bound) // step))
        return metrics.psnr_from_mse(float(np.mean(error.astype(float) ** 2)), 4095)

    for psnr in (50.0, 55.0, 60.0, 70.0):
        bound, passes = NEAR_LOSSLESS[_bound_start(image, base, psnr, BITS)]
        assert passes == 0 and predicted(bound) >= psnr and (bound == LARGEST_BOUND or predicted(bound + 1) < psnr), (psnr, bound)
    assert NEAR_LOSSLESS[_bound_start(image, base, 500.0, BITS)] == (1, 0)  # nothing but lossless: start at the tightest bound
    assert _bound_start(image, base, predicted(LARGEST_BOUND) - 1, BITS) == 0  # the loosest meets it


def test_targets_are_checked():
    for bad in ({}, {"ratio": 10, "psnr": 50}, {"ratio": 0.5}, {"bpp": -1}, {"psnr": float("nan")}):
        with pytest.raises(InputError):
            Target(**bad)
    assert str(Target(ratio=10)) == "ratio 10:1" and str(Target(psnr=50)) == "PSNR 50 dB"


def test_a_psnr_target_gives_the_first_quality_that_meets_it(slice12, ladder):
    qualities = [_coded(slice12, codec) for _, codec in ladder.lossy]
    target = (qualities[1][1] + qualities[2][1]) / 2  # between q2 and q3
    choice = compress_to(slice12, Target(psnr=target), ladder, bits_stored=BITS)
    assert choice.setting == "q3" and choice.psnr >= target
    assert (len(choice.data), round(choice.psnr, 6)) == (qualities[2][0], round(qualities[2][1], 6))  # the file's own figures
    np.testing.assert_array_equal(medvae.decompress(choice.data), ladder.lossy[2][1].decompress(choice.data))


@pytest.mark.parametrize("optimized", [True, False], ids=["optimized", "bounded"])
def test_beyond_the_lossy_range_near_lossless_takes_over_and_lossless_meets_any_target(slice12, ladder, optimized):
    """Above the lossy reach the search goes on along the near-lossless candidates: optimized ones
    by default (the file declares the error it has), or, with ``Ladder(optimized=False)``, files
    that keep each bound τ; lossless coding meets any target."""
    ladder = dataclasses.replace(ladder, optimized=optimized)
    best_lossy = max(_coded(slice12, codec)[1] for _, codec in ladder.lossy)
    choice = compress_to(slice12, Target(psnr=best_lossy + 6), ladder, bits_stored=BITS)
    header = medvae.read_header(choice.data)
    bound, tighter = header.quantizer_bound if optimized else header.max_error, header.tighter_passes
    assert choice.setting == near_lossless_setting(bound, tighter, optimized) and choice.psnr >= best_lossy + 6
    assert (header.version in bitstream.OPTIMIZED_VERSIONS) == optimized
    decoded = medvae.decompress(choice.data)
    error = np.abs(decoded.astype(int) - slice12).max()
    assert error == header.max_error and (optimized or error <= bound)  # the bound declared is the one the pixels have
    looser = NEAR_LOSSLESS[NEAR_LOSSLESS.index((bound, tighter)) - 1]  # the next candidate down misses the target
    assert _coded(slice12, ladder.near_lossless, *looser, optimize=optimized)[1] < best_lossy + 6
    exact = compress_to(slice12, Target(psnr=500), ladder, bits_stored=BITS)
    assert exact.setting == "max error 0" and exact.psnr == float("inf")
    np.testing.assert_array_equal(medvae.decompress(exact.data), slice12)


def test_a_budget_gives_the_best_file_that_fits(slice12, ladder):
    sizes = [_coded(slice12, codec)[0] for _, codec in ladder.lossy]
    budget = 8 * (sizes[3] + 1) / slice12.size  # q4 fits, q5 does not
    choice = compress_to(slice12, Target(bpp=budget), ladder, bits_stored=BITS)
    assert choice.bpp <= budget and choice.setting in ("q4",) + tuple(near_lossless_setting(*c, True) for c in NEAR_LOSSLESS)
    assert choice.psnr >= _coded(slice12, ladder.lossy[3][1])[1]
    ratio = compress_to(slice12, Target(ratio=8), ladder, bits_stored=BITS)
    assert ratio.ratio >= 8 and ratio.ratio == pytest.approx(slice12.size * BITS / 8 / len(ratio.data))
    with pytest.raises(InputError, match="the smallest file is"):
        compress_to(slice12, Target(bpp=0.001), ladder, bits_stored=BITS)


def test_a_search_from_the_previous_slices_choice_gives_the_same_file(slice12, ladder):
    neighbour = np.clip(slice12.astype(np.int32) + np.random.default_rng(5).integers(-9, 10, slice12.shape), 0, 4095).astype(np.uint16)
    for target in (Target(psnr=50), Target(bpp=1.5), Target(ratio=5)):
        previous = compress_to(slice12, target, ladder, bits_stored=BITS)
        assert compress_to(neighbour, target, ladder, bits_stored=BITS, previous=previous) == compress_to(neighbour, target, ladder, bits_stored=BITS)


def test_weights_without_a_residual_model_stay_lossy(slice12):
    codec = medvae.load("medvae", 2)
    assert codec.residual is None
    with pytest.raises(InputError, match="residual model"):
        compress_to(slice12, Target(psnr=500), Ladder.of(codec), bits_stored=BITS)


def test_the_package_function_takes_a_target_and_refuses_two(slice12):
    data = medvae.compress(slice12, psnr=40, bits_stored=BITS)
    assert metrics.psnr(slice12, medvae.decompress(data), BITS) >= 40
    with pytest.raises(InputError, match="replaces quality"):
        medvae.compress(slice12, 3, psnr=40)
    with pytest.raises(InputError, match="previous_slice="):  # a slice array, not the previous slice's search result
        medvae.compress(slice12, psnr=40, previous=slice12)


def test_cli_rate_control(slice12, tmp_path, capsys):
    np.save(tmp_path / "a.npy", slice12)
    assert main(["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "out"), "--psnr", "45"]) == 0
    printed = capsys.readouterr()
    assert "note: PSNR 45 dB: " in printed.out + printed.err  # the setting chosen and what it achieves
    data = (tmp_path / "out" / "a.mvae").read_bytes()
    assert metrics.psnr(slice12, medvae.decompress(data), 16) >= 45

    def exit_code(args):
        try:
            return main(args)
        except SystemExit as exc:  # argparse refuses a malformed value itself
            return exc.code

    for bad in (["--psnr", "45", "--quality", "3"], ["--psnr", "-1"], ["--psnr", "45", "--lossless"], ["--ratio", "0.5"]):
        assert exit_code(["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "x"), *bad]) == 2
        assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def corpus_slices() -> list[tuple[str, np.ndarray, int]]:
    """Three real test-split slices of three sizes: a CT slice (512×512), crops of an MR (320×256)
    and of a radiograph (256×384), with their bits stored."""
    import pydicom

    from tests.conftest import CORPUS

    files = [CORPUS / "ct/pydicom-data/bad_sequence.dcm", CORPUS / "mr/pydicom-data/MR2_UNCR.dcm", CORPUS / "xr/pydicom-data/RG3_UNCR.dcm"]
    if not all(f.is_file() for f in files):
        pytest.skip(f"sample corpus not found at {CORPUS}")
    out = []
    for path, (r, c, h, w), target in zip(files, [(0, 0, 512, 512), (300, 380, 320, 256), (700, 600, 256, 384)], ("bpp", "ratio", "psnr")):
        ds = pydicom.dcmread(path)
        out.append((target, np.ascontiguousarray(ds.pixel_array[r : r + h, c : c + w]), int(ds.BitsStored)))
    return out


def test_variable_rate_control_meets_each_target_with_the_best_quality_of_its_grid(corpus_slices):
    ladder = Ladder.shipped("medvae-vr")
    (_, codec), = ladder.lossy
    assert codec.variable_rate and ladder.near_lossless is not None

    def coded(image, bits, quality):
        data = codec.compress(image, bits_stored=bits, quality=quality)
        return metrics.bpp(len(data), image.shape), metrics.psnr(image, codec.decompress(data), bits)

    for kind, image, bits in corpus_slices:
        (low_bpp, low_psnr), (high_bpp, high_psnr) = coded(image, bits, 1), coded(image, bits, 7)
        if kind == "psnr":
            target = Target(psnr=(low_psnr + high_psnr) / 2)
        elif kind == "bpp":
            target = Target(bpp=(low_bpp * high_bpp) ** 0.5)
        else:
            target = Target(ratio=bits / (low_bpp * high_bpp) ** 0.5)
        choice = compress_to(image, target, ladder, bits_stored=bits)
        assert choice.setting.startswith("quality "), (kind, choice.setting)
        quality = float(choice.setting.split()[1])
        neighbour = coded(image, bits, quality + (-1 if kind == "psnr" else 1) / 64)
        if kind == "psnr":  # the smallest file that meets it: one grid step lower misses it
            assert choice.psnr >= target.psnr > neighbour[1]
        elif kind == "bpp":  # the best file within the budget: one grid step higher exceeds it
            assert choice.bpp <= target.bpp < neighbour[0]
        else:
            assert choice.ratio >= target.ratio and choice.ratio == pytest.approx(image.size * bits / 8 / len(choice.data))
            assert neighbour[0] > bits / target.ratio


def test_impossible_targets_name_the_best_the_weights_can_do(slice12):
    codec = medvae.load("medvae-vr")
    with pytest.raises(InputError, match=r"the most these weights reach is \d+\.\d\d dB \(quality 7"):
        compress_to(slice12, Target(psnr=300), Ladder.of(codec), bits_stored=BITS)
    with pytest.raises(InputError, match=r"the smallest file is \d+\.\d+ bpp \(ratio \d+\.\d:1, quality 0\)"):
        compress_to(slice12, Target(bpp=0.001), Ladder.of(codec), bits_stored=BITS)
    with pytest.raises(InputError, match="at least 1"):
        Target(ratio=0.9)


def test_a_budget_below_quality_1_is_met_by_an_extrapolated_quality(corpus_slices):
    """A bpp below what quality 1 spends (0.05 bpp on CT is one) is met with a quality under 1,
    within the budget, and the file decodes to the PSNR it reports."""
    (_, image, bits), *_ = corpus_slices
    ladder = Ladder.shipped("medvae-vr")
    (_, codec), = ladder.lossy
    floor = metrics.bpp(len(codec.compress(image, bits_stored=bits, quality=1)), image.shape)
    choice = compress_to(image, Target(bpp=0.75 * floor), ladder, bits_stored=bits)
    assert choice.setting.startswith("quality ") and float(choice.setting.split()[1]) < 1, choice.setting
    assert choice.bpp <= 0.75 * floor
    assert choice.psnr == pytest.approx(metrics.psnr(image, codec.decompress(choice.data), bits), abs=1e-9)


def test_a_series_slice_is_coded_given_the_one_before(slice12, ladder):
    """``previous_slice``: the near-lossless candidates read the previous slice (format 10, read twice), the
    choice carries the pixels its file decodes to (the next slice's previous slice), and the file
    decodes only with that slice; a lossy choice ignores it."""
    rng = np.random.default_rng(9)
    before = np.clip(np.roll(slice12, 1, axis=1).astype(np.int64) + rng.integers(-6, 7, slice12.shape), 0, 4095).astype(np.uint16)
    alone = compress_to(slice12, Target(psnr=65), ladder, bits_stored=BITS)
    given = compress_to(slice12, Target(psnr=65), ladder, bits_stored=BITS, previous_slice=before)
    assert medvae.bitstream.layout(medvae.bitstream.read_header(given.data).version) == medvae.bitstream.TWO_PREVIOUS_VERSION and given.psnr >= 65
    np.testing.assert_array_equal(given.pixels, medvae.decompress(given.data, previous=before))
    np.testing.assert_array_equal(alone.pixels, medvae.decompress(alone.data))
    with pytest.raises(medvae.BitstreamError, match="previous slice"):
        medvae.decompress(given.data)
    lossy = compress_to(slice12, Target(psnr=40), ladder, bits_stored=BITS, previous_slice=before)
    assert medvae.bitstream.read_header(lossy.data).version < 8
