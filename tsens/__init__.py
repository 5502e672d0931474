"""tsens: sensitivity and generalization measures for trained piecewise-linear MLPs.

The library does the work; the ``tsens`` command line only parses and renders. A notebook
session looks like::

    import tsens
    net = tsens.load_network("run/epoch=30.safetensors")
    data = tsens.load_dataset("digits-test")
    result = tsens.measure(net, data, ["predictions", "jacobian", "tangent"])
    result.columns["jac_prob_fro"]                  # per-sample NumPy columns
    tsens.jacobian_summary(result)                  # the numbers `tsens jacobian` shows
    gap = tsens.estimate_gap(tsens.plan_runs(paths), train, test)   # `tsens estimate-gap`
    trace = tsens.Tracer(net)(x)                    # or one batch, by hand
    tsens.tangent_norms(trace), tsens.jacobian_norms(trace)

Papers: [T] Daróczy, *Tangent Space Sensitivity and Distribution of Linear Regions in ReLU
Networks* (2020); [N] Novak et al., *Sensitivity and Generalization in Neural Networks: an
Empirical Study* (ICLR 2018).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .active_units import active_counts, count_statistics, piece_counts  # noqa: E402
from .bounds import (  # noqa: E402
    Bounds,
    Measured,
    Report,
    data_free_bounds,
    gaussian_bounds,
    log10_w,
    report,
    weight_statistics,
)
from .checkpoints import load_network, read_metadata  # noqa: E402
from .compute import Compute  # noqa: E402
from .datasets import Dataset, Preprocess, available_datasets, load_dataset  # noqa: E402
from .errors import Note, OverflowWarning, ThresholdExceeded, TsensError  # noqa: E402
from .gap import Calibration, GapResult, estimate_gap  # noqa: E402
from .jacobian import jacobian_norms  # noqa: E402
from .kummer import log_gaussian_abs_moment  # noqa: E402
from .measures import MEASURES, Options  # noqa: E402
from .network import BatchNorm, Layer, Network  # noqa: E402
from .piecewise import Activation, parse_activation  # noqa: E402
from .regions import (  # noqa: E402
    boundary_distance,
    log_membership,
    membership_weighted_mean,
    path_scores,
    region_ids,
    region_statistics,
    shared_region_share,
)
from .runs import CheckpointRef, group_runs, plan_runs, previous  # noqa: E402
from .stream import InputCache, SetResult, measure, measure_sets  # noqa: E402
from .summaries import (  # noqa: E402
    activations_summary,
    describe,
    jacobian_summary,
    regions_summary,
    spearman,
    unit_frequencies,
)
from .tables import make_table, provenance, table_provenance, write_table  # noqa: E402
from .tangent import tangent_norms  # noqa: E402
from .trace import Trace, Tracer  # noqa: E402
from .transitions import (  # noqa: E402
    Trajectories,
    count_transitions,
    exact_transitions,
    load_trajectories,
    make_trajectories,
    sampled_transitions,
    transitions_summary,
)

__all__ = [
    "MEASURES",
    "Activation",
    "BatchNorm",
    "Bounds",
    "Calibration",
    "CheckpointRef",
    "Compute",
    "Dataset",
    "GapResult",
    "InputCache",
    "Layer",
    "Measured",
    "Network",
    "Note",
    "Options",
    "OverflowWarning",
    "Preprocess",
    "Report",
    "SetResult",
    "ThresholdExceeded",
    "Trace",
    "Tracer",
    "Trajectories",
    "TsensError",
    "active_counts",
    "activations_summary",
    "available_datasets",
    "boundary_distance",
    "count_statistics",
    "count_transitions",
    "data_free_bounds",
    "describe",
    "estimate_gap",
    "exact_transitions",
    "gaussian_bounds",
    "group_runs",
    "jacobian_norms",
    "jacobian_summary",
    "load_dataset",
    "load_network",
    "load_trajectories",
    "log10_w",
    "log_gaussian_abs_moment",
    "log_membership",
    "make_table",
    "make_trajectories",
    "measure",
    "measure_sets",
    "membership_weighted_mean",
    "parse_activation",
    "path_scores",
    "piece_counts",
    "plan_runs",
    "previous",
    "provenance",
    "read_metadata",
    "region_ids",
    "region_statistics",
    "regions_summary",
    "report",
    "sampled_transitions",
    "shared_region_share",
    "spearman",
    "table_provenance",
    "tangent_norms",
    "transitions_summary",
    "unit_frequencies",
    "weight_statistics",
    "write_table",
]
