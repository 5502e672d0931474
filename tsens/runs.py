"""Runs of checkpoints: which training run each checkpoint belongs to, and its place in it.

:func:`plan_runs` reads every checkpoint's metadata once (:func:`tsens.checkpoints.read_metadata`,
never the weights) and returns :class:`CheckpointRef` s in run order; a command that walks many
checkpoints loads each with :meth:`CheckpointRef.load` in turn, so memory holds one network at a
time. The rules:

* **Directories**: a given directory that no format claims (not a Hugging Face or PGDL model
  directory) stands for the checkpoints directly inside it
  (:func:`tsens.checkpoints.checkpoints_in`: claimed files and model subdirectories, hidden
  entries skipped, other files ignored); they are planned as if given one by one, so they
  form one run (the directory) unless metadata or ``run_pattern`` say otherwise. A directory
  holding none is refused.
* **Run**: the metadata entry ``run``; else, with ``run_pattern``, the first group of
  ``re.search(run_pattern, file name)`` (a file the pattern does not match falls through);
  else the parent directory as given (``sample_checkpoints/digits-64-32-10``; ``.`` for a bare
  file name).
* **Step** (the ordering number tables show): the metadata entry ``step``, else ``global_step``,
  else ``epoch``, each only where numeric; else from the file name the number after ``step=``,
  ``step_`` or ``step-``, else after ``epoch=``, ``epoch_`` or ``epoch-``, else the last number
  in the file name's stem; else None.
* **Order**: runs in order of their first checkpoint in ``paths``; within a run by step (None
  after every number), then by the numbers in the file name compared as numbers, so
  ``epoch=2`` comes before ``epoch=10`` whatever order a shell glob gave; ties (such as names
  without numbers) keep the given order. A file given twice (same resolved path) is kept
  once, at its first place.
* **Metadata values** are parsed by :func:`parse_value`: integers and finite decimals become
  numbers, everything else (``true``, ``nan``, ``inf``, JSON) stays the string it was, so sorting
  by a metadata value never meets a NaN.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoints
from .errors import TsensError
from .network import Network

STEP_KEYS = ("step", "global_step", "epoch")
_INT = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME_STEP = (
    re.compile(r"step[=_-](\d+)", re.IGNORECASE),
    re.compile(r"epoch[=_-](\d+)", re.IGNORECASE),
)
_DIGITS = re.compile(r"(\d+)")

Value = int | float | str


def parse_value(text: str) -> Value:
    """A metadata string as a number where it is one: ``"12"`` → 12, ``" 7 "`` → 7,
    ``"0.5"`` → 0.5, ``"1e-3"`` → 0.001. Anything else is returned unchanged, including
    ``"true"``, ``"0x10"``, ``"1_000"`` and the non-finite ``"nan"``/``"inf"`` (kept as strings so
    that ordering by a parsed value never meets a NaN)."""
    stripped = text.strip()
    if _INT.fullmatch(stripped):
        return int(stripped)
    if _DECIMAL.fullmatch(stripped):
        number = float(stripped)
        if math.isfinite(number):  # "1e999" overflows to inf: keep the text
            return number
    return text


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a run, planned without loading its weights.

    ``step`` is the number the run is ordered by and tables show (None when neither metadata
    nor file name gives one); ``metadata`` holds the checkpoint's metadata parsed by
    :func:`parse_value`.
    """

    path: str
    run: str
    step: int | float | None
    metadata: dict[str, Value] = field(default_factory=dict, hash=False)

    def load(self, *, activation: str | None = None, layers: Sequence[str] | None = None) -> Network:
        """The network in this checkpoint (:func:`tsens.checkpoints.load_network`)."""
        return checkpoints.load_network(self.path, activation=activation, layers=layers)


def _compile_run_pattern(run_pattern: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(run_pattern)
    except re.error as e:
        raise TsensError(f"`run_pattern` {run_pattern!r} is not a valid regular expression: {e}") from None
    if pattern.groups < 1:
        raise TsensError(
            f"`run_pattern` {run_pattern!r} has no group; put the part of the file name that names "
            r"the run in parentheses, e.g. '(.+)-epoch=\d+'"
        )
    return pattern


def _run_of(path: Path, metadata: dict[str, str], pattern: re.Pattern[str] | None) -> str:
    run = metadata.get("run", "").strip()
    if run:
        return run
    if pattern is not None:
        found = pattern.search(path.name)
        if found and found.group(1):
            return found.group(1)
    return str(path.parent)


def _step_of(path: Path, metadata: dict[str, Value]) -> int | float | None:
    for key in STEP_KEYS:
        value = metadata.get(key)
        if isinstance(value, int | float):
            return value
    for pattern in _NAME_STEP:
        found = pattern.search(path.name)
        if found:
            return int(found.group(1))
    numbers = _DIGITS.findall(path.stem)
    return int(numbers[-1]) if numbers else None


def name_numbers(name: str) -> tuple[int, ...]:
    """The numbers in a file name, in order, compared as numbers: ``epoch=2`` < ``epoch=10``."""
    return tuple(int(n) for n in _DIGITS.findall(name))


def _expanded(paths: Sequence[str | Path]) -> list[str | Path]:
    """``paths`` with every directory that no format claims replaced by the checkpoints in it."""
    expanded: list[str | Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir() and checkpoints.claiming_format(path) is None:
            expanded.extend(checkpoints.checkpoints_in(path))
        else:
            expanded.append(given)
    return expanded


def plan_runs(paths: Sequence[str | Path], *, run_pattern: str | None = None) -> list[CheckpointRef]:
    """The checkpoints in ``paths`` with their runs and steps, in run order (module docstring).

    Reads each file's metadata once and never its weights; a missing or corrupt file raises
    the :class:`~tsens.errors.TsensError` that loading it would. A plain directory stands for
    the checkpoints in it (module docstring).
    """
    pattern = _compile_run_pattern(run_pattern) if run_pattern is not None else None
    seen: set[Path] = set()
    runs: dict[str, list[tuple[int, CheckpointRef]]] = {}
    for given in _expanded(paths):
        path = Path(given)
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        raw = checkpoints.read_metadata(path)
        metadata = {key: parse_value(text) for key, text in raw.items()}
        ref = CheckpointRef(str(given), _run_of(path, raw, pattern), _step_of(path, metadata), metadata)
        members = runs.setdefault(ref.run, [])
        members.append((len(members), ref))
    ordered: list[CheckpointRef] = []
    for members in runs.values():
        members.sort(
            key=lambda item: (
                item[1].step is None,
                item[1].step if item[1].step is not None else 0,
                name_numbers(Path(item[1].path).name),
                item[0],
            )
        )
        ordered.extend(ref for _, ref in members)
    return ordered


def group_runs(refs: Sequence[CheckpointRef]) -> dict[str, list[CheckpointRef]]:
    """``refs`` by run, runs in order of first appearance, each run's checkpoints in the given order."""
    grouped: dict[str, list[CheckpointRef]] = {}
    for ref in refs:
        grouped.setdefault(ref.run, []).append(ref)
    return grouped


def previous(refs: Sequence[CheckpointRef], ref: CheckpointRef) -> CheckpointRef | None:
    """The checkpoint before ``ref`` in its run (in the order of ``refs``), None for the first.

    Raises ValueError when ``ref`` is not among ``refs``.
    """
    before: CheckpointRef | None = None
    for other in refs:
        if other.run != ref.run:
            continue
        if other == ref:
            return before
        before = other
    raise ValueError(f"{ref.path} is not among the given checkpoints")
