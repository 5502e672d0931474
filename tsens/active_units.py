"""Active-unit counts per sample and their statistics ([T] Thm 3.2).

A unit is active when it sits on its activation's piece of largest slope
(:attr:`tsens.piecewise.Activation.active_code`). ``N_l(x)`` counts the active units of hidden
layer l and ``N(x) = Σ_l N_l(x)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .trace import Trace


def piece_counts(trace: Trace) -> list[torch.Tensor]:
    """Per hidden layer, the number of units on each piece: B × num_pieces (int64)."""
    pieces = trace.tracer.activation.num_pieces
    return [torch.nn.functional.one_hot(code.long(), pieces).sum(1) for code in trace.codes]


def active_counts(trace: Trace) -> torch.Tensor:
    """``N_l(x)`` for every hidden layer: B × (L−1) (int64)."""
    active = trace.tracer.activation.active_code
    if not trace.codes:
        return torch.zeros(trace.batch_size, 0, dtype=torch.int64, device=trace.x.device)
    return torch.stack([(code == active).sum(1) for code in trace.codes], 1)


def unit_piece_totals(trace: Trace) -> list[torch.Tensor]:
    """Per hidden layer, how many samples of the batch put each unit on each piece: h_l × pieces."""
    pieces = trace.tracer.activation.num_pieces
    return [torch.stack([(code == k).sum(0) for k in range(pieces)], 1) for code in trace.codes]


def count_statistics(counts: np.ndarray) -> dict[str, float]:
    """Mean, variance, skewness, excess kurtosis and a normality-test p-value of counts.

    The p-value is D'Agostino–Pearson's (``scipy.stats.normaltest``), NaN below 20 samples or
    when the counts are constant.
    """
    from scipy import stats  # deferred: importing scipy.stats costs ~1 s of every CLI start

    x = np.asarray(counts, dtype=np.float64)
    out = {"mean": float(x.mean()), "variance": float(x.var(ddof=1)) if len(x) > 1 else 0.0}
    constant = len(x) < 2 or np.all(x == x[0])
    out["skewness"] = math.nan if constant else float(stats.skew(x))
    out["excess_kurtosis"] = math.nan if constant else float(stats.kurtosis(x))
    out["normality_p"] = math.nan if constant or len(x) < 20 else float(stats.normaltest(x).pvalue)
    return out
