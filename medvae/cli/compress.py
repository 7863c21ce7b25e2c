"""``medvae compress``: DICOM (and NIfTI, NRRD, PNG, TIFF, .npy) files and folders to ``.mvae``.

One ``.mvae`` per slice, mirroring the input tree under OUT: ``x.dcm`` becomes
``OUT/x.mvae``; a multi-slice input (multi-frame DICOM, NIfTI/NRRD volume,
3-D .npy, multi-page TIFF) ``x.nii.gz`` becomes ``OUT/x/slice_0000.mvae``...
Each file carries the source's header, so ``medvae decompress`` writes the
source format back. Inputs are only read; outputs are written atomically and
never replace existing files unless ``--force``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, NamedTuple

from medvae.cli import batch, common
from medvae.cli.common import (
    Options,
    add_common_arguments,
    add_error_bound_arguments,
    add_refine_arguments,
    check_model_args,
    max_error,
    rate_target,
    refine_steps,
)
from medvae.cli.files import Task, UsageError, plan, slice_paths
from medvae.errors import KeptFileError, MedVAEError
from medvae.io.files import publish
from medvae.series import CHAIN, MAX_CHAIN, Neighbours, can_follow, coding_plan, read_next, runs

EXAMPLES = """examples:
  medvae compress scans/ -o scans_mvae/                 every file under scans/, tree mirrored
  medvae compress a.dcm b.dcm -o out/ --model runs/x/best.pt
  medvae compress study/ -o out/ --workers 2 --skip-existing   resume an interrupted run
  medvae compress scans/ -o out/ --quality 3 --refine   higher fidelity at about the same size, slower encoding
  medvae compress scans/ -o out/ --quality 4.5          the default model codes any quality from 0 to 7
  medvae compress scans/ -o out/ --model medvae --quality 3   the ladder of seven separately trained weights
  medvae compress scans/ -o out/ --lossless             the archive's choice: decodes to the input exactly
  medvae compress scans/ -o out/ --max-error 2          near-lossless: every pixel within 2 of the input
  medvae compress ct.nii.gz -o out/ --lossless --series  a volume's slices, each given a neighbour: fewer bits
  medvae compress ct.nii.gz -o out/ --lossless --series --max-chain 32   fewer key slices: fewer bits, longer chains
  medvae compress scans/ -o out/ --ratio 10             rate control: the best file at or below 10:1
  medvae compress scans/ -o out/ --psnr 50              rate control: the smallest file of at least 50 dB
  medvae compress cr.dcm -o out/ --model rnn-conv --iterations 4   the RNN-Conv baseline, 4 of its 8 iterations
