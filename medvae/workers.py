"""Slices of a series that do not depend on one another, coded at once in worker processes.

Series coding (:meth:`medvae.Codec.compress_series`, :meth:`~medvae.Codec.decompress_series`) is
a graph: key slices first, then each slice once the one it follows is done. The two chains from
each key slice, and every run, are independent, so they can run side by side. Python threads do
not run them side by side here (the exact layers issue many small torch products and each takes
the GIL back), and one process uses two cores only in part (a series slice coded and decoded in
2.2 s with two torch threads, 3.0 s with one), while two processes with one thread each use both:
on the 20 slices of the CT test series at τ = 1, 1.68 s a slice against 1.87 s in one process
(docs/lossless.md, "Independent chains at once"). So this module runs the graph in ``fork``-ed
worker processes, which inherit the codec already loaded, one torch thread each.

Why it changes no file and no image: each slice's coding is a function of its inputs alone (the
exact layers give the same values with any threads, in any process, :mod:`medvae.exact`), the
parent hands a slice to a worker only once everything it reads is done, and the parent alone keeps
what the slices pass on; so which worker codes a slice, and in what order slices finish, changes
nothing (the tests compare the bytes and pixels with one worker and with two).
"""

from __future__ import annotations

import collections
import multiprocessing
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch

from medvae.errors import InputError, MedVAEError

Task = TypeVar("Task")
#: A task's call on the codec: (method name, positional arguments, keyword arguments).
Call = tuple[str, tuple, dict]

_codec: Any = None  # a worker's codec, inherited from the parent at fork


def worker_count(workers: int | None, device: torch.device | str, width: int) -> int:
    """How many processes code a graph at most ``width`` slices wide: ``workers``, by default
    torch's thread count (the cores this process was given, each worker taking one), at most
    ``width``; 1 (this process, with all its threads) where forking a loaded model is not safe or
    not allowed: outside Linux, with a model on a GPU, or in a daemonic process (a
    ``multiprocessing.Pool``'s worker, which may not start processes)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a whole number >= 1 (None: one per torch thread), got {workers!r}")
    if not sys.platform.startswith("linux") or torch.device(device).type != "cpu" or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(torch.get_num_threads() if workers is None else workers, width))


def run_graph(
    codec: Any, first: Iterable[Task], call: Callable[[Task], Call], done: Callable[[Task, Any], Iterable[Task]], workers: int,
) -> None:
    """Run ``codec``'s method named by ``call(task)`` for each task, starting from ``first``:
    ``done(task, result)``, in this process, gets each result and returns the tasks it makes
    ready. With ``workers`` > 1, tasks run in that many forked processes, one torch thread each;
    with 1, here, one after another. An exception a task raises is raised here, after the tasks
    running with it finish (no more start); a worker that dies (out of memory, killed) raises a
    :class:`MedVAEError` that says so."""
    if workers <= 1:
        ready = collections.deque(first)
        while ready:
            task = ready.popleft()
            method, args, kwargs = call(task)
            ready.extend(done(task, getattr(codec, method)(*args, **kwargs)))
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_adopt, initargs=(codec,)) as pool:
        pending = {pool.submit(_run, *call(task)): task for task in first}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        raise MedVAEError(f"a worker process coding the series died (out of memory, or killed); "
                                          f"code it in this process with workers=1 ({workers} were running)") from None
                    for after in done(task, result):
                        pending[pool.submit(_run, *call(after))] = after
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _adopt(codec: Any) -> None:
    """A worker's start: the codec it inherited, and one torch thread (its siblings take the other cores)."""
    global _codec
    _codec = codec
    torch.set_num_threads(1)


def _run(method: str, args: tuple, kwargs: dict) -> Any:
    return getattr(_codec, method)(*args, **kwargs)
