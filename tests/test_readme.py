"""README.md stays true: every example block (``$ tsens ...`` and its output) is what the command
prints now, and every ```` ```python ```` block runs as it is from the project root and leaves no
file behind. ``python scripts/readme_examples.py`` rewrites the examples when they drift.

Across machines float32 results may differ in their last bits, so an example matches when the
text without its numbers is the same, token for token (split on whitespace and box-drawing
characters, so column padding may change), and every number agrees within one unit of the last
digit printed (``0.7162`` and ``0.7163`` do; ``0.716`` and ``0.726`` do not). ``COLUMNS`` is
narrow throughout: output off a terminal is never wrapped, whatever it says.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NARROW = {"COLUMNS": "40"}


def _load_script():
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "scripts" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


readme_examples = _load_script()
TEXT = README.read_text(encoding="utf-8")
EXAMPLES = readme_examples.examples(TEXT)
PYTHON_BLOCKS = [
    (TEXT.count("\n", 0, m.start()) + 1, m.group(1))
    for m in re.finditer(r"^```python\n(.*?)^```[ \t]*$", TEXT, re.S | re.M)
]

SEPARATORS = re.compile(r"[\s\u2500-\u257f]+")  # whitespace and box drawing (rich's table borders)
NUMBER = re.compile(
    r"^(?P<before>[(\[]*)"
    r"(?P<number>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<decimals>\d+))?(?:[eE](?P<exponent>[-+]?\d+))?)"
    r"(?P<after>[%;:,)\]]*)$"
)


def tokens(line: str) -> list[str]:
    return [t for t in SEPARATORS.split(line) if t]


def _number(token: str) -> tuple[str, float, float] | None:
    """A numeric token as (the token with its number taken out, value, one unit of its last digit)."""
    m = NUMBER.match(token)
    if m is None:
        return None
    unit = 10.0 ** (int(m["exponent"] or 0) - len(m["decimals"] or ""))
    return m["before"] + "#" + m["after"], float(m["number"].replace(",", "")), unit


def same_token(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = _number(a), _number(b)
    if x is None or y is None or x[0] != y[0]:
        return False
    return abs(x[1] - y[1]) <= max(x[2], y[2]) * (1 + 1e-9)


def same_line(a: str, b: str) -> bool:
    ta, tb = tokens(a), tokens(b)
    return len(ta) == len(tb) and all(same_token(x, y) for x, y in zip(ta, tb, strict=True))


def assert_same_lines(shown: list[str], printed: list[str], what: str) -> None:
    if len(shown) == len(printed) and all(same_line(a, b) for a, b in zip(shown, printed, strict=True)):
        return
    diff = "\n".join(difflib.unified_diff(shown, printed, "README.md", "printed now", lineterm=""))
    pytest.fail(f"{what} differs (python scripts/readme_examples.py rewrites it):\n{diff}")


def test_the_comparison_tolerates_the_last_digit_only():
    assert same_line("│ jac_prob_fro  │ 0.7162 │", "│ jac_prob_fro │ 0.7163 │")
    assert not same_line("0.716", "0.726")
    assert same_line("2.978e-07 1,297 95.20%;", "2.979e-07 1,298 95.21%;")
    assert not same_line("2.978e-07", "2.978e-06")
    assert same_line("q75 0.0224", "q75 0.02239")  # %g drops a trailing zero
    assert not same_line("loss 0.1798 nats", "loss 0.1798 bits")
    assert not same_line("64-32-10 (relu)", "64-32-11 (relu)")  # not a number: exact
    assert not same_line("a 1 2", "a 1 2 3")
    assert readme_examples.elide(["x", "(… rest)"], ["x", "y", "z"]) == ["x", "(… rest)"]
    assert readme_examples.elide(["x", "… ", "end"], ["x", "y", "z", "end"]) == ["x", "… ", "end"]


def test_the_readme_has_examples_and_python_blocks():
    commands = {e.command.split()[1] for e in EXAMPLES}
    assert {"info", "bound", "jacobian", "activations", "regions", "transitions"} <= commands
    assert PYTHON_BLOCKS


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[f"line{e.start + 1}-{e.command.split()[1]}" for e in EXAMPLES]
)
def test_example_is_what_the_command_prints(example):
    printed = readme_examples.run_in_process(example.args, env=NARROW)
    assert printed.code == 0, printed.stderr + printed.failure
    try:
        expected = readme_examples.elide(example.output, printed.lines, same=same_line)
    except ValueError as exc:
        pytest.fail(f"{example.name}: {exc}")
    assert_same_lines(example.output, expected, example.name)


def test_in_process_output_is_what_a_process_prints():
    """The examples run in this process (CliRunner); a process of its own, with stderr to a pipe
    and a narrow COLUMNS, prints the same."""
    example = EXAMPLES[0]
    alone = readme_examples.run_process(example.args, env=NARROW)
    here = readme_examples.run_in_process(example.args, env=NARROW)
    assert alone.code == here.code == 0, alone.stderr
    assert_same_lines(alone.lines, here.lines, f"{example.name} in process vs in a process")
    assert max(len(line) for line in alone.lines) > 40  # wider than COLUMNS, and not wrapped


SKIPPED = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", ".mypy_cache"}


def _tree() -> set[str]:
    """Every file and folder of the project (no caches, no virtual environment)."""
    found = set()
    for folder, folders, files in os.walk(ROOT):
        folders[:] = [d for d in folders if d not in SKIPPED and not (Path(folder, d, "pyvenv.cfg")).exists()]
        found.update(os.path.relpath(os.path.join(folder, name), ROOT) for name in [*folders, *files])
    return found


@pytest.mark.parametrize("line, code", PYTHON_BLOCKS, ids=[f"line{n}" for n, _ in PYTHON_BLOCKS])
def test_python_block_runs_as_is(line, code, tmp_path):
    before = _tree()
    env = {
        **os.environ,
        **NARROW,
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": str(tmp_path),
        "MPLBACKEND": "Agg",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"README.md line {line}: the python block fails\n{done.stderr[-3000:]}"
    left = sorted(_tree() - before)
    assert not left, f"README.md line {line}: the python block leaves files in the project: {left}"