"""


_state: dict = {}


def setup(model: str, quality: float | None, options: Options) -> None:
    """Prepare this process for :func:`compress_file` (the model, the options)."""
    _state["codec"] = common.load_codec(model, quality)
    _state["options"] = options
    _state.pop("series", None)  # --series: a slice written by an earlier run is no neighbour of this one's
    if options.target is not None:
        _state["ladder"] = rate_ladder(model, quality, _state["codec"])


def rate_ladder(model: str, quality: float | None, codec):
    """What rate control chooses from for ``--model``/``--quality`` (``codec``, loaded from them):
    every shipped quality of a shipped model, else ``codec`` alone (:class:`medvae.rate_control.Ladder`)."""
    from medvae import zoo
    from medvae.rate_control import Ladder

    shipped = quality is None and not Path(model).is_file() and model in zoo.index()
    return Ladder.shipped(model) if shipped else Ladder.of(codec, Path(model).name)


def compress_file(task: Task) -> batch.Outcome:
    """Compress every slice of one input file; never raises."""
    from medvae import io as mio
    from medvae import source_metadata

    options: Options = _state["options"]
    codec = _state["codec"]
    ahead = batch.prepared(task.source)
    if ahead is not None:  # coded with its run's key slice (coded_run)
        return ahead
    outcome = batch.Outcome(task.source)
    kept: dict[int, bytes] = {}  # outputs of an earlier run that --skip-existing keeps (counted in outcome, not written now)
    try:
        outcome.input_bytes = task.source.stat().st_size
        run = run_to_code(task, options)
        if run is not None and coded_run(codec, run, options, outcome):
            return outcome
        single = slice_paths(task.base, 1, ".mvae")[0]
        if options.skip_existing and single.exists():  # done before; no need to read the input
            outcome.status, outcome.message = "skipped", "output exists"
            count_kept(outcome, single)
            return outcome
        stack = mio.read(task.source)
        targets = slice_paths(task.base, len(stack), ".mvae")
        todo, kept = select(targets, task.source, options, outcome)
        if not todo:
            outcome.status, outcome.message = "skipped", "outputs exist"
            return outcome
        if options.series and options.target is None and len(stack) > 1:  # at once, given the slices kept
            try:
                coded_together(codec, [(stack, i) for i in range(len(stack))], targets, [outcome] * len(stack), options, kept)
            except KeptFileError as exc:
                raise kept_error(exc, targets) from None
            todo = []
        chosen = []
        places = series_steps(task, targets, todo, options) if options.target is not None else [(i, None) for i in todo]
        for n, (i, place) in enumerate(places):
            meta = source_metadata.pack(source_metadata.from_stack(stack, i))
            settings = dict(bits_stored=stack.bits_stored, metadata=meta, refine_steps=options.refine_steps,
                            padding_value=padding_value(stack, i))
            before = neighbour_in_series(stack.pixels[i], place) if place is not None else None
            if options.target is not None:
                from medvae.rate_control import compress_to

                search_start = chosen[-1] if chosen else None  # adjacent slices: the search starts at its setting
                chosen.append(compress_to(stack.pixels[i], options.target, _state["ladder"], previous=search_start,
                                          previous_slice=before, **settings))
                data, decoded = chosen[-1].data, chosen[-1].pixels
            else:
                data = codec.compress(stack.pixels[i], max_error=options.max_error, iterations=options.iterations, **settings)
            publish(targets[i], data, overwrite=options.force)
            if place is not None:  # written: the slices coded given it may read it, and what it read
                place.neighbours.coded(place.rank, place.reference, decoded, before, data)
            h, w = stack.pixels[i].shape
            count(outcome, targets[i], len(data), len(data) - len(meta), h * w)
            batch.progress(task.source, n + 1, len(todo))
        if chosen:
            outcome.notes.append(rate_note(options.target, chosen))
        if outcome.output_bytes > outcome.input_bytes:
            outcome.notes.append(
                f"the output ({outcome.output_bytes:,} bytes) is larger than the input ({outcome.input_bytes:,} bytes); "
                "the input is probably already compressed, or very small"
            )
    except Exception as exc:  # one line per file; the batch goes on
        failed = batch.failure(task.source, exc, options.debug)
        if len(outcome.outputs) > len(kept):
            failed.message += f" ({len(outcome.outputs) - len(kept)} slice(s) were written before the failure)"
        return failed
    return outcome


def run_to_code(task: Task, options: Options) -> list[Task] | None:
    """``--series`` on a DICOM series of one file per slice: the files of ``task``'s run in slice
    order (:func:`medvae.series.runs`; a key slice and the files coded outwards from it), or of its
    whole series where the batch runs in this process (``series_at_once``: its runs are one graph
    then, which keeps both workers busy), when ``task`` is the first of them coded (a key slice)
    and they are more than one file; else None (a file alone, a rate target: each file goes its
    own way)."""
    rank = options.series_ranks.get(str(task.source))
    if not options.series or options.target is not None or rank is None:
        return None
    series, me, count, run = rank
    plan = coding_plan(count, options.max_chain)
    of = runs(plan)
    members = sorted(k for k in of if options.series_at_once or of[k] == run)
    tasks = [options.series_tasks.get((series, k)) for k in members]
    if len(members) < 2 or me != next(k for k, _ in plan if k in members) or None in tasks:
        return None
    return tasks


def coded_run(codec, run: list[Task], options: Options, outcome: batch.Outcome) -> bool:
    """The files of ``run`` (:func:`run_to_code`) that read, coded by :func:`coded_together`
    given the outputs that exist (unless ``--force``: an interrupted run's, kept), counted in
    ``outcome`` for the key slice's file and, for each other file, in an outcome its own job
    returns when the batch hands it out in this process (a run is one worker's group; a whole
    series only where the batch runs here). If the coding fails, what was written stays written
    and counted, and each file not written fails with the reason (``--skip-existing`` then codes
    the rest given the files kept). True where the key slice's file was coded; False where it is
    kept or does not read: its job then goes on as a file's alone (skipped, exists, read error),
    as does that of every file that does not read."""
    from medvae import io as mio

    stacks: dict[int, Any] = {}
    for i, t in enumerate(run):
        try:
            stacks[i] = mio.read(t.source)
        except Exception:  # its own job reports it
            pass
    members = sorted(stacks)
    targets = [slice_paths(run[i].base, 1, ".mvae")[0] for i in members]
    kept = {} if options.force else {n: target.read_bytes() for n, target in enumerate(targets) if target.exists()}
    outcomes = [outcome if run[i].source == outcome.source else batch.Outcome(run[i].source) for i in members]
    key = next((n for n, o in enumerate(outcomes) if o is outcome), None)  # None: the key slice's file does not read
    for i, o in zip(members, outcomes):
        o.input_bytes = run[i].source.stat().st_size
    try:
        coded_together(codec, [(stacks[i], 0) for i in members], targets, outcomes, options, kept)
    except Exception as exc:
        error = kept_error(exc, targets)
        for n, o in enumerate(outcomes):
            if n not in kept and not o.slices:
                outcomes[n] = batch.failure(o.source, error, options.debug)
        if key is not None and key not in kept and not outcome.slices:  # the key slice's own file was not written
            raise error from None
    finally:
        batch.prepare(o for n, o in enumerate(outcomes) if n != key and n not in kept and (o.slices or o.status == "failed"))
    return key is not None and key not in kept


def kept_error(exc: Exception, targets: list[Path]) -> Exception:
    """``exc``, naming the output file where it is about a kept file of the run (slice ``n`` of
    :meth:`medvae.Codec.compress_series` is ``targets[n]``), with what to do about it."""
    if not isinstance(exc, KeptFileError):
        return exc
    return MedVAEError(f"the existing output {targets[exc.slice_index]} {exc.reason}: a run that coded this series "
                       "otherwise wrote it (another --max-chain or model, or without a file that did not read then); "
                       "pass --force to code the series again")


def coded_together(codec, slices: list[tuple[Any, int]], targets: list[Path], outcomes: list[batch.Outcome], options: Options,
                   kept: dict[int, bytes]) -> None:
    """Consecutive slices of a series (each a stack and its index) coded by
    :meth:`medvae.Codec.compress_series` (independent chains at once in worker processes,
    :mod:`medvae.workers`), each with its own source metadata and padding, its file written to
    its target as soon as it is chosen and counted in its outcome; the slices ``kept`` (their
    files, an earlier run's) are not coded again, and the others are coded given them, as an
    uninterrupted run codes them."""
    from medvae import source_metadata

    metadata = [source_metadata.pack(source_metadata.from_stack(stack, i)) for stack, i in slices]
    each = [dict(metadata=meta, padding_value=padding_value(stack, i), bits_stored=stack.bits_stored)
            for (stack, i), meta in zip(slices, metadata)]
    done = 0

    def written(k: int, data: bytes) -> None:
        nonlocal done
        publish(targets[k], data, overwrite=options.force)
        stack, i = slices[k]
        h, w = stack.pixels[i].shape
        count(outcomes[k], targets[k], len(data), len(data) - len(metadata[k]), h * w)
        done += 1
        batch.progress(outcomes[0].source, done, len(slices) - len(kept))  # shown as the first file's slices

    codec.compress_series([stack.pixels[i] for stack, i in slices], max_error=options.max_error, max_chain=options.max_chain,
                          slice_options=each, written=written, kept=kept, refine_steps=options.refine_steps)


class Place(NamedTuple):
    """``--series``: a slice's place in its series, as :func:`medvae.series.coding_plan` codes it."""

    rank: int  # the slice's place in its series
    reference: int | None  # the rank of the slice it is coded given; None for a key slice
    neighbours: Neighbours  # what the series' slices coded so far in this process pass on
    output: Path | None  # the reference's .mvae, which an earlier run may have written (--skip-existing)


def series_steps(task: Task, targets: list[Path], todo: list[int], options: Options) -> list[tuple[int, Place | None]]:
    """Rate control (``--ratio``, ``--psnr``...): the slices ``todo`` of ``task``'s input (written
    to ``targets``) in the order they are coded, each with its :class:`Place` in its series with
    ``--series`` (else None). A multi-slice input is a series of its own, coded in its plan's
    order; a single-slice DICOM file has the place :func:`medvae.cli.series_order.series_order`
    gave it (which ran the files in their plan's order). (Bounded coding goes through
    :meth:`medvae.Codec.compress_series`: :func:`coded_together`.)"""
    if not options.series:
        return [(i, None) for i in todo]
    series, rank, count = (str(task.source), None, len(targets)) if len(targets) > 1 else \
        options.series_ranks.get(str(task.source), (str(task.source), 0, 1))[:3]
    current = _state.get("series")
    if current is None or current[0] != series:  # a new series: the last one's slices are no neighbours of it
        plan = coding_plan(count, options.max_chain)
        _state["series"] = current = (series, Neighbours(plan), dict(plan))  # slice: reference, in coding order
    _, neighbours, references = current
    if rank is None:
        wanted = set(todo)
        return [(i, Place(i, reference, neighbours, targets[reference] if reference is not None else None))
                for i, reference in references.items() if i in wanted]
    reference = references[rank]
    held = options.series_tasks.get((series, reference))  # the reference's file, if the batch holds it
    return [(i, Place(rank, reference, neighbours, slice_paths(held.base, 1, ".mvae")[0] if held is not None else None)) for i in todo]


def neighbour_in_series(image, place: Place) -> list | None:
    """``--series``: the decoded pixels of the slice ``image`` is coded given, and of those it
    read, nearest first (:class:`medvae.series.Neighbours`), or, where an earlier run wrote that
    slice (``--skip-existing`` kept it), decoded from its file, so a resumed run writes the files
    an uninterrupted one would. None for a key slice, and for a slice whose neighbour was not
    written or does not decode (a failed write, a damaged file), or cannot be followed (another
    shape or dtype): it is coded alone."""
    before = place.neighbours.given(place.reference)
    if before is None and place.output is not None and place.output.exists():
        before = decoded_neighbour(place.output)
    return before if before is not None and can_follow(image, before[0]) else None


def decoded_neighbour(path: Path) -> list | None:
    """What the slice of ``path``, written by an earlier run, passes to the slices coded given it
    (:func:`medvae.series.read_next`), decoded as ``medvae decompress`` decodes it, after the
    files it was coded given: by this run's codec, or with rate control, by the shipped weights
    each file names; None when it does not decode."""
    import medvae
    from medvae.cli.decompress import decode, previous_slices

    codec = _state["codec"] if _state["options"].target is None else None
    try:
        data = path.read_bytes()
        header = medvae.read_header(data)
        read = previous_slices(path, codec, header) if header.previous_crc is not None else None
        return read_next(decode(data, codec, read), read, data)
    except (MedVAEError, OSError):
        return None


def series_groups(tasks: list[Task], ranks: dict) -> list[list[int]]:
    """The tasks as groups of indexes that run in one worker, in order: the files of one run of a
    DICOM series' plan (``ranks``, from :func:`medvae.cli.series_order.series_order`, which put them
    together in their plan's order: a key slice and the files coded outwards from it, at most
    2·max_chain + 1) form one, so each is coded given a neighbour coded before it in that process;
    every other file (a multi-slice input holds its series) is a group of its own."""
    groups: dict[object, list[int]] = {}
    for i, task in enumerate(tasks):
        rank = ranks.get(str(task.source))
        groups.setdefault(("run", rank[0], rank[3]) if rank is not None else i, []).append(i)
    return list(groups.values())


def rate_note(target, chosen: list) -> str:
    """What rate control chose for a file's slices and what they achieve."""
    settings = sorted({c.setting for c in chosen})
    psnr = [c.psnr for c in chosen]
    quality = "lossless" if min(psnr) == float("inf") else f"PSNR {min(psnr):.2f}" + (f"–{max(psnr):.2f}" if len(chosen) > 1 else "") + " dB"
    bpp = sum(c.bpp for c in chosen) / len(chosen)
    ratio = sum(c.ratio for c in chosen) / len(chosen)
    return f"{target}: {', '.join(settings)}; {quality}, {bpp:.3f} bpp, ratio {ratio:.1f}:1 (mean over {len(chosen)} slice(s))"


def padding_value(stack, i: int) -> int | None:
    """The DICOM Pixel Padding Value of slice ``i`` as a stored value, if its dataset has one."""
    datasets = getattr(stack, "datasets", None) or []
    ds = datasets[i] if i < len(datasets) else (datasets[0] if datasets else None)
    value = getattr(ds, "PixelPaddingValue", None) if ds is not None else None
    return int(value) if isinstance(value, int) else None


def select(targets: list[Path], source: Path, options: Options, outcome: batch.Outcome) -> tuple[list[int], dict[int, bytes]]:
    """Indices of the slices to code now, and the outputs kept (by index, their bytes).

    Existing outputs fail the file (``FileExistsError``) unless ``--force``
    (overwrite) or ``--skip-existing`` (keep them: they are complete, since
    every write is atomic; they count in the summary).
    """
    import medvae
    if any(t.resolve() == source.resolve() for t in targets):
        raise UsageError("refusing to overwrite the input with its own output")
    existing = [i for i, t in enumerate(targets) if t.exists()]
    if not existing or options.force:
        return list(range(len(targets))), {}
    if not options.skip_existing:
        raise FileExistsError(f"output {targets[existing[0]]} exists")
    kept = {}
    for i in existing:
        data = kept[i] = targets[i].read_bytes()
        try:
            header = medvae.read_header(data)  # verified: complete unless damaged since
        except MedVAEError as exc:
            raise MedVAEError(f"existing output {targets[i]}: {exc}; remove it or pass --force") from None
        h, w = header.shape
        count(outcome, targets[i], len(data), len(data) - header.metadata_bytes, h * w)
    return [i for i in range(len(targets)) if i not in kept], kept


def count_kept(outcome: batch.Outcome, path: Path) -> None:
    """Count an output ``--skip-existing`` keeps without reading the input: its bytes, and
    its slice when it is a readable ``.mvae`` (a file of the user's under that name is kept
    and counted by size only)."""
    import medvae
    data = path.read_bytes()
    try:
        header = medvae.read_header(data)
    except MedVAEError:
        outcome.output_bytes += len(data)
        return
    h, w = header.shape
    count(outcome, path, len(data), len(data) - header.metadata_bytes, h * w)


def count(outcome: batch.Outcome, path: Path, n_bytes: int, image_bytes: int, pixels: int) -> None:
    """Add one written slice to ``outcome``."""
    outcome.outputs.append(path)
    outcome.slices += 1
    outcome.output_bytes += n_bytes
    outcome.image_bytes += image_bytes
    outcome.pixels += pixels
    outcome.bpp_sum += 8.0 * image_bytes / pixels
    outcome.file_bpp_sum += 8.0 * n_bytes / pixels


def run(args: argparse.Namespace) -> int:
    """Entry point of ``medvae compress``: 0 all done, 1 some files failed (2 comes from usage errors)."""
    with batch.quiet_warnings(args.debug):
        return compress_all(args)


def compress_all(args: argparse.Namespace) -> int:
    """Plan, run and summarize the batch."""
    start = time.perf_counter()
    batch.check_batch_args(args.workers, args.force, args.skip_existing)
    bound, target = max_error(args), rate_target(args)
    if args.model is None:  # the shipped default
        from medvae import zoo

        args.model = zoo.default_model(bound)
    check_model_args(args.model, args.quality)
    out = Path(args.output)
    steps = refine_steps(args)
    if target is not None and args.quality is not None:
        raise UsageError("--ratio, --bpp and --psnr choose the quality themselves; drop --quality")
    if target is not None and steps:
        raise UsageError("--refine cannot be combined with --ratio, --bpp or --psnr")
    tasks, problems = plan(args.inputs, out)
    if not tasks and not problems:
        raise UsageError("no input files")
    outcomes = batch.report_problems(problems)
    if not tasks:  # nothing to do: no model to load, no all-zero summary
        return batch.exit_status(outcomes)
    codec = common.load_codec(args.model, args.quality)  # fail fast (exit 2) on a bad --model
    if steps and codec.lmbda is None:
        raise UsageError(f"{args.model} records no MSE-loss lambda, which --refine aims at")
    if bound is not None and codec.residual is None:
        raise UsageError(f"{args.model} comes without a residual model: --lossless and --max-error need the shipped "
                         "default (--model medvae without --quality)")
    if args.iterations is not None and not codec.progressive:
        raise UsageError(f"--iterations is for progressive models (--model rnn-conv); {args.model} has one rate per quality")
    if args.iterations is not None and not 1 <= args.iterations <= codec.model.max_iterations:
        raise UsageError(f"--iterations must be 1 to {codec.model.max_iterations} for {args.model}")
    if codec.progressive and (steps or target is not None):
        raise UsageError(f"{args.model} is progressive: choose its rate with --iterations (no --refine, --ratio, --bpp, --psnr)")
    if args.series and bound is None and target is None:
        raise UsageError("--series codes a volume's slices losslessly, near-losslessly or to a rate target: "
                         "add --lossless, --max-error, --ratio, --bpp or --psnr")
    series_coder = codec if target is None or not args.series else rate_ladder(args.model, args.quality, codec).near_lossless
    if args.series and (series_coder is None or series_coder.series_residual is None):
        raise UsageError(f"{args.model} comes without a series residual model: --series needs the shipped default")
    if args.key_every is not None:
        raise UsageError(f"--key-every is now --max-chain N: a slice decodes after at most N others, with a key slice in "
                         f"the middle of every 2N + 1 (--key-every {args.key_every} bounded the chain at "
                         f"--max-chain {max(args.key_every - 1, 0)})")
    if args.max_chain is not None and not args.series:
        raise UsageError("--max-chain sets how many slices --series may decode before one: add --series")
    if args.max_chain is not None and not 0 <= args.max_chain <= MAX_CHAIN:
        raise UsageError(f"--max-chain must be 0 to {MAX_CHAIN} (0: every slice alone), got {args.max_chain}")
    ranks, series_tasks = {}, {}
    if args.series:  # each DICOM series' files together, in their plan's order, for one worker
        from medvae.cli.series_order import series_order

        tasks, ranks = series_order(tasks, CHAIN if args.max_chain is None else args.max_chain)
        series_tasks = {ranks[str(t.source)][:2]: t for t in tasks if str(t.source) in ranks}
    groups = series_groups(tasks, ranks)  # each run of a series in one worker, in its plan's order
    workers = args.workers or batch.auto_workers(len(groups), threads_per_worker=2)
    options = Options(force=args.force, skip_existing=args.skip_existing, debug=args.debug, refine_steps=steps,
                      max_error=bound, target=target, iterations=args.iterations, series=args.series, series_ranks=ranks,
                      max_chain=CHAIN if args.max_chain is None else args.max_chain, series_tasks=series_tasks,
                      series_at_once=workers == 1)
    outcomes += batch.run(
        tasks, compress_file, workers=workers, init=setup, init_args=(args.model, args.quality, options), groups=groups,
        debug=args.debug, desc="compress",
    )
    batch.print_summary(outcomes, batch.elapsed(start), rates=True)
    return batch.exit_status(outcomes)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress", help="compress DICOM/NIfTI/NRRD/PNG/TIFF/.npy files and folders to .mvae",
        description=__doc__.replace("``", ""), epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders (searched recursively)")
    add_common_arguments(parser)
    parser.add_argument("--model", default=None, metavar="NAME|CHECKPOINT",
                        help="shipped model name (medvae-ctx, the default: one model for any quality from 0 to 7, with two "
                             "weights, the cheaper file kept per image; medvae, the ladder of seven weights, used for "
                             "--lossless and --max-error; medvae-vr, from the medvae-ladder package; rnn-conv) or checkpoint file")
    parser.add_argument("--quality", type=float, default=None, metavar="Q",
                        help="quality: any number from 0 to 7 for a variable-rate model (medvae-ctx, the default, and "
                             "medvae-vr; steps of 1/256; below 1 extrapolated, for very low rates), or one of a ladder's "
                             "(medvae: 1 to 7). Default: the model's default")
    parser.add_argument("--iterations", type=int, default=None, metavar="K",
                        help="iterations of a progressive model (--model rnn-conv: 1 to 8, default 8); each adds bits")
    add_refine_arguments(parser)
    add_error_bound_arguments(parser)
    parser.add_argument("--series", action="store_true",
                        help="with --lossless, --max-error or a rate target (--ratio, --bpp, --psnr: its near-lossless "
                        "files): code each slice of a volume (a multi-slice input, or a DICOM "
                        "series' files, in slice order) given a neighbour, fewer bits; a key slice in the middle of "
                        f"every {2 * CHAIN + 1} is coded alone, so a slice decodes after at most {CHAIN} others "
                        "(--max-chain; medvae decompress finds them beside it); each run of a series in one worker process")
    parser.add_argument("--key-every", type=int, default=None, help=argparse.SUPPRESS)  # replaced by --max-chain: says so
    parser.add_argument("--max-chain", type=int, default=None, metavar="N",
                        help=f"with --series: a slice decodes after at most N others (default {CHAIN}; 0 to {MAX_CHAIN}): "
                        "one key slice, coded alone, in the middle of every 2N + 1 slices; larger N, fewer bits (a slice "
                        "coded alone costs about a sixth more near-losslessly on CT), but decoding one slice decodes up "
                        "to N others, and a damaged file loses up to the N beyond it")
    parser.set_defaults(func=run)


