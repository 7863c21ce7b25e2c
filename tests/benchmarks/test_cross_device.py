"""benchmarks/cross_device.py: files written here decode and re-encode identically; a changed file is reported."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module


def test_files_written_here_check_out_and_a_mismatch_is_caught(tmp_path, ct_like, capsys):
    cross_device = benchmark_module("cross_device")
    images = [ct_like, ct_like[:64, :48].astype("uint16") + 1024]
    assert cross_device.write(tmp_path, images) == 2 * len(cross_device.SETTINGS)
    assert "torch" in (tmp_path / "written_on.txt").read_text()
    with pytest.raises(SystemExit, match="not empty"):  # files of another run are never overwritten
        cross_device.write(tmp_path, images)
    assert cross_device.check(tmp_path, ["cpu"])
    assert "identical pixels 2/2  identical bytes 2/2" in capsys.readouterr().out
    digests = json.loads((tmp_path / "decoded.json").read_text())
    first = next(iter(digests))
    digests[first] = "0" * 64  # as if another machine had decoded other pixels
    (tmp_path / "decoded.json").write_text(json.dumps(digests))
    assert not cross_device.check(tmp_path, ["cpu"])
    assert "identical pixels 1/2" in capsys.readouterr().out
