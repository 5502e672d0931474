"""What a command returns: its two tables, in checkpoint order, with provenance.

Every command's library call returns a :class:`CommandResult`: ``table`` holds the rows its
``-o`` writes (per sample, per unit, per curve or per checkpoint), ``summary`` the rows its
``--summary`` writes (one per checkpoint and data set, or the evaluation of ``estimate-gap``).
Both are Arrow tables that lead with ``checkpoint``, ``run`` and ``step`` and carry the
provenance (:func:`tsens.tables.provenance`) in their schema metadata; ``to_pandas`` gives them
to pandas, :meth:`CommandResult.write` writes them as the command line does. A
:class:`Collector` builds both, one checkpoint at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..network import Network
from ..runs import CheckpointRef
from ..tables import concat_tables, make_table, provenance, table_provenance, write_table

Row = dict[str, Any]


@dataclass(repr=False)
class CommandResult:
    """One command's tables (module docstring), its summary rows as plain dicts (what
    ``summary`` holds), the command's own results in ``extra`` (``bound``: each checkpoint's
    row; ``transitions``: the :class:`~tsens.transitions.TransitionResult` s and curves;
    ``estimate-gap``: the :class:`~tsens.gap.GapResult`), and ``notes`` on what fell back."""

    command: str
    table: pa.Table
    summary: pa.Table
    summary_rows: list[Row] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        n = len(self.checkpoints)
        table, summary = self.table, self.summary
        return (
            f"<{self.command}: {n} checkpoint{'s' * (n != 1)}; table {table.num_rows:,} rows × "
            f"{table.num_columns} columns, summary {summary.num_rows:,} × {summary.num_columns}>"
        )

    @property
    def provenance(self) -> dict[str, Any]:
        """The record both tables carry: version, command, checkpoints, data sets, options."""
        return table_provenance(self.table)

    @property
    def checkpoints(self) -> list[str]:
        """The checkpoints' paths, in order."""
        return [c["path"] for c in self.provenance.get("checkpoints", [])]

    def to_pandas(self) -> Any:
        """``table`` as a pandas DataFrame (pandas must be installed)."""
        return self.table.to_pandas()

    def write(
        self,
        output: str | None = None,
        summary: str | None = None,
        *,
        fmt: str | None = None,
        force: bool = False,
    ) -> list[tuple[str, int, str]]:
        """Write ``table`` to ``output`` and ``summary`` to ``summary`` (either may be None; ``-``
        is stdout) in ``fmt`` or the format their suffixes name; an existing file only with
        ``force``. Gives (path, rows, "rows" or "summary rows") for each file written."""
        written = []
        for path, table, what in ((output, self.table, "rows"), (summary, self.summary, "summary rows")):
            if path:
                write_table(table, path, fmt=fmt, force=force)
                written.append((path, table.num_rows, what))
        return written


def checkpoint_record(ref: CheckpointRef | None, network: Network, applied: Mapping[str, Any]) -> Row:
    """Provenance of one checkpoint: path, sha256, run, step, and what was applied to it."""
    record: Row = {"path": network.path, "sha256": network.sha256}
    if ref is not None:
        record.update({"run": ref.run, "step": ref.step})
    record["activation"] = network.activation.spec
    record.update(applied)
    return record


class Collector:
    """Collects one command's rows checkpoint by checkpoint (in order) and makes its result."""

    def __init__(self, command: str, data: Mapping[str, Any], options: Mapping[str, Any]) -> None:
        self.command = command
        self.data = dict(data)
        self.options = dict(options)
        self.records: list[Row] = []
        self.parts: list[pa.Table] = []
        self.summary_rows: list[Row] = []

    def add(
        self,
        ref: CheckpointRef | None,
        network: Network,
        columns: Mapping[str, Any] | None,
        summary: Sequence[Mapping[str, Any]] = (),
        applied: Mapping[str, Any] | None = None,
    ) -> None:
        """One checkpoint: its rows (``columns``, equal-length), its summary rows, and the
        settings applied to it (for provenance). ``checkpoint``, ``run`` and ``step`` lead
        every row."""
        self.records.append(checkpoint_record(ref, network, applied or {}))
        ident = {
            "checkpoint": network.path,
            "run": ref.run if ref else None,
            "step": ref.step if ref else None,
        }
        if columns is not None:
            n = len(next(iter(columns.values()))) if columns else 0
            head = {k: [v] * n for k, v in ident.items()}
            self.parts.append(make_table({**head, **columns}, {}))
        for row in summary:
            rest = {k: v for k, v in row.items() if k not in ident}
            self.summary_rows.append({**ident, **rest})

    def add_summary(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Summary rows that belong to no single checkpoint (e.g. an evaluation across them)."""
        self.summary_rows.extend(dict(r) for r in rows)

    def meta(self) -> Row:
        return provenance(self.command, self.records, self.data, self.options)

    def result(self, extra: Mapping[str, Any] | None = None, notes: Sequence[str] = ()) -> CommandResult:
        meta = self.meta()
        parts = [t for t in self.parts if t.num_rows] or self.parts[:1]
        table = concat_tables(parts, meta) if parts else make_table({}, meta)
        summary = make_table(columns_of(self.summary_rows), meta)
        return CommandResult(
            self.command, table, summary, list(self.summary_rows), dict(extra or {}), list(notes)
        )


def columns_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows (dicts, possibly with different keys) as columns; a missing key is null, and a
    column whose values mix text with numbers (metadata read from several checkpoints) is text."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    columns = {k: [_plain(row.get(k)) for row in rows] for k in keys}
    for key, values in columns.items():
        kinds = {isinstance(v, str) for v in values if v is not None}
        if kinds == {True, False}:
            columns[key] = [None if v is None else str(v) for v in values]
    return columns


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
