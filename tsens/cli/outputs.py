"""The files a command writes: the ``-o`` and ``--summary`` tables of its result, and extra files
(``--plot``, ``--save-calibration``, ``--save-trajectories``). Every target is checked before
any work (format, existing file, missing directory, binary to a terminal, one path twice) and
written whole or not at all (:func:`tsens.files.atomic_output`)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import TsensError
from . import render

TABLES = (("output", "-o"), ("summary_path", "--summary"))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _check_path(flag: str, path: str, force: bool) -> None:
    target = Path(path)
    if target.is_dir():
        raise TsensError(f"{flag} {path!r} is a directory; expected a file path")
    if target.exists() and not force:
        raise TsensError(f"{flag} {path!r} exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise TsensError(f"{flag} {path!r}: directory {str(target.parent)!r} does not exist")


def check_targets(params: Mapping[str, Any], side: Sequence[tuple[str, str, str]] = ()) -> None:
    """Refuse, before any work, table targets that cannot be written (a directory, an unknown
    format, an existing file without ``--force``, a missing directory, binary output to a
    terminal, both tables to stdout, two outputs to one path) and extra files (``side``:
    ``(flag, parameter, suffix)``, e.g. ``--plot``) likewise; a plot also needs matplotlib."""
    from ..tables import output_format

    given = [(flag, params[key]) for key, flag in TABLES if params.get(key)]
    if sum(1 for _, path in given if path == "-") > 1:
        raise TsensError("-o - and --summary - cannot both write to stdout; send one of them to a file")
    force = bool(params.get("force"))
    for flag, path in given:
        if path == "-":
            fmt = output_format(path, params.get("fmt"))
            if fmt in ("arrow", "parquet") and stdout_is_terminal():
                raise TsensError(
                    f"{flag} - would write binary {fmt} to the terminal; pipe it into a program "
                    "(| python -c ...), give a file, or add --format csv/json/jsonl"
                )
            continue
        if Path(path).is_dir():
            raise TsensError(f"{flag} {path!r} is a directory; expected a file path")
        try:
            output_format(path, params.get("fmt"))
        except TsensError as exc:
            raise TsensError(str(exc).replace("output ", f"{flag} ", 1)) from None
        _check_path(flag, path, force)
    for flag, key, suffix in side:
        path = params.get(key)
        if not path:
            continue
        if Path(path).suffix.lower() != suffix:
            raise TsensError(f"{flag} {path!r}: expected a {suffix} file")
        _check_path(flag, path, force)
        given.append((flag, path))
        if key == "plot":
            from ..plots import require_matplotlib

            require_matplotlib()
    _check_distinct(given)


def _check_distinct(given: Sequence[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for flag, path in given:
        if path == "-":
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise TsensError(f"{seen[key]} and {flag} both name {path!r}; give each output its own file")
        seen[key] = flag


def checked_targets(*side: tuple[str, str, str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: :func:`check_targets` (with the command's extra files ``side``) before the
    command body runs."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **params: Any) -> Any:
            check_targets(params, side)
            return f(*args, **params)

        return wrapper

    return decorate


def write_tables(result: Any, params: Mapping[str, Any]) -> None:
    """Write the result's ``-o`` and ``--summary`` tables where asked, and say so."""
    written = result.write(
        params.get("output"),
        params.get("summary_path"),
        fmt=params.get("fmt"),
        force=bool(params.get("force")),
    )
    for path, rows, what in written:
        if path != "-" and not params.get("quiet"):
            render.note(f"wrote {rows:,} {what} to {path}")


def write_side_file(params: Mapping[str, Any], key: str, write: Callable[[str], Any], what: str = "") -> None:
    """Write the extra output ``params[key]`` (when asked) with ``write(path)``, and say so."""
    path = params.get(key)
    if not path:
        return
    write(path)
    if not params.get("quiet"):
        render.note(f"wrote {what or path}" + (f" to {path}" if what else ""))
