"""Random small networks for oracle tests (float64)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.func import functional_call, jacrev

from tsens.checkpoints import load_network
from tsens.errors import TsensError
from tsens.network import BatchNorm, Layer, Network
from tsens.piecewise import parse_activation

ACTIVATIONS = ("relu", "leaky_relu:0.1", "relu6", "hardtanh", "hardsigmoid")


def network_strategy(max_widths: int = 6):
    """Hypothesis: small random networks of 1 to ``max_widths`` − 1 layers (widths 1–6), with or
    without biases, every BatchNorm kind and every activation."""
    from hypothesis import strategies as st

    return st.builds(
        lambda widths, bias, bn, act, seed: random_network(
            tuple(widths), bias=bias, batchnorm=bn, activation=act, seed=seed, scale=1.5
        ),
        widths=st.lists(st.integers(1, 6), min_size=2, max_size=max_widths),
        bias=st.booleans(),
        bn=st.sampled_from([False, True, "affine-false", "all"]),
        act=st.sampled_from(ACTIVATIONS),
        seed=st.integers(0, 10_000),
    )


def random_network(
    widths: tuple[int, ...],
    *,
    bias: bool = True,
    batchnorm: bool | str = False,
    activation: str = "relu",
    seed: int = 0,
    scale: float = 1.0,
) -> Network:
    """A float64 network with the given widths (d, h_1, ..., n).

    ``batchnorm``: False, True (affine BN after every Linear but the last), "affine-false",
    or "all" (also after the last Linear).
    """
    g = torch.Generator().manual_seed(seed)
    layers = []
    depth = len(widths) - 1
    for i in range(depth):
        fan_in, fan_out = widths[i], widths[i + 1]
        w = scale * torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) / fan_in**0.5
        b = 0.3 * torch.randn(fan_out, generator=g, dtype=torch.float64) if bias else None
        norm = None
        if batchnorm and (i < depth - 1 or batchnorm == "all"):
            affine = batchnorm != "affine-false"
            norm = BatchNorm(
                running_mean=0.2 * torch.randn(fan_out, generator=g, dtype=torch.float64),
                running_var=0.5 + torch.rand(fan_out, generator=g, dtype=torch.float64),
                eps=1e-5,
                weight=(0.5 + torch.rand(fan_out, generator=g, dtype=torch.float64)) if affine else None,
                bias=0.1 * torch.randn(fan_out, generator=g, dtype=torch.float64) if affine else None,
            )
        layers.append(Layer(w, b, norm, name=str(i)))
    return Network(tuple(layers), parse_activation(activation))


class _HardSigmoid(torch.nn.Module):
    """relu6(x + 3)/6: torch's Hardsigmoid has no double backward, this one does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(x + 3) / 6


def twice_differentiable_module(network: Network) -> torch.nn.Sequential:
    """The network's nn.Sequential with Hardsigmoid swapped for a twice-differentiable twin."""
    module = network.torch_module()
    for i, m in enumerate(module):
        if isinstance(m, torch.nn.Hardsigmoid):
            module[i] = _HardSigmoid()
    return module


def autograd_jacobian(network: Network, x: torch.Tensor) -> torch.Tensor:
    """∂f/∂x per sample (B × n × d) by torch.func on the network's own nn.Module."""
    module = twice_differentiable_module(network)
    return torch.func.vmap(jacrev(lambda v: module(v[None])[0]))(x).detach()


def autograd_tangent_sqnorm(network: Network, x: torch.Tensor, reading: str) -> torch.Tensor:
    """||∂/∂x ∇_θ f(x)||_F² per sample by jacrev of the flattened parameter gradient."""
    module = twice_differentiable_module(network)
    params = {k: v.detach() for k, v in module.named_parameters()}

    def output(p: dict, v: torch.Tensor) -> torch.Tensor:
        return functional_call(module, p, (v[None],))[0]

    def param_grad_flat(v: torch.Tensor, c: int | None) -> torch.Tensor:
        def scalar(p: dict) -> torch.Tensor:
            out = output(p, v)
            return out.sum() if c is None else out[c]

        grads = torch.func.grad(scalar)(params)
        return torch.cat([g.reshape(-1) for g in grads.values()])

    values = []
    for v in x:
        if reading == "sum":
            t = jacrev(lambda u: param_grad_flat(u, None))(v)
            values.append(t.square().sum())
        else:
            n = network.output_dim
            values.append(
                sum(jacrev(lambda u, c=c: param_grad_flat(u, c))(v).square().sum() for c in range(n))
            )
    return torch.stack(values).detach()


def reference_preacts(network: Network, x: torch.Tensor) -> list[torch.Tensor]:
    """Hidden pre-activations (input of each activation module) from the nn.Sequential
    (Hardsigmoid as relu6(x + 3)/6: torch's own backward uses a float32 1/6)."""
    module = twice_differentiable_module(network)
    out = []
    h = x
    for m in module:
        if isinstance(m, torch.nn.Linear | torch.nn.BatchNorm1d):
            h = m(h)
        else:
            out.append(h)
            h = m(h)
    return out


def refused(path: Path, *fragments: str) -> str:
    """Loading ``path`` is refused in one line that starts with the path and names every fragment."""
    with pytest.raises(TsensError) as caught:
        load_network(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message
