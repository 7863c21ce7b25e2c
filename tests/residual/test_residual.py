"""The residual layer: exact lossless and near-lossless coding with a guaranteed bound.

These tests use a small untrained residual model on a fast base (shipped q1): the bound
and the exactness must hold for any weights; the shipped model's rates are benchmarks.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch

import medvae
import medvae.residual.coder as coder_module
import medvae.residual.training as training_module
from medvae import bitstream
from medvae.cli.info import describe
from medvae.errors import BitstreamError, InputError, MedVAEError
from medvae.io.slices import manifest_slices
from medvae.residual import tables
from medvae.residual.coder import quantize
from medvae.residual.model import ResidualModel, deepened, residual_bits, widened
from medvae.residual.model import symbol_bits
from medvae.residual.training import Pair, train_residual
from medvae.residual.weights import Residual, calibrate_residual, load_residual, save_residual
from tests.conftest import CORPUS, REPO, small_residual

MANIFEST = CORPUS / "MANIFEST.csv"
DATA = REPO / "tests" / "data"


def _phantom(shape=(70, 61), dtype=np.int16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    info = np.iinfo(dtype)
    lo = -1024 if info.min < 0 else 0
    image = lo + 1000 + 600 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + rng.normal(0, 30, shape)
    return np.clip(image, info.min, info.max).astype(dtype)


def _residual_model(codec: medvae.Codec, seed: int = 3) -> Residual:
    return small_residual(codec, _phantom(), seed)


@pytest.fixture(scope="module")
def codec() -> medvae.Codec:
    codec = medvae.load("medvae", quality=1)
    codec.residual = _residual_model(codec)
    return codec


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    checker = ((np.indices((40, 52)).sum(0) % 2) * 65535).astype(np.uint16)
    extremes = _phantom((48, 48))
    extremes[::7, ::5] = -32768
    extremes[3::7, 2::5] = 32767
    return {
        "uint8": _phantom((33, 47), np.uint8),
        "uint16": _phantom((64, 64), np.uint16),
        "int16-negative": _phantom((57, 43)) - 2000,
        "odd-size": _phantom((17, 29)),
        "constant": np.full((32, 40), 1234, np.int16),
        "noise-uint16": rng.integers(0, 65536, (40, 40)).astype(np.uint16),
        "checkerboard": checker,
        "extremes": extremes,
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_lossless_round_trip_is_exact(codec, name):
    image = _cases()[name]
    data = codec.compress(image, max_error=0)
    decoded = codec.decompress(data)
    assert decoded.dtype == image.dtype
    np.testing.assert_array_equal(decoded, image)
    header = bitstream.read_header(data)
    assert (bitstream.layout(header.version), header.max_error, header.residual_fingerprint) == (8, 0, codec.residual.fingerprint)


@pytest.mark.parametrize("max_error", [1, 2, 7, 100])
@pytest.mark.parametrize("name", ["uint16", "int16-negative", "noise-uint16", "checkerboard", "extremes"])
def test_near_lossless_keeps_every_pixel_within_the_bound(codec, name, max_error):
    image = _cases()[name]
    decoded = codec.decompress(codec.compress(image, max_error=max_error))
    error = np.abs(decoded.astype(np.int64) - image)
    assert error.max() <= max_error
    if name in ("uint16", "noise-uint16"):
        assert error.max() > 0  # the bound is used, not a lossless file in disguise


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
@pytest.mark.parametrize("max_error", [0, 1, 2, 7, 100])
def test_bound_holds_on_real_corpus_slices(codec, max_error):
    slices = manifest_slices(MANIFEST, "test", max_slices=1)
    picked = [s for s in slices if s.modality == "CT"][:1] + [s for s in slices if s.modality != "CT"][:2]
    for s in picked:
        image = s.pixels[100:228, 120:248] if min(s.shape) >= 256 else s.pixels
        decoded = codec.decompress(codec.compress(image, max_error=max_error))
        assert np.abs(decoded.astype(np.int64) - image).max() <= max_error, s.name


def test_quantization_bound_for_every_residual_in_range():
    error = np.arange(-5000, 5001)
    for tau in (0, 1, 2, 3, 7, 100, 65535):
        q = quantize(error, tau)
        assert np.abs(error - (2 * tau + 1) * q).max() <= tau


def test_a_larger_bound_needs_fewer_bytes(codec):
    image = _cases()["uint16"]
    sizes = [len(codec.compress(image, max_error=t)) for t in (0, 2, 8)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_tighter_passes_give_the_rates_between_two_bounds_and_keep_them(codec, tmp_path):
    """``tighter_passes=j``: the first j passes keep τ − 1, the rest τ; the file (format 8) records j,
    declares τ, and its size lies between those of τ and τ − 1."""
    image = _cases()["uint16"]
    sizes, first_pass = [], (slice(0, None, 2), slice(0, None, 2))  # pass 1: the (0, 0) phase
    for tau, j in ((3, 0), (3, 1), (3, 2), (3, 3), (2, 0)):
        data = codec.compress(image, max_error=tau, tighter_passes=j)
        header = bitstream.read_header(data)
        assert (bitstream.layout(header.version), header.max_error, header.tighter_passes) == (8, tau, j)
        error = np.abs(codec.decompress(data).astype(np.int64) - image)
        assert error.max() <= tau and (j == 0 or error[first_pass].max() <= tau - 1)
        sizes.append(len(data))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    for bad in ({"max_error": 0, "tighter_passes": 1}, {"max_error": 2, "tighter_passes": 4}, {"tighter_passes": 1},
                {"max_error": 2, "tighter_passes": True}):
        with pytest.raises(InputError, match="tighter_passes"):
            codec.compress(image, **bad)
    (tmp_path / "t.mvae").write_bytes(codec.compress(image, max_error=3, tighter_passes=2))
    assert describe(tmp_path / "t.mvae")["mode"] == "near-lossless, max error 3 on every pixel (2 of 4 residual passes within 2)"
    header, strings, meta = bitstream.unpack((tmp_path / "t.mvae").read_bytes())
    forged = bytearray(bitstream.pack(header, strings, meta))
    at = forged.index(bytes.fromhex(header.residual_fingerprint)) - 1 - (header.version in bitstream.STEPPED_VERSIONS)  # the count, then the base step
    assert forged[at] == 2
    forged[at] = 9
    forged[-4:] = zlib.crc32(bytes(forged[:-4])).to_bytes(4, "little")  # a valid container CRC
    with pytest.raises(BitstreamError, match="passes tighter"):
        codec.decompress(bytes(forged))


def test_tiled_residual_network_equals_the_whole(codec, monkeypatch):
    image = _phantom((90, 76))
    whole = codec.compress(image, max_error=0)
    monkeypatch.setattr(coder_module, "TILE", 8)
    tiled_codec = medvae.Codec(codec.model, residual=Residual(codec.residual.model, codec.residual.plan))
    assert all(net.tile == 8 for net in tiled_codec.residual.coder.nets)
    assert tiled_codec.compress(image, max_error=0) == whole


def test_damaged_residual_layers_raise(codec):
    image = _cases()["uint16"]
    data = codec.compress(image, max_error=0)
    header, strings, meta = bitstream.unpack(data)
    with pytest.raises(BitstreamError):
        codec.decompress(data[:-10])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(flipped))

    def repack(**changes) -> bytes:
        fields = {**header.__dict__, **changes}
        fields.pop("n_bytes"), fields.pop("metadata_bytes"), fields.pop("version")
        return bitstream.pack(bitstream.Header(**fields), strings, meta)  # a valid container CRC

    residual = list(header.residual_strings)
    for forged in (
        repack(residual_strings=()),
        repack(residual_strings=tuple(s[: len(s) // 2] for s in residual)),
        repack(residual_strings=tuple(b"" for _ in residual)),
        repack(residual_strings=tuple(s + b"\xff" * 64 for s in residual)),
        repack(residual_strings=tuple(bytes(b ^ 0x5A for b in s) for s in residual)),
        repack(max_error=3),
        repack(residual_fingerprint="0123456789abcdef"),
    ):
        try:
            again = codec.decompress(forged)
        except BitstreamError:
            continue
        np.testing.assert_array_equal(again, image)  # never a silently different image


def test_codec_without_residual_model_refuses_a_bound_and_its_files():
    plain = medvae.load("medvae", quality=1)
    plain.residual = None
    with pytest.raises(InputError, match="residual model"):
        plain.compress(_phantom(), max_error=0)
    for bad in (-1, 1.5, True, 70000):
        with pytest.raises(InputError):
            plain.compress(_phantom(), max_error=bad)


def test_file_with_residual_layer_needs_the_residual_model(codec):
    data = codec.compress(_phantom(), max_error=1)
    other = medvae.load("medvae", quality=1)
    other.residual = _residual_model(other, seed=4)
    with pytest.raises(BitstreamError, match="residual model"):
        other.decompress(data)


def test_lossy_files_are_still_format_3(codec):
    assert bitstream.read_header(codec.compress(_phantom())).version == 3


def test_residual_model_file_round_trip_keeps_the_fingerprint(codec, tmp_path):
    save_residual(codec.residual, tmp_path / "r.pt")
    again = load_residual(tmp_path / "r.pt")
    assert again.fingerprint == codec.residual.fingerprint
    assert again.plan == codec.residual.plan


def test_log2_fixed_is_the_floor_of_the_true_logarithm():
    getcontext().prec = 60
    for n in [1, 2, 3, 5, 7, 15, 17, 255, 4095, 4096, 4097, 65535, 65536, 131071, 2**20 + 1]:
        exact = Decimal(n).ln() / Decimal(2).ln() * 2**tables.LOG2_FRAC
        assert tables.log2_fixed(n) == math.floor(exact), n


def test_tables_are_valid_16_bit_cdfs_and_pinned():
    cdfs, lengths, offsets = tables.tables()
    assert len(cdfs) == tables.COUNT
    for cdf, length, offset in zip(cdfs, lengths, offsets):
        c = np.array(cdf[:length])
        assert c[0] == 0 and c[-1] == 2**16 and (np.diff(c) >= 1).all()
        assert length == 2 * -offset + 3  # symbols −w..w and the escape
    # The tables are part of the format: any change here changes what every file decodes to.
    assert tables.tables_digest() == "2f7ba1647e89e8f178d3c38c21e1df05d2bb91c2a7d3f04b0e37d7717b54cc05"


def test_mixed_tables_are_the_stated_law_and_pinned():
    """The mixed law's tables (formats 15 to 17): each frequency within one of the law stated in
    ``medvae.residual.tables`` — (1 − 1/64)·logistic(s = b/√2) + 1/64·Laplace(2b), b the Laplace
    table's scale — computed here directly, in 50-digit decimals, from the two CDFs (not from the
    module's recurrences); every table a valid 16-bit CDF; the whole set pinned."""
    getcontext().prec = 50
    cdfs, lengths, offsets = tables.mixed_tables()
    assert len(cdfs) == tables.COUNT
    for i, (cdf, length, offset) in enumerate(zip(cdfs, lengths, offsets)):
        c = np.array(cdf[:length])
        assert c[0] == 0 and c[-1] == 2**16 and (np.diff(c) >= 1).all() and length == 2 * -offset + 3
        if i % 9:
            continue
        b = (Decimal(2) ** (Decimal(tables.LOG2_MIN) + (Decimal(i) + Decimal("0.5")) / tables.STEPS))
        s, wide, eps = b / Decimal(2).sqrt(), 2 * b, Decimal(1) / 64

        def upper(x: Decimal) -> Decimal:  # the mass above x ≥ 0
            return (1 - eps) / (1 + (x / s).exp()) + eps * (-x / wide).exp() / 2

        width = -offset
        mass = [1 - 2 * upper(Decimal("0.5"))] + [upper(j - Decimal("0.5")) - upper(j + Decimal("0.5")) for j in range(1, width + 1)]
        pmf = [*reversed(mass[1:]), *mass, 2 * upper(width + Decimal("0.5"))]
        spare = 2**16 - len(pmf)
        expected = [1 + int(p * spare / sum(pmf)) for p in pmf]
        got = np.diff(c)
        largest = int(np.argmax(got))  # the one that takes the rounding's rest
        assert all(abs(int(g) - e) <= 1 for k, (g, e) in enumerate(zip(got, expected)) if k != largest), i
        assert 2 * upper(width + Decimal("0.5")) < Decimal(2) ** -16 <= 2 * upper(width - Decimal("0.5")) or width == tables.MAX_HALF_WIDTH
    assert hashlib.sha256(repr(tables.mixed_tables()).encode()).hexdigest() == "4de94d20758a54e635bab30811a2e4d9851112901a76f8f3865c3a19ee51af22"
    assert tables.law_tables()[1] == tables.tables()[1] + lengths  # the Laplace tables first, unchanged


