"""``tsens info``: describe checkpoints (architecture, norms, metadata)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import decode, options, render
from .command import command
from .outputs import checked_targets, write_tables


@command()
@options.checkpoint_options
@options.output_options
@checked_targets()
def info(**params: Any) -> None:
    """Architecture, parameter count, per-layer norms and metadata of each checkpoint.

    One row per Linear layer: shape, bias, BatchNorm, and the Frobenius, spectral and
    max-abs norms of the raw weight matrix; both tables carry the checkpoint's metadata as
    meta.<key> columns.
    """
    from ..commands import info as run

    result = decode.call(run, params, ("checkpoints",), show=_render)
    write_tables(result, params)


def _render(net: Any, summary: Sequence[dict[str, Any]], rows: Mapping[str, Any]) -> None:
    keys = ("layer", "name", "out_features", "in_features", "bias", "batchnorm", "fro", "spectral", "max_abs")
    layers = [
        (i, name, f"{o}×{n}", b, bn, f, s, m)
        for i, name, o, n, b, bn, f, s, m in zip(*(rows[k] for k in keys), strict=True)
    ]
    render.show_table(
        f"{net.path}: {net.describe()}, {net.num_parameters:,} parameters",
        ["layer", "name", "shape", "bias", "BN", "‖W‖_F", "‖W‖_2", "max|W|"],
        layers,
        caption=f"sha256 {net.sha256}",
        text_columns=3,
    )
    if net.metadata:
        render.show_mapping("metadata", net.metadata)
