"""One forward trace of a network over a batch, and the derivative recursions built on it.

Every measure reads a :class:`Trace`: the pre-activations, piece codes and slopes of each
hidden layer, the logits, and — computed lazily, once, and shared between measures —

* the output gradients ``G_l = ∂f/∂z_l`` (n × h_l per sample; ``G_l = G_{l+1} W_{l+1} D_l``),
* the squared input-gradient row norms ``r_l[j] = ||∂u_{l,j}/∂x||²`` of the *raw* Linear
  outputs ``u_l = W_l a_{l-1}`` (before any BatchNorm scale), from the recursion of
  in factored form: with the thin SVD ``W_1 = U S Vᵀ`` (rank r <= min(h_1, d)),
  ``∂u_l/∂x = E_l Vᵀ`` where ``E_1 = U S`` and ``E_l = W_l D_{l-1} s_{l-1} E_{l-1}``; V has
  orthonormal columns, so row norms of E_l are those of ∂u_l/∂x and no d-sized work is done
  per sample. ``||A_l||_F² = Σ_j (φ'_j s_j)² r_l[j]`` and ``||∂z_{l,j}/∂x||² = s_j² r_l[j]``.

A Hutchinson estimate replaces ``E_1`` by ``U S Ω`` with Gaussian probes Ω (r × m, scaled by
1/sqrt(m)), which is unbiased for every r_l and costs m instead of r columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from .network import Network

# Elements of one E_l block (b · r · h): small enough to stay in cache (measured best near 2^18 on 2 cores).
_BLOCK_ELEMENTS = 1 << 18


class Tracer:
    """A network prepared for tracing: folded weights on one device, in one dtype."""

    def __init__(
        self,
        network: Network,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.network = network.to(device, dtype)
        self.activation = network.activation
        layers = self.network.layers
        self.weights = [layer.weight for layer in layers]
        self.folded_weights = [layer.folded_weight for layer in layers]
        self.folded_biases = [layer.folded_bias for layer in layers]
        self.transposed_weights = [w.T.contiguous() for w in self.weights]
        self.scales = [layer.scale for layer in layers]
        self.device = torch.device(device)
        self.dtype = dtype

    @cached_property
    def first_layer_factor(self) -> torch.Tensor:
        """``U S`` of the thin SVD of the raw first-layer weight (h_1 × r), ``U S Sᵀ Uᵀ = W_1 W_1ᵀ``."""
        w = self.weights[0].to(torch.float64)
        u, s, _ = torch.linalg.svd(w, full_matrices=False)
        return (u * s).to(self.dtype)

    def __call__(self, x: torch.Tensor) -> Trace:
        """Trace a batch ``x`` (B × d, on this tracer's device and dtype)."""
        preacts = []
        a = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.folded_weights, self.folded_biases, strict=True)):
            z = torch.addmm(b, a, w.T)
            if i == last:
                return Trace(self, x, preacts, z)
            preacts.append(z)
            a = self.activation(z)
        raise AssertionError("unreachable: a network has at least one layer")


@dataclass
class Trace:
    """Per-layer forward quantities of one batch; lists run over hidden layers 1..L-1."""

    tracer: Tracer
    x: torch.Tensor
    preacts: list[torch.Tensor]
    logits: torch.Tensor
    _exact_input_sqnorms: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @cached_property
    def codes(self) -> list[torch.Tensor]:
        """Piece index of every hidden unit (B × h_l, uint8), from the pre-activations."""
        return [self.tracer.activation.codes(z) for z in self.preacts]

    @cached_property
    def slopes(self) -> list[torch.Tensor]:
        """``φ'(z_l)`` of every hidden unit (B × h_l), the diagonal of D_l."""
        return [self.tracer.activation.slopes_at(z) for z in self.preacts]

    def effective_slopes(self, l: int) -> torch.Tensor:
        """φ'(z_l) times the BatchNorm scale of layer l (1-based hidden index): ∂a_l/∂u_l."""
        scale = self.tracer.scales[l - 1]
        slope = self.slopes[l - 1]
        return slope if scale is None else slope * scale

    @cached_property
    def output_gradients(self) -> list[torch.Tensor]:
        """``G_l = ∂f/∂z_l`` for l = 1..L-1, each B × n × h_l (G_L = I_n is left implicit)."""
        return self._backward(self.tracer.folded_weights[-1])

    @cached_property
    def summed_output_gradients(self) -> list[torch.Tensor]:
        """``1ᵀ G_l = ∂(Σ_c f_c)/∂z_l``, each B × h_l; reuses full G_l when already computed."""
        if "output_gradients" in self.__dict__:
            return [g.sum(1) for g in self.output_gradients]
        return [g[:, 0, :] for g in self._backward(self.tracer.folded_weights[-1].sum(0, keepdim=True))]

    def _backward(self, top: torch.Tensor) -> list[torch.Tensor]:
        """``top · ∂z_L/∂z_l`` for l = 1..L-1 (B × m × h_l), ``top`` m × h_{L-1}: the recursion
        ``G_l = G_{l+1} W_{l+1} D_l`` from ``G_{L-1} = top · D_{L-1}``."""
        if not self.slopes:
            return []
        weights = self.tracer.folded_weights
        g = top * self.slopes[-1][:, None, :]
        grads = [g]
        for l in range(len(self.slopes) - 1, 0, -1):
            g = (g.reshape(-1, g.shape[2]) @ weights[l]).view(self.batch_size, top.shape[0], -1)
            g.mul_(self.slopes[l - 1][:, None, :])
            grads.append(g)
        return grads[::-1]

    def input_sqnorms(
        self, layers: int, probes: int | None = None, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """``r_l[j] = ||∂u_{l,j}/∂x||²`` for l = 1..layers, each B × h_l (module docstring).

        ``probes=None`` is exact (and cached on the trace); an integer m gives a fresh
        Hutchinson estimate with m probes at every call.
        """
        cached = self._exact_input_sqnorms
        if probes is None and cached is not None and len(cached) >= layers:
            return cached[:layers]
        tr = self.tracer
        factor = tr.first_layer_factor
        if probes is not None:
            omega = torch.randn(
                factor.shape[1], probes, generator=generator, dtype=tr.dtype, device="cpu"
            ).to(tr.device)
            factor = factor @ omega / probes**0.5
        result = [factor.square().sum(1).expand(self.batch_size, -1)]
        if layers > 1:
            # E_lᵀ (b × r × h_l) in small blocks of samples, so each step is one cache-friendly
            # matrix product (b·r × h_{l-1}) @ (h_{l-1} × h_l).
            factor_t = factor.T.contiguous()
            r = factor_t.shape[0]
            widest = max(w.shape[0] for w in tr.weights[1:layers])
            block = max(1, min(_BLOCK_ELEMENTS // (widest * r), self.batch_size))
            pieces: list[list[torch.Tensor]] = [[] for _ in range(layers - 1)]
            for start in range(0, self.batch_size, block):
                rows = slice(start, min(start + block, self.batch_size))
                e = factor_t * self.effective_slopes(1)[rows, None, :]
                for l in range(2, layers + 1):
                    e = (e.reshape(-1, e.shape[2]) @ tr.transposed_weights[l - 1]).view(e.shape[0], r, -1)
                    pieces[l - 2].append((e * e).sum(1))
                    if l < layers:
                        e.mul_(self.effective_slopes(l)[rows, None, :])
            result += [torch.cat(p) for p in pieces]
        if probes is None:
            self._exact_input_sqnorms = result
        return result