@pytest.mark.parametrize("law", ["laplace", "mixed"])
def test_the_loss_of_each_law_is_the_coders_exact_cost(law):
    """The float loss (``symbol_bits(…, law)``, what ``train-residual --law`` trains on) against
    the coder's exact cost of the same symbols under that family's tables (interval widths and
    escapes, ``medvae.residual.coder._cost``): symbols drawn from the mixed law at table-centre
    scales from narrow to wide, a tenth of the pixels at a bound and some beyond the tables."""
    rng = np.random.default_rng(3)
    index = np.repeat(np.arange(6, tables.COUNT - 20, 7), 3000)
    scale = 2.0 ** (tables.LOG2_MIN + (index + 0.5) / tables.STEPS)
    outlier = rng.random(index.size) < 1 / 64
    draw = np.where(outlier, rng.laplace(0, 2 * scale), rng.logistic(0, scale / np.sqrt(2)))
    r = np.round(draw).astype(np.int64)
    r[::97] = (40 * scale[::97]).astype(np.int64) + 3  # beyond every table: escaped
    low, high = np.full(r.shape, -(2**20)), np.full(r.shape, 2**20)
    bounded = rng.random(r.size) < 0.1
    low[bounded] = np.minimum(r[bounded], 0) - rng.integers(0, 3, bounded.sum())  # at or near a lower bound
    mean = np.zeros_like(r)
    family = tables.LAWS.index(law)
    exact = coder_module._cost(mean, index + family * tables.COUNT, r, low, high, 0) / 2**16
    t = lambda a: torch.from_numpy(a.astype(np.float64))  # noqa: E731
    loss = float(symbol_bits(t(r), t(scale), t(low - mean), t(high - mean), law).sum())
    assert abs(loss - exact) < 0.01 * exact
    # Symbol by symbol, over the scales that matter (0.5 to 100): the loss's mean over each table's
    # own probabilities is its entropy within 0.015 bits; the other family's loss misses by more.
    law_tables = tables.family_tables(law)
    other = tables.LAWS[1 - family]
    for i in range(12, 43, 3):
        cdf, length, width = law_tables[0][i], law_tables[1][i], -law_tables[2][i]
        p = np.diff(np.array(cdf[:length]))[:-1] / 2**16
        e, b = torch.arange(-width, width + 1, dtype=torch.float64), torch.full((2 * width + 1,), scale_of(i), dtype=torch.float64)
        entropy = -(p * np.log2(p)).sum()
        bits = symbol_bits(e, b, law=law).numpy()
        assert abs((p * bits).sum() - entropy) < 0.015, i
        tail = (np.abs(e.numpy()) >= 5 * scale_of(i)) & (p >= 2.0**-13)  # where the mixed law's wide Laplace counts
        assert np.abs(bits[tail] + np.log2(p[tail])).max(initial=0.0) < 0.25, i
        if 18 <= i <= 42:
            assert (p * symbol_bits(e, b, law=other).numpy()).sum() - entropy > 0.018, i


