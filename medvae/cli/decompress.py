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
from functools import lru_cache
from pathlib import Path

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
    try:
        return restore(task, _state["codec"], options)
    except Exception as exc:  # one line per file; the batch goes on
        failed = batch.failure(task.source, exc, options.debug)
        failed.message = failed.message.replace("(model=...)", "(--model CHECKPOINT)")
        return failed


def restore(task: Task, codec, options: Options) -> batch.Outcome:
    """Decode ``task.source`` with ``codec`` (shipped weights when None) and publish the result."""
    from medvae import bitstream, metrics, source_metadata
    from medvae.cli.restore import render, suffix_for

    data = task.source.read_bytes()
    header, _, meta = bitstream.unpack(data)  # verifies magic, lengths and CRC before any decoding
    info = source_metadata.unpack(meta) if source_metadata.is_source_metadata(meta) else None
    target = task.base.with_name(task.base.name + suffix_for(info))
    if target.resolve() == task.source.resolve():
        raise UsageError("refusing to overwrite the input with its own output")
    if target.exists() and not options.force:
        if options.skip_existing:  # counted with what it kept
            return batch.Outcome(task.source, "skipped", "output exists", outputs=[target], slices=1,
                                 input_bytes=len(data), output_bytes=target.stat().st_size)
        raise FileExistsError(f"output {target} exists")
    previous = previous_slices(task.source, codec, header) if header.previous_crc is not None else None
    image = decode(data, codec, previous)
    _remember(task.source, image, header.pixels_crc, previous, header.previous_crc)
    image_bytes = header.n_bytes - header.metadata_bytes
    bits = header.bits_stored or (info.bits_stored if info else 0) or image.dtype.itemsize * 8
    ratio = metrics.compression_ratio(image_bytes, header.shape, bits)
    blob = render(image, info, compression_ratio=ratio, name=str(target), max_error=header.max_error)
    publish(target, blob, overwrite=options.force)
    pixels = header.shape[0] * header.shape[1]
    return batch.Outcome(
        task.source, outputs=[target], slices=1, input_bytes=len(data), output_bytes=len(blob),
        image_bytes=image_bytes, pixels=pixels, bpp_sum=8.0 * image_bytes / pixels,
        file_bpp_sum=8.0 * len(data) / pixels,
    )


def decode(data: bytes, codec, previous=None):
    """The pixels of a file, with ``codec`` (the shipped weights it names when None)."""
    import medvae

    return medvae.decompress(data, previous=previous) if codec is None else codec.decompress(data, previous)


#: The file decoded last in this process, by file (path, modification time, size): its pixels
#: and those of the slice it was decoded given, by pixel CRC: the next file of a series reads them.
_decoded: dict[tuple, dict[int, object]] = {}


def previous_slices(path: Path, codec, header) -> list | None:
    """The decoded slices a file ``medvae compress --series`` coded given the slices before it
    (``header``: its header) reads, nearest first, found by the pixel CRCs it records: the
    ``.mvae`` beside it that decodes to its previous slice (:func:`_file_before`), decoded after
    its own previous ones back to a key slice, coded alone (at most ``KEY_EVERY − 1`` files from
    ``compress --series``, N − 1 with ``--key-every N``; longer than :data:`medvae.series.MAX_CHAIN`
    is refused). Each file of the chain reads the slices decoded before it by their CRCs, not
    their places: slices with the same pixels (blank ones) may be found in another file than the
    one coded. The file decoded last is kept, so files decoded in slice order decode
    each file once. Raises :class:`BitstreamError` when a file of the chain is missing, or the
    chain comes back to a file it passed."""
    import medvae
    from medvae.errors import BitstreamError
    from medvae.series import MAX_CHAIN

    chain = []  # (file, bytes, header) before ``path`` back to one decoded alone (or already decoded), nearest first
    visited = {path.resolve()}
    current, crc, decoded = path, header.previous_crc, {}
    while True:
        before = _file_before(current, crc, visited)
        visited.add(before.resolve())
        if _key(before) in _decoded:
            decoded.update(_decoded[_key(before)])
            break
        data = before.read_bytes()
        chain.append((before, data, medvae.read_header(data)))
        crc = chain[-1][2].previous_crc
        if crc is None:
            break
        if len(chain) > MAX_CHAIN:
            raise BitstreamError(f"{path.name}: more than {MAX_CHAIN} files each coded given the one before; refused")
        current = before
    for before, data, earlier in reversed(chain):  # each file given the slices decoded before it
        read = _slices_read(earlier, decoded)
        image = decode(data, codec, read)
        _remember(before, image, earlier.pixels_crc, read, earlier.previous_crc)
        decoded[earlier.pixels_crc] = image
    return _slices_read(header, decoded)


