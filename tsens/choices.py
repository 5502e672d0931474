"""The names users choose from, in one module that imports nothing heavy.

The command line offers these as choices in its help, which must answer without importing
torch or scipy; the library modules that act on them (:mod:`tsens.tangent`,
:mod:`tsens.regions`, :mod:`tsens.transitions`, :mod:`tsens.tables`, ...) import them from here,
so each list is written once.
"""

from __future__ import annotations

READINGS = ("sum", "all")
"""The tangent sensitivity of the summed logits, or of every logit ([T] Def. 3.1)."""

MEMBERSHIP_MODES = ("preact", "indicator")
"""σ of the distance to the nearest breakpoint, or of the 0/1 indicator ([T] eq. 4)."""

NORMALIZATIONS = ("none", "standard", "cifar10", "mnist")
"""Input normalizations (:class:`tsens.datasets.Preprocess`)."""

DTYPES = ("float32", "float64")
"""Working precisions of a pass."""

EXECUTORS = ("local", "ray")
"""Where per-checkpoint jobs run (:mod:`tsens.executors`)."""

TABLE_FORMATS = ("parquet", "arrow", "csv", "json", "jsonl")
"""Formats of the tables commands write (:mod:`tsens.tables`)."""

TRAJECTORY_KINDS = ("ellipse", "random-ellipse", "translations")
"""The named curve families of ``transitions``; anything else names an ``.npz`` file of curves."""

TRANSITION_METHODS = ("exact", "sampled")
"""Every crossing in closed form, or [N]'s count over equidistant points."""

DEFAULT_POINTS = 1 << 20
"""Points per curve of the sampled count ([N] App. A.5.2 used 2^20)."""

BOUNDS = ("paper", "path", "spectral")
"""The data-free bounds of ``bound``, for both ``||T||_F`` and ``||J_logit||_F`` ([T] Thm 3.1)."""

GAUSS_BOUNDS = ("gauss", "gauss_paper")
"""The bounds that need μ, σ of the active count on data ([T] Thm 3.2)."""

SENSITIVITIES = ("jacobian", "tangent")
"""The per-sample sensitivities ``jacobian`` computes (both by default)."""

ESTIMATORS = (
    "naive",
    "calibrated-train",
    "calibrated",
    "mean-gap",
    "confidence",
    "doc",
    "atc",
    "cot",
    "cott",
    "tic",
    "disagreement",
    "agreement",
    "jacobian",
    "layer-norm",
    "kummer",
    "membership",
)
"""The estimators of ``estimate-gap`` (:data:`tsens.gap.estimators.ESTIMATORS`), in table order."""

FEATURE_SETS = ("train", "shift", "field", "sensitivity", "all")
"""The nested feature sets of the calibrated estimator (:mod:`tsens.gap.calibration`), simplest
first; the richest one considered decides which measures the passes compute."""

DEFAULT_FEATURES = "field"
"""The richest feature set considered by default: the sensitivity features have not shown that
they earn their cost on the development zoo (README)."""

HOLD_OUT = ("run", "siblings")
"""What the calibrated estimators' cross-validation holds out: a run, or a run with its siblings."""
