"""Exact coding: the same bytes and pixels on every CPU instruction set, thread count and device."""

from __future__ import annotations

import itertools

import json
import os
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import nn

import medvae
import medvae.exact.twin as twin_module
from medvae import bitstream, prediction, zoo
from medvae.checkpoint import exact_fingerprint, load_model, save_model
from medvae.exact import ExactTwin, calibrate
from medvae.exact.fixed import LIMIT, WEIGHT_L1_BITS, Fixed, from_real, integer_weights, weight_shifts
from medvae.exact.layers import ExactConv2d, ExactConvTranspose2d, ExactGDN, conv2d_exact, conv_transpose2d_exact
from medvae.metrics import psnr
from medvae.residual.weights import load_residual, save_residual
from tests.conftest import FAMILIES, REPO, benchmark_module, small_model, small_residual, small_series_residual

#: Environments that make PyTorch (and its BLAS) use the kernels of older CPUs, and thread counts.
SETTINGS = {
    "avx2-1": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, 1),
    "sse41-1": ({"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 1),
    "native-2": ({}, 2),
    "sse41-2": ({"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 2),
}

# Decodes every file of a job in this process and re-encodes its image: what another machine would do.
WORKER = textwrap.dedent(
    """
    import json, sys, numpy as np, torch, medvae
    job = json.load(open(sys.argv[1]))
    torch.set_num_threads(int(sys.argv[2]))
    for item in job:
        codec = medvae.load(item["weights"], item["quality"])
        from medvae.residual.weights import load_residual
        if item.get("residual"):
            codec.residual = load_residual(item["residual"])
        previous = None
        if item.get("series_residual"):
            codec.series_residual = load_residual(item["series_residual"])
            previous = np.load(item["previous"])
        data = open(item["file"], "rb").read()
        np.save(item["file"] + "." + sys.argv[3] + ".npy", codec.decompress(data, previous=previous))
        image = np.load(item["image"])
        again = codec.compress(image, bits_stored=item["bits"], max_error=item.get("max_error"), tighter_passes=item["tighter_passes"],
                               previous=previous, optimize=item.get("optimize", False))
        open(item["file"] + "." + sys.argv[3] + ".again", "wb").write(again)
    """
)


def _image(shape=(96, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, -1024, np.int16)
    body = (yy - shape[0] / 2) ** 2 / (0.42 * shape[0]) ** 2 + (xx - shape[1] / 2) ** 2 / (0.42 * shape[1]) ** 2 < 1
    image[body] = 40 + rng.normal(0, 25, body.sum()).astype(np.int16)
    image[shape[0] // 3 : shape[0] // 2, shape[1] // 3 : shape[1] // 2] = 1300
    return image


@pytest.fixture(scope="module")
def coded_files(tmp_path_factory):
    """Files written here: every family, the progressive rnn-conv included (small untrained
    weights; the variable-rate one also at a quality between two levels), the shipped default at a quality below 1
    (its encoder choosing between its two weights) and its alternative weights alone, the default on a
    256×512 image (its file carries a correction of the reconstruction: format 11), every shipped quality, and lossless and near-lossless files (shipped q1 base,
    a small untrained residual model; one with two passes at the tighter bound; format 8), one coded
    given the previous slice of its series (a small untrained series model that also reads its
    context's error bounds, one pass at the tighter bound; format 9), and one given the two slices
    before it (format 10), both with their base latent coded against the previous slice's, y at the
    series step (formats 23 and 24), the others y at the step their noise calls for (formats 28 and 29);
    every residual layer with the per-image adaptation of its laws (formats 12 to 14,
    whose fit must also come out the same: the files are re-encoded)."""
    folder = tmp_path_factory.mktemp("exact")
    job = []
    sources = [(str(folder / f"{family}.pt"), None, family, None) for family in (*FAMILIES, "rnn-conv")]
    for path, _, family, _ in sources:
        save_model(small_model(family, seed=7), path)
    sources.append((str(folder / "medvae-vr.pt"), 3.75, "medvae-vr-q3.75", None))  # between two levels
    sources.append(("medvae-ctx", 0.25, "shipped-ctx-q0.25", None))  # the default, extrapolated below its first level
    sources.append(("medvae-ctx", 6, "shipped-ctx-q6-corrected", None))  # 256×512: a correction block (format 11)
    alternative = str(zoo.alternative_paths(zoo.shipped_path("medvae-ctx"))[0])
    sources.append((alternative, 4, "shipped-ctx-alternative-q4", None))  # the default's other weights, alone
    sources += [("medvae", q, f"shipped-q{q}", None) for q in zoo.qualities("medvae")]
    sources += [("medvae", 1, f"residual-max-error-{t}", t) for t in (0, 3)]
    tighter = {"residual-max-error-3-tighter-2": 2, "series-max-error-2": 1}
    sources += [("medvae", 1, "residual-max-error-3-tighter-2", 3), ("medvae", 1, "residual-optimized-3", 3)]
    sources += [("medvae", 1, "series-max-error-2", 2), ("medvae", 1, "series2-max-error-1", 1)]
    residual_file = str(folder / "residual.pt")
    for weights, quality, label, max_error in sources:
        image = _image((256, 512) if label.endswith("corrected") else (96, 80), seed=len(job))
        np.save(folder / f"{label}.npy", image)
        codec = medvae.load(weights, quality)
        if max_error is not None:
            if not os.path.exists(residual_file):
                save_residual(small_residual(codec, image), residual_file)
            codec.residual = load_residual(residual_file)
        previous = None
        series_file, previous_file = str(folder / f"{label}-series.pt"), str(folder / f"{label}-previous.npy")
        if label.startswith("series"):
            count = 2 if label.startswith("series2") else 1
            shifted = [np.roll(image, k + 1, axis=1) + np.int16(k + 1) for k in range(count)]  # like the slices before: the base is predicted
            previous = np.stack(shifted)  # nearest first
            np.save(previous_file, previous)
            save_residual(small_series_residual(codec, image, previous, bounds=True, count=count), series_file)
            codec.series_residual = load_residual(series_file)
        optimize = "optimized" in label  # optimized quantization (formats 18 to 20)
        data = codec.compress(image, bits_stored=12, max_error=max_error, tighter_passes=tighter.get(label, 0), previous=previous, optimize=optimize)
        assert (medvae.read_header(data).version == bitstream.CORRECTED_VERSION) == label.endswith("corrected")
        version = medvae.read_header(data).version
        if previous is not None:
            assert bitstream.layout(version) == 8 + len(previous)  # format 9 given one slice, 10 given two
        assert (version in bitstream.PREDICTED_VERSIONS) == (previous is not None)  # its base coded against the previous slice's (21 to 26)
        if previous is not None:  # and its y at the series step (integer arithmetic: the same symbols everywhere)
            header = medvae.read_header(data)  # the coarser of the bound's step and the noise's
            expected = max(prediction.base_step(max_error), prediction.noise_step(image, header.value_range))
            assert prediction.block_step(header.base_prediction) == expected != prediction.UNIT_STEP
            assert prediction.block_hyper(header.base_prediction) is not None  # and z coded against the previous slice's
        if max_error is not None:  # each residual layer carries the adaptation of its laws, with their families (formats 15 to 20)
            plain = bitstream.PREDICTED_VERSIONS.get(version, bitstream.STEPPED_VERSIONS.get(version, version))
            assert plain in (bitstream.OPTIMIZED_VERSIONS if optimize else bitstream.LAW_VERSIONS)
            # a slice coded alone, noisy: y at the step its noise calls for (formats 28 and 29; integer rule, the same everywhere)
            assert (version in bitstream.STEPPED_VERSIONS) == (previous is None)
        (folder / f"{label}.mvae").write_bytes(data)
        job.append({
            "weights": weights, "quality": quality, "file": str(folder / f"{label}.mvae"),
            "image": str(folder / f"{label}.npy"), "bits": 12, "label": label, "max_error": max_error,
            "residual": residual_file if max_error is not None else None, "tighter_passes": tighter.get(label, 0),
            "series_residual": series_file if previous is not None else None, "previous": previous_file, "optimize": optimize,
            "decoded": codec.decompress(data, previous=previous), "data": data,
        })
    (folder / "job.json").write_text(json.dumps([{k: v for k, v in item.items() if k not in ("decoded", "data")} for item in job]))
    return folder, job


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_files_decode_and_encode_identically_under_other_instruction_sets_and_threads(coded_files, setting):
    folder, job = coded_files
    env, threads = SETTINGS[setting]
    script = folder / "worker.py"
    script.write_text(WORKER)
    child_env = {**os.environ, **env, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, str(script), str(folder / "job.json"), str(threads), setting], check=True, cwd=REPO, env=child_env, timeout=600)
    for item in job:
        decoded = np.load(f"{item['file']}.{setting}.npy")
        np.testing.assert_array_equal(decoded, item["decoded"], err_msg=f"{item['label']} decodes differently under {setting}")
        again = open(f"{item['file']}.{setting}.again", "rb").read()
        assert again == item["data"], f"{item['label']} encodes to other bytes under {setting}"


def test_encoding_does_not_depend_on_the_callers_threads_and_keeps_them():
    """At the paper's size, release 0.1's float decoder gave a few other pixels with 2 threads
    than with 1 (6 of 262,144 on a 512² slice); it pinned one thread. Exact coding needs no pin."""
    torch.manual_seed(0)
    codec = medvae.Codec(medvae.models.create("medvae", N=128, M=192))
    image = _image((256, 256), seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = codec.compress(image)
        restored_one = codec.decompress(one)
        torch.set_num_threads(2)
        two = codec.compress(image)
        restored_two = codec.decompress(one)
        assert torch.get_num_threads() == 2  # coding no longer pins threads
    finally:
        torch.set_num_threads(before)
    assert one == two
    np.testing.assert_array_equal(restored_one, restored_two)


def _layers() -> list[tuple[str, nn.Module, int]]:
    torch.manual_seed(1)
    gdn, igdn = GDN(8), GDN(8, inverse=True)
    with torch.no_grad():  # a non-trivial normalization
        gdn.gamma.add_(0.2 * torch.rand_like(gdn.gamma))
        igdn.gamma.add_(0.2 * torch.rand_like(igdn.gamma))
    return [
        ("conv 5x5 stride 2", nn.Conv2d(8, 6, 5, stride=2, padding=2), 0),
        ("conv 3x3", nn.Conv2d(8, 6, 3, padding=1), 0),
        ("transposed conv", nn.ConvTranspose2d(8, 6, 5, stride=2, padding=2, output_padding=1), 0),
        ("GDN", gdn, 1),
        ("inverse GDN", igdn, 1),
    ]


def _exact(module: nn.Module, kind: int):
    if kind:
        return ExactGDN(module, out_frac=18)
    cls = ExactConvTranspose2d if isinstance(module, nn.ConvTranspose2d) else ExactConv2d
    return cls(module, out_frac=18)


@pytest.mark.parametrize("index", range(5))
def test_exact_layers_ignore_memory_layout_and_batching(index):
    name, module, kind = _layers()[index]
    layer = _exact(module, kind)
    x = from_real(torch.randn(4, 8, 21, 18, generator=torch.Generator().manual_seed(index)), 16)
    whole = layer(x).value
    channels_last = layer(Fixed(x.value.contiguous(memory_format=torch.channels_last), x.frac)).value
    transposed = layer(Fixed(x.value.transpose(2, 3).contiguous().transpose(2, 3), x.frac)).value
    one_by_one = torch.cat([layer(Fixed(x.value[i : i + 1].clone(), x.frac)).value for i in range(4)])
    for other in (channels_last, transposed, one_by_one):
        assert torch.equal(whole, other), name
    # and the twin computes what the float layer does, to about the resolution of its output
    with torch.no_grad():
        reference = module(x.real().float()).double()
    assert float((reference - layer(x).real()).abs().max()) < 1e-4 * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("inverse", [False, True], ids=["GDN", "inverse GDN"])
@pytest.mark.parametrize("frac", [0, 12, 20])
def test_gdn_gives_the_values_of_its_step_by_step_definition(inverse, frac, monkeypatch):
    """The exact GDN folds its output's power of two into the square root's argument and runs in
    bands; it gives, bit for bit, the steps its docstring names, taken one after the other: x²
    split in two exact 24-bit halves, two exact sums, β, the square root, the quotient (or
    product), then the scaling to the output's bits and one rounding, at the largest and smallest
    activations as on random ones."""
    import medvae.exact.layers as layers

    torch.manual_seed(3)
    gdn = GDN(6, inverse=inverse)
    with torch.no_grad():
        gdn.gamma.add_(0.3 * torch.rand_like(gdn.gamma))
        gdn.beta.mul_(torch.rand_like(gdn.beta) + 0.01)
    layer = ExactGDN(gdn, out_frac=14)
    x = torch.randint(-(2**23), 2**23, (2, 6, 9, 11)).double()
    x[0, :, 0] = LIMIT
    x[0, :, 1] = -LIMIT
    x[1, :, 0] = 0.0
    x[1, :, 1] = 1.0
    exponents = layer.shifts + 2 * frac
    high = torch.floor(x * x / 2.0**24)
    low = x * x - high * 2.0**24
    total = F.conv2d(high, layer.gamma) * 2.0**24 + F.conv2d(low, layer.gamma)  # each sum exact, one rounded addition
    total = total + (layer.beta * torch.pow(2.0, exponents.double()))[:, None, None]
    odd = exponents % 2
    root = (total * torch.pow(2.0, odd.double())[:, None, None]).sqrt()  # sqrt of the sum · 2^-exponent, times 2^half
    half = (exponents + odd) // 2
    shift = (layer.out_frac - frac - half) if inverse else (layer.out_frac - frac + half)
    quotient = x * root if inverse else x / root
    expected = (quotient * torch.pow(2.0, shift.double())[:, None, None]).round().clamp(-LIMIT, LIMIT)
    assert torch.equal(layer(Fixed(x, frac)).value, expected)
    monkeypatch.setattr(layers, "GDN_BAND_ELEMENTS", 6 * 11 * 2)  # two rows a band
    assert torch.equal(layer(Fixed(x.clone(), frac), in_place=True).value, expected)


@pytest.mark.parametrize("slope", [0.125, 0.01, 0.3])
def test_leaky_relu_is_its_definition_on_integers(slope):
    """The exact LeakyReLU (the library's, then one rounding) gives max(x, 0) + round(min(x, 0) · slope),
    rounded half to even with the slope as an integer over 2^20, at the activation range's ends,
    on halves and on random integers."""
    from medvae.exact.layers import ExactLeakyReLU

    layer = ExactLeakyReLU(slope)
    x = torch.randint(-int(LIMIT), int(LIMIT) + 1, (100_000,)).double()
    x[:8] = torch.tensor([0.0, -0.0, 1.0, -1.0, -4.0, -12.0, LIMIT, -LIMIT])
    m = round(slope * 2**20)
    expected = torch.tensor([v if v >= 0 else float(round(v * m / 2**20)) for v in x.tolist()], dtype=torch.float64)
    assert torch.equal(layer.apply_(x.clone()), expected)


def test_banded_convolution_equals_one_band(monkeypatch):
    """Strided convolutions of few channels run im2col in bands of output rows; the bands change nothing."""
    import medvae.exact.layers as layers

    x = torch.randint(-1000, 1000, (2, 8, 40, 33)).double()
    w = torch.randint(-500, 500, (6, 8, 5, 5)).double()
    monkeypatch.setattr(layers, "FEW_CHANNELS", 9)  # 8 input channels: im2col
    whole = conv2d_exact(x, w, (2, 2), (2, 2))
    monkeypatch.setattr(layers, "BAND_ELEMENTS", 8 * 25 * 17 * 2)  # a few rows per band
    assert torch.equal(conv2d_exact(x, w, (2, 2), (2, 2)), whole)
    assert torch.equal(whole, F.conv2d(x, w, stride=2, padding=2))


@pytest.mark.parametrize("shape, kernel, padding", [
    ((2, 8, 40, 33), 3, 1), ((1, 3, 7, 9), 3, 0), ((2, 2, 5, 6), 5, 2), ((1, 4, 1, 1), 3, 1), ((1, 1, 2, 8), 5, 2),
])
@pytest.mark.parametrize("few_channels", [0, 8], ids=["channels-last", "channels-first"])
def test_unstrided_convolution_by_kernel_taps_is_the_convolution(shape, kernel, padding, few_channels, monkeypatch):
    """Unstrided convolutions sum 1×1 products over shifted flat views of the padded input
    (the columns past each row's end discarded), into outputs laid out channels last, or channels
    first for a few output channels: odd sizes, no padding, a 1×1 image and batches give exactly
    the convolution."""
    import medvae.exact.layers as layers

    monkeypatch.setattr(layers, "FEW_CHANNELS", few_channels)
    torch.manual_seed(1)
    x = torch.randint(-(2**20), 2**20, shape).double()
    w = torch.randint(-(2**10), 2**10, (5, shape[1], kernel, kernel)).double()
    assert torch.equal(conv2d_exact(x, w, (1, 1), (padding, padding)), F.conv2d(x, w, padding=padding))


@pytest.mark.parametrize("stride, chunk, kernel", [(1, 2**18, 3), (1, 300, 3), (2, 2**18, 3), (1, 2**18, 1)],
                         ids=["taps", "small-chunks", "strided", "1x1"])
def test_activation_fused_into_the_convolution_gives_the_layers_values(stride, chunk, kernel, monkeypatch):
    """A convolution followed by a LeakyReLU in an ExactSequential (and in a residual block) finishes
    each chunk of outputs in cache (bias, rescale, activation): exactly the values of the two
    layers applied one after the other, whatever the chunk size."""
    import medvae.exact.layers as layers

    monkeypatch.setattr(layers, "TAP_CHUNK_ELEMENTS", chunk)
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 7, kernel, stride=stride, padding=kernel // 2)
    exact_conv, leaky = ExactConv2d(conv, 9), layers.ExactLeakyReLU(0.125)
    x = from_real(torch.randn(2, 6, 23, 17) * 3, 10)
    for few_channels in (0, 8):  # 7 outputs laid out channels last, then channels first
        monkeypatch.setattr(layers, "FEW_CHANNELS", few_channels)
        separate = leaky(exact_conv(x))
        assert bool((separate.value < 0).any()) and bool((separate.value > 0).any())
        assert torch.equal(layers.ExactSequential([exact_conv, leaky])(x).value, separate.value)
        assert torch.equal(exact_conv(x, activation=leaky).value, separate.value)


@pytest.mark.parametrize("few_channels", [0, 10**6], ids=["taps", "im2col-col2im"])
def test_strided_and_transposed_convolutions_are_the_convolutions(few_channels, monkeypatch):
    """Strided convolutions by stride phases, transposed ones by output phases (kernel taps), and
    the im2col / col2im paths of layers with few channels: exactly PyTorch's results for every
    stride, padding, output padding, kernel shape and odd or tiny size tried (integers small
    enough that float64 convolution is exact too)."""
    import medvae.exact.layers as layers

    monkeypatch.setattr(layers, "FEW_CHANNELS", few_channels)
    torch.manual_seed(2)
    cases = 0
    for (h, w), (kh, kw), (sh, sw), (ph, pw) in itertools.product(
        [(1, 1), (2, 3), (7, 9), (13, 10)], [(1, 1), (3, 3), (5, 5), (2, 3), (4, 4)], [(1, 1), (2, 2), (2, 1), (3, 3)],
        [(0, 0), (1, 1), (2, 2), (0, 2)],
    ):
        x = torch.randint(-1000, 1000, (2, 3, h, w)).double()
        weight = torch.randint(-500, 500, (4, 3, kh, kw)).double()
        bias = torch.randint(-500, 500, (4, 1)).double()
        if h + 2 * ph >= kh and w + 2 * pw >= kw:
            expected = F.conv2d(x, weight, stride=(sh, sw), padding=(ph, pw))
            assert torch.equal(conv2d_exact(x, weight, (sh, sw), (ph, pw)), expected), (h, w, kh, kw, sh, sw, ph, pw)
            cases += 1
        for oph, opw in itertools.product(range(sh), range(sw)):
            if ph >= kh or pw >= kw or (h - 1) * sh - 2 * ph + kh + oph <= 0 or (w - 1) * sw - 2 * pw + kw + opw <= 0:
                continue
            expected = F.conv_transpose2d(x, weight.transpose(0, 1), stride=(sh, sw), padding=(ph, pw), output_padding=(oph, opw))
            got = conv_transpose2d_exact(x, weight, (sh, sw), (ph, pw), (oph, opw))
            assert torch.equal(got, expected), (h, w, kh, kw, sh, sw, ph, pw, oph, opw)
            # an epilogue (per channel, elementwise) finishes every output once, those no tap reaches too
            finished = conv_transpose2d_exact(x, weight, (sh, sw), (ph, pw), (oph, opw), lambda chunk: chunk.add_(bias).mul_(-2))
            assert torch.equal(finished, (expected + bias.view(1, -1, 1, 1)) * -2), (h, w, kh, kw, sh, sw, ph, pw, oph, opw)
            cases += 1
    assert cases > 500


def test_sums_stay_exact_at_the_worst_case_bound():
    """Inputs at the saturation limit with the weights' signs: the largest accumulator possible."""
    torch.manual_seed(0)
    weight = torch.randn(4, 64, 5, 5)
    w_int = integer_weights(weight, weight_shifts(weight))
    assert float(w_int.abs().reshape(4, -1).sum(1).max()) <= 2**WEIGHT_L1_BITS + 64 * 25
    x = (torch.sign(w_int[:1]) * LIMIT).double()  # (1, 64, 5, 5): every product at its largest
    acc = conv2d_exact(x, w_int, (1, 1), (0, 0))
    exact = (w_int.long() * x.long()).sum(dim=(1, 2, 3))  # int64 reference, no rounding anywhere
    assert torch.equal(acc[0, 0, 0, 0].long(), exact[0])
    assert abs(float(acc[0, 0, 0, 0])) < 2**53


def test_plan_is_stored_with_the_weights_and_named_by_the_fingerprint(tmp_path):
    model = small_model("medvae", seed=2)
    save_model(model, tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt")
    assert loaded.exact_plan == model.exact_plan and loaded.exact_plan
    codec = medvae.load(tmp_path / "w.pt")
    assert codec.fingerprint == exact_fingerprint(loaded, loaded.exact_plan)
    other_plan = dict(loaded.exact_plan, x=loaded.exact_plan["x"] - 1)
    assert exact_fingerprint(loaded, other_plan) != codec.fingerprint


def test_calibration_follows_the_layer_ranges():
    model = small_model("balle2018").eval()
    plan = calibrate(model)
    twin = ExactTwin(model, plan)
    x = torch.from_numpy(_image((128, 128)).astype(np.float64) + 1024) / 2400
    with torch.no_grad():
        y_float = model.g_a(x[None, None].float())
    y = twin.analyze(x[None, None])[0].real()  # y is kept as int32 (Stored)
    assert float((y - y_float.double()).abs().max()) < 1e-4 * float(y_float.abs().max())


def test_a_pixel_checksum_mismatch_raises_instead_of_returning_an_image():
    codec = medvae.Codec(small_model("balle2018"))
    image = _image()
    data = codec.compress(image)
    header, strings, metadata = bitstream.unpack(data)
    assert header.version == 3 and header.pixels_crc == zlib.crc32(codec.decompress(data).astype("<i2").tobytes())
    forged = bitstream.pack(bitstream.Header(**{**header.__dict__, "pixels_crc": header.pixels_crc ^ 1}), strings, metadata)
    with pytest.raises(medvae.BitstreamError, match="do not match the checksum"):
        codec.decompress(forged)


def test_changed_latents_with_a_recomputed_container_crc_never_decode_silently():
    """Anyone can rewrite the body and its CRC; the pixel checksum still refuses the result."""
    codec = medvae.load("medvae", 3)  # trained weights: a y string with content
    data = codec.compress(_image((128, 128)))
    header, strings, metadata = bitstream.unpack(data)
    assert len(strings[0]) > 20
    refused = 0
    for position in sorted(set(np.linspace(2, len(strings[0]) - 3, 10).astype(int))):
        y = bytearray(strings[0])
        y[position] ^= 0x5A
        forged = bitstream.pack(header, [bytes(y), strings[1]], metadata)
        with pytest.raises(medvae.BitstreamError):
            codec.decompress(forged)
        refused += 1
    assert refused == 10


def test_format1_file_of_the_previous_release_still_decodes_with_a_warning():
    data = (REPO / "tests/data/format1-medvae-q1.mvae").read_bytes()
    assert medvae.read_header(data).version == 1
    with pytest.warns(medvae.LegacyFormatWarning, match="format-1"):
        decoded = medvae.decompress(data)
    expected = np.load(REPO / "tests/data/format1-medvae-q1.decoded.npy")
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    # The float path may differ by a step in a few pixels on another CPU; on the one that wrote it, not at all.
    assert np.mean(decoded != expected) < 0.01
    source = np.load(REPO / "tests/data/format1-medvae-q1.source.npy")  # the image that was coded (q1: ~34 dB)
    assert psnr(source, decoded, 12) > 30


def test_format2_file_of_the_previous_release_decodes_exactly():
    """Release 0.2.0 wrote one string per latent; this 1024×1024 file's y latent (393,216
    symbols) is one string where format 3 writes two. Its pixel CRC proves the decode exact."""
    data = (REPO / "tests/data/format2-medvae-q1-1024.mvae").read_bytes()
    header, strings, _ = bitstream.unpack(data)
    assert header.version == 2 and len(strings) == 2
    decoded = medvae.decompress(data)  # raises unless the pixel CRC matches
    source = benchmark_module("speed").synthetic_ct(1024, seed=7)
    assert decoded.shape == source.shape and psnr(source, decoded, 12) > 30
    again = medvae.load("medvae", 1).compress(source, bits_stored=12)
    assert len(bitstream.unpack(again)[1]) == 3  # format 3: y in two strings, z in one
    np.testing.assert_array_equal(medvae.decompress(again), decoded)


@pytest.mark.parametrize("family", ["bls2017", "medvae", "medvae-ctx"])
def test_long_latents_are_coded_in_bands_of_rows_of_at_most_chunk_symbols(family):
    """Format 3 codes each latent in bands of whole rows (all channels) of at most ``twin.chunk``
    symbols, so that the guarded copy a decoder makes of a string stays small and a band can
    be decoded from its own rows' table indexes; the pixels do not depend on the split."""
    from medvae.exact.twin import CHUNK, channel_indexes, decode_symbols

    codec = medvae.Codec(small_model(family))
    image = _image((100, 140))
    whole = codec.compress(image)
    passes = codec.twin.y_passes  # medvae-ctx codes y in two passes (anchors, then the rest)
    assert codec.twin.chunk == CHUNK and len(bitstream.unpack(whole)[1]) == (1 + passes if codec.twin.hyperprior else 1)
    expected = codec.decompress(whole)
    codec.twin.chunk = 300
    split = codec.compress(image)
    header, strings, _ = bitstream.unpack(split)
    twin, bottleneck = codec.twin, codec.model.entropy_bottleneck
    if twin.hyperprior:  # padded to 128 x 192: y is 8 x 12, z 2 x 3
        shapes = [(twin.y_channels, 8, 12), (bottleneck.channels, 2, 3)]
    else:  # padded to 112 x 144: y is 7 x 9
        shapes = [(bottleneck.channels, 7, 9)]
    counts = [-(-h // max(1, 300 // (c * w))) for c, h, w in shapes]
    assert len(strings) == sum(counts) + (passes - 1) * counts[0]
    assert len(strings) > 2
    np.testing.assert_array_equal(codec.decompress(split), expected)
    if not twin.hyperprior:  # the first band alone decodes to the first rows of the whole latent
        c, h, w = shapes[0]
        rows = max(1, 300 // (c * w))
        indexes = channel_indexes(c, w)
        all_rows = decode_symbols(bottleneck, strings, indexes, (1, c, h, w), 300)
        first = decode_symbols(bottleneck, strings[:1], indexes, (1, c, rows, w), 300)
        torch.testing.assert_close(first, all_rows[:, :, :rows], rtol=0, atol=0)
    forged = bitstream.pack(header, strings[:-1], b"")  # one string missing
    with pytest.raises(medvae.BitstreamError, match="strings"):
        codec.decompress(forged)


def test_new_files_are_format_3_and_name_the_exact_weights():
    codec = medvae.load("medvae", zoo.index()["medvae"]["default_quality"])
    header = medvae.read_header(codec.compress(_image()))
    assert header.version == bitstream.FORMAT_VERSION == 3
    assert header.fingerprint == codec.fingerprint == zoo.index()["medvae"]["qualities"][str(zoo.index()["medvae"]["default_quality"])]["fingerprint"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: the cross-device check runs where one is present")
def test_cpu_and_cuda_code_the_same_bytes_and_pixels():
    image = _image((128, 160))
    cpu = medvae.load("medvae")
    gpu = medvae.load("medvae", device="cuda")
    on_cpu, on_gpu = cpu.compress(image), gpu.compress(image)
    assert on_cpu == on_gpu
    np.testing.assert_array_equal(gpu.decompress(on_cpu), cpu.decompress(on_gpu))


def _tiled_equals_whole(codec: medvae.Codec, image: np.ndarray, monkeypatch) -> bytes:
    whole_bytes = codec.compress(image)
    whole = codec.decompress(whole_bytes)
    g_a, g_s = codec.twin.g_a, codec.twin.g_s
    assert (g_a.tile, g_a.halo, g_s.tile, g_s.halo) == (384, 64, 24, 6)  # a 512×512 slice is one tile
    g_a.tile, g_s.tile = 48, 2  # tiles of 48 image / 2 latent pixels: many tile borders
    if codec.twin.hyperprior:
        assert (codec.twin.h_a.tile, codec.twin.h_a.halo) == (128, 12)
        codec.twin.h_a.tile = 4  # one z pixel a tile
        monkeypatch.setattr(twin_module, "INDEX_BAND_VALUES", 1)  # scales one row of y at a time
    tiled_bytes = codec.compress(image)
    assert tiled_bytes == whole_bytes
    np.testing.assert_array_equal(codec.decompress(tiled_bytes), whole)
    return whole_bytes


@pytest.mark.parametrize("family", FAMILIES)
def test_tiled_coding_equals_whole_image_coding_bit_for_bit(family, monkeypatch):
    image = np.random.default_rng(3).integers(0, 4096, (150, 230)).astype(np.uint16)
    _tiled_equals_whole(medvae.Codec(small_model(family, seed=4)), image, monkeypatch)


def _reach(grad: torch.Tensor, centre: int) -> int:
    """How far from ``centre`` (columns) a gradient map is nonzero."""
    columns = grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
    return int(max(centre - columns.min(), columns.max() - centre))


@pytest.mark.parametrize("family", FAMILIES)
def test_tile_halos_cover_the_receptive_fields(family):
    """Tiled coding is exact only if each halo covers its transform's receptive field: measured
    here, from the float model's gradients, for one latent pixel of g_a and one latent cell
    of output of g_s (with the fusion of families that have one), and, for hyperpriors, for
    one z pixel of h_a and one y pixel of the hyper-synthesis h_s."""
    from medvae.exact.twin import CONTEXT_HALO, FUSION_HALO, HYPER_HALO, TILING

    model = small_model(family).double()
    stride = 16  # g_a / g_s resolution change
    x = torch.rand(1, 1, 512, 512, dtype=torch.double, requires_grad=True)
    y = model.g_a(x)
    centre = y.shape[-1] // 2
    y[0, :, centre, centre].abs().sum().backward()
    assert _reach(x.grad, centre * stride + stride // 2) <= TILING["g_a"][1] * stride
    y_hat = torch.rand(1, y.shape[1], 32, 32, dtype=torch.double, requires_grad=True)
    if hasattr(model, "fusion"):
        extra = model.fusion.body[0].in_channels - y.shape[1]
        side = torch.rand(1, extra, 32, 32, dtype=torch.double) if extra else None
        fused = model.fusion(y_hat, side) if side is not None else model.fusion(y_hat)
    else:
        fused = y_hat
    model.g_s(fused)[0, 0, 16 * stride : 17 * stride, 16 * stride : 17 * stride].sum().backward()
    assert _reach(y_hat.grad, 16) <= TILING["g_s"][1]
    if hasattr(model, "fusion"):  # the fusion runs inside the synthesis tiles with its own halo
        y_hat.grad = None
        again = model.fusion(y_hat, side) if side is not None else model.fusion(y_hat)
        again[0, :, 16, 16].abs().sum().backward()
        assert _reach(y_hat.grad, 16) <= FUSION_HALO
    if hasattr(model, "h_a"):
        y_in = torch.rand(1, y.shape[1], 128, 128, dtype=torch.double, requires_grad=True)
        model.h_a(y_in)[0, :, 16, 16].abs().sum().backward()
        assert _reach(y_in.grad, 16 * 4 + 2) <= TILING["h_a"][1] * 4
        z_hat = torch.rand(1, model.entropy_bottleneck.channels, 32, 32, dtype=torch.double, requires_grad=True)
        model.h_s(z_hat)[0, :, 64, 64].abs().sum().backward()
        assert _reach(z_hat.grad, 16) <= HYPER_HALO
    if hasattr(model, "context_model"):  # the checkerboard context, read band by band
        y_in = torch.rand(1, y.shape[1], 32, 32, dtype=torch.double, requires_grad=True)
        model.context_model(y_in)[0, :, 16, 16].abs().sum().backward()
        assert _reach(y_in.grad, 16) <= CONTEXT_HALO


def test_a_halo_narrower_than_the_receptive_field_is_caught_by_the_pixel_checksum(monkeypatch):
    codec = medvae.load("medvae", 1)
    data = _tiled_equals_whole(codec, _image((150, 230)), monkeypatch)
    codec.twin.g_s.halo = 0  # tile borders now show in the decoded image
    with pytest.raises(medvae.BitstreamError, match="do not match the checksum"):
        codec.decompress(data)


def test_checksum_made_band_by_band_covers_padding_and_extremes_in_every_band(monkeypatch):
    """compress() keeps only a running CRC of the rows of tiles as they are decoded, with the
    padding and extreme pixels restored band by band; decompress() checks it on the whole image."""
    from medvae.exceptions import split

    rng = np.random.default_rng(5)
    image = rng.integers(0, 1500, (150, 230)).astype(np.int16)
    yy, xx = np.mgrid[:150, :230]
    image[(yy - 75) ** 2 + (xx - 115) ** 2 > 70**2] = -2048  # a padding ring crossing every band
    image[10, 20], image[140, 200] = 32767, 32000  # extremes in the first and last bands
    assert split(image)[1]  # the codec stores them as exceptions
    codec = medvae.load("medvae", 1)
    codec.twin.g_s.tile = 2  # rows of tiles of 32 image rows: five bands
    data = codec.compress(image)
    decoded = codec.decompress(data)  # raises unless the streamed CRC is the whole image's
    assert decoded[0, 0] == -2048 and decoded[10, 20] == 32767 and decoded[140, 200] == 32000
    np.testing.assert_array_equal(decoded, codec.reconstruct(image)[0])
