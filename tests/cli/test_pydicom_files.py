"""Every file pydicom ships in ``pydicom/data/test_files`` either round-trips or fails with one line.

One ``compress`` over a copy of the whole folder, then one ``decompress`` over the
outputs, in a subprocess with a timeout so a hang fails the test instead of
blocking CI. Every file must be accounted for exactly once: outputs that decode
back to DICOM, or a single ``path: reason`` line on stderr. No traceback, no
other output on stderr. The largest images there are 512×512, so all are decoded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data

import medvae
from medvae import io as mio
from medvae.cli.files import strip_suffix

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
SEPARATOR = "----- decompress -----"


def run_cli_twice(src: Path, out: Path, restored: Path, checkpoint: str) -> tuple[list[int], str, str]:
    """compress src -> out, then decompress out -> restored, in one fresh Python process."""
    script = textwrap.dedent(f"""
        import sys
        from medvae.cli import main
        rc1 = main(["compress", {str(src)!r}, "-o", {str(out)!r}, "--model", {checkpoint!r}])
        sys.stdout.flush()
        print({SEPARATOR!r}, file=sys.stderr, flush=True)
        print({SEPARATOR!r}, flush=True)
        rc2 = main(["decompress", {str(out)!r}, "-o", {str(restored)!r}, "--model", {checkpoint!r}])
        print("EXIT", rc1, rc2)
    """)
    # The FutureWarning torch.jit prints when compressai imports torch_geometric comes
    # from this environment, before MedVAE runs; everything else on stderr must be ours.
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "EXIT", proc.stdout[-2000:]
    return [int(last[1]), int(last[2])], proc.stdout, proc.stderr


def failures(stderr: str, prefix: Path) -> dict[str, str]:
    """``{relative path: reason}`` from ``path: reason`` lines; every line must be one."""
    out = {}
    for line in stderr.splitlines():
        if not line.strip():
            continue
        assert line.startswith(f"{prefix}{os.sep}"), f"unexpected stderr line: {line!r}"
        path, _, reason = line.partition(": ")
        rel = Path(path).relative_to(prefix).as_posix()
        assert reason and rel not in out, line
        out[rel] = reason
    return out


def test_every_pydicom_test_file_round_trips_or_fails_with_one_line(tmp_path, checkpoint):
    src, out, restored = tmp_path / "test_files", tmp_path / "mvae", tmp_path / "restored"
    shutil.copytree(TEST_FILES, src)
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts))
    assert len(files) > 100

    (rc_compress, rc_decompress), stdout, stderr = run_cli_twice(src, out, restored, checkpoint)
    compress_err, _, decompress_err = stderr.partition(SEPARATOR + "\n")
    failed = failures(compress_err, src)
    failed_decoding = failures(decompress_err, out)

    # every input is accounted for exactly once: outputs, or one failure line
    produced: dict[str, list[str]] = {}
    for mvae in sorted(out.rglob("*.mvae")):
        rel = mvae.relative_to(out)
        key = rel.parent.as_posix() if rel.name.startswith("slice_") else rel.with_suffix("").as_posix()
        produced.setdefault(key, []).append(rel.as_posix())
    stems = {f: (Path(f).parent / strip_suffix(Path(f).name)).as_posix() for f in files}
    for f in files:
        has_output = stems[f] in produced
        assert has_output != (f in failed), f"{f}: output {has_output}, failure line {failed.get(f)!r}"
    assert len(produced) + len(failed) == len(files)
    assert set(produced) <= set(stems.values())
    assert rc_compress == (1 if failed else 0)
    ok = len(files) - len(failed)
    assert f"files         {ok} ok, {len(failed)} failed, 0 skipped" in stdout
    assert ok >= 40  # grayscale images in every transfer syntax pydicom's plugins decode

    # the reasons name what is wrong (the categories the issue lists)
    reasons = " | ".join(failed.values())
    for expected in ("colour image", "no pixel data", "unsupported file type", "cannot decode pixel data"):
        assert expected in reasons, expected
    assert "less than expected" in failed["MR_truncated.dcm"]  # a truncated file

    # every .mvae decodes back to a DICOM file with the lossy attributes set
    assert rc_decompress == (1 if failed_decoding else 0)
    assert not failed_decoding, failed_decoding
    codec = medvae.load(checkpoint)
    checked = 0
    for key, rels in produced.items():
        for rel in rels:
            dcm = restored / (rel[: -len(".mvae")] + ".dcm")
            back = pydicom.dcmread(dcm)
            assert back.LossyImageCompression == "01", rel
            header = medvae.read_header((out / rel).read_bytes())
            assert (back.Rows, back.Columns) == header.shape, rel
            if header.shape[0] * header.shape[1] <= 128 * 128 and checked < 5:  # a few, fully
                decoded = codec.decompress((out / rel).read_bytes())
                assert np.array_equal(mio.read(dcm).pixels[0], decoded), rel
                checked += 1
    assert checked == 5
