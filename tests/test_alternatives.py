"""Alternative weights of a variable-rate family: the lossy encoder codes with each and keeps the
file of lowest rate–distortion cost; every file decodes with the weights it names."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae import metrics, zoo
from medvae.checkpoint import save_model
from medvae.rate_control import QUALITY_GRID, Choice, Ladder, Target, compress_to
from tests.conftest import small_model
from tools.export_weights import export


def _cost(codec: medvae.Codec, image: np.ndarray, quality: float) -> tuple[float, bytes]:
    """A file of ``codec`` alone and its cost: bits plus λ·255²·(squared error over the span²).
    Whole-file bits stand in for the coded strings' (the headers of two such files are as long)."""
    data, pixels = codec.compress_with_pixels(image, quality=quality)
    lo, hi = medvae.read_header(data).value_range
    squared_error = float(np.square(pixels.astype(np.float64) - image).sum())
    return 8 * len(data) + codec.lmbda * 255**2 * squared_error / (hi - lo) ** 2, data


@pytest.mark.parametrize("quality", [0.5, 2.5, 6])
def test_the_encoder_keeps_the_file_of_lower_cost_and_decodes_either(ct_like, quality):
    first, second = (medvae.Codec(small_model("medvae-ctx", seed=seed)) for seed in (1, 2))
    (cost_1, file_1), (cost_2, file_2) = _cost(first, ct_like, quality), _cost(second, ct_like, quality)
    assert cost_1 != cost_2 and file_1 != file_2
    best = file_1 if cost_1 < cost_2 else file_2
    # In either order: one of the two codecs keeps its own weights' file, the other its alternative's.
    for main, other in ((1, 2), (2, 1)):
        both = medvae.Codec(small_model("medvae-ctx", seed=main), alternatives=[medvae.Codec(small_model("medvae-ctx", seed=other))])
        data = both.compress(ct_like, quality=quality)
        assert data == best
        np.testing.assert_array_equal(both.decompress(data), first.decompress(file_1) if best == file_1 else second.decompress(file_2))
        if quality == 6:  # reconstruct() (training logs) shows what the default quality's file decodes to
            both = medvae.Codec(small_model("medvae-ctx", seed=main), alternatives=[medvae.Codec(small_model("medvae-ctx", seed=other))], quality=6)
            np.testing.assert_array_equal(both.reconstruct(ct_like)[0], both.decompress(best))
            assert both.compress(ct_like) == best  # its alternative, whose default is 5, codes at 6 too
    alone = first if best == file_2 else second  # weights that did not write the kept file
    with pytest.raises(medvae.BitstreamError, match="was written with"):
        alone.decompress(best)


def test_alternatives_must_be_variable_rate_weights_of_the_same_family_and_levels():
    ctx = small_model("medvae-ctx", seed=1)
    for other in (small_model("medvae-vr", seed=2), small_model("medvae", seed=2)):
        with pytest.raises(medvae.InputError, match="same levels"):
            medvae.Codec(ctx, alternatives=[medvae.Codec(other)])
    fewer = medvae.models.create("medvae-ctx", N=16, M=24, lmbdas=[0.01, 0.1, 1.0])
    with pytest.raises(medvae.InputError, match="same levels"):
        medvae.Codec(ctx, alternatives=[medvae.Codec(fewer)])
    with pytest.raises(medvae.InputError, match="same levels"):
        medvae.Codec(small_model("medvae", seed=1), alternatives=[medvae.Codec(ctx)])


def _answer(image: np.ndarray, target: Target, codec: medvae.Codec) -> Choice | None:
    """What rate control chooses with ``codec`` alone, or None when it cannot meet ``target``."""
    try:
        return compress_to(image, target, Ladder.of(codec))
    except medvae.InputError:
        return None


