"""``tsens bound --fail-above/--fail-below``: gates for CI, the command line's own rules.

A threshold names a log10 column of a checkpoint's row (``bound_columns``), with or without its
``log10_`` or ``log10_tangent_`` prefix, ``-`` read as ``_``; a checkpoint crosses it when its
value is strictly above a ``--fail-above`` or strictly below a ``--fail-below`` limit (NaN
crosses nothing), and the command then exits 1 after writing its tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from ..choices import BOUNDS, GAUSS_BOUNDS
from ..errors import TsensError

Threshold = tuple[str, float]


def bound_columns(with_data: bool) -> tuple[str, ...]:
    """The log10 columns of a checkpoint row (what thresholds can name)."""
    names = ["log10_w", *(f"log10_tangent_{k}" for k in BOUNDS), *(f"log10_jacobian_{k}" for k in BOUNDS)]
    if with_data:
        names += [f"log10_tangent_{k}" for k in GAUSS_BOUNDS]
        names += [f"log10_{m}_measured_{s}" for m in ("tangent", "jacobian") for s in ("mean", "max")]
    return tuple(names)


def resolve_bound(name: str, with_data: bool) -> str:
    """The column a threshold names (module docstring): ``path`` → ``log10_tangent_path``,
    ``jacobian-spectral`` → ``log10_jacobian_spectral``, ``gauss-paper``, ``w``."""
    key = name.strip().lower().replace("-", "_")
    for candidate in (key, f"log10_{key}", f"log10_tangent_{key}"):
        if candidate in bound_columns(True):
            if not with_data and candidate not in bound_columns(False):
                raise TsensError(f"bound {name!r} ({candidate}) needs `data`")
            return candidate
    short = [c.removeprefix("log10_") for c in bound_columns(True)]
    short = [c if "measured" in c else c.removeprefix("tangent_") for c in short]
    raise TsensError(f"unknown bound {name!r}; expected one of {', '.join(short)} (or a log10_ column name)")


def crossings(row: Mapping[str, Any], above: Sequence[Threshold], below: Sequence[Threshold]) -> list[str]:
    """Messages for each resolved (column, log10 limit) that ``row`` crosses (module docstring)."""
    out = []
    for column, limit in above:
        if row[column] > limit:
            out.append(f"{row['checkpoint']}: {column} = {row[column]:.4g} > {limit:g}")
    for column, limit in below:
        if row[column] < limit:
            out.append(f"{row['checkpoint']}: {column} = {row[column]:.4g} < {limit:g}")
    return out


def parse(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Threshold]:
    """``BOUND=LOG10`` option values as (name, limit) pairs (resolved later, with the data)."""
    out = []
    for value in values:
        name, sep, number = value.partition("=")
        try:
            limit = float(number)
        except ValueError:
            limit = None
        if not sep or not name.strip() or limit is None:
            raise click.BadParameter(f"{value!r}: expected BOUND=LOG10, e.g. path=12")
        out.append((name.strip(), limit))
    return out


def option(flag: str, side: str, note: str) -> Any:
    """``--fail-above``/``--fail-below``: ``BOUND=LOG10``, repeatable (module docstring)."""
    return click.option(
        flag,
        multiple=True,
        callback=parse,
        metavar="BOUND=LOG10",
        help=f"Exit 1 if a checkpoint's log10 BOUND is {side} LOG10 ({note}).",
    )


def resolve(thresholds: Sequence[Threshold], with_data: bool, option: str) -> list[Threshold]:
    """The thresholds with their columns resolved; a bad name is a usage error of ``option``."""
    try:
        return [(resolve_bound(name, with_data), limit) for name, limit in thresholds]
    except TsensError as exc:
        raise click.BadParameter(str(exc.for_options({"data": "--data"})), param_hint=option) from None
