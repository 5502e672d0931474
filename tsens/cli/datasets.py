"""``tsens datasets``: which named data sets are available locally."""

from __future__ import annotations

import click

from ..datasets import available_datasets
from . import render


@click.command()
@click.option(
    "--data-root", type=click.Path(file_okay=False), default=None, help="Where named data sets live."
)
def datasets(data_root: str | None) -> None:
    """List the named data sets and where each was found (nothing is ever downloaded)."""
    render.show_table("named data sets", ["name", "found at"], available_datasets(data_root))
