"""Helpers for command-line tests: run a command, check a one-line user error, read a stream."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.ipc as ipc
from click.testing import CliRunner, Result

from tsens.cli import main


def run(*args, code: int = 0) -> Result:
    """``tsens ARGS...`` under CliRunner, asserting the exit code."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def one_line_error(result: Result, *fragments: str) -> None:
    """A user error: exit 2, exactly one line on stderr, naming every fragment."""
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsens: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def read_stream(result: Result) -> pa.Table:
    """The Arrow IPC stream a command wrote to stdout (``-o -``)."""
    return ipc.open_stream(io.BytesIO(result.stdout_bytes)).read_all()


def assert_same_table(a: pa.Table, b: pa.Table) -> None:
    """Same column names, rows, order and values, bit for bit (NaN equal to NaN)."""
    assert a.schema.names == b.schema.names and a.num_rows == b.num_rows
    for name in a.schema.names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        same = [
            p == q or (isinstance(p, float) and isinstance(q, float) and p != p and q != q)
            for p, q in zip(x, y, strict=True)
        ]
        assert all(same), (name, [(p, q) for p, q, s in zip(x, y, same, strict=True) if not s][:3])
