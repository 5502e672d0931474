"""Per-sample measures by name: what each one computes from one :class:`~tsens.trace.Trace`.

A pass (:func:`tsens.stream.measure`) traces each batch once and asks this registry for the
measures requested, and nothing else. Measures that need another one (``path_score`` needs
the membership) get it through :meth:`Batch.get`, which computes each measure at most once
per batch; the derivative recursions they share live on the trace itself.

=============== ===================================================================== ==========
name            per-sample columns                                                    source
=============== ===================================================================== ==========
``predictions`` ``predicted``, ``confidence`` (max softmax), ``entropy`` (nats); with    logits
                labels ``label``, ``loss`` (cross-entropy, nats), ``correct``
``log_probs``   ``log_probs``: the whole log-softmax row (B × n; for comparing models)     logits
``jacobian``    ``jac_prob_fro``, ``jac_logit_fro``; with labels ``jac_true_class``      [N] §3
                and, after the pass, [N] App. A.3's ``jac_true_lower``,
                ``jac_true_upper``, ``jac_prob_eq7``
``tangent``     ``tangent_fro`` (``tangent_fro_estimate`` with ``probes``)              [T] Def. 3.1
``active``      ``active_l{l}``, ``active_total`` (and ``piece{k}_l{l}`` for three-piece [T] Thm 3.2
                activations); the per-unit piece totals are accumulated
``region``      ``region`` (64-bit hash of the activation pattern)                      [T] §3.1
``membership``  ``log_membership``                                                      [T] eq. 4
``boundary``    ``boundary_distance``, ``boundary_layer``                               [T] §3.1
``path_score``  ``path_score``                                                          [T] eq. 3, 7
``logits``      ``logits``: the raw logits f(x) (B × n)                                  logits
``penultimate`` ``penultimate``: the input of the last Linear layer, φ(z_{L-1}) (B ×     trace
                h_{L-1}; the input x itself without hidden layer), so that
                ``penultimate @ W̃_Lᵀ + b̃_L = logits`` with the folded W̃_L, b̃_L
``margin``      ``margin_pred`` = f_c − max_{j≠c} f_j for the predicted class c and     [J]
                ``boundary_pred`` = min_{j≠c} (f_c − f_j) / ‖∇_x f_c − ∇_x f_j‖, the
                exact input-space distance to the c-vs-j decision boundary of the
                sample's affine piece; with labels ``margin_true`` and
                ``boundary_true``, the same for the true class y (negative when
                misclassified)
=============== ===================================================================== ==========

[J] Jiang, Krishnan, Mobahi, Bengio, *Predicting the generalization gap in deep networks with
margin distributions*, ICLR 2019: their first-order distance (f_i − f_j)/‖∇f_i − ∇f_j‖ is exact
for a piecewise-linear network inside the sample's linear region. The gradients come from the
trace's shared recursion in reduced form (:func:`tsens.jacobian.reduced_jacobian`: rows
J̃ with ‖J̃_a − J̃_b‖ = ‖∇_x f_a − ∇_x f_b‖, r-sized, not d-sized). A distance is 0 on the
boundary (f_c = f_j), ±inf when the two gradients coincide (the affine piece never crosses the
boundary), and both columns are +inf for a single-output network (no other class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .active_units import active_counts, piece_counts
from .choices import MEMBERSHIP_MODES, READINGS
from .errors import TsensError
from .jacobian import jacobian_norms, reduced_jacobian
from .regions import boundary_distance, log_membership, path_scores, region_ids
from .tangent import tangent_norms
from .trace import Trace

Columns = dict[str, "torch.Tensor | np.ndarray"]


@dataclass(frozen=True)
class Options:
    """Settings of the measures that have any: the tangent ``reading`` (``sum`` or ``all``) and
    Hutchinson ``probes`` (None = exact), the membership ``membership`` mode (``preact`` or
    ``indicator``) and its ``temperature``."""

    reading: str = "sum"
    probes: int | None = None
    membership: str = "preact"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.reading not in READINGS:
            raise TsensError(f"`reading` {self.reading!r}: expected one of {', '.join(READINGS)}")
        if self.membership not in MEMBERSHIP_MODES:
            raise TsensError(
                f"`membership` {self.membership!r}: expected one of {', '.join(MEMBERSHIP_MODES)}"
            )
        if self.probes is not None and (isinstance(self.probes, bool) or self.probes < 1):
            raise TsensError(f"`probes` must be a positive integer, got {self.probes!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not (np.isfinite(t) and t > 0):
            raise TsensError(f"`temperature` must be a positive finite number, got {t!r}")


class Batch:
    """One traced batch, its labels (or None) and the options; computes each measure once."""

    def __init__(
        self,
        trace: Trace,
        labels: torch.Tensor | None,
        options: Options,
        generator: torch.Generator | None = None,
    ) -> None:
        self.trace = trace
        self.labels = labels
        self.options = options
        self.generator = generator
        self._done: dict[str, Columns] = {}

    @cached_property
    def log_probs(self) -> torch.Tensor:
        """log softmax of the logits (B × n), shared by the measures that read it."""
        return torch.log_softmax(self.trace.logits, 1)

    def get(self, name: str) -> Columns:
        """The columns of measure ``name`` for this batch (computed on first request)."""
        if name not in self._done:
            self._done[name] = MEASURES[name](self)
        return self._done[name]


def _predictions(b: Batch) -> Columns:
    log_probs = b.log_probs
    top, cls = log_probs.max(1)
    entropy = -(log_probs.exp() * log_probs).sum(1)
    out: Columns = {"predicted": cls, "confidence": top.exp(), "entropy": entropy}
    if b.labels is not None:
        out["label"] = b.labels
        out["loss"] = -log_probs.gather(1, b.labels[:, None])[:, 0]
        out["correct"] = cls == b.labels
    return out


def _log_probs(b: Batch) -> Columns:
    return {"log_probs": b.log_probs}


def _jacobian(b: Batch) -> Columns:
    return dict(jacobian_norms(b.trace, b.labels))


def _tangent(b: Batch) -> Columns:
    o = b.options
    name = "tangent_fro" if o.probes is None else "tangent_fro_estimate"
    return {name: tangent_norms(b.trace, o.reading, o.probes, b.generator)}


def _active(b: Batch) -> Columns:
    counts = active_counts(b.trace)
    out: Columns = {f"active_l{l}": counts[:, l - 1] for l in range(1, counts.shape[1] + 1)}
    out["active_total"] = counts.sum(1)
    if b.trace.tracer.activation.num_pieces > 2:
        for l, pc in enumerate(piece_counts(b.trace), 1):
            out.update({f"piece{k}_l{l}": pc[:, k] for k in range(pc.shape[1])})
    return out


def _region(b: Batch) -> Columns:
    return {"region": region_ids(b.trace)}


def _membership(b: Batch) -> Columns:
    return {"log_membership": log_membership(b.trace, b.options.membership, b.options.temperature)}


def _boundary(b: Batch) -> Columns:
    dist, layer = boundary_distance(b.trace)
    return {"boundary_distance": dist, "boundary_layer": layer}


def _path_score(b: Batch) -> Columns:
    return {"path_score": path_scores(b.trace, b.get("membership")["log_membership"])}


def _logits(b: Batch) -> Columns:
    return {"logits": b.trace.logits}


def _penultimate(b: Batch) -> Columns:
    t = b.trace
    features = t.x if not t.preacts else t.tracer.activation(t.preacts[-1])
    return {"penultimate": features}


def class_margins(
    logits: torch.Tensor, reduced: torch.Tensor, cls: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample and its reference class c = ``cls``: the logit margin
    f_c − max_{j≠c} f_j and the distance min_{j≠c} (f_c − f_j)/‖J̃_c − J̃_j‖ ([J]), with
    ``reduced`` the per-sample reduced Jacobian J̃ (B × n × r). 0/0 (a tie with equal
    gradients) is 0; no other class gives +inf."""
    rows = torch.arange(len(cls), device=cls.device)
    gap = logits[rows, cls][:, None] - logits  # f_c − f_j, B × n
    own = torch.zeros_like(gap, dtype=torch.bool)
    own[rows, cls] = True
    margin = gap.masked_fill(own, torch.inf).amin(1)
    norms = torch.linalg.vector_norm(reduced[rows, cls][:, None, :] - reduced, dim=2)
    distance = (gap / norms).masked_fill(gap == 0, 0.0).masked_fill(own, torch.inf).amin(1)
    return margin, distance


