"""``tsens info``: describe checkpoints (architecture, norms, metadata)."""

from __future__ import annotations

from typing import Any

from ..network import weight_norms
from . import inputs, options, render
from .command import command
from .outputs import Tables, checked_targets


@command()
@options.checkpoint_options
@options.output_options
@checked_targets
def info(**params: Any) -> None:
    """Architecture, parameter count, per-layer norms and metadata of each checkpoint.

    One row per Linear layer: shape, bias, BatchNorm, and the Frobenius, spectral and
    max-abs norms of the raw weight matrix.
    """
    tables = Tables("info", params, {})
    for ref, net in inputs.networks(params):
        rows: dict[str, list[Any]] = {
            k: []
            for k in (
                "layer",
                "name",
                "in_features",
                "out_features",
                "bias",
                "batchnorm",
                "parameters",
                "fro",
                "spectral",
                "max_abs",
            )
        }
        for i, layer in enumerate(net.layers, 1):
            norms = weight_norms(layer)
            for key, value in (
                ("layer", i),
                ("name", layer.name),
                ("in_features", layer.in_features),
                ("out_features", layer.out_features),
                ("bias", layer.bias is not None),
                ("batchnorm", layer.norm is not None),
                ("parameters", sum(t.numel() for t in layer.parameters().values())),
                *norms.items(),
            ):
                rows[key].append(value)
        summary = {
            "checkpoint": net.path,
            "architecture": "-".join(str(w) for w in net.widths),
            "activation": net.activation.spec,
            "parameters": net.num_parameters,
            "batchnorm": net.has_batchnorm,
            "bias": net.has_bias,
            "sha256": net.sha256,
        }
        tables.add(ref, net, rows, [summary], lead={"activation": [net.activation.spec] * net.depth})
        if not params["quiet"]:
            render.show_table(
                f"{net.path}: {net.describe()}, {net.num_parameters:,} parameters",
                ["layer", "name", "shape", "bias", "BN", "‖W‖_F", "‖W‖_2", "max|W|"],
                [
                    (i, r, f"{o}×{n}", b, bn, f, s, m)
                    for i, r, n, o, b, bn, f, s, m in zip(
                        rows["layer"],
                        rows["name"],
                        rows["in_features"],
                        rows["out_features"],
                        rows["bias"],
                        rows["batchnorm"],
                        rows["fro"],
                        rows["spectral"],
                        rows["max_abs"],
                        strict=True,
                    )
                ],
                caption=f"sha256 {net.sha256}",
                text_columns=3,
            )
            if net.metadata:
                render.show_mapping("metadata", net.metadata)
    tables.write()
