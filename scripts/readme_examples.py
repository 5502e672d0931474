"""Regenerate the example outputs in README.md from what the commands print now.

An *example* is a plain fenced block (a line ```` ``` ```` with no language) whose first line is
``$ tsens ...``; the lines after it, up to the closing fence, are what that command prints: its
stderr (rich tables, notes), then its stdout if any. Each command runs from the project root as
a user would run it off a terminal (stderr not a TTY, so nothing is wrapped whatever
``COLUMNS`` says); glob patterns in it are expanded like a shell with ``LC_ALL=C``: matches in
sorted code-point order, a pattern that matches nothing passed on as it is. A command that
fails (exit code not 0) is an error: its block is left alone.

Elision: a block may hold one *marker* line, a line that starts with ``…`` or ``(…`` and says
in words what it stands for. It keeps its place: the command's output lines from the marker's
position (the same line number within the block's output) are left out up to the *anchor*,
the block's line right after the marker, which must then occur in the output at or after that
position; a marker that ends the block leaves out everything from its position to the end.
The marker line itself is kept as written. For example, a block ending with
``(… then the checkpoint's metadata, a key/value table)`` shows the output up to that point.

Usage (from anywhere; README.md is the one next to this script's folder)::

    python scripts/readme_examples.py            # rewrite README.md's example outputs in place
    python scripts/readme_examples.py --check    # only report differences (exit 1 if any)
    python scripts/readme_examples.py --subprocess --check   # each command in its own process

By default the commands run in this process through click's ``CliRunner`` (one torch import for
all of them; what they print is what a process prints, which ``tests/test_readme.py`` checks
for one example and ``--subprocess`` checks for all).
"""

from __future__ import annotations

import argparse
import difflib
import glob
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROMPT = "$ tsens "
FENCE = "```"
MARKER = re.compile(r"^\(?…")
GLOB_MAGIC = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Example:
    """One example block: ``start`` is the index of its ``$ tsens`` line in the README's lines,
    ``output`` the lines after it up to (not including) the closing fence."""

    start: int
    command: str
    output: list[str]

    @property
    def args(self) -> list[str]:
        """The command's arguments after ``tsens``, globs expanded as a shell with LC_ALL=C would."""
        return expand(shlex.split(self.command)[1:])

    @property
    def name(self) -> str:
        return f"line {self.start + 1}: {self.command}"


@dataclass(frozen=True)
class Printed:
    """What a command printed and how it ended."""

    code: int
    stderr: str
    stdout: str
    failure: str = ""

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in (self.stderr + self.stdout).splitlines()]


def examples(text: str) -> list[Example]:
    """Every example block of a README's text, in order."""
    lines = text.splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == FENCE and i + 1 < len(lines) and lines[i + 1].startswith(PROMPT):
            end = i + 2
            while end < len(lines) and lines[end].strip() != FENCE:
                end += 1
            if end == len(lines):
                raise SystemExit(f"README.md line {i + 1}: the example's fence is never closed")
            found.append(Example(i + 1, lines[i + 1][2:], lines[i + 2 : end]))
            i = end
        i += 1
    return found


def expand(args: list[str]) -> list[str]:
    """Glob patterns expanded from the project root, in sorted code-point order (LC_ALL=C); a
    pattern without a match stays as it is, as in a shell."""
    out = []
    for arg in args:
        matches = sorted(glob.glob(arg, root_dir=ROOT)) if GLOB_MAGIC.search(arg) else []
        out += matches or [arg]
    return out


def elide(shown: list[str], printed: list[str], same: Callable[[str, str], bool] = str.__eq__) -> list[str]:
    """The printed lines as the block shows them: with its marker line (if any) standing for the
    printed lines from the marker's position up to the anchor (the block's next line; matched by
    ``same``) or to the end. Raises ValueError when the anchor is not printed."""
    markers = [i for i, line in enumerate(shown) if MARKER.match(line)]
    if not markers:
        return printed
    if len(markers) > 1:
        raise ValueError(f"one marker line at most, found {len(markers)}")
    i = markers[0]
    if i + 1 == len(shown):
        return [*printed[:i], shown[i]]
    anchor = shown[i + 1]
    for j in range(i, len(printed)):
        if same(anchor, printed[j]):
            return [*printed[:i], shown[i], *printed[j:]]
    raise ValueError(f"the marker's anchor {anchor!r} is not in the output from line {i + 1} on")


@contextmanager
def _in_root() -> Iterator[None]:
    before = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _off_terminal() -> Iterator[None]:
    """The command line's console as a process off a terminal builds it: the module-level
    console was built at import, maybe on a terminal (wrapping at its width, with colours)."""
    from tsens.cli import render

    saved = render.console
    with redirect_stderr(io.StringIO()):  # not a TTY while it is built
        render.console = render._console()
    try:
        yield
    finally:
        render.console = saved


def run_in_process(args: list[str], env: Mapping[str, str] | None = None) -> Printed:
    """``tsens ARGS`` through click's CliRunner, from the project root, off a terminal, with
    ``env`` set in ``os.environ`` meanwhile (also while the console is built)."""
    from click.testing import CliRunner

    from tsens.cli import main

    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1 mixes stderr into stdout otherwise
    except TypeError:  # click >= 8.2: always apart
        runner = CliRunner()
    with _in_root(), _environment(env or {}), _off_terminal():
        result = runner.invoke(main, args)
    failure = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        failure = "".join(traceback.format_exception(*result.exc_info))
    return Printed(result.exit_code, result.stderr, result.stdout, failure)


def run_process(args: list[str], env: Mapping[str, str] | None = None) -> Printed:
    """``tsens ARGS`` in a process of its own (this Python's ``-m tsens``), from the project root,
    stderr and stdout to pipes."""
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "tsens", *args],
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    return Printed(done.returncode, done.stderr, done.stdout)


def regenerate(text: str, run: Callable[[list[str]], Printed]) -> tuple[str, list[str], list[str]]:
    """The README's text with every example's output as printed now, the differences found (one
    unified diff per example), and the errors (a failing command, a missing anchor)."""
    lines = text.splitlines()
    diffs, errors = [], []
    for example in reversed(examples(text)):  # from the end: earlier line numbers stay valid
        printed = run(example.args)
        if printed.code != 0:
            errors.append(f"{example.name}: exit code {printed.code}\n{printed.stderr}{printed.failure}")
            continue
        try:
            expected = elide(example.output, printed.lines)
        except ValueError as exc:
            errors.append(f"{example.name}: {exc}")
            continue
        if expected != example.output:
            diff = difflib.unified_diff(
                example.output, expected, "README.md", "printed now", lineterm="", n=1
            )
            diffs.append(f"{example.name}\n" + "\n".join(diff))
            lines[example.start + 1 : example.start + 1 + len(example.output)] = expected
    return "\n".join(lines) + ("\n" if text.endswith("\n") else ""), diffs[::-1], errors[::-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    parser.add_argument("--subprocess", action="store_true", help="run each command in its own process")
    options = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    run = run_process if options.subprocess else run_in_process
    new, diffs, errors = regenerate(text, run)
    for report in [*diffs, *errors]:
        print(report, end="\n\n")
    if not options.check and new != text:
        README.write_text(new, encoding="utf-8")
        print(f"rewrote {len(diffs)} example(s) in {README.relative_to(ROOT)}")
    elif not diffs and not errors:
        print(f"{len(examples(text))} examples match what their commands print")
    return 1 if errors or (options.check and diffs) else 0


if __name__ == "__main__":
    sys.exit(main())
