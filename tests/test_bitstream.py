"""Damaged or mismatched bitstreams always raise BitstreamError, never decode silently."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae import BitstreamError
from tests.conftest import small_model


@pytest.fixture(scope="module")
def coded():
    codec = medvae.Codec(small_model("medvae"))
    image = np.random.default_rng(1).integers(0, 4096, size=(64, 96)).astype(np.uint16)
    return codec, codec.compress(image)


def test_every_truncation_is_detected(coded):
    codec, data = coded
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            codec.decompress(data[:cut])


def test_every_single_bit_flip_is_detected(coded):
    codec, data = coded
    for position in range(len(data)):
        for bit in (0, 7):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            with pytest.raises(BitstreamError):
                codec.decompress(bytes(damaged))


def test_trailing_garbage_is_detected(coded):
    codec, data = coded
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        codec.decompress(data + b"\0")


@pytest.mark.parametrize("payload", [b"", b"MVAE", b"not a bitstream at all", b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_garbage_is_rejected(coded, payload):
    codec, _ = coded
    with pytest.raises(BitstreamError):
        codec.decompress(payload)


def test_other_weights_of_the_same_family_are_refused(coded):
    _, data = coded
    other = medvae.Codec(small_model("medvae", seed=99))
    with pytest.raises(BitstreamError, match="weights"):
        other.decompress(data)


def test_another_family_is_refused(coded):
    _, data = coded
    with pytest.raises(BitstreamError, match="'medvae'"):
        medvae.Codec(small_model("balle2018")).decompress(data)


def test_unknown_weights_without_a_model_name_what_is_missing(coded):
    _, data = coded
    with pytest.raises(BitstreamError, match="not installed"):
        medvae.decompress(data)


def test_future_format_version_is_refused(coded):
    import zlib

    codec, data = coded
    body = bytearray(data[:-4])
    body[4] = 99
    resealed = bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "little")
    with pytest.raises(BitstreamError, match="version 99"):
        codec.decompress(resealed)


def test_metadata_travels_with_the_image_and_is_checksummed():
    codec = medvae.Codec(small_model("bls2017"))
    image = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40)
    meta = b"source header \x00\x01" * 10
    data = codec.compress(image, metadata=meta)
    assert medvae.read_metadata(data) == meta
    assert medvae.read_header(data).metadata_bytes == len(meta)
    assert len(data) == len(codec.compress(image)) + len(meta)
    np.testing.assert_array_equal(codec.decompress(data), codec.decompress(codec.compress(image)))
    damaged = bytearray(data)
    damaged[-10] ^= 0x10  # inside the metadata block
    with pytest.raises(BitstreamError, match="checksum"):
        medvae.read_metadata(bytes(damaged))


def test_a_claimed_shape_beyond_dicom_limits_is_refused_before_decoding(coded):
    codec, data = coded
    header, strings, metadata = medvae.bitstream.unpack(data)
    forged = medvae.bitstream.pack(medvae.bitstream.Header(**{**header.__dict__, "shape": (100000, 512)}), strings, metadata)
    with pytest.raises(BitstreamError, match="exceeds 65535 a side"):
        codec.decompress(forged)


def test_a_metadata_bomb_is_refused_without_inflating_it():
    import zlib

    from medvae import source_metadata

    bomb = source_metadata.MAGIC + bytes([source_metadata.VERSION]) + zlib.compress(bytes(medvae.bitstream.MAX_INFLATED + 1), 9)
    assert len(bomb) < medvae.bitstream.MAX_INFLATED // 500
    with pytest.raises(BitstreamError, match="inflates to more than 64 MiB"):
        source_metadata.unpack(bomb)


@pytest.mark.parametrize("change", ["empty y", "short y", "empty z", "short z", "long y", "swapped"])
def test_changed_strings_with_a_valid_crc_never_crash_or_decode_silently(change):
    """Run in a subprocess: a native crash would end it with a signal instead of an exit code."""
    import subprocess
    import sys
    import textwrap

    from tests.conftest import REPO

    script = textwrap.dedent(
        f"""
        import numpy as np, medvae
        from medvae import bitstream
        codec = medvae.load("medvae", 3)
        image = np.random.default_rng(0).integers(0, 4096, (128, 160)).astype(np.uint16)
        data = codec.compress(image)
        header, (y, z), meta = bitstream.unpack(data)
        change = {change!r}
        y, z = {{
            "empty y": (b"", z), "short y": (y[: len(y) // 3], z), "empty z": (y, b""),
            "short z": (y, z[:3]), "long y": (y + bytes(range(256)) * 4, z), "swapped": (z, y),
        }}[change]
        forged = bitstream.pack(header, [y, z], meta)
        try:
            decoded = codec.decompress(forged)
        except medvae.BitstreamError as exc:
            print("refused:", exc)
        else:
            assert np.array_equal(decoded, codec.decompress(data)), "a different image came back"
            print("identical image")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"decoder process ended with {result.returncode}: {result.stderr[-2000:]}"
    assert ("refused:" in result.stdout) or (change == "long y" and "identical image" in result.stdout), result.stdout


@pytest.mark.parametrize("quality", [1, 7])
def test_a_large_image_claimed_in_a_few_bytes_is_refused_at_once(quality):
    import time

    from medvae.exact.twin import band_count

    codec = medvae.load("medvae", quality)
    data = codec.compress(np.random.default_rng(0).integers(0, 4096, (64, 64)).astype(np.uint16))
    header, strings, metadata = medvae.bitstream.unpack(data)
    side = 60000
    latent = (-(-side // 64),) * 2
    forged_header = medvae.bitstream.Header(**{**header.__dict__, "shape": (side, side), "latent_shape": latent})
    y_strings = band_count((codec.twin.y_channels, 4 * latent[0], 4 * latent[1]), codec.twin.chunk)
    z_strings = band_count((codec.model.entropy_bottleneck.channels, *latent), codec.twin.chunk)
    cases = {
        "strings where this latent needs": strings,  # too few strings for that latent
        "cannot hold the": [strings[0]] * y_strings + [strings[1]] * z_strings,  # the right count, too few bytes
    }
    for message, forged_strings in cases.items():
        forged = medvae.bitstream.pack(forged_header, forged_strings, metadata)
        start = time.perf_counter()
        with pytest.raises(BitstreamError, match=message):
            codec.decompress(forged)
        assert time.perf_counter() - start < 1.0
