"""``medvae decompress``: ``.mvae`` files and folders back to the source's format.

``OUT/x.mvae`` from a DICOM source becomes ``x.dcm``: the source's attributes,
with the lossy-compression attributes set, a new SOP Instance UID and a
reference to the source image. Other sources come back as they were stored:
a PNG as 16-bit (or 8-bit) PNG, a NIfTI or NRRD volume slice as a one-slice
NIfTI or NRRD at the slice's position, a TIFF page as TIFF, a .npy slice as
.npy. A bitstream written through the Python API (no source header) becomes
``.npy``. Folders are searched recursively for ``*.mvae``; the tree is mirrored.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from medvae.cli import batch, common
from medvae.cli.common import Options, add_common_arguments
from medvae.cli.files import Task, UsageError, plan
from medvae.io.files import publish

EXAMPLES = """examples:
  medvae decompress scans_mvae/ -o restored/
  medvae decompress x.mvae -o restored/ --model runs/x/best.pt   weights that are not shipped
"""


_state: dict = {}


def load_codec(model: str | None):
    """The codec for ``--model`` (None: the shipped weights each file's header names)."""
    return None if model is None else common.load_codec(model)


def setup(model: str | None, options: Options) -> None:
    """Prepare this process for :func:`decompress_file`."""
    _state["codec"] = load_codec(model)
    _state["options"] = options


def decompress_file(task: Task) -> batch.Outcome:
    """Decode one ``.mvae`` file and write the restored image; never raises."""
    options: Options = _state["options"]
    ahead = batch.prepared(task.source)
    if ahead is not None:  # decoded with its group (restore_group)
        return ahead
    try:
        group = options.decode_groups.get(str(task.source))
        done = restore_group(group, _state["codec"], options) if group else None
        return done if done is not None else restore(task, _state["codec"], options)
    except Exception as exc:  # one line per file; the batch goes on
        failed = batch.failure(task.source, exc, options.debug)
        failed.message = failed.message.replace("(model=...)", "(--model CHECKPOINT)")
        return failed


class Restoring(NamedTuple):
    """A file to restore, read and checked, and where its image goes (:func:`to_restore`)."""

    task: Task
    data: bytes
    header: object
    info: object  # the source's metadata it carries (medvae.source_metadata), or None
    target: Path


def to_restore(task: Task, options: Options) -> Restoring | batch.Outcome:
    """``task``'s file read and checked (magic, lengths and CRC, before any decoding), with its
    output path; or, where ``--skip-existing`` keeps the output, the outcome that says so.
    Raises where the output exists (without ``--force``) or is the input."""
    from medvae import bitstream, source_metadata
    from medvae.cli.restore import suffix_for

    data = task.source.read_bytes()
    header, _, meta = bitstream.unpack(data)
    info = source_metadata.unpack(meta) if source_metadata.is_source_metadata(meta) else None
    target = task.base.with_name(task.base.name + suffix_for(info))
    if target.resolve() == task.source.resolve():
        raise UsageError("refusing to overwrite the input with its own output")
    if target.exists() and not options.force:
        if options.skip_existing:  # counted with what it kept
            return batch.Outcome(task.source, "skipped", "output exists", outputs=[target], slices=1,
                                 input_bytes=len(data), output_bytes=target.stat().st_size)
        raise FileExistsError(f"output {target} exists")
    return Restoring(task, data, header, info, target)


def restore(task: Task, codec, options: Options) -> batch.Outcome:
    """Decode ``task.source`` with ``codec`` (shipped weights when None) and publish the result."""
    file = to_restore(task, options)
    if isinstance(file, batch.Outcome):
        return file
    image = _decoded.of_file(task.source, file.header)  # decoded already, for a file coded given it
    if image is None:
        previous = previous_slices(task.source, codec, file.header) if file.header.previous_crc is not None else None
        image = decode(file.data, codec, previous)
        _decoded.remember(task.source, file.header, image)
    return published(file, image, options)


def published(file: Restoring, image, options: Options) -> batch.Outcome:
    """Write ``file``'s decoded ``image`` in the source's format; what was done."""
    from medvae import metrics
    from medvae.cli.restore import render

    header, info = file.header, file.info
    image_bytes = header.n_bytes - header.metadata_bytes
    bits = header.bits_stored or (info.bits_stored if info else 0) or image.dtype.itemsize * 8
    ratio = metrics.compression_ratio(image_bytes, header.shape, bits)
    blob = render(image, info, compression_ratio=ratio, name=str(file.target), max_error=header.max_error)
    publish(file.target, blob, overwrite=options.force)
    pixels = header.shape[0] * header.shape[1]
    return batch.Outcome(
        file.task.source, outputs=[file.target], slices=1, input_bytes=len(file.data), output_bytes=len(blob),
        image_bytes=image_bytes, pixels=pixels, bpp_sum=8.0 * image_bytes / pixels,
        file_bpp_sum=8.0 * len(file.data) / pixels,
    )


def restore_group(group: list[Task], codec, options: Options) -> batch.Outcome | None:
    """Files that decode given one another (:func:`series_groups`; ``group[0]`` this job's)
    decoded at once by :meth:`medvae.Codec.decompress_series` (independent chains in worker
    processes, :mod:`medvae.workers`), then each published; the outcome of the first, the others'
    kept for their own jobs, which the batch hands out next in this process. None, and each file
    goes its own way (:func:`restore`, which says what is wrong with which file), where any output
    is kept or in the way, the files name other weights, or their images would hold more than
    :class:`DecodedSlices` keeps; where one does not decode, the files written before stay
    written and counted, and the others go their own way."""
    from medvae.codec import shipped_codec
    from medvae.errors import MedVAEError

    try:
        files = [to_restore(task, options) for task in group]
    except (MedVAEError, OSError, UsageError):
        return None
    if any(isinstance(file, batch.Outcome) for file in files):
        return None
    headers = [file.header for file in files]
    if len({(h.model, h.fingerprint) for h in headers}) > 1 or sum(map(_image_bytes, headers)) > _decoded.keep_bytes:
        return None
    outcomes: dict[int, batch.Outcome] = {}

    def decoded(k: int, image) -> None:  # written out at once, and shown as the first file's slices
        try:
            outcomes[k] = published(files[k], image, options)
        except Exception as exc:  # this file's failure; the others are written
            outcomes[k] = batch.failure(files[k].task.source, exc, options.debug)
        batch.progress(group[0].source, len(outcomes), len(group))

    try:
        coder = codec if codec is not None else shipped_codec(headers[0])
        coder.decompress_series([file.data for file in files], decoded=decoded)
    except MedVAEError:  # the written ones stay written and counted; the others go one by one
        pass
    batch.prepare(o for k, o in outcomes.items() if k)
    return outcomes.get(0) or restore(group[0], codec, options)


def decode(data: bytes, codec, previous=None):
    """The pixels of a file, with ``codec`` (the shipped weights it names when None)."""
    import medvae

    return medvae.decompress(data, previous=previous) if codec is None else codec.decompress(data, previous)


class DecodedSlices:
    """The files decoded last in this process, for the files coded given them: each file (path,
    modification time, size) with its pixels, found again by :func:`medvae.series.slice_key`
    (pixel CRC, shape, dtype). The oldest go once their pixels pass ``keep_bytes``, so a series'
    files decoded in slice order decode once each, whichever way the series was coded (a key
    slice's run is coded outwards from it)."""

    def __init__(self, keep_bytes: int = 512 << 20):
        self.keep_bytes = keep_bytes
        self._files: OrderedDict[tuple, tuple[tuple, object]] = OrderedDict()  # file -> (slice key, pixels)
        self._slices: dict[tuple, object] = {}  # slice key -> pixels
        self._bytes = 0

    def of_file(self, path: Path, header) -> object | None:
        """The pixels of ``path`` (``header``: its header) if it was decoded as it is now."""
        from medvae.series import slice_key

        kept = self._files.get(_key(path))
        return kept[1] if kept is not None and kept[0] == slice_key(header.pixels_crc, header) else None

    def read_by(self, header, complete: bool = False) -> list | None:
        """The slices a file (``header``) reads, nearest first, among those kept; None for a file
        coded alone, when none is kept (decoding then says what is missing), or, ``complete``,
        when one is missing."""
        from medvae.series import slices_wanted

        wanted = slices_wanted(header)
        found = [self._slices[key] for key in wanted if key in self._slices]
        return found if found and (len(found) == len(wanted) or not complete) else None

    def remember(self, path: Path, header, image) -> None:
        """Keep ``path``'s decoded pixels (``header``: its header); forget the oldest beyond the budget."""
        from medvae.series import slice_key

        file = _key(path)
        if file in self._files:
            self._forget(file)
        key = slice_key(header.pixels_crc, header)
        self._files[file] = (key, image)
        self._slices[key] = image
        self._bytes += image.nbytes
        while len(self._files) > 1 and self._bytes > self.keep_bytes:
            self._forget(next(iter(self._files)))

    def _forget(self, file: tuple) -> None:
        key, image = self._files.pop(file)
        self._bytes -= image.nbytes
        if self._slices.get(key) is image:  # another kept file with the same pixels serves its readers
            other = next((pixels for k, pixels in self._files.values() if k == key), None)
            if other is None:
                del self._slices[key]
            else:
                self._slices[key] = other


_decoded = DecodedSlices()


def previous_slices(path: Path, codec, header) -> list | None:
    """The decoded slices a file ``medvae compress --series`` coded given its neighbours
    (``header``: its header) reads, nearest first: from the files decoded last
    (:class:`DecodedSlices`), else by decoding the ``.mvae`` beside it that decodes to the slice
    it was coded given (:func:`_file_before`), after its own back to a key slice, coded alone, or
    to a file whose slices are decoded (at most 7 files from ``compress --series``, N with
    ``--max-chain N``; longer than :data:`medvae.series.MAX_CHAIN` is refused). Slices are found by
    their CRCs, not their places: slices with the same pixels (blank ones) may be found in another
    file than the one coded. Raises :class:`BitstreamError` when a file of the chain is missing, or
    the chain comes back to a file it passed."""
    import medvae
    from medvae.errors import BitstreamError
    from medvae.series import MAX_CHAIN

    chain = []  # (file, bytes, header) before ``path`` back to one whose slices are decoded, nearest first
    visited = {path.resolve()}
    current, wanted = path, header
    while _decoded.read_by(wanted, complete=True) is None:
        before = _file_before(current, wanted, visited)
        visited.add(before.resolve())
        data = before.read_bytes()
        chain.append((before, data, medvae.read_header(data)))
        if chain[-1][2].previous_crc is None:
            break
        if len(chain) > MAX_CHAIN:
            raise BitstreamError(f"{path.name}: more than {MAX_CHAIN} files each coded given a neighbour; refused")
        current, wanted = before, chain[-1][2]
    for before, data, earlier in reversed(chain):  # each file given the slices decoded before it
        _decoded.remember(before, earlier, decode(data, codec, _decoded.read_by(earlier)))
    return _decoded.read_by(header)


def _key(path: Path) -> tuple:
    """A file as it is now: a file rewritten since it was decoded is decoded again."""
    stat = path.stat()
    return path.resolve(), stat.st_mtime_ns, stat.st_size


def _file_before(path: Path, wanted, visited: set[Path]) -> Path:
    """The ``.mvae`` beside ``path`` that decodes to the slice a file (``wanted``: its header) was
    coded given: ``slice_N−1.mvae`` or ``slice_N+1.mvae`` beside ``slice_N.mvae`` (a volume's
    outputs), else a sibling (a DICOM series' outputs keep their files' names); never one of
    ``visited`` (slices with the same pixels, blank ones, must not send the chain back). Of the
    files with those pixels, one that itself read the slice beyond (``wanted``'s second CRC) comes
    first, so decoding it also gives that slice. Raises :class:`BitstreamError`."""
    from medvae.errors import BitstreamError
    from medvae.series import slice_key

    def decodes_to(candidate: Path) -> bool:
        header = _header(candidate)
        return header is not None and slice_key(header.pixels_crc, header) == slice_key(wanted.previous_crc, wanted)

    def read_beyond(candidate: Path) -> bool:
        header, beyond = _header(candidate), wanted.earlier_crc
        return beyond is None or header.previous_crc == beyond or (header.previous_crc is None and beyond == wanted.previous_crc)

    match = re.fullmatch(r"slice_(\d+)\.mvae", path.name)
    nearby = [path.with_name(f"slice_{int(match.group(1)) + step:0{len(match.group(1))}d}.mvae") for step in (-1, 1)] if match else []
    fallback = None
    for candidate in [*nearby, *_siblings(path.parent)]:
        if candidate.resolve() not in visited and decodes_to(candidate):
            if read_beyond(candidate):
                return candidate
            fallback = fallback or candidate
    if fallback is not None:
        return fallback
    raise BitstreamError(f"{path.name} was coded given a neighbouring slice (pixel CRC {wanted.previous_crc:08x}), whose "
                         ".mvae is not beside it; decode the folder as medvae compress --series wrote it")


def _siblings(folder: Path) -> list[Path]:
    """The ``.mvae`` files of ``folder``, listed once per state of the folder."""
    try:
        return _siblings_of(folder.resolve(), folder.stat().st_mtime_ns)
    except OSError:
        return []


@lru_cache(maxsize=64)
def _siblings_of(folder: Path, mtime: int) -> list[Path]:
    return sorted(folder.glob("*.mvae"))


@lru_cache(maxsize=65536)
def _header_of(key: tuple):
    from medvae import bitstream
    from medvae.errors import MedVAEError

    try:
        return bitstream.read_header(key[0].read_bytes())
    except (MedVAEError, OSError):
        return None


def _header(path: Path):
    """The header of a ``.mvae`` (None for a damaged, unreadable or missing one), read once per file state."""
    try:
        return _header_of(_key(path))
    except OSError:  # gone, a dangling link
        return None


def series_groups(tasks: list[Task]) -> list[list[int]]:
    """The tasks whose files decode given one another, as groups of indexes in task order: a file
    coded given a slice joins every file beside it that decodes to that slice
    (:func:`medvae.series.slice_key`): a series' key slice and the slices coded outwards from it,
    and any other file with the same pixels (blank slices), so that one worker decodes each such
    file once instead of every worker decoding the chains its files need (``docs/cli.md``). A file
    whose header does not read is a group of its own (its job says what is wrong)."""
    from medvae.series import slice_key, slices_wanted

    parent = list(range(len(tasks)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    headers, by_slice = {}, {}  # by (folder, slice_key): the tasks whose files decode to those pixels
    for i, task in enumerate(tasks):
        header = _header(task.source)  # read once per process: the chains decoded here read them again
        if header is not None:
            headers[i] = header
            by_slice.setdefault((task.source.parent, slice_key(header.pixels_crc, header)), []).append(i)
    for i, header in headers.items():
        for wanted in slices_wanted(header):
            for j in by_slice.get((tasks[i].source.parent, wanted), []):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(tasks)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _image_bytes(header) -> int:
    """What a file's decoded image holds in memory, at most (8 bytes a pixel), for the budget of
    images decoded at once (:class:`DecodedSlices`' ``keep_bytes``)."""
    return 8 * header.shape[0] * header.shape[1]


def decoded_together(tasks: list[Task], groups: list[list[int]]) -> list[list[int]]:
    """``groups`` (of :func:`series_groups`) merged in task order into as few groups as hold at
    most :class:`DecodedSlices`' budget of images each (by their headers), for one process to
    decode each at once: the key slices of several runs, and all their chains, side by side."""
    merged: list[list[int]] = []
    held = 0
    for group in sorted(groups, key=min):
        size = sum(_image_bytes(h) for h in (_header(tasks[i].source) for i in group) if h is not None)
        if not merged or held + size > _decoded.keep_bytes:
            merged.append([])
            held = 0
        merged[-1] += group
        held += size
    return [sorted(group) for group in merged]


def is_bitstream_name(path: Path) -> bool:
    """Folders are searched for ``*.mvae`` files only."""
    return path.name.lower().endswith(".mvae")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``medvae decompress``: 0 all done, 1 some files failed (2 comes from usage errors)."""
    with batch.quiet_warnings(args.debug):
        return decompress_all(args)


def decompress_all(args: argparse.Namespace) -> int:
    """Plan, run and summarize the batch."""
    start = time.perf_counter()
    batch.check_batch_args(args.workers, args.force, args.skip_existing)
    if args.model is not None:
        common.check_model_args(args.model, None)
    tasks, problems = plan(args.inputs, Path(args.output), keep=is_bitstream_name)
    if not tasks and not problems:
        raise UsageError("no .mvae files")
    outcomes = batch.report_problems(problems)
    if not tasks:  # nothing to do: no model to load, no all-zero summary
        return batch.exit_status(outcomes)
    load_codec(args.model)  # fail fast (exit 2) on a bad --model
    groups = series_groups(tasks)  # a series' files go to one worker: each counts as one file here
    workers = args.workers or batch.auto_workers(len(groups), threads_per_worker=1)
    together = [g for g in groups if len(g) > 1]
    if workers == 1:  # all in this process: groups decoded as one graph keep both workers busy
        together = decoded_together(tasks, together)
    decode_groups = {str(tasks[g[0]].source): [tasks[i] for i in g] for g in together}
    options = Options(force=args.force, skip_existing=args.skip_existing, debug=args.debug, decode_groups=decode_groups)
    outcomes += batch.run(
        tasks, decompress_file, workers=workers, init=setup, init_args=(args.model, options),
        debug=args.debug, desc="decompress", groups=groups,
    )
    batch.print_summary(outcomes, batch.elapsed(start), rates=False)
    return batch.exit_status(outcomes)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decompress", help="restore .mvae files to DICOM (or the source's format)",
        description=__doc__.replace("``", ""), epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help=".mvae files or folders (searched recursively)")
    add_common_arguments(parser)
    parser.add_argument("--model", default=None, metavar="NAME|CHECKPOINT",
                        help="weights to decode with (default: the shipped weights named in each file)")
    parser.set_defaults(func=run)
