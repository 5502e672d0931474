"""The command line as a process: help without torch or scipy, Ctrl-C at any moment is one line
and exit code 130, and a log (stderr not a terminal) gets every path and number on one line
whatever the terminal width."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nets import random_network
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "digits-64-32-10" / "epoch=80.safetensors"


def tsens(*args: object, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


@pytest.mark.parametrize("args", [("--help",), ("jacobian", "--help"), ("estimate-gap", "--help")])
def test_help_imports_neither_torch_nor_scipy(args):
    proc = tsens("-X", "importtime", "-m", "tsens", *args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Usage:" in out
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if "|" in line}
    assert "click" in imported  # the listing is real
    assert not imported & {"torch", "scipy", "tsens.commands", "tsens.stream"}, sorted(imported)


def _handles_sigint(pid: int) -> bool:
    """Whether the process has a handler for SIGINT (Python's own, once the interpreter is up)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the handler")
@pytest.mark.parametrize("after", [0.3, 3.0])
def test_ctrl_c_is_one_line_and_130_while_starting_and_while_working(tmp_path, after):
    """0.3 s after the interpreter is up the command line is still importing; 3 s later it is
    counting (or on a slow machine still importing torch): either way one line and 130."""
    out = tmp_path / "rows.csv"
    proc = tsens(
        "-m", "tsens", "transitions", SAMPLE, "--data", "digits-test", "--method", "sampled",
        "--points", "4000000", "--count", "1000", "-o", out,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _handles_sigint(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.005)
        time.sleep(after)
        assert proc.poll() is None, "the command ended before it was interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "tsens: interrupted", err
    assert not out.exists() and not list(tmp_path.glob(".rows.csv.partial-*"))


def test_a_log_gets_long_paths_and_numbers_whole_in_a_narrow_terminal(tmp_path):
    deep = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 6))
    deep.mkdir(parents=True)
    path = deep / "checkpoint-with-a-long-name-500.safetensors"
    net = random_network((6, 8, 3), seed=0)
    save_file({k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}, str(path))
    proc = tsens("-m", "tsens", "info", path, env={"COLUMNS": "40"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert any(line.startswith(f"{path}: 6-8-3") for line in err.splitlines()), err
    assert max(len(line) for line in err.splitlines()) > 40  # nothing was folded to 40 columns