def scale_of(i: int) -> float:
    """The scale of table ``i`` (its centre)."""
    return 2.0 ** (tables.LOG2_MIN + (i + 0.5) / tables.STEPS)


@pytest.mark.parametrize("narrower", [1, 16, 64])
def test_training_loss_is_the_coded_size(codec, narrower):
    """The float model's bit count (the training loss) matches the real residual bytes, escapes
    included: at the residual's own scale (few escapes), and at scales 16 and 64 times too
    narrow, where a third of the bytes are escaped values (a loss capped at 16 bits a pixel
    would miss them and reward narrow scales)."""
    image = _phantom((96, 96), np.uint16)
    base, value_range, exact = codec.base_layer(image)
    model = ResidualModel(channels=8)
    with torch.no_grad():  # a constant law, of the residual's own scale as a trained model would roughly give, or narrower
        model.net[-1].weight.zero_()
        scale = np.abs(image.astype(np.int64) - base).mean() / narrower
        model.net[-1].bias.copy_(torch.tensor([0.0, math.log2(scale / (value_range[1] - value_range[0]))] * 4))
    residual = Residual(model, calibrate_residual(model, [(image, base, value_range)]))
    t = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    lo, hi = (torch.tensor(float(v)).reshape(1, 1, 1, 1) for v in value_range)
    with torch.no_grad():
        estimate = float(residual_bits(model, t(image), t(base), lo, hi)) / 8
    strings, _ = residual.coder.encode(image, base, value_range, 0, exact=exact, adapt=False)  # the laws the loss models
    assert (len(strings[1]) > 0.2 * sum(map(len, strings))) == (narrower > 1)  # the case it claims: escapes or none to speak of
    assert abs(sum(map(len, strings)) - estimate) < 0.03 * estimate + 16


