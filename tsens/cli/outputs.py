"""Writing a command's tables: the per-sample (or per-checkpoint) table of ``-o`` and the
summary table of ``--summary``, one writer, one provenance record, targets checked before any
work is done."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import TsensError
from ..network import Network
from ..runs import CheckpointRef
from ..tables import concat_tables, make_table, output_format, provenance, write_table
from . import render
from .inputs import PREPROCESS_OPTIONS

_TARGETS = (("output", "-o"), ("summary_path", "--summary"))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def check_targets(params: Mapping[str, Any]) -> None:
    """Refuse output targets that cannot be written, before any work: an unknown format, an
    existing file without ``--force``, a missing directory, binary output to a terminal, or
    both tables to stdout."""
    given = [(key, flag, params.get(key)) for key, flag in _TARGETS if params.get(key)]
    if sum(1 for _, _, path in given if path == "-") > 1:
        raise TsensError("-o - and --summary - cannot both write to stdout; send one of them to a file")
    for _key, flag, path in given:
        try:
            fmt = output_format(path, params.get("fmt"))
        except TsensError as exc:
            raise TsensError(str(exc).replace("output ", f"{flag} ", 1)) from None
        if path == "-":
            if fmt in ("arrow", "parquet") and stdout_is_terminal():
                raise TsensError(
                    f"{flag} - would write binary {fmt} to the terminal; pipe it into a program "
                    "(| python -c ...), give a file, or add --format csv/json/jsonl"
                )
            continue
        target = Path(path)
        if target.is_dir():
            raise TsensError(f"{flag} {path!r} is a directory; expected a file path")
        if target.exists() and not params.get("force"):
            raise TsensError(f"{flag} {path!r} exists; pass --force to overwrite it")
        if not target.parent.is_dir():
            raise TsensError(f"{flag} {path!r}: directory {str(target.parent)!r} does not exist")


def check_side_files(params: Mapping[str, Any], files: Sequence[tuple[str, str, str]]) -> None:
    """Refuse extra output files (``(flag, parameter, suffix)``, e.g. ``--plot``) before any work,
    as for ``-o``; a plot target also needs matplotlib."""
    for flag, key, suffix in files:
        path = params.get(key)
        if not path:
            continue
        target = Path(path)
        if target.suffix.lower() != suffix:
            raise TsensError(f"{flag} {path!r}: expected a {suffix} file")
        if target.exists() and not params.get("force"):
            raise TsensError(f"{flag} {path!r} exists; pass --force to overwrite it")
        if not target.parent.is_dir():
            raise TsensError(f"{flag} {path!r}: directory {str(target.parent)!r} does not exist")
        if key == "plot":
            from ..plots import require_matplotlib

            require_matplotlib()


def write_side_file(params: Mapping[str, Any], key: str, write: Callable[[str], Any], what: str = "") -> None:
    """Write the extra output ``params[key]`` (when asked) with ``write(path)``, and say so."""
    path = params.get(key)
    if not path:
        return
    write(path)
    if not params.get("quiet"):
        render.note(f"wrote {what or path}" + (f" to {path}" if what else ""))


def checked_targets(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: :func:`check_targets` before the command body runs."""

    @functools.wraps(f)
    def wrapper(*args: Any, **params: Any) -> Any:
        check_targets(params)
        return f(*args, **params)

    return wrapper


def checkpoint_record(
    ref: CheckpointRef | None, network: Network, applied: Mapping[str, Any]
) -> dict[str, Any]:
    """Provenance of one checkpoint: path, sha256, run, step, and what was applied to it."""
    record: dict[str, Any] = {"path": network.path, "sha256": network.sha256}
    if ref is not None:
        record.update({"run": ref.run, "step": ref.step})
    record["activation"] = network.activation.spec
    record.update(applied)
    return record


class Tables:
    """Collects one command's rows checkpoint by checkpoint and writes both tables at the end."""

    def __init__(self, command: str, params: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        self.command = command
        self.params = dict(params)
        self.data = dict(data)
        self.records: list[dict[str, Any]] = []
        self.parts: list[pa.Table] = []
        self.summary_rows: list[dict[str, Any]] = []

    def add(
        self,
        ref: CheckpointRef | None,
        network: Network,
        columns: Mapping[str, Any] | None,
        summary: Sequence[Mapping[str, Any]] = (),
        applied: Mapping[str, Any] | None = None,
        lead: Mapping[str, Any] | None = None,
    ) -> None:
        """One checkpoint: its rows (``columns``, equal-length), its summary rows, and the
        settings applied to it (for provenance). ``checkpoint``, ``run`` and ``step`` lead
        every row, then ``lead``."""
        self.records.append(checkpoint_record(ref, network, applied or {}))
        ident = {
            "checkpoint": network.path,
            "run": ref.run if ref else None,
            "step": ref.step if ref else None,
        }
        if columns is not None:
            n = len(next(iter(columns.values()))) if columns else 0
            head = {k: [v] * n for k, v in ident.items()}
            self.parts.append(make_table({**head, **(lead or {}), **columns}, {}))
        for row in summary:
            rest = {k: v for k, v in row.items() if k != "checkpoint"}
            self.summary_rows.append({**ident, **rest})

    def add_summary(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Summary rows that belong to no single checkpoint (e.g. an evaluation across them)."""
        self.summary_rows.extend(dict(r) for r in rows)

    def meta(self) -> dict[str, Any]:
        options = {k: v for k, v in self.params.items() if k not in (*PREPROCESS_OPTIONS, "activation")}
        return provenance(self.command, self.records, self.data, options)

    def table(self) -> pa.Table:
        parts = [t for t in self.parts if t.num_rows] or self.parts[:1]
        return concat_tables(parts, self.meta()) if parts else make_table({}, self.meta())

    def summary_table(self) -> pa.Table:
        return make_table(_columns_of(self.summary_rows), self.meta())

    def write(self) -> None:
        """Write ``-o`` and ``--summary`` where asked (each refused earlier if it cannot be)."""
        for key, table_of, what in (
            ("output", self.table, "rows"),
            ("summary_path", self.summary_table, "summary rows"),
        ):
            path = self.params.get(key)
            if not path:
                continue
            table = table_of()
            write_table(table, path, fmt=self.params.get("fmt"), force=bool(self.params.get("force")))
            if path != "-" and not self.params.get("quiet"):
                render.note(f"wrote {table.num_rows:,} {what} to {path}")


def _columns_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows (dicts, possibly with different keys) as columns; a missing key is null."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return {k: [_plain(row.get(k)) for row in rows] for k in keys}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
