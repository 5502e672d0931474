"""``tsens datasets``: which named data sets are available locally, as a table."""

from __future__ import annotations

from typing import Any

import click

from . import options, render
from .command import command
from .outputs import checked_targets


@command()
@click.option(
    "--data-root", type=click.Path(file_okay=False), default=None, help="Where named data sets live."
)
@click.option(
    "-o", "--output", default=None, metavar="PATH", help="Write the listing as a table (- = stdout)."
)
@options.table_options
@checked_targets()
def datasets(**params: Any) -> None:
    """List the named data sets and where each was found (nothing is ever downloaded)."""
    from ..datasets.named import available_datasets
    from ..tables import make_table, provenance, write_table

    rows = available_datasets(params["data_root"])
    table = make_table(
        {
            "name": [n for n, _ in rows],
            "found_at": [w for _, w in rows],
            "available": [w != "not found" for _, w in rows],
        },
        provenance("datasets", options={"data_root": params["data_root"]}),
    )
    if not params["quiet"]:
        render.show_table("named data sets", ["name", "found at"], rows)
    if params["output"]:
        write_table(table, params["output"], fmt=params["fmt"], force=params["force"])
