"""medvae.workers: a graph of tasks run in forked worker processes, each once what it reads is done."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest
import torch

from medvae.errors import InputError, MedVAEError
from medvae.workers import run_graph, worker_count


class _Recorder:
    """A stand-in codec: each call says which process ran it, and when."""

    def visit(self, task: int, after: int | None) -> tuple[int, int, int | None]:
        if task == 13:
            raise InputError("task 13 refuses")
        if task == 66:
            os._exit(1)  # a worker killed (out of memory, say)
        return os.getpid(), task, after


#: Two chains from task 0, the second branching: 0 → 1 → 2 → 3, 0 → 4 → 5 → 6, 5 → 7.
_AFTER = {0: [1, 4], 1: [2], 2: [3], 4: [5], 5: [6, 7]}
_BEFORE = {t: before for before, tasks in _AFTER.items() for t in tasks}


@pytest.mark.parametrize("workers", [1, 2])
def test_every_task_runs_once_after_the_task_it_reads(workers):
    finished, pids = [], set()

    def done(task, result):
        pid, ran, after = result
        assert ran == task and after == _BEFORE.get(task)
        assert after is None or after in finished  # what it read was done before it was handed out
        finished.append(task)
        pids.add(pid)
        return _AFTER.get(task, [])

    run_graph(_Recorder(), [0], lambda task: ("visit", (task, _BEFORE.get(task)), {}), done, workers)
    assert sorted(finished) == list(range(8))
    if workers == 1:
        assert pids == {os.getpid()}
    else:  # forked processes, the parent only hands out and collects
        assert os.getpid() not in pids and 1 <= len(pids) <= 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_task_that_raises_stops_the_graph_with_its_error(workers):
    started = []

    def done(task, result):
        started.append(task)
        return [13, 14] if task == 0 else []

    with pytest.raises(InputError, match="task 13 refuses"):
        run_graph(_Recorder(), [0], lambda task: ("visit", (task, None), {}), done, workers)
    assert 0 in started


def test_worker_count_takes_the_threads_and_the_graph_width():
    threads = torch.get_num_threads()
    linux = sys.platform.startswith("linux")
    assert worker_count(None, "cpu", 100) == (threads if linux else 1)
    assert worker_count(8, "cpu", 3) == (3 if linux else 1)  # no more processes than slices that can run at once
    assert worker_count(8, "cpu", 0) == 1
    assert worker_count(2, "cuda", 10) == 1  # a model on a GPU is not forked
    with multiprocessing.get_context("fork").Pool(1) as pool:  # nor from a daemonic pool worker
        assert pool.apply(worker_count, (2, "cpu", 10)) == 1
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError, match="workers"):
            worker_count(bad, "cpu", 4)


def test_a_worker_that_dies_is_reported_as_such():
    with pytest.raises(MedVAEError, match="worker process .* died"):
        run_graph(_Recorder(), [0], lambda task: ("visit", (task, None), {}), lambda task, result: [66] if task == 0 else [], 2)
