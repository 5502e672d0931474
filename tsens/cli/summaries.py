"""Summary statistics shown on stderr (the tables hold the per-sample values)."""

from __future__ import annotations

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def describe(values: np.ndarray) -> list[float]:
    """mean, then the QUANTILES (5 %, 25 %, median, 75 %, 95 %), ignoring non-finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return [float("nan")] * (1 + len(QUANTILES))
    return [float(v.mean()), *(float(q) for q in np.quantile(v, QUANTILES))]


DESCRIBE_HEADER = ["mean", "q05", "q25", "median", "q75", "q95"]
