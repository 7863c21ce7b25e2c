"""``medvae compress --lossless --series``: a volume's slices, each coded given a neighbour."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvae import bitstream, metrics, prediction
from medvae.cli import main
from medvae.series import CHAIN, MAX_CHAIN


def _volume(count: int) -> np.ndarray:
    """A small int16 'CT' volume: one anatomy drifting from slice to slice, noise of its own in each."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :72]
    return np.stack([
        (40 + 500 * np.sin(xx / 6.0 + 0.15 * k) * np.cos(yy / 5.0) + rng.normal(0, 20, yy.shape)).astype(np.int16)
        for k in range(count)
    ])


def _dicom_series(folder, names, blank=()) -> np.ndarray:
    """A DICOM series of one file per slice in ``folder``, ``names[k]``.dcm at position 5·k mm
    along the normal, from a small 12-bit volume (the slices ``blank`` all 0), which it returns."""
    volume = _volume(len(names))[:, :, :64].astype(np.uint16) + 1000
    volume[list(blank)] = 0
    folder.mkdir()
    for k, name in enumerate(names):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 12, 11
        ds.PixelData = volume[k].tobytes()
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"{name}.dcm")
    return volume


def _fail_after(monkeypatch, method: str, hand_over: str, count: int, error: Exception) -> list[int]:
    """Make ``medvae.Codec.<method>`` raise ``error`` from its ``hand_over`` callback (``written``,
    ``decoded``) once it has handed over ``count`` slices: a worker dying midway, a damaged file.
    Returns the slices handed over, as they come."""
    import medvae

    real, handed = getattr(medvae.Codec, method), []

    def failing(self, items, **options):
        callback = options.pop(hand_over)

        def counted(k, value):
            if len(handed) == count:
                raise error
            handed.append(k)
            callback(k, value)
        return real(self, items, **{hand_over: counted}, **options)

    monkeypatch.setattr(medvae.Codec, method, failing)
    return handed


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A volume of 2·CHAIN + 3 slices (a full run and a short one) through compress --lossless
    --series and decompress (two workers)."""
    root = tmp_path_factory.mktemp("series")
    volume = _volume(2 * CHAIN + 3)
    np.save(root / "vol.npy", volume)
    assert main(["compress", str(root / "vol.npy"), "-o", str(root / "c"), "--lossless", "--series"]) == 0
    assert main(["decompress", str(root / "c"), "-o", str(root / "d"), "--workers", "2"]) == 0
    return root, volume


def test_a_volume_round_trips_slice_by_slice(coded):
    root, volume = coded
    files = sorted((root / "c" / "vol").glob("slice_*.mvae"))
    versions = [bitstream.layout(bitstream.read_header(f.read_bytes()).version) for f in files]  # adapted or not
    series = bitstream.TWO_PREVIOUS_VERSION  # the shipped series model reads the two slices before
    # key slices alone, in the middle of each run of 2·CHAIN + 1; the others given the ones towards them
    assert versions == [series] * CHAIN + [8] + [series] * CHAIN + [8, series]
    for k, path in enumerate(sorted((root / "d" / "vol").glob("slice_*.npy"))):
        np.testing.assert_array_equal(np.load(path), volume[k])


def test_info_says_a_file_follows_its_previous_slice(coded, capsys):
    root, _ = coded
    assert main(["info", str(root / "c" / "vol" / "slice_0003.mvae"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["previous_slice_crc"] is not None
    assert record["format"] in bitstream.PREDICTED_VERSIONS and record["base_predicted_pairs"] > 0  # its base coded against the slice before
    assert record["base_step"] >= prediction.base_step(record["max_error"]) / prediction.UNIT_STEP > 1  # and more coarsely (or as its noise calls for)
    assert main(["info", str(root / "c" / "vol" / "slice_0003.mvae")]) == 0
    text = capsys.readouterr().out
    assert "coded given a neighbouring slice" in text and "coded against that slice's" in text
    assert f"latent quantized with step {record['base_step']:g}" in text
    assert record["hyper_predicted_table"] is not None and f"and z under table {record['hyper_predicted_table']}" in text


def test_info_names_both_slices_a_two_slice_file_read(tmp_path, capsys):
    import medvae
    from tests.conftest import small_series_residual

    volume = _volume(3)
    codec = medvae.load("medvae", quality=1)
    codec.series_residual = small_series_residual(codec, volume[2], volume[1::-1], count=2)
    (tmp_path / "s.mvae").write_bytes(codec.compress(volume[2], max_error=0, previous=[volume[1], volume[0]]))
    assert main(["info", str(tmp_path / "s.mvae"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert (record["previous_slice_crc"], record["earlier_slice_crc"]) == tuple(f"{bitstream.pixels_crc(v):08x}" for v in volume[1::-1])
    assert main(["info", str(tmp_path / "s.mvae")]) == 0
    assert "and the one beyond it" in capsys.readouterr().out


def test_a_series_file_without_its_neighbour_fails_clearly(coded, tmp_path, capsys):
    root, _ = coded
    shutil.copy(root / "c" / "vol" / "slice_0003.mvae", tmp_path / "slice_0003.mvae")
    assert main(["decompress", str(tmp_path / "slice_0003.mvae"), "-o", str(tmp_path / "d")]) == 1
    assert "coded given a neighbouring slice" in capsys.readouterr().err
    assert not (tmp_path / "d" / "slice_0003.npy").exists()


def test_series_needs_a_bound_or_a_target(tmp_path, capsys):
    np.save(tmp_path / "vol.npy", _volume(2))
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--series"]) == 2
    assert "add --lossless, --max-error, --ratio, --bpp or --psnr" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("max_chain, layouts", [(1, "SKSKS"), (4, "SSKSS"), (0, "KKKKK")])
def test_max_chain_sets_which_slices_are_coded_alone(tmp_path, max_chain, layouts):
    volume = _volume(5)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--max-error", "1", "--series",
                 "--max-chain", str(max_chain)]) == 0
    files = sorted((tmp_path / "c" / "vol").glob("slice_*.mvae"))
    headers = [bitstream.read_header(f.read_bytes()) for f in files]
    assert "".join("K" if h.previous_crc is None else "S" for h in headers) == layouts
    assert main(["decompress", str(tmp_path / "c" / "vol" / "slice_0000.mvae"), "-o", str(tmp_path / "d")]) == 0  # the chain to its key slice
    assert np.abs(np.load(tmp_path / "d" / "slice_0000.npy").astype(int) - volume[0]).max() <= 1


def test_a_folder_decoded_in_slice_order_decodes_each_file_once(tmp_path, monkeypatch):
    """Slices before a key slice are coded backward from it, yet decoding the folder file by file
    in slice order (as where an output is kept: here the key slice's) decodes every file once: the
    decoded files are kept for those coded given them."""
    from medvae.cli import decompress

    volume = _volume(2 * CHAIN + 1)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--lossless", "--series"]) == 0
    (tmp_path / "d" / "vol").mkdir(parents=True)
    np.save(tmp_path / "d" / "vol" / f"slice_{CHAIN:04d}.npy", volume[CHAIN])  # kept by --skip-existing
    decoded = []
    decode = decompress.decode
    monkeypatch.setattr(decompress, "decode", lambda data, *a: decoded.append(data) or decode(data, *a))
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--workers", "1", "--skip-existing"]) == 0
    assert len(decoded) == len(set(decoded)) == len(volume)
    for k, path in enumerate(sorted((tmp_path / "d" / "vol").glob("slice_*.npy"))):
        np.testing.assert_array_equal(np.load(path), volume[k])


def test_a_folder_decodes_each_run_at_once_and_a_damaged_file_alone(tmp_path, monkeypatch, capsys):
    """The files of each run (a key slice and the chains from it) are decoded by one
    ``Codec.decompress_series`` (its worker processes included), not file by file, and in one
    process (``--workers 1``) the runs together, as one graph. Where one of them is damaged, they
    go file by file: every other file is restored, and the damaged one's job says what is wrong
    with it."""
    import medvae

    volume = _volume(2 * CHAIN + 3)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--max-error", "2", "--series"]) == 0
    runs = []
    decompress_series = medvae.Codec.decompress_series
    monkeypatch.setattr(medvae.Codec, "decompress_series", lambda self, files, **kw: runs.append(len(files)) or decompress_series(self, files, **kw))
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--workers", "1"]) == 0
    assert runs == [len(volume)]  # in one process (--workers 1), both runs as one graph
    for k, path in enumerate(sorted((tmp_path / "d" / "vol").glob("slice_*.npy"))):
        assert np.abs(np.load(path).astype(int) - volume[k]).max() <= 2

    damaged = tmp_path / "c" / "vol" / "slice_0000.mvae"  # the end of a chain: no other file reads it
    data = bytearray(damaged.read_bytes())
    data[-20] ^= 1
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "e"), "--workers", "1"]) == 1
    assert "slice_0000.mvae" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "e" / "vol").glob("*.npy")) == [f"slice_{k:04d}.npy" for k in range(1, len(volume))]


def test_a_graph_decoding_that_fails_midway_keeps_what_it_wrote(tmp_path, monkeypatch, capsys):
    """Where decoding a folder's files at once stops (a file that decodes to other pixels than it
    records, say), the images written before stay written and counted, and the other files are
    decoded one by one, each given the files it reads."""
    from medvae.errors import BitstreamError

    volume = _volume(5)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--max-error", "1", "--series", "--max-chain", "2"]) == 0
    handed = _fail_after(monkeypatch, "decompress_series", "decoded", 2, BitstreamError("corrupted (injected)"))
    capsys.readouterr()
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--workers", "1"]) == 0
    assert "5 ok, 0 failed" in capsys.readouterr().out and len(handed) == 2
    for k in range(5):
        assert np.abs(np.load(tmp_path / "d" / "vol" / f"slice_{k:04d}.npy").astype(int) - volume[k]).max() <= 1


def test_a_resumed_series_writes_the_files_an_uninterrupted_run_writes(tmp_path):
    """--skip-existing keeps what an interrupted run wrote (coding order 2, 1, 0, 3, 4: cut after
    slice 1); the slices coded given a kept one are coded given its decoded file, not alone."""
    volume = _volume(5)
    np.save(tmp_path / "vol.npy", volume)
    command = ["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--max-error", "1", "--series", "--max-chain", "2"]
    assert main(command) == 0
    folder = tmp_path / "c" / "vol"
    whole = {path.name: path.read_bytes() for path in folder.glob("slice_*.mvae")}
    for k in (0, 3, 4):
        (folder / f"slice_{k:04d}.mvae").unlink()
    assert main([*command, "--skip-existing"]) == 0
    assert {path.name: path.read_bytes() for path in folder.glob("slice_*.mvae")} == whole


def test_a_resume_with_another_max_chain_fails_clearly_and_overwrites_nothing(tmp_path, capsys):
    """The kept files were coded under another plan (--max-chain 1: slice 2 follows slice 1), which
    the resumed run (--max-chain 2: slice 2 is a key slice) cannot decode them by: the file fails
    with that reason instead of coding slice 0 given a slice it does not decode to."""
    volume = _volume(5)
    np.save(tmp_path / "vol.npy", volume)
    command = ["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--max-error", "1", "--series"]
    assert main([*command, "--max-chain", "1"]) == 0
    folder = tmp_path / "c" / "vol"
    (folder / "slice_0000.mvae").unlink()
    kept = {path.name: path.read_bytes() for path in folder.glob("slice_*.mvae")}
    capsys.readouterr()
    assert main([*command, "--max-chain", "2", "--skip-existing"]) == 1
    err = capsys.readouterr().err
    assert f"the existing output {folder / 'slice_0002.mvae'} does not decode as this series codes it" in err and "--force" in err
    assert "were written before the failure" not in err  # the 4 files were kept, not written
    assert {path.name: path.read_bytes() for path in folder.glob("slice_*.mvae")} == kept


def test_the_cli_codes_a_volume_as_compress_series_does(tmp_path):
    """A volume's slices, and each run of a DICOM series of one file per slice, go through
    ``Codec.compress_series`` itself (its worker processes included), each slice with the source
    metadata of its own: the same base prediction block (steps, z's table) and the same strings,
    slice by slice. (A resumed run goes through it too, with the files kept: the resume tests
    compare its files with these.)"""
    import medvae

    volume = _volume(5)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--max-error", "1", "--series", "--max-chain", "2"]) == 0
    cli = [path.read_bytes() for path in sorted((tmp_path / "c" / "vol").glob("slice_*.mvae"))]
    codec = medvae.load("medvae")
    library = codec.compress_series(list(volume), max_error=1, max_chain=2, bits_stored=bitstream.read_header(cli[0]).bits_stored)
    assert [bitstream.unpack(f)[1] for f in cli] == [bitstream.unpack(f)[1] for f in library]
    assert len({bitstream.unpack(f)[2] for f in cli}) == 5  # each slice's own metadata (its position)

    series = _dicom_series(tmp_path / "in", "abcde")
    assert main(["compress", str(tmp_path / "in"), "-o", str(tmp_path / "d"), "--max-error", "1", "--series"]) == 0
    cli = [(tmp_path / "d" / f"{name}.mvae").read_bytes() for name in "abcde"]
    library = codec.compress_series(list(series), max_error=1, bits_stored=12)
    for ours, theirs in zip(cli, library):
        (a, strings_a, _), (b, strings_b, _) = bitstream.unpack(ours), bitstream.unpack(theirs)
        assert (a.base_prediction, a.residual_strings, strings_a) == (b.base_prediction, b.residual_strings, strings_b)


def test_a_dicom_run_coded_at_once_counts_every_file_and_keeps_what_a_failure_left(tmp_path, capsys, monkeypatch):
    """The key slice's job codes its whole run; every file of it is counted as coded by its own
    job. Where the coding fails midway, the files written before stay written and counted, each
    file not written fails with the reason, and --skip-existing then codes those given the kept
    ones (Codec.compress_series' ``kept``) into the files an uninterrupted run writes, without
    coding the kept ones again."""
    import medvae

    _dicom_series(tmp_path / "in", "abcde")
    command = ["compress", str(tmp_path / "in"), "-o", str(tmp_path / "c"), "--max-error", "1", "--series"]
    assert main(command) == 0
    assert "5 ok, 0 failed" in capsys.readouterr().out
    whole = {name: (tmp_path / "c" / f"{name}.mvae").read_bytes() for name in "abcde"}

    real = medvae.Codec.compress_series
    handed = _fail_after(monkeypatch, "compress_series", "written", 2, MemoryError("out of memory"))  # a worker dies
    assert main([*command[:3], str(tmp_path / "d"), *command[4:]]) == 1
    out, err = capsys.readouterr()
    assert "2 ok, 3 failed" in out and err.count("out of memory") == 3
    written = {name for name in "abcde" if (tmp_path / "d" / f"{name}.mvae").exists()}
    assert handed[0] == 2 and len(written) == 2 and "c" in written  # the key slice, c, was written first and kept
    assert all((tmp_path / "d" / f"{name}.mvae").read_bytes() == whole[name] for name in written)

    monkeypatch.setattr(medvae.Codec, "compress_series", real)
    handed.clear()
    resumed = _fail_after(monkeypatch, "compress_series", "written", 5, MemoryError("not reached"))  # counts what is written
    assert main([*command[:3], str(tmp_path / "d"), *command[4:], "--skip-existing"]) == 0
    assert "3 ok, 0 failed, 2 skipped" in capsys.readouterr().out and len(resumed) == 3
    assert {name: (tmp_path / "d" / f"{name}.mvae").read_bytes() for name in "abcde"} == whole


@pytest.mark.parametrize("name", ["e", "c"], ids=["last file", "key slice"])
def test_a_dicom_file_that_does_not_read_fails_alone(tmp_path, capsys, monkeypatch, name):
    """A file of a series whose pixels do not read fails with its own message; the other files of
    its run are coded as a run without it, and written. Where that file is the key slice's, whose
    job codes the run, and the coding of the others fails too, the key slice's file still says
    why it failed: it does not read (the others say why they were not coded)."""
    _dicom_series(tmp_path / "in", "abcde")
    broken = tmp_path / "in" / f"{name}.dcm"
    broken.write_bytes(broken.read_bytes()[:-500])  # truncated pixel data
    command = ["compress", str(tmp_path / "in"), "--max-error", "1", "--series"]
    assert main([*command, "-o", str(tmp_path / "c")]) == 1
    out, err = capsys.readouterr()
    others = [n for n in "abcde" if n != name]
    assert "4 ok, 1 failed" in out and f"{name}.dcm" in err and not any(f"{n}.dcm" in err for n in others)
    assert sorted(path.name for path in (tmp_path / "c").glob("*.mvae")) == [f"{n}.mvae" for n in others]

    _fail_after(monkeypatch, "compress_series", "written", 0, MemoryError("out of memory"))
    assert main([*command, "-o", str(tmp_path / "d")]) == 1
    out, err = capsys.readouterr()
    lines = {n: next(line for line in err.splitlines() if f"{n}.dcm" in line) for n in "abcde"}
    assert "0 ok, 5 failed" in out and "out of memory" not in lines[name] and all("out of memory" in lines[n] for n in others)


def test_a_dicom_series_runs_are_one_graph_in_one_process(tmp_path, monkeypatch):
    """With the batch in this process (``--workers 1``), the runs of a DICOM series (here 3 and 2
    files) are coded by one ``compress_series``; with worker processes of its own, each run by
    one, in its worker (the same files either way)."""
    import medvae

    _dicom_series(tmp_path / "in", "abcde")
    calls = []
    compress_series = medvae.Codec.compress_series
    monkeypatch.setattr(medvae.Codec, "compress_series", lambda self, images, **kw: calls.append(len(images)) or compress_series(self, images, **kw))
    command = ["compress", str(tmp_path / "in"), "--max-error", "1", "--series", "--max-chain", "1"]
    assert main([*command, "-o", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert calls == [5]
    assert main([*command, "-o", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert all((tmp_path / "one" / f"{n}.mvae").read_bytes() == (tmp_path / "two" / f"{n}.mvae").read_bytes() for n in "abcde")


def test_a_resumed_dicom_series_reads_its_chains_step_back_from_the_kept_files(tmp_path):
    """Key slice c; a is coded given b and e given d, each as much coarser as its chain's first
    slice chose (medvae.series.StepSearch): with a and e deleted, the resumed run reads that
    choice back from b's and d's files (and their inputs) and writes the same files."""
    source = tmp_path / "in"
    _dicom_series(source, "abcde")
    command = ["compress", str(source), "-o", str(tmp_path / "c"), "--max-error", "1", "--series"]
    assert main(command) == 0
    whole = {name: (tmp_path / "c" / f"{name}.mvae").read_bytes() for name in "abcde"}
    for name in "ae":
        (tmp_path / "c" / f"{name}.mvae").unlink()
    assert main([*command, "--skip-existing"]) == 0
    assert {name: (tmp_path / "c" / f"{name}.mvae").read_bytes() for name in "abcde"} == whole


def test_a_resumed_dicom_series_codes_its_files_given_the_kept_ones(tmp_path):
    source = tmp_path / "in"
    _dicom_series(source, "abc")
    command = ["compress", str(source), "-o", str(tmp_path / "c"), "--lossless", "--series"]
    assert main(command) == 0
    whole = {name: (tmp_path / "c" / f"{name}.mvae").read_bytes() for name in "abc"}
    (tmp_path / "c" / "c.mvae").unlink()  # b is the key slice; c was coded given it
    assert main([*command, "--skip-existing"]) == 0
    assert {name: (tmp_path / "c" / f"{name}.mvae").read_bytes() for name in "abc"} == whole


def test_decompress_gives_each_run_of_a_series_to_one_worker(tmp_path):
    """Files that decode given one another (a key slice and the slices coded outwards from it)
    form one group, so one worker decodes each of them once; other files are groups of their own."""
    from medvae.cli.decompress import series_groups
    from medvae.cli.files import Task

    np.save(tmp_path / "vol.npy", _volume(5))
    np.save(tmp_path / "one.npy", _volume(1)[0])
    assert main(["compress", str(tmp_path / "vol.npy"), str(tmp_path / "one.npy"), "-o", str(tmp_path / "c"),
                 "--lossless", "--series", "--max-chain", "1"]) == 0  # runs: slices 0-2 (key 1) and 3-4 (key 3)
    files = sorted((tmp_path / "c" / "vol").glob("slice_*.mvae")) + [tmp_path / "c" / "one.mvae", tmp_path / "c" / "none.mvae"]
    tasks = [Task(f, tmp_path / "d" / f.stem) for f in files]  # none.mvae does not exist: a group of its own
    assert sorted(series_groups(tasks)) == [[0, 1, 2], [3, 4], [5], [6]]
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--workers", "2"]) == 0
    assert main(["compress", str(tmp_path / "vol.npy"), str(tmp_path / "one.npy"), "-o", str(tmp_path / "c2"),
                 "--lossless", "--series", "--max-chain", "1", "--workers", "2"]) == 0  # each input in one worker
    assert {f.relative_to(tmp_path / "c2"): f.read_bytes() for f in (tmp_path / "c2").rglob("*.mvae")} == \
        {f.relative_to(tmp_path / "c"): f.read_bytes() for f in (tmp_path / "c").rglob("*.mvae")}


@pytest.mark.parametrize("arguments, message", [
    (["--series", "--max-chain", "-1"], "--max-chain must be 0 to 4096 (0: every slice alone), got -1"),
    (["--series", "--max-chain", "4097"], "--max-chain must be 0 to 4096"),
    (["--max-chain", "4"], "--max-chain sets how many slices --series may decode before one: add --series"),
    (["--series", "--key-every", "8"], "--key-every is now --max-chain N"),
])
def test_max_chain_out_of_range_or_without_series_is_a_usage_error(tmp_path, capsys, arguments, message):
    np.save(tmp_path / "vol.npy", _volume(2))
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--lossless", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_rate_control_along_a_series(tmp_path, capsys):
    """``--series --psnr``: past the lossy model's reach, rate control's near-lossless files code
    each slice given its neighbours (format 10: the last slice reads two); every slice meets the target, decoded from the folder."""
    volume = _volume(4)
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--series", "--psnr", "70"]) == 0
    files = sorted((tmp_path / "c" / "vol").glob("slice_*.mvae"))
    headers = [bitstream.read_header(f.read_bytes()) for f in files]
    assert [bitstream.layout(h.version) for h in headers] == [10, 8, 10, 10]  # key slice 1
    assert headers[3].earlier_crc == headers[1].pixels_crc != headers[3].previous_crc  # the CLI passed both slices
    captured = capsys.readouterr()
    assert "PSNR 70 dB: optimized, step" in captured.out + captured.err  # the rate note (optimized near-lossless)
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d")]) == 0
    for k, path in enumerate(sorted((tmp_path / "d" / "vol").glob("slice_*.npy"))):
        assert metrics.psnr(volume[k], np.load(path), 16) >= 70


def test_a_dicom_series_of_one_file_per_slice_round_trips(tmp_path):
    """Files named against their anatomical order: ranked by Image Position, the middle one coded
    alone and the others given it; decoded back, each file finding its neighbours by their pixel CRCs."""
    source = tmp_path / "in"
    volume = _dicom_series(source, "cab")  # anatomical order c, a, b
    assert main(["compress", str(source), "-o", str(tmp_path / "c"), "--lossless", "--series"]) == 0
    versions = {name: bitstream.layout(bitstream.read_header((tmp_path / "c" / f"{name}.mvae").read_bytes()).version) for name in "cab"}
    assert versions == {"c": 10, "a": 8, "b": 10}
    assert main(["compress", str(source), "-o", str(tmp_path / "x"), "--lossless", "--series", "--workers", "2"]) == 0
    assert {name: (tmp_path / "x" / f"{name}.mvae").read_bytes() for name in "cab"} == \
        {name: (tmp_path / "c" / f"{name}.mvae").read_bytes() for name in "cab"}  # one series: one worker, the same files
    assert main(["decompress", str(tmp_path / "c" / "b.mvae"), str(tmp_path / "c" / "c.mvae"), "-o", str(tmp_path / "d")]) == 0
    for k, name in enumerate("cab"):
        if name != "a":
            np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "d" / f"{name}.dcm").pixel_array, volume[k])


def test_compress_gives_each_run_of_a_dicom_series_to_one_worker(tmp_path):
    """The files of a series run in their plan's order, and each run (a key slice and the files
    coded outwards from it) is one worker's group: runs read nothing of one another."""
    from medvae.cli.compress import series_groups
    from medvae.cli.files import Task
    from medvae.cli.series_order import series_order

    _dicom_series(tmp_path / "in", "abcde")
    tasks = [Task(tmp_path / "in" / f"{name}.dcm", tmp_path / "c" / name) for name in "edcba"]
    ordered, ranks = series_order(tasks, 1)  # runs: a b c (key b) and d e (key d)
    assert [t.source.stem for t in ordered] == ["b", "a", "c", "d", "e"]
    assert series_groups(ordered, ranks) == [[0, 1, 2], [3, 4]]


def test_a_chain_through_blank_slices_finds_the_slice_beyond(tmp_path):
    """Slice 13 reads blank slice 12 and slice 11 (padding at both ends; runs 0-6 and 7-13). Its
    file, named to sort first, is decoded before any other: of the blank files, the chain must take
    the one that itself read slice 11, not the first blank one listed."""
    names = [f"b{k:02d}" if k != 13 else "a13" for k in range(14)]
    volume = _dicom_series(tmp_path / "in", names, blank=(0, 1, 2, 3, 4, 5, 6, 12, 13))
    assert main(["compress", str(tmp_path / "in"), "-o", str(tmp_path / "c"), "--lossless", "--series", "--max-chain", "3"]) == 0
    header = bitstream.read_header((tmp_path / "c" / "a13.mvae").read_bytes())
    assert (header.previous_crc, header.earlier_crc) == (bitstream.pixels_crc(volume[12]), bitstream.pixels_crc(volume[11]))
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--workers", "1"]) == 0
    for k, name in enumerate(names):
        np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "d" / f"{name}.dcm").pixel_array, volume[k])


