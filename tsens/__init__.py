"""tsens: sensitivity and generalization measures for trained piecewise-linear MLPs.

The library does the work; the ``tsens`` command line only parses and renders. A notebook
session looks like::

    import tsens
    net = tsens.load_network("run/epoch=30.safetensors")
    data = tsens.load_dataset("digits-test")
    cols = tsens.sensitivity_per_sample(net, data)          # NumPy columns per sample
    trace = tsens.Tracer(net)(x)                            # or one batch, by hand
    tsens.tangent_norms(trace), tsens.jacobian_norms(trace)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .piecewise import Activation, parse_activation  # noqa: E402
from .checkpoint import load_network  # noqa: E402
from .datasets import Dataset, Preprocess, load_dataset  # noqa: E402
from .errors import ThresholdExceeded, TsensError  # noqa: E402
from .jacobian import jacobian_norms  # noqa: E402
from .network import BatchNorm, Layer, Network  # noqa: E402
from .sweep import (  # noqa: E402
    Compute,
    activations_per_sample,
    regions_per_sample,
    sensitivity_per_sample,
    traced_batches,
)
from .tangent import tangent_norms  # noqa: E402
from .trace import Trace, Tracer  # noqa: E402

__all__ = [
    "Activation",
    "BatchNorm",
    "Compute",
    "Dataset",
    "Layer",
    "Network",
    "Preprocess",
    "ThresholdExceeded",
    "Trace",
    "Tracer",
    "TsensError",
    "activations_per_sample",
    "jacobian_norms",
    "load_dataset",
    "load_network",
    "parse_activation",
    "regions_per_sample",
    "sensitivity_per_sample",
    "tangent_norms",
    "traced_batches",
]