def _margin(b: Batch) -> Columns:
    logits = b.trace.logits
    reduced = reduced_jacobian(b.trace)
    out: Columns = {}
    out["margin_pred"], out["boundary_pred"] = class_margins(logits, reduced, b.log_probs.max(1).indices)
    if b.labels is not None:
        out["margin_true"], out["boundary_true"] = class_margins(logits, reduced, b.labels)
    return out


MEASURES: Mapping[str, Callable[[Batch], Columns]] = {
    "predictions": _predictions,
    "log_probs": _log_probs,
    "jacobian": _jacobian,
    "tangent": _tangent,
    "active": _active,
    "region": _region,
    "membership": _membership,
    "boundary": _boundary,
    "path_score": _path_score,
    "logits": _logits,
    "penultimate": _penultimate,
    "margin": _margin,
}
"""Every measure by name (module docstring)."""

HIDDEN_LAYER_MEASURES = frozenset({"active", "region", "membership", "boundary", "path_score"})
"""Measures of hidden units: they do not apply to a network without hidden layers."""


def check_measures(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``names`` without duplicates, in registry order; unknown names are refused."""
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise TsensError(f"`measures`: unknown {unknown}; expected some of {', '.join(MEASURES)}")
    return tuple(n for n in MEASURES if n in names)
