"""The network object every measure works on.

A :class:`Network` is a chain of :class:`Layer` s (Linear, optionally followed by an eval-mode
BatchNorm1d), a piecewise-linear activation between them and raw logits at the end. Parameters
are kept exactly as the checkpoint stores them; the forward pass uses the folded affine map
``z = scale ⊙ (W a) + shift`` with ``scale = γ/sqrt(σ² + eps)`` and
``shift = scale ⊙ (b − μ) + β``, while parameter derivatives (tangent sensitivity) are taken
with respect to the checkpoint's own W, b, γ, β.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .piecewise import Activation, parse_activation


@dataclass(frozen=True)
class BatchNorm:
    """Eval-mode BatchNorm1d. ``weight``/``bias`` are γ/β, None when ``affine=False``."""

    running_mean: torch.Tensor
    running_var: torch.Tensor
    eps: float = 1e-5
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    @property
    def std(self) -> torch.Tensor:
        """sqrt(σ² + eps)."""
        return torch.sqrt(self.running_var + self.eps)

    @property
    def scale(self) -> torch.Tensor:
        """γ / sqrt(σ² + eps) (γ = 1 without affine parameters)."""
        gamma = self.weight if self.weight is not None else torch.ones_like(self.running_var)
        return gamma / self.std


@dataclass(frozen=True)
class Layer:
    """One Linear (``weight`` is out × in) with its optional bias and BatchNorm."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    norm: BatchNorm | None = None
    name: str = ""

    def __repr__(self) -> str:
        extras = ("bias" if self.bias is not None else "no bias") + (", BatchNorm" if self.norm else "")
        return f"<Layer {self.name!r}: {self.out_features}×{self.in_features}, {extras}>"

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def scale(self) -> torch.Tensor | None:
        """Per-unit factor multiplying ``W a`` (None without BatchNorm)."""
        return None if self.norm is None else self.norm.scale

    @property
    def folded_weight(self) -> torch.Tensor:
        s = self.scale
        return self.weight if s is None else s[:, None] * self.weight

    @property
    def folded_bias(self) -> torch.Tensor:
        b = self.bias if self.bias is not None else torch.zeros_like(self.weight[:, 0])
        if self.norm is None:
            return b
        beta = self.norm.bias if self.norm.bias is not None else torch.zeros_like(b)
        return self.norm.scale * (b - self.norm.running_mean) + beta

    def parameters(self) -> dict[str, torch.Tensor]:
        """The trainable tensors of this layer, named as in the checkpoint's layout."""
        params = {"weight": self.weight}
        if self.bias is not None:
            params["bias"] = self.bias
        if self.norm is not None and self.norm.weight is not None:
            params["bn.weight"] = self.norm.weight
            params["bn.bias"] = self.norm.bias
        return params

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Layer:
        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        norm = self.norm
        if norm is not None:
            norm = replace(
                norm,
                running_mean=cast(norm.running_mean),
                running_var=cast(norm.running_var),
                weight=cast(norm.weight),
                bias=cast(norm.bias),
            )
        return replace(self, weight=cast(self.weight), bias=cast(self.bias), norm=norm)


@dataclass(frozen=True)
class Network:
    """A fully connected piecewise-linear network ``f(x) = z_L``."""

    layers: tuple[Layer, ...]
    activation: Activation = field(default_factory=lambda: parse_activation("relu"))
    metadata: dict[str, str] = field(default_factory=dict)
    path: str = ""
    sha256: str = ""

    @property
    def depth(self) -> int:
        """L, the number of Linear layers."""
        return len(self.layers)

    @property
    def input_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def output_dim(self) -> int:
        return self.layers[-1].out_features

    @property
    def widths(self) -> tuple[int, ...]:
        """(d, h_1, ..., h_{L-1}, n)."""
        return (self.input_dim, *(layer.out_features for layer in self.layers))

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return self.widths[1:-1]

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for layer in self.layers for t in layer.parameters().values())

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    @property
    def has_batchnorm(self) -> bool:
        return any(layer.norm is not None for layer in self.layers)

    @property
    def has_bias(self) -> bool:
        return any(layer.bias is not None for layer in self.layers)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Network:
        """A copy with every tensor on ``device`` in ``dtype``."""
        device = self.device if device is None else device
        dtype = self.dtype if dtype is None else dtype
        return replace(self, layers=tuple(layer.to(device, dtype) for layer in self.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch ``x`` (B × d); the plain reference forward pass."""
        a = x
        for i, layer in enumerate(self.layers):
            z = a @ layer.folded_weight.T + layer.folded_bias
            a = self.activation(z) if i < self.depth - 1 else z
        return a

    __call__ = forward

    def torch_module(self) -> torch.nn.Sequential:
        """An ``nn.Sequential`` (Linear, BatchNorm1d, activation, ...) with these parameters, in
        eval mode; the independent reference used by oracles and the sample-making script."""
        modules: list[torch.nn.Module] = []
        for i, layer in enumerate(self.layers):
            lin = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            lin = lin.to(dtype=self.dtype, device=self.device)
            with torch.no_grad():
                lin.weight.copy_(layer.weight)
                if layer.bias is not None:
                    lin.bias.copy_(layer.bias)
            modules.append(lin)
            if layer.norm is not None:
                norm = layer.norm
                bn = torch.nn.BatchNorm1d(
                    layer.out_features, eps=norm.eps, affine=norm.weight is not None
                ).to(dtype=self.dtype, device=self.device)
                with torch.no_grad():
                    bn.running_mean.copy_(norm.running_mean)
                    bn.running_var.copy_(norm.running_var)
                    if norm.weight is not None:
                        bn.weight.copy_(norm.weight)
                        bn.bias.copy_(norm.bias)
                modules.append(bn)
            if i < self.depth - 1:
                modules.append(self.activation.module())
        return torch.nn.Sequential(*modules).eval()

    def __repr__(self) -> str:
        where = self.path or "(in memory)"
        if not self.layers:
            return f"<Network {where}: no weights>"
        return f"<Network {where}: {self.describe()}, {self.num_parameters:,} parameters>"

    def describe(self) -> str:
        """``784-100-100-10 relu, bias, BN`` style one-liner."""
        arch = "-".join(str(w) for w in self.widths)
        extras = [self.activation.spec, "bias" if self.has_bias else "no bias"]
        if self.has_batchnorm:
            extras.append("BatchNorm")
        return f"{arch} ({', '.join(extras)})"


def weight_norms(layer: Layer) -> dict[str, float]:
    """Frobenius, spectral and max-abs norms of a layer's raw weight matrix."""
    w = layer.weight.detach().to(torch.float64)
    return {
        "fro": float(torch.linalg.matrix_norm(w, "fro")),
        "spectral": float(torch.linalg.matrix_norm(w, 2)),
        "max_abs": float(w.abs().max()),
    }
