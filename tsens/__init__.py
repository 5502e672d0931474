"""tsens: sensitivity and generalization measures for trained piecewise-linear MLPs.

The library does the work; the ``tsens`` command line decodes its options into one library
call and renders what it returns. Every command is one call of :mod:`tsens.commands` that
returns the tables its ``-o`` and ``--summary`` write::

    import tsens
    result = tsens.commands.jacobian("run/*.safetensors", "digits-test")
    result.table.to_pandas(), result.summary.to_pandas()

and the pieces are there to use one at a time::

    net = tsens.load_network("run/epoch=30.safetensors")
    data = tsens.load_dataset("digits-test")
    result = tsens.measure(net, data, ["predictions", "jacobian", "tangent"])
    result.columns["jac_prob_fro"]                  # per-sample NumPy columns
    tsens.jacobian_summary(result)                  # the numbers `tsens jacobian` shows
    trace = tsens.Tracer(net)(x)                    # or one batch, by hand
    tsens.tangent_norms(trace), tsens.jacobian_norms(trace)

This package face only re-exports, and imports each name where it is first used, so that
``import tsens`` (and ``tsens --help``) is immediate and torch loads when the work starts.

Papers: [T] Daróczy, *Tangent Space Sensitivity and Distribution of Linear Regions in ReLU
Networks* (2020); [N] Novak et al., *Sensitivity and Generalization in Neural Networks: an
Empirical Study* (ICLR 2018).
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__ as __version__

_EXPORTS: dict[str, tuple[str, ...]] = {
    "active_units": ("active_counts", "count_statistics", "piece_counts"),
    "bounds": (
        "Bounds",
        "Measured",
        "Report",
        "data_free_bounds",
        "gaussian_bounds",
        "log10_w",
        "report",
        "weight_statistics",
    ),
    "checkpoints": ("load_network", "read_metadata", "read_widths"),
    "commands": ("COMMANDS", "CommandResult", "Progress", "Setup", "estimate_gap"),
    "compute": ("Compute",),
    "datasets": ("Dataset", "Preprocess", "available_datasets", "load_dataset"),
    "errors": ("Note", "OverflowWarning", "ThresholdExceeded", "TsensError"),
    "gap": ("Calibration", "GapResult"),
    "jacobian": ("jacobian_norms",),
    "kummer": ("log_gaussian_abs_moment",),
    "measures": ("MEASURES", "Options"),
    "network": ("BatchNorm", "Layer", "Network"),
    "piecewise": ("Activation", "parse_activation"),
    "regions": (
        "boundary_distance",
        "log_membership",
        "membership_weighted_mean",
        "path_scores",
        "region_ids",
        "region_statistics",
        "shared_region_share",
    ),
    "runs": ("CheckpointRef", "group_runs", "plan_runs", "previous"),
    "stream": ("InputCache", "SetResult", "measure", "measure_sets"),
    "summaries": (
        "activations_summary",
        "describe",
        "jacobian_summary",
        "regions_summary",
        "spearman",
        "unit_frequencies",
    ),
    "tables": ("make_table", "provenance", "table_provenance", "write_table"),
    "tangent": ("tangent_norms",),
    "trace": ("Trace", "Tracer"),
    "transitions": (
        "Trajectories",
        "count_transitions",
        "exact_transitions",
        "load_trajectories",
        "make_trajectories",
        "sampled_transitions",
        "transitions_summary",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_WHERE, "commands", "__version__"])


def __getattr__(name: str) -> Any:
    """A re-exported name (or the ``commands`` package), imported on first use."""
    if name == "commands":
        return importlib.import_module(".commands", __name__)
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tsens' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
