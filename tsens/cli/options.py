"""Every option shared between commands, declared once (sqlite-utils style option stacks).

Nothing here imports torch or scipy: ``tsens --help`` and ``tsens COMMAND --help`` answer at
once; the choices come from :mod:`tsens.choices`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from ..choices import DTYPES, EXECUTORS, MEMBERSHIP_MODES, NORMALIZATIONS, READINGS, TABLE_FORMATS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def stack(*decorators: Decorator) -> Decorator:
    """Apply ``decorators`` in the order written (the first one ends up outermost)."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["tsens.debug"] = True  # meta is shared by the whole context tree


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="Show tracebacks for errors (accepted anywhere on the command line).",
)


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a number or comma-separated numbers") from None


def comma_list(choices: Sequence[str], *, everything: bool = False) -> Callable[..., tuple[str, ...]]:
    """A callback reading a comma-separated subset of ``choices`` (with ``everything``, ``all``
    stands for every choice), in the order given, without repeats."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        chosen = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
        if everything and chosen == ("all",):
            return tuple(choices)
        if not chosen or any(m not in choices for m in chosen):
            expected = ("all or " if everything else "") + "a comma-separated subset of " + ", ".join(choices)
            raise click.BadParameter(f"{value!r}: expected {expected}")
        return chosen

    return parse


checkpoint_options = stack(
    click.argument("checkpoints", nargs=-1, required=True, type=click.Path()),
    click.option(
        "--activation",
        default=None,
        help="relu | leaky_relu[:alpha] | relu6 | hardtanh | hardsigmoid "
        "(default: the checkpoint's record, else relu; a given value wins, with a warning if they differ).",
    ),
    click.option("--layers", default=None, help="Explicit comma-separated order of layer key prefixes."),
    click.option(
        "--run-pattern",
        default=None,
        metavar="REGEX",
        help="Group checkpoints into runs by the first group this matches in the file name "
        "(default: metadata 'run', else the directory).",
    ),
)


def data_option(
    *names: str, required: bool = True, help: str = "Data set: a name (digits, cifar-test, ...) or a file."
) -> Decorator:
    """A data set spec option (``--data`` unless other names are given). A required one has no
    default: click would take an explicit default of None as given."""
    decls = names or ("--data",)
    if required:
        return click.option(*decls, required=True, metavar="SET", help=help)
    return click.option(*decls, default=None, metavar="SET", help=help)


preprocess_options = stack(
    click.option(
        "--data-root", type=click.Path(file_okay=False), default=None, help="Where named data sets live."
    ),
    click.option(
        "--normalize",
        type=click.Choice(NORMALIZATIONS),
        default=None,
        help="Input normalisation (default: the checkpoint's record, else none; a given value wins, "
        "with a warning if they differ).",
    ),
    click.option(
        "--mean", callback=_floats, default=None, help="Explicit mean (one value or one per channel)."
    ),
    click.option(
        "--std", callback=_floats, default=None, help="Explicit std (one value or one per channel)."
    ),
    click.option("--crop", type=int, default=None, help="Centre crop N×N (images).", metavar="N"),
    click.option("--limit", type=int, default=None, metavar="N", help="Use N samples (seeded subsample)."),
)

compute_options = stack(
    click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto."),
    click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True),
    click.option("--batch-size", type=int, default=1024, show_default=True),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed for subsampling and estimates (0 to 2**63-1).",
    ),
)

table_options = stack(
    click.option(
        "--format",
        "fmt",
        type=click.Choice(TABLE_FORMATS),
        default=None,
        help="Table format (overrides the suffix).",
    ),
    click.option("--force", is_flag=True, help="Overwrite existing output files."),
    click.option("-q", "--quiet", is_flag=True, help="No summary or progress on stderr."),
    debug_option,
)

output_options = stack(
    click.option(
        "-o",
        "--output",
        default=None,
        metavar="PATH",
        help="Write the table: .parquet .arrow .feather .csv .json .jsonl; - = stdout.",
    ),
    click.option(
        "--summary",
        "summary_path",
        default=None,
        metavar="PATH",
        help="Write the summary (one row per checkpoint and data set), same formats as -o.",
    ),
    table_options,
)


def tangent_option(help: str) -> Decorator:
    """``--tangent sum|all`` (the library's ``reading``): which tangent sensitivity ([T] Def. 3.1)."""
    return click.option(
        "--tangent", "reading", type=click.Choice(READINGS), default="sum", show_default=True, help=help
    )


membership_options = stack(
    click.option(
        "--membership",
        type=click.Choice(MEMBERSHIP_MODES),
        default="preact",
        show_default=True,
        help="σ of the distance to the nearest breakpoint (preact) or of the 0/1 indicator ([T] eq. 4).",
    ),
    click.option("--temperature", type=float, default=1.0, show_default=True, help="τ in σ(z/τ)."),
)


executor_options = stack(
    click.option(
        "--executor",
        type=click.Choice(EXECUTORS),
        default="local",
        show_default=True,
        help="Run the checkpoints here (local) or as tasks on a Ray cluster (ray; tsens[ray]).",
    ),
    click.option(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="The Ray cluster to use (default: RAY_ADDRESS, else a local one started for this command).",
    ),
)