def test_rate_control_searches_each_weights_apart_and_keeps_the_better_answer(ct_like, syntheses):
    first, second = (small_model("medvae-ctx", seed=seed) for seed in (1, 2))
    both = medvae.Codec(first, alternatives=[medvae.Codec(second)])
    alone = [medvae.Codec(first), medvae.Codec(second)]
    middle = 8 * len(both.compress(ct_like, quality=4)) / ct_like.size
    psnr = metrics.psnr(ct_like, both.decompress(both.compress(ct_like, quality=3)), 16)
    for target in (Target(bpp=middle), Target(psnr=psnr)):
        syntheses.clear()
        choice = compress_to(ct_like, target, Ladder.of(both))
        searched = len(syntheses)
        answers = [answer for codec in alone if (answer := _answer(ct_like, target, codec))]
        if target.bpp is not None:  # the highest PSNR either weights reaches within the budget
            assert choice.bpp <= middle and choice.psnr == max(a.psnr for a in answers)
            assert searched == 2  # a budget is searched on sizes; only each weights' answer is synthesized
            for answer in answers:  # each weights' answer: its grid's highest quality that fits
                quality = float(answer.setting.split()[1])
                codec = next(c for c in alone if c.fingerprint == medvae.read_header(answer.data).fingerprint)
                assert quality + QUALITY_GRID > 7 or len(codec.compress(ct_like, quality=quality + QUALITY_GRID)) * 8 / ct_like.size > middle
        else:  # the smaller of the files either weights needs
            assert choice.psnr >= psnr and len(choice.data) == min(len(a.data) for a in answers)
        assert choice.data in [a.data for a in answers]
        # The setting names the weights and the quality; those weights alone code the same bytes.
        fingerprint = medvae.read_header(choice.data).fingerprint
        quality = float(choice.setting.split()[1])
        assert choice.setting == f"quality {quality:g} (weights {fingerprint[:8]})"
        writer = next(codec for codec in alone if codec.fingerprint == fingerprint)
        assert writer.compress(ct_like, quality=quality) == choice.data
        assert choice.psnr == pytest.approx(metrics.psnr(ct_like, both.decompress(choice.data), 16))


def test_shipped_alternatives_load_with_the_family_and_their_files_decode_by_fingerprint(weights_dir, tmp_path, ct_like):
    for name, seed in (("first", 1), ("second", 2)):
        save_model(small_model("medvae-ctx", seed=seed), tmp_path / f"{name}.pt")
    with pytest.raises(ValueError, match="before an alternative"):
        export(tmp_path / "second.pt", 5, weights_dir=weights_dir, alternative=True)
    main = export(tmp_path / "first.pt", 5, weights_dir=weights_dir)
    alternative = export(tmp_path / "second.pt", 5, weights_dir=weights_dir, alternative=True)
    export(tmp_path / "second.pt", 5, weights_dir=weights_dir, alternative=True)  # again: replaces, no duplicate
    record = zoo.index()["medvae-ctx"]["alternatives"]
    assert len(record) == 1 and alternative.name == f"medvae-ctx-{record[0]['fingerprint'][:8]}.pt"
    assert zoo.alternative_paths(main) == [alternative] and zoo.alternative_paths(alternative) == []
    assert zoo.shipped_path("medvae-ctx") == main

    codec = medvae.load("medvae-ctx", quality=2.5)
    assert [other.fingerprint for other in codec.alternatives] == [record[0]["fingerprint"]]
    assert medvae.compress(ct_like, 2.5) == codec.compress(ct_like)
    # A file of the alternative alone: found by its fingerprint, decoded by the family's codec too.
    data = medvae.load(alternative).compress(ct_like, quality=2.5)
    assert medvae.read_header(data).fingerprint == record[0]["fingerprint"]
    np.testing.assert_array_equal(medvae.decompress(data), codec.decompress(data))
    with pytest.raises(ValueError, match="variable-rate"):
        save_model(small_model("medvae", seed=3), tmp_path / "ladder.pt")
        export(tmp_path / "ladder.pt", 1, weights_dir=weights_dir, alternative=True)
