"""``medvae compress --series`` on one DICOM file per slice: the files of each series in coding order.

Each input file is a job of its own; with ``--series`` each series' jobs run in one worker
process (:func:`medvae.cli.compress.series_groups`), in an order that puts each DICOM series'
single-slice files together, ranked in anatomical order
(:func:`medvae.io.series.order_slices`) and run in the order of the series' coding plan
(:func:`medvae.series.coding_plan`: key slices first, then outwards from them), and each file
knows its series, its rank there and the series' length, so
:func:`medvae.cli.compress.compress_file` codes it given the neighbour its plan names (coded before it).
"""

from __future__ import annotations

from pathlib import Path

from medvae.cli.files import Task
from medvae.series import coding_plan, runs

#: A file's series (folder, Series Instance UID, rows, columns), its rank in it, the series' length
#: and the file's run in the series' plan (:func:`medvae.series.runs`: a worker codes a run whole).
Rank = tuple[tuple[str, str, int, int], int, int, int]


def series_order(tasks: list[Task], max_chain: int) -> tuple[list[Task], dict[str, Rank]]:
    """``tasks`` with each DICOM series' single-slice files together, in the order of the series'
    coding plan for ``max_chain`` (the others where they were), and the rank of each such file
    (by ``str(source)``) in its series, with the series' length and the file's run."""
    import pydicom

    from medvae.io.dicom import has_dicom_prefix
    from medvae.io.series import is_dicom_file, is_image_header, order_slices

    members: dict[tuple[str, str, int, int], list[tuple[Path, object]]] = {}
    for task in tasks:
        if not is_dicom_file(task.source):
            continue
        try:
            ds = pydicom.dcmread(task.source, stop_before_pixels=True, force=not has_dicom_prefix(task.source))
            if not (is_image_header(ds) and int(getattr(ds, "NumberOfFrames", 1) or 1) == 1 and "SeriesInstanceUID" in ds):
                continue
            key = (str(task.source.parent), str(ds.SeriesInstanceUID), int(ds.Rows), int(ds.Columns))
        except Exception:  # a header unreadable here: coded alone, and its job says what is wrong with it
            continue
        members.setdefault(key, []).append((task.source, ds))
    ranks: dict[str, Rank] = {}
    in_plan_order: dict[tuple[str, str, int, int], list[Path]] = {}
    for key, group in members.items():
        plan, paths = coding_plan(len(group), max_chain), order_slices(group)
        run = runs(plan)
        for rank, path in enumerate(paths):
            ranks[str(path)] = (key, rank, len(group), run[rank])
        in_plan_order[key] = [paths[rank] for rank, _ in plan]
    by_source = {str(task.source): task for task in tasks}
    ordered, placed = [], set()
    for task in tasks:
        rank = ranks.get(str(task.source))
        if rank is None:
            ordered.append(task)
        elif rank[0] not in placed:  # the series goes where its first listed file was, whole and in plan order
            placed.add(rank[0])
            ordered += [by_source[str(path)] for path in in_plan_order[rank[0]]]
    return ordered, ranks
