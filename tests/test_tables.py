"""The one table writer: every format, provenance, stdout, refusal to overwrite."""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import numpy as np
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from tsens import __version__
from tsens.errors import TsensError
from tsens.tables import make_table, output_format, provenance, table_provenance, write_table


@pytest.fixture
def table():
    meta = provenance(
        "demo", [{"path": "a.safetensors", "sha256": "ab" * 32}], {"data": "digits"}, {"seed": 3}
    )
    return make_table(
        {
            "checkpoint": ["a", "a", "a"],
            "value": np.array([1.5, math.inf, -2.0]),
            "region": np.array([1, 2**63 + 5, 7], dtype=np.uint64),
            "flag": np.array([True, False, True]),
        },
        meta,
    )


def test_provenance_is_in_schema(table):
    meta = table_provenance(table)
    assert meta["version"] == __version__
    assert meta["checkpoints"][0]["sha256"] == "ab" * 32
    assert meta["data"] == {"data": "digits"} and meta["options"] == {"seed": 3}


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".feather"])
def test_arrow_formats_round_trip_with_metadata(table, tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    write_table(table, str(path))
    back = pq.read_table(path) if suffix == ".parquet" else feather.read_table(path)
    assert back.column_names == table.column_names
    assert back.column("region").to_pylist() == [1, 2**63 + 5, 7]
    assert table_provenance(back)["command"] == "demo"


def test_csv_and_jsonl_rows(table, tmp_path):
    write_table(table, str(tmp_path / "t.csv"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert [r["checkpoint"] for r in rows] == ["a", "a", "a"] and float(rows[0]["value"]) == 1.5
    write_table(table, str(tmp_path / "t.jsonl"))
    lines = [json.loads(s) for s in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines[1]["value"] is None  # inf is not JSON: null
    assert lines[1]["region"] == 2**63 + 5


def test_json_document_carries_provenance(table, tmp_path):
    write_table(table, str(tmp_path / "t.json"))
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["tsens"]["command"] == "demo" and len(doc["rows"]) == 3


def test_stdout_is_an_arrow_stream(table, monkeypatch):
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer))
    write_table(table, "-")
    back = ipc.open_stream(buffer.getvalue()).read_all()
    assert back.num_rows == 3 and table_provenance(back)["command"] == "demo"


def test_refuses_to_overwrite_unless_forced(table, tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("precious")
    with pytest.raises(TsensError, match="exists; pass `force`"):
        write_table(table, str(path))
    assert path.read_text() == "precious"
    write_table(table, str(path), force=True)
    assert pq.read_table(path).num_rows == 3


def test_unknown_suffix_and_format(tmp_path):
    with pytest.raises(TsensError, match="unknown suffix '.xlsx'"):
        output_format(str(tmp_path / "t.xlsx"))
    with pytest.raises(TsensError, match="`fmt`"):
        output_format("t.csv", "xml")
    assert output_format("-") == "arrow" and output_format("t.csv", "json") == "json"


def test_an_interrupted_write_leaves_no_partial_file(table, tmp_path, monkeypatch):
    import tsens.tables as tables_module

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tables_module, "_write", explode)
    target = tmp_path / "t.parquet"
    with pytest.raises(KeyboardInterrupt):
        write_table(table, str(target))
    assert list(tmp_path.iterdir()) == []


_SLOW_WRITER = """
import sys, time
import pyarrow as pa
import tsens.tables as tables

def slow(table, stream, fmt, *, stream_arrow):
    stream.write(b"PAR1" + bytes(4096))  # the start of a file, then stall mid-write
    stream.flush()
    print("writing", flush=True)
    time.sleep(60)

tables._write = slow
tables.write_table(pa.table({"x": [1, 2, 3]}), sys.argv[1])
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_a_killed_or_interrupted_process_leaves_no_file_at_the_target(tmp_path, signal_name):
    """A real process stopped in the middle of writing its table (Ctrl-C, or killed): the target
    path never holds a truncated file; Ctrl-C also removes the temporary file."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "out.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"writing"
        partials = [p for p in tmp_path.iterdir() if p.name.startswith(".out.parquet.partial-")]
        assert len(partials) == 1 and partials[0].stat().st_size > 0  # the bytes went somewhere
        proc.send_signal(getattr(signal, signal_name))
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert not target.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ([] if signal_name == "SIGINT" else [partials[0].name])
