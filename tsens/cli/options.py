"""Options and plumbing shared by every command: checkpoints, data, compute, output."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from ..checkpoint import load_network
from ..datasets import Dataset, Preprocess, load_dataset
from ..errors import TsensError
from ..network import Network
from ..sweep import Compute
from ..tables import FORMATS, concat_tables, make_table, output_format, provenance, write_table
from ..tangent import READINGS
from . import render

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _stack(*decorators: Decorator) -> Decorator:
    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a number or comma-separated numbers") from None


checkpoint_options = _stack(
    click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False)),
    click.option(
        "--activation",
        default=None,
        help="relu | leaky_relu[:alpha] | relu6 | hardtanh | hardsigmoid (default: metadata, else relu).",
    ),
    click.option("--layers", default=None, help="Explicit comma-separated order of layer key prefixes."),
)

data_options = _stack(
    click.option(
        "--data-root", type=click.Path(file_okay=False), default=None, help="Where named data sets live."
    ),
    click.option(
        "--normalize",
        type=click.Choice(["none", "standard", "cifar10", "mnist"]),
        default="none",
        show_default=True,
        help="Input normalisation (a checkpoint's tsens.preprocess metadata wins).",
    ),
    click.option(
        "--mean", callback=_floats, default=None, help="Explicit mean (one value or one per channel)."
    ),
    click.option(
        "--std", callback=_floats, default=None, help="Explicit std (one value or one per channel)."
    ),
    click.option("--crop", type=click.IntRange(min=1), default=None, help="Centre crop N×N (images)."),
    click.option(
        "--limit", type=click.IntRange(min=1), default=None, help="Use N samples (seeded subsample)."
    ),
)

compute_options = _stack(
    click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto."),
    click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True),
    click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True),
    click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed for subsampling and estimates."
    ),
)


def _check_output_first(f: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse an existing ``-o`` file before any work is done (not after it)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **params: Any) -> Any:
        out = params.get("output")
        if out and out != "-":
            output_format(out, params.get("fmt"))
            if Path(out).exists() and not params.get("force"):
                raise TsensError(f"output {out!r} exists; pass --force to overwrite it")
        return f(*args, **params)

    return wrapper


output_options = _stack(
    _check_output_first,
    click.option(
        "-o",
        "--output",
        default=None,
        help="Write the table: .parquet .arrow .feather .csv .json .jsonl; - = stdout.",
    ),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="Table format (overrides the suffix).",
    ),
    click.option("--force", is_flag=True, help="Overwrite an existing output file."),
    click.option("-q", "--quiet", is_flag=True, help="No summary or progress on stderr."),
)


def networks(params: dict[str, Any]) -> list[Network]:
    """Load every checkpoint named on the command line (errors name the file)."""
    order = [p.strip() for p in params["layers"].split(",")] if params["layers"] else None
    return [load_network(p, activation=params["activation"], layers=order) for p in params["checkpoints"]]


def tangent_option(help: str) -> Decorator:
    """``--tangent sum|all`` (stored as ``reading``): which tangent sensitivity (SPEC §2.2)."""
    return click.option(
        "--tangent", "reading", type=click.Choice(READINGS), default="sum", show_default=True, help=help
    )


def inputs(data_spec: str, params: dict[str, Any]) -> tuple[list[Network], Dataset, Compute]:
    """The checkpoints, the data set and the compute settings of a per-sample command."""
    return networks(params), dataset(data_spec, params), compute(params)


def compute(params: dict[str, Any]) -> Compute:
    c = Compute(params["device"], params["dtype"], params["batch_size"], params["seed"])
    c.torch_device  # noqa: B018  (validates the device before any work)
    return c


def dataset(spec: str, params: dict[str, Any]) -> Dataset:
    """The raw data set named by ``spec`` with the command line's preprocessing."""
    pre = Preprocess(params["normalize"], params["mean"], params["std"], params["crop"])
    return load_dataset(
        spec, data_root=params["data_root"], preprocess=pre, limit=params["limit"], seed=params["seed"]
    )


def checkpoint_record(network: Network) -> dict[str, str]:
    return {"path": network.path, "sha256": network.sha256}


def emit(
    command: str,
    tables: Sequence[pa.Table],
    nets: Sequence[Network],
    data: dict[str, Any],
    params: dict[str, Any],
) -> pa.Table:
    """Join per-checkpoint tables, attach provenance and write them where ``-o`` says."""
    meta = provenance(command, [checkpoint_record(n) for n in nets], data, params)
    table = concat_tables(tables, meta)
    if params.get("output"):
        write_table(table, params["output"], fmt=params.get("fmt"), force=params.get("force", False))
        if params["output"] != "-" and not params.get("quiet"):
            render.note(f"wrote {table.num_rows:,} rows to {params['output']}")
    return table


def per_checkpoint_table(
    network: Network, columns: dict[str, Any], first: dict[str, Any] | None = None
) -> pa.Table:
    """Columns of one checkpoint with its ``checkpoint`` (path) column in front."""
    n = len(next(iter(columns.values()))) if columns else 0
    lead = {"checkpoint": [network.path] * n, **(first or {})}
    return make_table({**lead, **columns}, {})


def progress_for(params: dict[str, Any], label: str, total: int) -> Any:
    return render.progress_bar(label, total, render.progress_enabled(params.get("quiet", False)))
