"""``rnn-conv``: progressive coding through :class:`medvae.Codec`, exact decoding, damaged files, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medvae
from medvae import bitstream, zoo
from medvae.checkpoint import save_model
from medvae.errors import BitstreamError, InputError
from medvae.evaluation.codecs import expand
from medvae.evaluation.datasets import load_images
from medvae.exact.image import NormalizedImage
from medvae.losses import RateDistortionLoss
from medvae.metrics import psnr
from medvae.models.rnn_conv import fit_bit_tables
from tests.conftest import CORPUS, small_model


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    """A small untrained rnn-conv with uniform bit tables: every coded bit costs one bit, so
    damage to a string changes the decoded bits."""
    return medvae.Codec(small_model("rnn-conv", seed=3))


def test_bit_tables_are_counted_from_the_codes():
    model = small_model("rnn-conv", seed=3)
    x = NormalizedImage(_image(), -1024, 1400, 16).tensor().float()
    fit_bit_tables(model, [x])
    with torch.no_grad():
        bits = model.eval()(x)["bits"]
    tables = model.bit_tables
    first = (bits[0] > 0).double().sum(dim=(0, 2, 3))  # iteration 0: context 0 only
    np.testing.assert_array_equal(tables.ones[0 : 2 * model.bits : 2], first + 1)  # Laplace: +1
    cdf = tables._quantized_cdf[0]
    p_one = (cdf[2] - cdf[1]) / 2**16
    assert p_one == pytest.approx(float(tables.ones[0] / tables.total[0]), abs=2e-3)
    before = medvae.Codec(small_model("rnn-conv", seed=3)).compress(_image())
    assert len(medvae.Codec(model).compress(_image())) < len(before)  # counted tables code in fewer bytes


def _image(shape=(75, 90), seed=0) -> np.ndarray:
    """int16 with negative values, sizes not multiples of 16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.where((yy - 37) ** 2 + (xx - 45) ** 2 < 30**2, 60, -1024).astype(np.int16)
    image[20:35, 30:50] = 1300
    return (image + rng.normal(0, 15, shape)).clip(-1024, 1400).astype(np.int16)


def test_codes_and_decodes_at_several_iteration_counts(codec):
    image = _image()
    sizes = []
    for k in (1, 2, 5, codec.model.max_iterations):
        data = codec.compress(image, iterations=k, bits_stored=12)
        decoded = codec.decompress(data)
        assert decoded.shape == image.shape and decoded.dtype == image.dtype
        assert decoded.min() >= -1024 and decoded.max() <= 1400
        sizes.append(len(data))
        assert len(bitstream.unpack(data)[1]) == k  # one string per iteration at this size
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)  # every iteration adds bytes
    assert codec.compress(image) == codec.compress(image, iterations=codec.model.max_iterations)


def test_one_progressive_run_writes_the_file_of_every_iteration_count(codec):
    image = _image(seed=1)
    files = codec.compress_progressive(image, bits_stored=12)
    assert len(files) == codec.model.max_iterations
    for k in (1, 3, len(files)):
        assert files[k - 1] == codec.compress(image, iterations=k, bits_stored=12)


def test_the_exact_decoder_follows_the_float_model(codec):
    """The twin computes what the float model computes, to within the twin's roundings (the
    float model is only the reference here: files decode with the twin alone)."""
    image = _image(seed=2)
    x = NormalizedImage(image, int(image.min()), int(image.max()), 16).tensor().float()
    with torch.no_grad():
        steps = codec.model.eval()(x, iterations=3)["x_hat_steps"]
    for k, step in enumerate(steps, 1):
        decoded = codec.decompress(codec.compress(image, iterations=k, value_range=(int(image.min()), int(image.max()))))
        reference = (step[0, 0, : image.shape[0], : image.shape[1]].clamp(0, 1) * float(image.max() - image.min()) + float(image.min())).round()
        assert psnr(reference.numpy().astype(np.int16), decoded, 12) > 60


def test_iteration_counts_outside_the_model_are_refused(codec, family_codec):
    with pytest.raises(InputError, match="1 to 8 iterations"):
        codec.compress(_image(), iterations=0)
    with pytest.raises(InputError, match="1 to 8 iterations"):
        codec.compress(_image(), iterations=9)
    with pytest.raises(InputError, match="progressive"):
        family_codec.compress(_image(), iterations=2)


def test_damaged_streams_raise_bitstream_error(codec):
    data = codec.compress(_image(), iterations=4)
    header, strings, metadata = bitstream.unpack(data)
    with pytest.raises(BitstreamError):
        codec.decompress(data[:-7])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(flipped))
    forged = [
        strings[:-1],  # an iteration dropped: another image, refused by the pixel checksum
        strings + strings[-1:] * 8,  # more iterations than the model has
        [s[: len(s) // 3] for s in strings],  # strings cut short
        [b"" for _ in strings],
        [bytes(reversed(s)) for s in strings],
    ]
    for forged_strings in forged:
        with pytest.raises(BitstreamError):
            codec.decompress(bitstream.pack(header, forged_strings, metadata))


def test_the_loss_counts_every_iteration():
    x = torch.full((1, 1, 16, 16), 0.5)
    criterion = RateDistortionLoss(1.0)
    good, bad = torch.full_like(x, 0.5), torch.full_like(x, 0.6)
    output = {"x_hat": good, "likelihoods": {}, "x_hat_steps": [bad, good], "step_weights": torch.tensor([1.0, 1.0])}
    losses = criterion(output, x)
    assert float(losses["bpp"]) == 0.0
    assert float(losses["distortion"]) == pytest.approx(255**2 * 0.01 / 2, rel=1e-4)  # the first step's error counts


def test_evaluation_gives_one_point_per_iteration_count(codec, tmp_path):
    path = tmp_path / "rnn.pt"
    save_model(codec.model, path)
    points = expand(f"rnn-conv={path}")
    assert [p.value for p in points] == list(range(1, codec.model.max_iterations + 1))
    image = _image(seed=4)
    files = [p.encode(image, 12) for p in points]
    assert all(a is b for a, b in zip(files, points[0].files.get(image, 12)))  # one encoder run
    np.testing.assert_array_equal(points[2].decode(files[2]), medvae.Codec(codec.model).decompress(files[2]))


# --- the shipped weights on a real slice ---------------------------------------------------

needs_corpus = pytest.mark.skipif(not (CORPUS / "MANIFEST.csv").is_file(), reason=f"corpus not found at {CORPUS}")
needs_weights = pytest.mark.skipif("rnn-conv" not in zoo.index(), reason="no shipped rnn-conv weights installed")


@pytest.fixture(scope="module")
def real_slice():
    [item] = load_images([CORPUS / "MANIFEST.csv"], "test", modality="CT", max_slices=1)[:1]
    return item.pixels, item.bits_stored


@needs_corpus
@needs_weights
def test_more_iterations_never_decode_worse_on_a_real_slice(real_slice):
    image, bits = real_slice
    codec = medvae.load("rnn-conv")
    files = codec.compress_progressive(image, bits_stored=bits)
    quality = [psnr(image, codec.decompress(f), bits) for f in files]
    assert all(b > a for a, b in zip(quality, quality[1:])), quality
    strings = [sum(map(len, bitstream.unpack(f)[1])) for f in files]
    raw = [k * codec.model.bits * image.size / 256 / 8 for k in range(1, len(files) + 1)]
    assert strings[-1] < 0.8 * raw[-1]  # on a whole CT slice the bit tables save a fifth of the bits and more
