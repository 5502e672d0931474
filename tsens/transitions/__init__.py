"""Transitions along one-dimensional curves in input space ([N] §3, App. A.5.2).

[N] measures a network's local complexity by how often its activation pattern changes along a
closed curve through data: ``t = Σ_i ‖c(x_i) − c(x_{i+1})‖₁`` over k equidistant points, c the
vector of piece codes of every hidden unit. Sampling can only undercount; :mod:`.exact` counts
every crossing of every unit in closed form, layer by layer, and is faster than the sampling it
replaces (``bench/bench_transitions.py``).

* :mod:`.trajectories`: the curves (:class:`Trajectories`): ellipses through three data points,
  random ellipses, polygons through an image's horizontal translations, or an ``.npz`` file;
* :mod:`.exact`: exact per-layer counts and the regions along each curve;
* :mod:`.sampled`: [N]'s sampled count, for comparison;
* :mod:`.result`: :func:`count_transitions` (per-curve columns: counts, arc length, ‖J_prob‖ along
  the curve) and :func:`transitions_summary` (one row per checkpoint).
"""

from .exact import ExactCounts, Regions, exact_transitions, piece_tables
from .result import TransitionResult, count_transitions, transitions_summary
from .sampled import check_points, sample_parameters, sampled_transitions
from .trajectories import (
    Trajectories,
    check_count,
    curves_file,
    ellipses_through_data,
    load_trajectories,
    make_trajectories,
    random_ellipses,
    translation_polygons,
)

__all__ = [
    "ExactCounts",
    "Regions",
    "TransitionResult",
    "Trajectories",
    "check_count",
    "check_points",
    "count_transitions",
    "curves_file",
    "ellipses_through_data",
    "exact_transitions",
    "load_trajectories",
    "make_trajectories",
    "piece_tables",
    "random_ellipses",
    "sample_parameters",
    "sampled_transitions",
    "translation_polygons",
    "transitions_summary",
]