def test_interrupted_residual_training_resumes_to_the_same_model(codec, tmp_path, monkeypatch):
    """A run stopped after its first checkpoint and started again ends with the weights of an
    uninterrupted run; the checkpoint of another run is refused."""
    image = _phantom((64, 64), np.uint16)
    base, value_range, _ = codec.base_layer(image)
    pairs = [Pair(image, base, value_range)]
    settings = dict(steps=4, batch=2, crop=32, log_every=2, seed=5)

    def fresh() -> ResidualModel:
        torch.manual_seed(1)
        return ResidualModel(channels=8)

    whole, _ = train_residual(pairs, model=fresh(), **settings)

    calls = {"n": 0}
    real_batch = training_module._batch

    def stop_after_two(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_batch(*args)

    state = tmp_path / "state.pt"
    monkeypatch.setattr(training_module, "_batch", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_residual(pairs, model=fresh(), checkpoint=state, **settings)
    monkeypatch.setattr(training_module, "_batch", real_batch)
    start = fresh()
    torch.manual_seed(99)  # the resumed run must not depend on the generators' state at restart
    resumed, log = train_residual(pairs, model=start, checkpoint=state, **settings)
    assert [entry["step"] for entry in log] == [2, 4]
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    # The state of another run is refused, not silently continued (or returned, when finished).
    with pytest.raises(MedVAEError, match=r"another run \(steps 4 \(now 6\)\)"):
        train_residual(pairs, model=fresh(), checkpoint=state, **{**settings, "steps": 6})
    with pytest.raises(MedVAEError, match=r"lr 0.001 \(now 0.002\)"):
        train_residual(pairs, model=fresh(), checkpoint=state, **settings, lr=2e-3)
    with pytest.raises(MedVAEError, match="start"):
        train_residual(pairs, model=ResidualModel(channels=8), checkpoint=state, **settings)


def test_residual_training_fits_its_wall_time(codec, monkeypatch):
    """With ``minutes``, the speed of the first steps sets the step count (10 % spare), the
    learning rate still falls for the last fifth of it, and a bad budget is refused."""
    image = _phantom((64, 64), np.uint16)
    base, value_range, _ = codec.base_layer(image)
    pairs = [Pair(image, base, value_range)]
    clock = iter([0.0])  # the run starts at 0 s; the first 50 steps then take 60 s

    class FakeTime:
        @staticmethod
        def time() -> float:
            return next(clock, 60.0)

    monkeypatch.setattr(training_module, "time", FakeTime)
    rates = []
    real_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    torch.manual_seed(1)
    _, log = train_residual(pairs, model=ResidualModel(channels=8), steps=1000, batch=2, crop=32, log_every=1000,
                            minutes=1.5, lr=1e-3)
    # 1.5 min less 10 % is 81 s: 21 s left after the first 50 steps, at 50 steps a minute
    assert log[-1]["step"] == 50 + 17 == len(rates)
    assert rates[: int(67 * 0.8)] == [1e-3] * 53 and all(abs(r - 1e-4) < 1e-12 for r in rates[53:])
    for bad in (dict(minutes=0), dict(minutes=float("nan")), dict(minutes=1, checkpoint="state.pt")):
        with pytest.raises(MedVAEError, match="minutes"):
            train_residual(pairs, model=ResidualModel(channels=8), steps=10, **bad)


def test_files_written_with_an_earlier_shipped_residual_model_still_decode():
    """A lossless and a near-lossless file (format 4) written with the residual model shipped
    first (197de6c3…) decode to their pixels whichever model the default codes with now."""
    source = np.load(DATA / "residual-197de6c3-source.npy")
    lossless = (DATA / "residual-197de6c3-lossless.mvae").read_bytes()
    near = (DATA / "residual-197de6c3-near2.mvae").read_bytes()
    assert {bitstream.read_header(d).residual_fingerprint for d in (lossless, near)} == {"197de6c3f97d44dd"}
    np.testing.assert_array_equal(medvae.decompress(lossless), source)
    decoded = medvae.load("medvae").decompress(near)
    np.testing.assert_array_equal(decoded, np.load(DATA / "residual-197de6c3-near2.decoded.npy"))
    assert np.abs(decoded.astype(np.int64) - source).max() <= 2


@pytest.mark.parametrize("fingerprint, lossless_file, near_file, headers", [
    # the previous release's model under CompressAI's tables: lossless (format 4), tighter passes (format 7)
    ("341ab11edae5051e", "residual-341ab11e-format4-lossless.mvae", "residual-341ab11e-format7-near3",
     [(4, 0, 0), (7, 3, 2)]),
    # the first model trained for bounded laws (format 8): lossless, and with a tighter first pass
    ("3eee77c6e0b9851e", "residual-3eee77c6-format8-lossless.mvae", "residual-3eee77c6-format8-near3",
     [(8, 0, 0), (8, 3, 1)]),
])
def test_files_of_earlier_residual_models_and_formats_still_decode(fingerprint, lossless_file, near_file, headers):
    """Files written with earlier shipped residual models, in each format they wrote, decode to
    the pixels they decoded to when written: the file names its residual model and the zoo
    still finds it, whichever model the default codes with now."""
    source = np.load(DATA / "residual-197de6c3-source.npy")
    lossless = (DATA / lossless_file).read_bytes()
    near = (DATA / f"{near_file}.mvae").read_bytes()
    found = [bitstream.read_header(d) for d in (lossless, near)]
    assert [(h.version, h.max_error, h.tighter_passes, h.residual_fingerprint) for h in found] == [
        (*h, fingerprint) for h in headers
    ]
    np.testing.assert_array_equal(medvae.decompress(lossless), source)
    decoded = medvae.decompress(near)
    np.testing.assert_array_equal(decoded, np.load(DATA / f"{near_file}.decoded.npy"))
    assert np.abs(decoded.astype(np.int64) - source).max() <= 3


def test_a_widened_residual_model_computes_the_same_and_refuses_to_narrow():
    torch.manual_seed(2)
    model = ResidualModel(channels=8)
    wide = widened(model, 12)
    inputs = torch.randn(2, 12, 10, 14)
    assert wide.channels == 12 and wide.net[0].out_channels == 12
    with torch.no_grad():
        torch.testing.assert_close(wide(inputs), model(inputs), rtol=0, atol=1e-6)
        assert wide.net[2].weight[:8, 8:].abs().sum() == 0 and wide.net[0].weight[8:].abs().sum() > 0
    with pytest.raises(ValueError, match="cannot narrow"):
        widened(wide, 8)


def test_a_deepened_residual_model_computes_the_same_and_keeps_its_blocks():
    torch.manual_seed(2)
    model = ResidualModel(channels=8)
    deep = deepened(model, 2)
    inputs = torch.randn(2, 12, 10, 14)
    assert (deep.blocks, deep.receptive_radius, model.receptive_radius) == (2, 8, 4)
    with torch.no_grad():
        torch.testing.assert_close(deep(inputs), model(inputs), rtol=0, atol=0)
        assert deep.net[6].conv1.weight.abs().sum() > 0 and deep.net[7].conv2.weight.abs().sum() == 0
        deep.net[6].conv2.weight.normal_(0, 0.1)  # a trained block changes the output
        assert not torch.equal(deep(inputs), model(inputs))
        torch.testing.assert_close(deepened(deep, 3)(inputs), deep(inputs), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot remove"):
        deepened(deep, 1)
    with pytest.raises(ValueError, match="before deepening"):
        widened(deep, 12)


def test_a_residual_model_with_blocks_codes_exactly_tiled_and_saved(tmp_path, monkeypatch):
    """The blocks' exact twin (CompressAI's residual block) codes lossless and bounded files, the
    halo grows with the receptive field (a small tile gives the same file), and the model file
    keeps its blocks."""
    base_codec = medvae.load("medvae", quality=1)
    image = _phantom((90, 76))
    torch.manual_seed(4)
    model = deepened(ResidualModel(channels=8), 2)
    with torch.no_grad():
        for block in list(model.net)[6:8]:
            block.conv2.weight.normal_(0, 0.2)
    base, value_range, _ = base_codec.base_layer(image)
    residual = Residual(model, calibrate_residual(model, [(image, base, value_range)]))
    codec = medvae.Codec(base_codec.model, residual=residual)
    lossless = codec.compress(image, max_error=0)
    np.testing.assert_array_equal(codec.decompress(lossless), image)
    assert np.abs(codec.decompress(codec.compress(image, max_error=2)).astype(np.int64) - image).max() <= 2
    save_residual(residual, tmp_path / "r.pt")
    again = load_residual(tmp_path / "r.pt")
    assert (again.model.blocks, again.fingerprint) == (2, residual.fingerprint)
    monkeypatch.setattr(coder_module, "TILE", 8)
    tiled = medvae.Codec(base_codec.model, residual=Residual(again.model, again.plan))
    assert all((net.tile, net.halo) == (8, 8) for net in tiled.residual.coder.nets)
    assert tiled.compress(image, max_error=0) == lossless


def test_a_bounded_coder_writes_the_files_compress_writes_from_one_base(codec, monkeypatch):
    """Rate control codes the base once and many bounds on it: each file is byte for byte the
    one compress() writes, and the pixels that come with it are those the file decodes to."""
    image = _phantom((72, 60))
    calls = {"n": 0}
    encode = codec._encode
    monkeypatch.setattr(codec, "_encode", lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1), encode(*a, **k))[1])
    coder = codec.bounded_coder(image, bits_stored=12, padding_value=None)
    write = coder.write
    residual_coder, network_passes = codec.residual.coder, {"n": 0}
    outputs = residual_coder._outputs
    counted = lambda *a, **k: (network_passes.__setitem__("n", network_passes["n"] + 1), outputs(*a, **k))[1]  # noqa: E731
    for max_error, tighter in ((0, 0), (3, 0), (3, 2), (9, 1)):
        monkeypatch.setattr(residual_coder, "_outputs", counted)
        data, pixels = write(max_error, tighter)
        monkeypatch.setattr(residual_coder, "_outputs", outputs)
        assert data == codec.compress(image, bits_stored=12, max_error=max_error, tighter_passes=tighter)
        np.testing.assert_array_equal(pixels, codec.decompress(data))
    np.testing.assert_array_equal(coder.base(0), codec.base_layer(image, base_step=bitstream.read_header(data).base_step).pixels)
    assert calls["n"] == 1 + 1 + 4  # one base for the four bounded files, base_layer's, and compress()'s own four
    assert network_passes["n"] == 1 + 4 * 3  # the first pass reads no residual: once for the four bounds
    with pytest.raises(InputError, match="max_error"):
        write(-1, 0)
    with pytest.raises(InputError, match="the bound is write"):
        codec.bounded_coder(image, max_error=2)
    lossy, pixels = codec.compress_with_pixels(image, bits_stored=12)
    assert lossy == codec.compress(image, bits_stored=12)
    np.testing.assert_array_equal(pixels, codec.decompress(lossy))


class _ArrayLike:
    """Pixels handed over through ``__array__`` (as by an image library's own type), not as an ndarray."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels

    def __array__(self, dtype=None, copy=None):
        return self.pixels


def test_array_likes_code_as_their_arrays(codec):
    image = _phantom((40, 33), np.uint16)
    for max_error in (None, 0, 2):
        assert codec.compress(_ArrayLike(image), max_error=max_error) == codec.compress(image, max_error=max_error)
    data, pixels = codec.bounded_coder(_ArrayLike(image)).write(2, 1)
    assert data == codec.compress(image, max_error=2, tighter_passes=1)


def test_the_base_layer_names_the_pixels_it_restores_exactly(codec):
    """``base_layer`` gives what ``compress`` codes against: with its exact mask the residual coder
    codes padding outside the intensity range (at no cost); without it, it refuses the image."""
    image = _phantom((64, 64), np.int16)
    image[:, :8] = -3024  # scanner padding, far below the tissue
    base, value_range, exact = codec.base_layer(image, padding_value=-3024)
    assert exact is not None and exact[:, :8].all() and value_range[0] > -3024
    coder = codec.residual.coder
    strings, decoded = coder.encode(image, base, value_range, 0, exact=exact)
    np.testing.assert_array_equal(decoded, image)
    np.testing.assert_array_equal(coder.decode(strings, base, value_range, 0, exact=exact), image)
    with pytest.raises(ValueError, match="bounds"):
        coder.encode(image, base, value_range, 0)
