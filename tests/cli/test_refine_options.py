"""``--refine`` and ``--refine-steps`` on the command line, and what the parser costs."""

from __future__ import annotations

import json

import pydicom
import pytest

import medvae
from medvae.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_refines_and_refuses_what_it_cannot_do(tmp_path, checkpoint, capsys):
    src = pydicom.data.get_testdata_file("CT_small.dcm")
    assert main(["compress", src, "-o", str(tmp_path / "plain"), "--quality", "2"]) == 0
    assert main(["compress", src, "-o", str(tmp_path / "refined"), "--quality", "2", "--refine", "--refine-steps", "5"]) == 0
    plain, refined = (next((tmp_path / d).glob("*.mvae")).read_bytes() for d in ("plain", "refined"))
    assert refined != plain
    assert refined == medvae.load("medvae-ctx").compress(  # the default model's bytes through the API, metadata aside
        pydicom.dcmread(src).pixel_array, quality=2, bits_stored=16, refine_steps=5, metadata=medvae.read_metadata(refined))
    assert medvae.decompress(refined).shape == medvae.decompress(plain).shape == (128, 128)

    capsys.readouterr()
    assert main(["compress", src, "-o", str(tmp_path / "x"), "--model", checkpoint, "--refine"]) == 2
    assert "lambda" in capsys.readouterr().err
    assert main(["compress", src, "-o", str(tmp_path / "x"), "--refine-steps", "5"]) == 2
    assert "--refine-steps needs --refine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", src, "-o", str(tmp_path / "x"), "--refine", "--refine-steps", "0"])
    assert not (tmp_path / "x").exists()


def test_a_refined_base_keeps_lossless_and_near_lossless_coding_exact(tmp_path):
    """``--refine`` with ``--lossless`` or ``--max-error`` refines the lossy base the residual
    layer is coded against: other bytes, the same guarantee (the DICOM's pixels back exactly, or
    within the bound), and the API's file."""
    src = pydicom.data.get_testdata_file("CT_small.dcm")
    pixels = pydicom.dcmread(src).pixel_array
    codec = medvae.load("medvae")  # what --lossless and --max-error code with
    for flags, bound in ((["--lossless"], 0), (["--max-error", "2"], 2)):
        out = {}
        for name, extra in (("plain", []), ("refined", ["--refine", "--refine-steps", "3"])):
            folder = tmp_path / f"{name}-{bound}"
            assert main(["compress", src, "-o", str(folder), *flags, *extra]) == 0
            out[name] = next(folder.glob("*.mvae")).read_bytes()
        assert out["refined"] != out["plain"]
        assert out["refined"] == codec.compress(
            pixels, max_error=bound, bits_stored=16, refine_steps=3, metadata=medvae.read_metadata(out["refined"]))
        decoded = medvae.decompress(out["refined"])
        assert abs(decoded.astype(int) - pixels).max() == bound  # CT_small's noise reaches every bound


def test_cli_help_states_the_library_default(capsys):
    from medvae.refine import DEFAULT_STEPS

    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    assert f"(default {DEFAULT_STEPS})" in " ".join(capsys.readouterr().out.split())


def test_evaluate_names_refined_curves_apart(tmp_path):
    src = pydicom.data.get_testdata_file("CT_small.dcm")
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", src, "--codecs", "medvae=q1", "--refine", "--refine-steps", "3",
                 "--out", str(out), "--no-plots", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["codecs"]) == ["medvae (refined)"] and summary["meta"]["refine_steps"] == 3


def test_the_command_line_parser_does_not_load_torch():
    """``medvae info`` and ``--help`` start fast: building the parser (refinement options
    included) must not import torch, which only the commands that code need."""
    import subprocess
    import sys

    code = "import sys; from medvae.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
