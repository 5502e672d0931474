"""Piecewise-linear activation functions.

Each function is described by its breakpoints and the constant slope of every piece, which is
all any measure needs: the *code* of a unit is the index of its piece (the number of
breakpoints strictly below the pre-activation, so ReLU's code is 0 for z <= 0, else 1), and
``D_l(x) = diag(slope[code])``. A unit is *active* when it sits on the piece of largest slope
(ReLU: z > 0; ReLU6 and the hard functions: the middle piece; LeakyReLU: z > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import TsensError

NAMES = ("relu", "leaky_relu", "relu6", "hardtanh", "hardsigmoid")


@dataclass(frozen=True)
class Activation:
    """A piecewise-linear activation: ``breakpoints`` b_1 < ... < b_k, ``slopes`` of k+1 pieces."""

    name: str
    breakpoints: tuple[float, ...]
    slopes: tuple[float, ...]
    alpha: float | None = None

    @property
    def spec(self) -> str:
        """The string that :func:`parse_activation` turns back into this activation."""
        return f"{self.name}:{self.alpha:g}" if self.alpha is not None else self.name

    @property
    def num_pieces(self) -> int:
        return len(self.slopes)

    @property
    def active_code(self) -> int:
        """The piece counted as "active": the one with the largest slope."""
        return max(range(self.num_pieces), key=lambda i: self.slopes[i])

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return torch.relu(z)
        if self.name == "leaky_relu":
            return torch.nn.functional.leaky_relu(z, self.alpha)
        if self.name == "relu6":
            return torch.nn.functional.relu6(z)
        if self.name == "hardtanh":
            return torch.nn.functional.hardtanh(z)
        return torch.nn.functional.hardsigmoid(z)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the linear piece each pre-activation lies on (uint8, same shape as z)."""
        code = torch.zeros(z.shape, dtype=torch.uint8, device=z.device)
        for b in self.breakpoints:
            code += z > b
        return code

    def slopes_at(self, z: torch.Tensor) -> torch.Tensor:
        """The slope φ'(z) of each unit (the slope of its piece)."""
        if self.slopes == (0.0, 1.0):  # ReLU: the indicator of z > 0
            return (z > 0).to(z.dtype)
        return self.slopes_of(self.codes(z), z.dtype)

    def slopes_of(self, codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The slope φ' of each unit given its piece code."""
        table = torch.tensor(self.slopes, dtype=dtype, device=codes.device)
        return table[codes.long()]

    def breakpoint_distance(self, z: torch.Tensor) -> torch.Tensor:
        """|z − nearest breakpoint|: how far a pre-activation is from changing its piece."""
        dist = torch.full_like(z, float("inf"))
        for b in self.breakpoints:
            dist = torch.minimum(dist, (z - b).abs())
        return dist

    def module(self) -> torch.nn.Module:
        """The equivalent torch module (used by oracles and the sample-making script)."""
        return {
            "relu": lambda: torch.nn.ReLU(),
            "leaky_relu": lambda: torch.nn.LeakyReLU(self.alpha),
            "relu6": lambda: torch.nn.ReLU6(),
            "hardtanh": lambda: torch.nn.Hardtanh(),
            "hardsigmoid": lambda: torch.nn.Hardsigmoid(),
        }[self.name]()


def parse_activation(spec: str, *, what: str = "`activation`") -> Activation:
    """``relu``, ``leaky_relu[:alpha]`` (default 0.01, 0 <= alpha < 1), ``relu6``, ``hardtanh``,
    ``hardsigmoid``.

    The name is case-insensitive and ``-`` may stand for ``_`` (``Leaky-ReLU:0.2``); only the
    name is normalised, so the argument after ``:`` is read as written (``leaky_relu:-3`` is a
    slope of -3, refused as out of range). ``what`` names the source of ``spec`` in error
    messages: the library parameter by default, a checkpoint's metadata entry when loading.
    """
    raw_name, colon, raw_arg = spec.strip().partition(":")
    name, arg = raw_name.strip().lower().replace("-", "_"), raw_arg.strip()
    if name not in NAMES:
        raise TsensError(
            f"{what} {spec!r} is not supported; expected one of "
            "relu, leaky_relu[:alpha], relu6, hardtanh, hardsigmoid (piecewise linear only)"
        )
    if colon and name != "leaky_relu":
        raise TsensError(
            f"{what} {spec!r}: {name} takes no parameter (only leaky_relu does, e.g. leaky_relu:0.01)"
        )
    if name == "relu":
        return Activation("relu", (0.0,), (0.0, 1.0))
    if name == "leaky_relu":
        alpha = 0.01
        if colon:
            try:
                alpha = float(arg)
            except ValueError:
                raise TsensError(
                    f"{what} {spec!r}: the negative slope after ':' must be a number, got {arg!r}"
                ) from None
        if not 0 <= alpha < 1:
            raise TsensError(f"{what} {spec!r}: the negative slope must lie in [0, 1), got {arg}")
        return Activation("leaky_relu", (0.0,), (alpha, 1.0), alpha)
    if name == "relu6":
        return Activation("relu6", (0.0, 6.0), (0.0, 1.0, 0.0))
    if name == "hardtanh":
        return Activation("hardtanh", (-1.0, 1.0), (0.0, 1.0, 0.0))
    return Activation("hardsigmoid", (-3.0, 3.0), (0.0, 1.0 / 6.0, 0.0))
