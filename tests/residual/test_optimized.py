"""Optimized near-lossless coding (formats 18 to 20): rate–distortion optimized symbols and
per-pass reconstruction offsets. The file declares the error its pixels have, every decoder gets
the encoder's pixels, and a damaged offsets block is refused."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

import medvae
import medvae.residual.coder as coder_module
from medvae import bitstream, metrics
from medvae.cli.info import describe
from medvae.errors import BitstreamError, InputError
from medvae.io.slices import manifest_slices
from tests.conftest import CORPUS, small_residual
from tests.residual.test_residual import _cases, _phantom

MANIFEST = CORPUS / "MANIFEST.csv"


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    codec = medvae.load("medvae", quality=1)
    codec.residual = small_residual(codec, _phantom())
    return codec


@pytest.mark.parametrize("name", ["uint16", "int16-negative", "extremes", "noise-uint16", "constant"])
@pytest.mark.parametrize("bound", [1, 3, 8])
def test_an_optimized_file_declares_the_error_it_has_and_decodes_to_the_encoders_pixels(codec, name, bound):
    image = _cases()[name]
    data, pixels = codec.compress_with_pixels(image, max_error=bound, optimize=True)
    header = bitstream.read_header(data)
    assert header.version in bitstream.OPTIMIZED_VERSIONS and bitstream.layout(header.version) == 8
    assert header.quantizer_bound == bound and len(header.residual_strings) == bitstream.OPTIMIZED_STRINGS
    decoded = codec.decompress(data)
    np.testing.assert_array_equal(decoded, pixels)
    assert header.max_error == metrics.max_abs_error(image, decoded)  # the bound declared is the one measured
    assert header.max_error <= 3 * bound + 1 + bound  # a symbol moves one step (2τ + 1), an offset at most τ


def test_optimized_symbols_trade_bits_for_error_at_the_quantizers_slope(codec, monkeypatch):
    """A symbol moves toward 0 only where the bits saved outweigh λ times the squared error added:
    with λ small, many move (fewer bytes, more error); with λ huge none does, and the file is
    plain coding's with reconstruction offsets (within the bound plus the offset, a few bytes more)."""
    image = _cases()["uint16"]
    plain = codec.compress(image, max_error=3)
    optimized = {}
    sizes, errors = [], []
    for slope in (0.25, 10**6):
        monkeypatch.setattr(coder_module, "OPTIMIZED_SLOPE", slope)
        data, pixels = codec.compress_with_pixels(image, max_error=3, optimize=True)
        optimized[slope] = data
        sizes.append(len(data))
        errors.append(float(np.mean(np.square(pixels.astype(np.int64) - image))))
    assert sizes[0] < sizes[1] and errors[0] > errors[1]
    header = bitstream.read_header(optimized[10**6])  # no symbol moves: the offsets alone
    assert header.max_error <= 2 * 3 and len(optimized[10**6]) <= len(plain) + 16


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
def test_on_a_real_slice_optimized_coding_takes_fewer_bits_for_about_the_same_fidelity():
    """The shipped default on a CT test slice: at each quantizer bound the optimized file is smaller,
    and it keeps more fidelity than plain coding at the bound whose file is no larger."""
    codec = medvae.load("medvae")
    ct = next(s for s in manifest_slices(MANIFEST, "test", max_slices=1) if s.modality == "CT")
    image = ct.pixels[128:384, 128:384]
    plain = {t: codec.compress_with_pixels(image, max_error=t) for t in range(6, 16)}
    for bound in (6, 10):
        data, pixels = codec.compress_with_pixels(image, max_error=bound, optimize=True)
        assert len(data) < len(plain[bound][0])
        rival = min((t for t in plain if len(plain[t][0]) <= len(data)), default=None)  # the tightest plain bound as small
        assert rival is not None and rival > bound
        assert metrics.psnr(image, pixels, ct.bits_stored) > metrics.psnr(image, plain[rival][1], ct.bits_stored)


def test_optimized_coding_is_near_lossless_and_adapted(codec):
    image = _cases()["uint16"]
    with pytest.raises(InputError, match="optimize"):
        codec.compress(image, max_error=0, optimize=True)
    with pytest.raises(InputError, match="optimize"):
        codec.compress(image, optimize=True)
    with pytest.raises(InputError, match="adapts the laws"):
        codec.residual.coder.encode(image, image, (0, 65535), 2, adapt=False, optimize=True)


def test_info_names_the_optimized_mode(codec, tmp_path):
    path = tmp_path / "o.mvae"
    path.write_bytes(codec.compress(_cases()["uint16"], max_error=4, tighter_passes=1, optimize=True))
    info = describe(path)
    assert info["quantizer_bound"] == 4 and info["mode"].startswith("near-lossless, optimized (step 9, 1 of 4 residual passes at step 7)")
    assert info["mode"].endswith(f"max error {info['max_error']} on every pixel") and info["residual_laws"]


def _forged(data: bytes, offsets: bytes) -> bytes:
    header, strings, meta = bitstream.unpack(data)
    residual = (*header.residual_strings[:3], offsets)
    return bitstream.pack(dataclasses.replace(header, residual_strings=residual), strings, meta)


def test_damaged_offsets_blocks_are_refused(codec):
    data = codec.compress(_cases()["uint16"], max_error=2, optimize=True)
    header = bitstream.read_header(data)
    assert all(offset <= 2 for offset in np.frombuffer(header.residual_strings[3], "<u2"))
    for bad, why in ((b"\x00" * 6, "bytes where"), (np.array([0, 3, 0, 0], "<u2").tobytes(), "beyond its pass")):
        with pytest.raises(BitstreamError, match=why):
            codec.decompress(_forged(data, bad))
    other = np.array([1, 1, 1, 1], "<u2").tobytes()
    if other != header.residual_strings[3]:  # valid offsets, other pixels: the pixel checksum catches it
        with pytest.raises(BitstreamError):
            codec.decompress(_forged(data, other))
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(damaged))
    header_bytes = bytearray(data)
    at = header_bytes.index(bytes.fromhex(header.residual_fingerprint)) - 2 - (header.version in bitstream.STEPPED_VERSIONS)  # the quantizer bound, then the base step
    header_bytes[at : at + 2] = b"\x00\x00"
    header_bytes[-4:] = zlib.crc32(bytes(header_bytes[:-4])).to_bytes(4, "little")
    with pytest.raises(BitstreamError, match="quantizer bound of 0"):
        codec.decompress(bytes(header_bytes))
