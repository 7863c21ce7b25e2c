"""Sections of ``benchmarks/RESULTS.md`` that their own benchmark writes (``lossless.py``,
``series.py``): each between ``<!-- name:start -->`` and ``<!-- name:end -->``, also saved as
``results/<name>.md`` so that ``results.py``, which rewrites the report, keeps them."""

from __future__ import annotations

import re
from pathlib import Path

#: The generated sections, in the order the report shows them.
SECTIONS = ("lossless", "optimized", "series", "xray", "variable_rate", "context", "equal_budget")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def block(name: str, text: str) -> str:
    start, end = markers(name)
    return f"{start}\n{text.strip()}\n{end}"


def write_section(name: str, text: str, benchmarks: Path) -> None:
    """Save ``text`` as ``results/<name>.md`` and put it between its markers in
    ``RESULTS.md`` (appended when they are absent)."""
    (benchmarks / "results" / f"{name}.md").write_text(text.strip() + "\n")
    results_md = benchmarks / "RESULTS.md"
    start, end = markers(name)
    current = results_md.read_text() if results_md.is_file() else ""
    if start in current and end in current:
        current = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block(name, text), current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block(name, text) + "\n"
    results_md.write_text(current)


def details(summary: str, body: str) -> list[str]:
    """Markdown lines of a collapsed block (``<details>``) titled ``summary``."""
    return [f"<details><summary>{summary}</summary>", "", body, "", "</details>"]


def publish_section(name: str, lines: list[str], benchmarks: Path) -> int:
    """Join ``lines``, write them as section ``name`` (:func:`write_section`), print them; 0."""
    text = "\n".join(lines)
    write_section(name, text, benchmarks)
    print(text)
    return 0


def saved_blocks(benchmarks: Path) -> list[str]:
    """Every saved section, between its markers, for the report ``results.py`` writes."""
    return [block(name, path.read_text()) for name in SECTIONS if (path := benchmarks / "results" / f"{name}.md").is_file()]