def test_identical_slices_do_not_send_decoding_round_in_circles(tmp_path):
    """Blank slices decode to the same pixels, so a file's previous one is found by its CRC among
    several: each is taken once, the chain reaches its key slice, and each file reads the slices
    it was coded given by their CRCs (the chain may pass another blank file than the one coded)."""
    import medvae

    blank, middle = np.full((32, 40), 7, np.int16), _volume(1)[0, :32, :40]
    volume = [blank, blank, middle, blank, blank]  # the key slice in the middle, blanks coded outwards from it
    codec = medvae.load("medvae")
    files = codec.compress_series(volume, max_error=0, max_chain=MAX_CHAIN)
    assert [bitstream.read_header(f).previous_crc is None for f in files] == [False, False, True, False, False]
    for decoded, image in zip(codec.decompress_series(files), volume):
        np.testing.assert_array_equal(decoded, image)
    (tmp_path / "c").mkdir()
    for name, data in zip("aedbc", files):  # names against the coding order
        (tmp_path / "c" / f"{name}.mvae").write_bytes(data)
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "--workers", "1"]) == 0
    for name, image in zip("aedbc", volume):
        np.testing.assert_array_equal(np.load(tmp_path / "d" / f"{name}.npy"), image)


def test_a_damaged_dicom_header_is_coded_alone_not_a_crash(tmp_path):
    from medvae.cli.files import Task
    from medvae.cli.series_order import series_order

    raw = (tmp_path / "good.dcm")
    pydicom.dcmread(get_testdata_file("CT_small.dcm")).save_as(raw)
    data = raw.read_bytes()
    rows = data.index(b"\x28\x00\x10\x00")  # (0028,0010) Rows, explicit VR little endian: "US", length 2
    (tmp_path / "bad.dcm").write_bytes(data[:rows] + b"\x28\x00\x08\x00IS\x02\x00ab" + data[rows:])  # Number of Frames "ab"
    tasks = [Task(tmp_path / "bad.dcm", tmp_path / "out" / "bad")]
    assert series_order(tasks, CHAIN) == (tasks, {})


def test_a_slice_after_a_lossy_choice_reads_only_that_slice(tmp_path):
    """Rate control along a series may code a slice lossily (a constant slice meets any PSNR so):
    its file reads no slice, so the next file reads it alone, and the folder decodes."""
    volume = _volume(3)
    volume[1] = 1000
    np.save(tmp_path / "vol.npy", volume)
    assert main(["compress", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "c"), "--series", "--psnr", "70"]) == 0
    headers = [bitstream.read_header(f.read_bytes()) for f in sorted((tmp_path / "c" / "vol").glob("slice_*.mvae"))]
    assert headers[1].previous_crc is None and headers[1].max_error is None  # lossy
    assert headers[2].previous_crc == headers[2].earlier_crc == headers[1].pixels_crc
    assert main(["decompress", str(tmp_path / "c"), "-o", str(tmp_path / "d")]) == 0
    for k, path in enumerate(sorted((tmp_path / "d" / "vol").glob("slice_*.npy"))):
        assert metrics.psnr(volume[k], np.load(path), 16) >= 70