def _slices_read(header, decoded: dict) -> list | None:
    """The slices a file reads (its previous slice, and the one before where it records it),
    nearest first, among those ``decoded`` (by pixel CRC); None for a file coded alone or when
    none is there (decoding then says what is missing)."""
    wanted = (header.previous_crc, header.earlier_crc)
    return [decoded[crc] for crc in wanted if crc is not None and crc in decoded] or None


def _remember(path: Path, image, crc: int, read: list | None, previous_crc: int | None) -> None:
    """Keep the file decoded last (only it: the next file of its series reads it, and the slice
    it was decoded given, ``read[0]`` of pixel CRC ``previous_crc``)."""
    _decoded.clear()
    _decoded[_key(path)] = {crc: image, **({previous_crc: read[0]} if read else {})}


def _key(path: Path) -> tuple:
    """A file as it is now: a file rewritten since it was decoded is decoded again."""
    stat = path.stat()
    return path.resolve(), stat.st_mtime_ns, stat.st_size


def _file_before(path: Path, crc: int, visited: set[Path]) -> Path:
    """The ``.mvae`` beside ``path`` whose pixels have CRC ``crc``: ``slice_N−1.mvae`` beside
    ``slice_N.mvae`` (a volume's outputs), else a sibling whose header records that pixel CRC
    (a DICOM series' outputs keep their files' names), never one of ``visited`` (slices with the
    same pixels, blank ones, must not send the chain back). Raises :class:`BitstreamError`."""
    from medvae.errors import BitstreamError

    match = re.fullmatch(r"slice_(\d+)\.mvae", path.name)
    if match and int(match.group(1)) > 0:
        before = path.with_name(f"slice_{int(match.group(1)) - 1:0{len(match.group(1))}d}.mvae")
        if before.resolve() not in visited and _pixels_crc(before) == crc:
            return before
    for sibling in sorted(path.parent.glob("*.mvae")):
        if sibling.resolve() not in visited and _pixels_crc(sibling) == crc:
            return sibling
    raise BitstreamError(f"{path.name} was coded given the slice before it (pixel CRC {crc:08x}), whose .mvae is not "
                         "beside it; decode the folder as medvae compress --series wrote it")


@lru_cache(maxsize=4096)
def _pixels_crc_of(key: tuple) -> int | None:
    from medvae import bitstream
    from medvae.errors import MedVAEError

    try:
        return bitstream.read_header(key[0].read_bytes()).pixels_crc
    except (MedVAEError, OSError):
        return None


def _pixels_crc(path: Path) -> int | None:
    """The pixel CRC a ``.mvae`` records (None for a damaged or unreadable one), read once per file state."""
    try:
        return _pixels_crc_of(_key(path))
    except OSError:  # gone, a dangling link
        return None


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
    options = Options(force=args.force, skip_existing=args.skip_existing, debug=args.debug)
    workers = args.workers or batch.auto_workers(len(tasks), threads_per_worker=1)
    outcomes += batch.run(
        tasks, decompress_file, workers=workers, init=setup, init_args=(args.model, options),
        debug=args.debug, desc="decompress",
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
