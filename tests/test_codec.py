"""The codec: honest round trips at native bit depth, any size, deterministic bitstreams."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import medvae
from medvae import metrics
from medvae.intensity import denormalize, normalize
from tests.conftest import REPO, small_model


def _random_image(shape, dtype, seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("shape", [(64, 64), (100, 37), (513, 511)])
def test_round_trip_equals_eval_reconstruction_bit_for_bit(family_codec, shape, ct_like):
    image = np.resize(ct_like, shape).astype(np.int16)
    data = family_codec.compress(image)
    restored = family_codec.decompress(data)
    expected, _ = family_codec.reconstruct(image)
    assert restored.shape == image.shape and restored.dtype == image.dtype
    np.testing.assert_array_equal(restored, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_dtypes_and_range_ends(family_codec, dtype):
    image = _random_image((70, 90), dtype)
    info = np.iinfo(dtype)
    image[0, 0], image[-1, -1] = info.min, info.max  # both ends of the dtype present
    data = family_codec.compress(image)
    header = medvae.read_header(data)
    assert header.value_range == (int(info.min), int(info.max))
    restored = family_codec.decompress(data)
    assert restored.dtype == image.dtype and restored.shape == image.shape
    # Decoded values stay in the stored range: nothing wraps around at the dtype's ends.
    assert restored.min() >= info.min and restored.max() <= info.max
    np.testing.assert_array_equal(restored, family_codec.reconstruct(image)[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_intensity_mapping_is_exact_at_the_range_ends(dtype):
    info = np.iinfo(dtype)
    image = np.array([[info.min, info.max], [info.min + 1, info.max - 1]], dtype=dtype)
    lo, hi = int(info.min), int(info.max)
    np.testing.assert_array_equal(denormalize(normalize(image, lo, hi), lo, hi, dtype), image)


@pytest.mark.parametrize("value", [0, 65535])
def test_constant_image_never_wraps(value):
    codec = medvae.Codec(small_model("bls2017"))
    image = np.full((40, 40), value, np.uint16)
    restored = codec.decompress(codec.compress(image))
    assert np.abs(restored.astype(np.int64) - value).max() <= 1


def test_negative_hounsfield_values_keep_their_sign(ct_like):
    codec = medvae.Codec(small_model("medvae"))
    restored = codec.decompress(codec.compress(ct_like))
    assert restored.min() >= -1024 and restored.max() <= ct_like.max()
    # The constant air far below the body is stored exactly (medvae.exceptions); the model maps the body.
    assert (restored[ct_like == -1024] == -1024).all()
    assert medvae.read_header(codec.compress(ct_like)).value_range == (int(ct_like[ct_like > -1024].min()), int(ct_like.max()))


def test_decoding_in_a_fresh_process_needs_only_bytes_and_weights(tmp_path, ct_like):
    from medvae.checkpoint import save_model

    model = small_model("medvae", seed=3)
    save_model(model, tmp_path / "weights.pt")
    codec = medvae.load(tmp_path / "weights.pt")
    data = codec.compress(ct_like)
    (tmp_path / "image.mvae").write_bytes(data)
    script = textwrap.dedent(
        f"""
        import numpy as np, medvae
        data = open(r"{tmp_path / 'image.mvae'}", "rb").read()
        np.save(r"{tmp_path / 'decoded.npy'}", medvae.decompress(data, model=r"{tmp_path / 'weights.pt'}"))
        """
    )
    # The fresh process also runs with another torch thread setting than this one.
    env = dict(os.environ, OMP_NUM_THREADS="2" if torch.get_num_threads() == 1 else "1")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=300, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "decoded.npy"), codec.decompress(data))


def test_real_bytes_and_header(ct_like):
    codec = medvae.Codec(small_model("balle2018"))
    data = codec.compress(ct_like, bits_stored=12)
    header = medvae.read_header(data)
    assert header.model == "balle2018" and header.fingerprint == codec.fingerprint
    assert header.shape == ct_like.shape and header.dtype == np.int16 and header.bits_stored == 12
    assert header.n_bytes == len(data)
    assert metrics.bpp(header.n_bytes, header.shape) == pytest.approx(8 * len(data) / ct_like.size)


def test_explicit_value_range_is_used_and_checked(ct_like):
    codec = medvae.Codec(small_model("bls2017"))
    data = codec.compress(ct_like, value_range=(-2048, 4095))
    assert medvae.read_header(data).value_range == (-2048, 4095)
    with pytest.raises(medvae.InputError, match="outside value_range"):
        codec.compress(ct_like, value_range=(0, 100))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((8, 8), np.float32), "unsupported dtype"),
        (np.zeros((2, 8, 8), np.int16), "2-D"),
        (np.zeros((0, 8), np.int16), "empty"),
    ],
)
def test_bad_images_raise_input_error(bad, message):
    codec = medvae.Codec(small_model("bls2017"))
    with pytest.raises(medvae.InputError, match=message):
        codec.compress(bad)
