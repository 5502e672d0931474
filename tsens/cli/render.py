"""Human output: rich tables, notes, warnings and progress on stderr (stdout is kept for data).

On a terminal the output fits its width. Anywhere else (a log, a pipe, CI) nothing is ever
wrapped or cut, whatever ``COLUMNS`` says: a path or a number stays on one line for grep.
Progress is drawn on a terminal only, never in CI logs: one overall line (jobs done of all, the
time left) and a bar for the samples of the job at hand. Warnings are gathered during a command
and shown once per cause at its end, with how often they came.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

Show = Callable[[Any, Sequence[dict[str, Any]], Mapping[str, Any]], None]
"""Renders one checkpoint: its network, its summary rows, its rows (``-o`` columns)."""

UNWRAPPED = 100_000
"""The width off a terminal: wide enough that no line of a table is ever wrapped or cut."""


def _console() -> Console:
    terminal = sys.stderr.isatty()
    return Console(
        stderr=True, highlight=False, width=None if terminal else UNWRAPPED, soft_wrap=not terminal
    )


console = _console()


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
    """A rich table on stderr under its title (a line of its own, so that a long path in it is
    never folded to the table's width): the first ``text_columns`` left-aligned, numbers
    right-aligned."""
    note(title)
    table = Table()
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < text_columns else "right")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    show(table)
    if caption:
        note(caption)


def show(renderable: Any) -> None:
    """Anything rich draws (a table), on stderr."""
    console.print(renderable)


def show_mapping(title: str, values: Mapping[str, Any]) -> None:
    """Key/value pairs as a two-column table."""
    show_table(title, ["key", "value"], sorted(values.items()), text_columns=2)


def note(message: str) -> None:
    console.print(Text(message))


def error(prefix: str, message: str) -> None:
    """A red prefix and the message verbatim (no markup parsing of user text), on one line."""
    console.print(Text.assemble((prefix, "bold red"), message), soft_wrap=True)


def warn(message: str) -> None:
    console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only on an interactive terminal, never in CI logs."""
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


class TerminalProgress:
    """The command line's :class:`tsens.commands.Progress`: on a terminal one overall line (jobs
    done, time left) and a bar for the job at hand; ``show`` renders each checkpoint as it
    comes (None: nothing)."""

    def __init__(self, quiet: bool, show: Show | None = None) -> None:
        self.enabled = progress_enabled(quiet)
        self.show = None if quiet else show
        self._bar: Progress | None = None

    @contextmanager
    def overall(self, total: int, unit: str) -> Iterator[Callable[[int], None] | None]:
        if not self.enabled:
            yield None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            self._bar = bar
            task = bar.add_task(unit, total=total)
            try:
                yield lambda n: bar.advance(task, n)
            finally:
                self._bar = None

    @contextmanager
    def item(self, label: str, size: int) -> Iterator[Callable[[int], None] | None]:
        bar = self._bar
        if bar is None or size <= 0:
            yield None
            return
        task = bar.add_task(label, total=size)
        try:
            yield lambda n: bar.advance(task, n)
        finally:
            bar.remove_task(task)

    def checkpoint(
        self, network: Any, summary: Sequence[dict[str, Any]], columns: Mapping[str, Any] | None
    ) -> None:
        if self.show is not None:
            self.show(network, summary, columns)


_SUBJECT = re.compile(r"^\S+(?: \([^)]*\))?: ")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class Warnings:
    """Warnings gathered during one command and shown once per cause (the message without the
    checkpoint it names, numbers aside), with how many more times it came."""

    def __init__(self) -> None:
        self.causes: dict[tuple[bool, str], list[Any]] = {}

    def add(self, text: str, is_note: bool) -> None:
        cause = _NUMBER.sub("#", _SUBJECT.sub("", text, count=1))
        seen = self.causes.setdefault((is_note, cause), [text, 0])
        seen[1] += 1

    def clear(self) -> None:
        self.causes.clear()

    def flush(self) -> None:
        for (is_note, _), (text, count) in self.causes.items():
            more = f" (and {count - 1} more like it)" if count > 1 else ""
            (note if is_note else warn)(("note: " if is_note else "") + text + more)
        self.causes.clear()
