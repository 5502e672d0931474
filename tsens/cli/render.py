"""Human output: rich tables and progress on stderr (stdout is kept for data)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

# Off a terminal (CI logs, pipes) rich would assume 80 columns and elide numbers; use 160.
_WIDTH = None if sys.stderr.isatty() or "COLUMNS" in os.environ else 160
console = Console(stderr=True, highlight=False, width=_WIDTH)


def fmt(value: Any, digits: int = 4) -> str:
    """Compact number formatting for summaries."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def show_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "", text_columns: int = 1
) -> None:
    """A rich table on stderr: the first ``text_columns`` left-aligned, numbers right-aligned."""
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < text_columns else "right")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    console.print(table)
    if caption:
        console.print(Text(caption), soft_wrap=True)


def show_mapping(title: str, values: Mapping[str, Any]) -> None:
    """Key/value pairs as a two-column table."""
    show_table(title, ["key", "value"], sorted(values.items()), text_columns=2)


def note(message: str) -> None:
    console.print(Text(message), soft_wrap=True)


def error(prefix: str, message: str) -> None:
    """A red prefix and the message verbatim (no markup parsing of user text)."""
    console.print(Text.assemble((prefix, "bold red"), message), soft_wrap=True)


def warn(message: str) -> None:
    console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only on an interactive terminal, never in CI logs."""
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator[Any]:
    """A callback that advances a rich progress bar by n samples (a no-op when disabled)."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def progress(params: Mapping[str, Any], label: str, total: int) -> Iterator[Any]:
    """A progress callback for one pass of ``total`` samples (None off a terminal or with -q)."""
    with progress_bar(label, total, progress_enabled(bool(params.get("quiet")))) as advance:
        yield advance


@contextmanager
def progress_sets(
    params: Mapping[str, Any], label: str, sizes: Mapping[str, int]
) -> Iterator[Callable[[str], Any] | None]:
    """One bar over several data sets: ``name → callback`` as :func:`tsens.stream.measure_sets`
    takes it (None off a terminal or with -q)."""
    with progress_bar(
        f"{label} ({', '.join(sizes)})", sum(sizes.values()), progress_enabled(bool(params.get("quiet")))
    ) as advance:
        yield None if advance is None else (lambda _name: advance)
