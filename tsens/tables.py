"""Writing result tables: one writer for every command, with provenance.

The format follows the output path's suffix (``.parquet``, ``.arrow``/``.feather``, ``.csv``,
``.json``, ``.jsonl``) or an explicit ``fmt``; ``-`` writes to stdout (an Arrow IPC stream unless
``fmt`` says otherwise). Arrow and Parquet carry the provenance in the schema metadata under
the key ``tsens``; JSON carries it beside the rows (``{"tsens": {...}, "rows": [...]}``); CSV and
JSON Lines hold rows only.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from .choices import TABLE_FORMATS
from .errors import TsensError
from .files import atomic_output
from .version import __version__

_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def provenance(
    command: str,
    checkpoints: Sequence[Mapping[str, str]] = (),
    data: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record stored with every table: tsens version, command, checkpoints (path and
    sha256), the data set spec(s) and every option, so a result can be traced."""
    return {
        "version": __version__,
        "command": command,
        "checkpoints": [dict(c) for c in checkpoints],
        "data": dict(data or {}),
        "options": dict(options or {}),
    }


def make_table(columns: Mapping[str, Any], meta: Mapping[str, Any]) -> pa.Table:
    """An Arrow table from equal-length columns, with ``meta`` as JSON under schema key ``tsens``."""
    table = pa.table({name: _column(values) for name, values in columns.items()})
    return table.replace_schema_metadata({"tsens": json.dumps(meta, default=str)})


def concat_tables(tables: Sequence[pa.Table], meta: Mapping[str, Any]) -> pa.Table:
    """Rows of several tables (one per checkpoint) in one table with ``meta``; a column whose
    type differs between them (metadata that is a number in one checkpoint, text in another)
    becomes text."""
    parts = [t.replace_schema_metadata(None) for t in tables]
    kinds: dict[str, set[pa.DataType]] = {}
    for part in parts:
        for field in part.schema:
            if not pa.types.is_null(field.type):
                kinds.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, types in kinds.items() if len(types) > 1 and not _numeric(types)}
    parts = [_as_text(part, mixed) for part in parts]
    table = pa.concat_tables(parts, promote_options="permissive")  # int and float: float
    return table.replace_schema_metadata({"tsens": json.dumps(meta, default=str)})


def _numeric(types: set[pa.DataType]) -> bool:
    return all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types)


def _as_text(table: pa.Table, names: set[str]) -> pa.Table:
    for i, field in enumerate(table.schema):
        if field.name in names:
            text = pa.array([None if v is None else str(v) for v in table.column(i).to_pylist()], pa.string())
            table = table.set_column(i, field.name, text)
    return table


def table_provenance(table: pa.Table) -> dict[str, Any]:
    """The provenance record stored in a table written by tsens."""
    raw = (table.schema.metadata or {}).get(b"tsens")
    return json.loads(raw) if raw else {}


def output_format(path: str, fmt: str | None = None) -> str:
    """The format for ``path``: ``fmt`` if given, else the suffix, else Arrow for stdout."""
    if fmt is not None:
        if fmt not in TABLE_FORMATS:
            raise TsensError(f"`fmt` {fmt!r} is not one of {', '.join(TABLE_FORMATS)}")
        return fmt
    if path == "-":
        return "arrow"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise TsensError(
            f"output {path!r}: unknown suffix {suffix or '(none)'!r}; expected one of "
            f"{', '.join(sorted(_SUFFIXES))} or `fmt`"
        )
    return _SUFFIXES[suffix]


def write_table(table: pa.Table, path: str, *, fmt: str | None = None, force: bool = False) -> None:
    """Write ``table`` to ``path`` (``-`` = stdout). Refuses to overwrite unless ``force``."""
    fmt = output_format(path, fmt)
    if path == "-":
        _write(table, sys.stdout.buffer, fmt, stream_arrow=True)
        sys.stdout.buffer.flush()
        return
    with atomic_output(path, force=force) as stream:
        _write(table, stream, fmt, stream_arrow=False)


def _write(table: pa.Table, stream: BinaryIO, fmt: str, *, stream_arrow: bool) -> None:
    """Arrow goes out as an IPC stream on stdout and as a Feather v2 (IPC file) on disk."""
    if fmt == "parquet":
        pq.write_table(table, stream)
    elif fmt == "arrow":
        if stream_arrow:
            with ipc.new_stream(stream, table.schema) as writer:
                writer.write_table(table)
        else:
            feather.write_feather(table, stream, compression="uncompressed")
    elif fmt == "csv":
        pacsv.write_csv(_flat(table), stream)
    elif fmt == "jsonl":
        for row in _rows(table):
            stream.write((json.dumps(row) + "\n").encode())
    else:
        doc = {"tsens": table_provenance(table), "rows": _rows(table)}
        stream.write((json.dumps(doc, indent=1) + "\n").encode())


def _flat(table: pa.Table) -> pa.Table:
    """CSV cannot hold list columns: write them as JSON strings."""
    for i, field in enumerate(table.schema):
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            texts = pa.array([json.dumps(v) for v in table.column(i).to_pylist()])
            table = table.set_column(i, field.name, texts)
    return table


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _json_value(v) for k, v in row.items()} for row in table.to_pylist()]


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _column(values: Any) -> pa.Array:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return pa.array(list(values))
    if isinstance(values, np.ndarray):
        return pa.array(values)
    return pa.array(list(values))
