"""``medvae-ctx``: means and a checkerboard context on top of ``medvae-vr``, coded exactly in two passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medvae
from medvae import bitstream
from medvae.errors import BitstreamError
from medvae.intensity import normalize
from medvae.losses import bits_per_pixel
from medvae.models.context import anchor_mask
from medvae.models.widen import initialize_from
from medvae.refine import quantized_forward
from tests.conftest import small_model


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    return medvae.Codec(small_model("medvae-ctx", seed=5))


def test_starts_exactly_as_the_variable_rate_model_it_is_fine_tuned_from(ct_like):
    """The context's last layer starts at zero and the scale head carries over, so step 0 of
    fine-tuning codes as the base does: same rates, same reconstruction, at every level."""
    base = small_model("medvae-vr", seed=2)
    model = medvae.models.create("medvae-ctx", N=16, M=24)
    initialize_from(model, base)
    torch.testing.assert_close(model.scale_head.scale[1].weight, base.scale_head[1].weight, rtol=0, atol=0)
    x = torch.from_numpy(normalize(ct_like[:64, :64], -1024, 1200))[None, None]
    model.eval(), base.eval()
    with torch.no_grad():
        for quality in (1, 4, 7):
            model.quality = base.quality = quality
            ours, theirs = model(x), base(x)
            torch.testing.assert_close(ours["x_hat"], theirs["x_hat"], rtol=0, atol=1e-6)
            for key in ("y", "z"):
                torch.testing.assert_close(ours["likelihoods"][key], theirs["likelihoods"][key], rtol=0, atol=1e-6)


def test_the_context_of_a_non_anchor_reads_anchors_only():
    model = small_model("medvae-ctx")
    y = torch.rand(1, 24, 12, 12, requires_grad=True)
    model.context_model(y)[0, :, 5, 6].abs().sum().backward()  # (5 + 6) odd: a non-anchor
    read = y.grad.abs().sum(dim=(0, 1)) > 0
    anchors = anchor_mask(12, 12)[0, 0]
    assert read.any() and not (read & ~anchors).any()


def test_the_float_model_estimates_what_the_exact_coder_writes(codec):
    """The training-time path (rounded around the means, anchors first) predicts the exact
    coder's rate and reconstruction: the context in training is the one the decoder uses."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :96]
    image = (2000 + 800 * np.sin(xx / 9) * np.cos(yy / 13) + rng.normal(0, 40, xx.shape)).clip(0, 4095).astype(np.uint16)
    data = codec.compress(image, quality=4.5)
    decoded = codec.decompress(data)
    _, value_range, x = codec._prepare(image, None)
    codec.model.quality = 4.5
    with torch.no_grad():
        out = quantized_forward(codec.model, codec.model.analyze(x.tensor().float()))
    estimate = float(bits_per_pixel(out["likelihoods"], 1))
    real = 8 * sum(len(s) for s in bitstream.unpack(data)[1])
    assert abs(real - estimate) <= 0.15 * estimate + 200, (real, estimate)
    lo, hi = value_range
    x_hat = out["x_hat"][0, 0, : image.shape[0], : image.shape[1]].clamp(0, 1).numpy()
    assert np.abs(x_hat - normalize(decoded, lo, hi)).max() < 2e-3


def test_any_quality_round_trips_and_damaged_files_are_refused(codec, ct_like):
    sizes = []
    for quality in (1.0, 2.5, 5.25, 7.0):
        data = codec.compress(ct_like, quality=quality)
        assert medvae.read_header(data).quality == quality
        decoded = codec.decompress(data)
        assert decoded.shape == ct_like.shape and decoded.dtype == ct_like.dtype
        sizes.append(len(data))
    header, strings, extra = bitstream.unpack(data)
    assert len(strings) == 3  # anchors, the rest, z
    with pytest.raises(BitstreamError):
        codec.decompress(bitstream.pack(header, strings[:1] + strings[2:], extra))  # a pass missing
    flipped = bytearray(strings[1])
    flipped[len(flipped) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        codec.decompress(bitstream.pack(header, [strings[0], bytes(flipped), strings[2]], extra))


def test_refined_latents_are_coded_with_the_same_context(codec, ct_like):
    """Encoder-side refinement optimizes y through the context (rounded around the means, anchors
    first); the refined file decodes with the plain decoder to what the encoder reconstructed."""
    refined = codec.compress(ct_like, quality=3, refine_steps=10)
    assert refined != codec.compress(ct_like, quality=3)
    decoded = medvae.Codec(codec.model).decompress(refined)  # raises unless the pixel CRC matches
    assert decoded.shape == ct_like.shape and medvae.read_header(refined).quality == 3
