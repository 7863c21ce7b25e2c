"""Run one job per input file, in this process or in worker processes, and report.

Each job returns an :class:`Outcome` and never raises: a failure becomes one
line ``path: reason`` on stderr (the traceback too with ``--debug``) and the
batch goes on. A tqdm progress bar runs on stderr; the summary table goes to
stdout. Exit status: 0 when every file succeeded (or was skipped), 1 when any
failed.

Outputs do not depend on ``--workers`` or on threads: :class:`medvae.Codec` codes
exactly (``medvae.exact``). With ``workers > 1`` the jobs run in ``spawn``-ed
processes that share the cores (each gets ``cores // workers`` torch threads, at least
one: no oversubscription); each loads the model once (``initializer``). With one worker
the main process codes with all of torch's threads.
Workers ignore Ctrl-C: the main process stops handing out files and waits for
the files in progress to finish, so nothing is left half-done. Files that share
work (a run of a series: ``run(groups=…)``) go to a worker together, and are
reported, and finished on Ctrl-C, together.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from medvae.cli.files import Problem, Task, UsageError
from medvae.errors import MedVAEError


@dataclass
class Outcome:
    """What happened to one input file.

    ``status`` is ``ok``, ``failed`` or ``skipped``; the byte and pixel counts
    cover the outputs written (``image_bytes`` is the coded image alone, without
    the stored source header; ``pixels`` counts the coded slices' pixels).
    """

    source: Path
    status: str = "ok"
    message: str = ""
    details: str = ""  # traceback, shown with --debug
    outputs: list[Path] = field(default_factory=list)
    slices: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    image_bytes: int = 0
    pixels: int = 0
    bpp_sum: float = 0.0  # sum over slices of image-only bpp, for the mean
    file_bpp_sum: float = 0.0  # sum over slices of whole-file bpp (source header included)
    notes: list[str] = field(default_factory=list)  # worth telling the user, not a failure


def failure(source: Path, exc: BaseException, debug: bool = False) -> Outcome:
    """An :class:`Outcome` for a job that raised ``exc``: one line naming the reason."""
    return Outcome(source, "failed", reason(exc, source), traceback.format_exc() if debug else "")


def reason(exc: BaseException, source: Path | str | None = None) -> str:
    """One line saying why, without repeating the file name the line starts with.

    Errors MedVAE raises on purpose (and missing or unreadable files) read as
    their message; anything else is labelled unexpected, with a pointer to ``--debug``.
    """
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if source is not None:
        for prefix in (f"{source}: ", f"{Path(source).resolve()}: "):
            if text.startswith(prefix):
                text = text[len(prefix) :]
    if isinstance(exc, FileExistsError):
        return f"{text or exc}; pass --force to overwrite it or --skip-existing to keep it"
    if isinstance(exc, (MedVAEError, OSError)):
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(source) else "")
        return text or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text} (rerun with --debug for the traceback)"


# ------------------------------------------------------------------ running


#: Memory one worker process may need at most: libraries and weights (about 0.8 GB) and the
#: tiles of any slice size (``python benchmarks/speed.py --sizes ...``).
WORKER_MEMORY = 2 * 2**30


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers(n_files: int, threads_per_worker: int) -> int:
    """Worker processes when ``--workers`` is not given: one per ``threads_per_worker`` cores,
    at most one per two files (starting a worker costs about what coding a file or two does)
    and no more than memory holds (:data:`WORKER_MEMORY` each).

    Measured on 2 cores, 12 CT slices (``docs/cli.md``): compress took 36.7 s with 1 worker of
    2 threads and 38.8 s with 2 of 1 thread; decompress, whose DICOM writing is single-threaded,
    26.0 s and 21.1 s. Hence 2 threads per worker for compress and 1 for decompress.
    """
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = WORKER_MEMORY
    return max(1, min(cores() // threads_per_worker, n_files // 2, memory // WORKER_MEMORY))


def check_batch_args(workers: int | None, force: bool, skip_existing: bool) -> None:
    """The options every batch command shares, checked before any work starts."""
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if force and skip_existing:
        raise UsageError("--force and --skip-existing exclude each other")


@contextmanager
def quiet_warnings(debug: bool) -> Iterator[None]:
    """Hide library warnings (pydicom's notes on odd values...) unless ``--debug``: one line per file."""
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
        yield


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (even by SIGKILL), and stop now if
    that already happened; elsewhere, nothing (the pool's own checks remain). Outputs are
    published atomically, so a killed worker leaves no partial file."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:
        os._exit(1)


#: Where :func:`progress` goes: the bar's in :func:`run`'s process, a queue to it in a worker.
_report: Callable[[str, int, int], None] | None = None
#: Outcomes a job prepared for later jobs of its group, which it did the work of (by source), in this process.
_prepared: dict[str, Outcome] = {}


def prepare(outcomes: Iterable[Outcome]) -> None:
    """Keep ``outcomes`` for the jobs of the files they name: a job that coded or decoded the
    files of its group with its own (a series run at once) leaves them here, and each later job
    of the group, which the batch hands out next in the same process, takes its own (:func:`prepared`)."""
    _prepared.update({str(outcome.source): outcome for outcome in outcomes})


def prepared(source: Path) -> Outcome | None:
    """The outcome a job of ``source``'s group prepared for it (:func:`prepare`), once; else None."""
    return _prepared.pop(str(source), None)


def progress(source: Path, done: int, total: int) -> None:
    """Tell the progress bar that ``done`` of the ``total`` slices of ``source`` are coded.

    The bar counts files, and one volume can take an hour under rate control; jobs call
    this after each slice so that the bar shows how far the files in progress are.
    """
    if _report is not None:
        _report(str(source), done, total)


class _SliceProgress:
    """The files in progress and their slices, shown after the bar's file count."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.open: dict[str, tuple[int, int]] = {}
        self.finished: set[str] = set()

    def update(self, source: str, done: int, total: int) -> None:
        if source in self.finished or total <= 1:
            return
        self.open[source] = (done, total)
        self.show()

    def finish(self, source: Path) -> None:
        self.finished.add(str(source))
        if self.open.pop(str(source), None) is not None:
            self.show()

    def show(self) -> None:
        self.bar.set_postfix_str(", ".join(f"{Path(s).name}: slice {d}/{t}" for s, (d, t) in self.open.items()))


def _init_worker(
    init: Callable[..., Any] | None, init_args: tuple, debug: bool, threads: int, parent: int, queue: Any
) -> None:
    """Worker process start-up: die with the parent, ignore Ctrl-C, its share of the cores,
    report progress to the parent, load the model once."""
    global _report
    _die_with_parent(parent)
    queue.cancel_join_thread()  # exit without waiting for the parent to read the last reports
    _report = lambda source, done, total: queue.put((source, done, total))  # noqa: E731
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not debug:
        warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(threads)
    if init is not None:
        init(*init_args)


def run(
    tasks: Sequence[Task],
    job: Callable[[Task], Outcome],
    *,
    workers: int = 1,
    init: Callable[..., Any] | None = None,
    init_args: tuple = (),
    debug: bool = False,
    desc: str = "",
    err: TextIO | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> list[Outcome]:
    """Run ``job`` on every task and return the outcomes in task order.

    ``init(*init_args)`` prepares each process (the model); ``job`` must be a
    module-level function so worker processes can import it. Failures are
    printed as they happen. ``groups`` (indexes into ``tasks``, each task in one):
    tasks that share work run in one worker process, in that order (the files of a
    series, which decode given one another); the largest groups start first.
    """
    err = err or sys.stderr
    outcomes: dict[int, Outcome] = {}
    global _report
    bar = tqdm(total=len(tasks), desc=desc, unit="file", file=err, disable=None, dynamic_ncols=True)
    slices = _SliceProgress(bar)

    def record(i: int, outcome: Outcome) -> None:
        outcomes[i] = outcome
        slices.finish(tasks[i].source)
        for note in outcome.notes:
            bar.write(f"{outcome.source}: note: {note}", file=err)
        if outcome.status == "failed":
            bar.write(f"{outcome.source}: {outcome.message}", file=err)
            if debug and outcome.details:
                bar.write(outcome.details.rstrip(), file=err)
        bar.update(1)

    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        if workers <= 1 or len(tasks) <= 1:
            _report = slices.update
            with quiet_warnings(debug):
                if init is not None:
                    init(*init_args)
                for i, task in enumerate(tasks):
                    record(i, job(task))
        else:
            groups = sorted(groups or [[i] for i in range(len(tasks))], key=len, reverse=True)
            _run_pool(tasks, groups, job, workers, init, init_args, debug, record, slices)
    finally:
        _report = None
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return [outcomes[i] for i in range(len(tasks))]


def _run_group(job: Callable[[Task], Outcome], tasks: Sequence[Task]) -> list[Outcome]:
    """``job`` on each of ``tasks`` in turn, in one worker process."""
    return [job(task) for task in tasks]


def _run_pool(tasks, groups, job, workers, init, init_args, debug, record, slices: _SliceProgress) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()  # the workers' slice progress
    workers = min(workers, len(groups))
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker,
        initargs=(init, init_args, debug, max(1, cores() // workers), os.getpid(), queue)
    )
    futures = {pool.submit(_run_group, job, [tasks[i] for i in group]): group for group in groups}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(queue, slices)
            for future in done:
                group = futures[future]
                try:
                    for i, outcome in zip(group, future.result()):
                        record(i, outcome)
                except BrokenProcessPool:
                    for i in group:
                        record(i, Outcome(tasks[i].source, "failed",
                                          "a worker process died (out of memory?); rerun this file with --workers 1"))
                except Exception as exc:  # the model failed to load in the worker, or a pickling error
                    for i in group:
                        record(i, failure(tasks[i].source, exc))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # let files in progress finish; start no more
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        queue.close()  # workers do not wait for their last reports to be read (cancel_join_thread)


def _drain(queue: Any, slices: _SliceProgress) -> None:
    """Show the progress the workers have reported so far."""
    while True:
        try:
            slices.update(*queue.get_nowait())
        except queue_module.Empty:
            return


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


# ------------------------------------------------------------------ reporting


def report_problems(problems: Sequence[Problem], err: TextIO | None = None) -> list[Outcome]:
    """Print inputs that could not be planned, as failures."""
    err = err or sys.stderr
    for p in problems:
        print(f"{p.source}: {p.reason}", file=err)
    return [Outcome(p.source, "failed", p.reason) for p in problems]


def summary_rows(outcomes: Sequence[Outcome], seconds: float, *, rates: bool) -> list[tuple[str, str]]:
    """The summary table as (label, value) rows.

    ``rates`` adds the compression figures: ratio = input bytes / output bytes
    (file sizes, what the disk sees) and the mean over the coded slices of their
    bits per pixel, of the image data alone and of the whole ``.mvae`` files.
    Files skipped because their outputs exist count with the outputs they kept.
    """
    ok = [o for o in outcomes if o.status in ("ok", "skipped")]
    n_ok = sum(o.status == "ok" for o in outcomes)
    n_failed = sum(o.status == "failed" for o in outcomes)
    n_skipped = sum(o.status == "skipped" for o in outcomes)
    slices = sum(o.slices for o in ok)
    in_bytes = sum(o.input_bytes for o in ok)
    out_bytes = sum(o.output_bytes for o in ok)
    rows = [
        ("files", f"{n_ok} ok, {n_failed} failed, {n_skipped} skipped"),
        ("slices", f"{slices}"),
        ("input bytes", f"{in_bytes:,}"),
        ("output bytes", f"{out_bytes:,}"),
    ]
    if rates:
        ratio = f"{in_bytes / out_bytes:.2f}:1" if out_bytes else "-"
        if slices:
            image_bpp = sum(o.bpp_sum for o in ok) / slices
            file_bpp = sum(o.file_bpp_sum for o in ok) / slices
            bpp = f"{image_bpp:.4f} (image data; {file_bpp:.4f} whole files, source headers included)"
        else:
            bpp = "-"
        rows += [("ratio", ratio), ("mean bpp", bpp)]
    rows.append(("time", f"{seconds:.1f} s"))
    return rows


def print_summary(outcomes: Sequence[Outcome], seconds: float, *, rates: bool, out: TextIO | None = None) -> None:
    """Print the summary table (see :func:`summary_rows`)."""
    out = out or sys.stdout
    for label, value in summary_rows(outcomes, seconds, rates=rates):
        print(f"{label:<13} {value}", file=out)


def exit_status(outcomes: Sequence[Outcome]) -> int:
    """0 when nothing failed, else 1."""
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def elapsed(start: float) -> float:
    """Seconds since ``start`` (``time.perf_counter()``)."""
    return time.perf_counter() - start
