"""The batch progress bar shows the slices of the files in progress, not only finished files."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np

from medvae.cli import batch
from medvae.cli.files import Task


class Terminal(io.StringIO):
    """A stderr that tqdm draws on (it stays silent on anything that is not a terminal)."""

    def isatty(self) -> bool:
        return True


def three_slices(task: Task) -> batch.Outcome:
    """A job coding a three-slice volume; it waits after each slice so the parent polls."""
    for done in (1, 2, 3):
        batch.progress(task.source, done, 3)
        time.sleep(0.7)
    return batch.Outcome(task.source)


def test_one_process_shows_each_slice():
    err = Terminal()
    tasks = [Task(Path("in/volume.nii.gz"), Path("out/volume"))]
    outcomes = batch.run(tasks, lambda task: batch.progress(task.source, 1, 2) or batch.progress(task.source, 2, 2)
                         or batch.Outcome(task.source), err=err)
    assert outcomes[0].status == "ok"
    assert "volume.nii.gz: slice 1/2" in err.getvalue()
    batch.progress(Path("elsewhere"), 1, 2)  # after the run: reported nowhere, no error


def test_single_slices_add_nothing():
    err = Terminal()
    tasks = [Task(Path(f"in/{n}.dcm"), Path(f"out/{n}")) for n in "ab"]
    batch.run(tasks, lambda task: batch.progress(task.source, 1, 1) or batch.Outcome(task.source), err=err)
    assert "slice" not in err.getvalue()
    assert "2/2" in err.getvalue()


def test_worker_processes_report_their_slices():
    err = Terminal()
    tasks = [Task(Path(f"in/v{n}.nii.gz"), Path(f"out/v{n}")) for n in range(2)]
    outcomes = batch.run(tasks, three_slices, workers=2, err=err)
    assert [o.status for o in outcomes] == ["ok", "ok"]
    shown = err.getvalue()
    assert any(f"v{n}.nii.gz: slice 2/3" in shown for n in range(2)), shown[-500:]


def test_compress_reports_every_slice_of_a_volume(tmp_path, monkeypatch, checkpoint):
    from medvae.cli import main

    volume = tmp_path / "volume.npy"
    np.save(volume, np.random.default_rng(0).integers(0, 4096, (3, 32, 32), dtype=np.uint16))
    seen = []
    monkeypatch.setattr(batch, "_SliceProgress", type("Seen", (batch._SliceProgress,), {
        "update": lambda self, source, done, total: seen.append((Path(source).name, done, total))}))
    assert main(["compress", str(volume), "-o", str(tmp_path / "out"), "--model", checkpoint]) == 0
    assert seen == [("volume.npy", 1, 3), ("volume.npy", 2, 3), ("volume.npy", 3, 3)]


def chatty(task: Task) -> batch.Outcome:
    """A job that reports far more than a pipe holds (64 KiB) before it returns; one returns at once."""
    if task.source.name != "quick":
        for done in range(1, 4001):
            batch.progress(task.source, done, 4000)
        time.sleep(1.0)
    return batch.Outcome(task.source)


def test_an_interrupted_pool_returns_although_workers_reported_more_than_a_pipe_holds(tmp_path):
    """Interrupted (Ctrl-C, SIGTERM), the parent stops reading reports and waits for the files in
    progress; a worker must not then wait for it to read them (before the fix: a hang)."""
    import subprocess
    import sys

    script = tmp_path / "interrupt.py"
    script.write_text(
        "from pathlib import Path\n"
        "from tqdm import tqdm\n"
        "from medvae.cli import batch\n"
        "from medvae.cli.files import Task\n"
        "from tests.cli.test_progress import chatty\n"
        "def record(i, outcome):\n"
        "    raise KeyboardInterrupt\n"
        "if __name__ == '__main__':\n"
        "    tasks = [Task(Path('quick'), Path('q')), Task(Path('chatty.nii.gz'), Path('c'))]\n"
        "    try:\n"
        "        batch._run_pool(tasks, [[0], [1]], chatty, 2, None, (), False, record, batch._SliceProgress(tqdm(disable=True)))\n"
        "    except KeyboardInterrupt:\n"
        "        print('interrupted')\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "interrupted", done.stderr[-2000:]
