"""Flax checkpoints written by the real package, for ``tests/test_flax.py`` (dev-only).

Run once in a separate environment (jax on the CPU); the outputs are committed under
``tests/data/formats/flax/``:

    python3 -m venv /tmp/genflax && /tmp/genflax/bin/pip install flax jax numpy msgpack
    /tmp/genflax/bin/python scripts/checkpoint_formats/make_flax.py

Small flax.linen MLPs, initialised with fixed seeds (BatchNorm statistics then perturbed), each
written with ``flax.serialization.to_bytes``:

* ``relu``: compact Dense 5→7→6→3 with relu, the variables dict;
* ``batchnorm``: compact Dense → BatchNorm(use_running_average=True) → relu, the BatchNorm only
  after the second Dense layer (so ``Dense_1`` precedes ``BatchNorm_0``), the variables dict;
* ``batchnorm-trained``: the same after ``jax.tree.map`` (as an optimiser step leaves them: keys
  sorted), saved as a TrainState-like dict ``{"step", "params", "batch_stats", "opt_state"}``;
* ``nobias``: ``use_bias=False`` everywhere, the params dict alone;
* ``leaky``: ``nn.Sequential`` with leaky_relu (slope 0.01) and a BatchNorm after each hidden
  Dense layer, as ``TrainState(params=variables)``: ``{"step", "params": {"params",
  "batch_stats"}, "opt_state"}``;
* ``nested``: Dense layers inside a submodule (``params/MLP_0/Dense_k``), eleven of them so
  that ``Dense_10`` sorts before ``Dense_2`` as text.

``<name>.npz`` holds float64 inputs ``x`` and the float64 outputs ``y`` of flax's own ``apply``
(``jax_enable_x64``; the weights are float32 except in ``batchnorm``, which is float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import serialization  # noqa: E402
from flax.training import train_state  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "formats" / "flax"


class MLP(nn.Module):
    widths: Sequence[int]
    act: Callable[[jax.Array], jax.Array] = nn.relu
    norm_after: Sequence[int] = ()  # hidden layers followed by a BatchNorm
    use_bias: bool = True
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.widths):
            x = nn.Dense(width, use_bias=self.use_bias, param_dtype=self.param_dtype)(x)
            if i == len(self.widths) - 1:
                break
            if i in self.norm_after:
                x = nn.BatchNorm(use_running_average=True, param_dtype=self.param_dtype)(x)
            x = self.act(x)
        return x


class Wrapped(nn.Module):
    widths: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return MLP(self.widths)(x)


def perturbed(variables: dict[str, Any], seed: int) -> dict[str, Any]:
    """The variables with random BatchNorm statistics and affine parameters. The statistics are
    float64 (flax makes them float32, and computes ``rsqrt(var + epsilon)`` in their precision)
    so that ``apply`` is float64 throughout."""
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))
    out = {k: dict(v) for k, v in variables.items()}  # a copy in the creation order
    for name, stats in variables.get("batch_stats", {}).items():
        mean, var = stats["mean"], stats["var"]
        out["batch_stats"][name] = {
            "mean": 0.5 * jax.random.normal(next(keys), mean.shape, jnp.float64),
            "var": jax.random.uniform(next(keys), var.shape, jnp.float64, 0.3, 2.0),
        }
        p = variables["params"][name]
        out["params"][name] = {
            "scale": jax.random.uniform(next(keys), p["scale"].shape, p["scale"].dtype, 0.5, 1.5),
            "bias": 0.3 * jax.random.normal(next(keys), p["bias"].shape, p["bias"].dtype),
        }
    return out


def save(name: str, blob: bytes, model: nn.Module, variables: dict[str, Any], seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(9, 5))
    y = model.apply(variables, jnp.asarray(x, dtype=jnp.float64))
    (OUT / f"{name}.msgpack").write_bytes(blob)
    np.savez(OUT / f"{name}.npz", x=x, y=np.asarray(y, dtype=np.float64))


def opt_state(params: Any) -> Any:
    return optax.adam(1e-3).init(params)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ones = jnp.ones((1, 5))

    model = MLP((7, 6, 3))
    variables = model.init(jax.random.PRNGKey(0), ones)
    save("relu", serialization.to_bytes(variables), model, variables, 0)

    model = MLP((7, 6, 4, 3), norm_after=(1,), param_dtype=jnp.float64)
    variables = perturbed(model.init(jax.random.PRNGKey(1), ones), 1)
    save("batchnorm", serialization.to_bytes(variables), model, variables, 1)
    trained = jax.tree_util.tree_map(lambda a: a * 1.01, variables)
    state = {
        "step": 120,
        "params": trained["params"],
        "batch_stats": trained["batch_stats"],
        "opt_state": opt_state(trained["params"]),
    }
    save("batchnorm-trained", serialization.to_bytes(state), model, trained, 2)

    model = MLP((7, 6, 3), use_bias=False)
    variables = model.init(jax.random.PRNGKey(3), ones)
    save("nobias", serialization.to_bytes(variables["params"]), model, variables, 3)

    layers: list[Any] = []
    for width in (7, 6):
        layers += [nn.Dense(width), nn.BatchNorm(use_running_average=True), nn.leaky_relu]
    sequential = nn.Sequential([*layers, nn.Dense(3)])
    variables = perturbed(sequential.init(jax.random.PRNGKey(4), ones), 4)
    st = train_state.TrainState.create(apply_fn=sequential.apply, params=variables, tx=optax.sgd(0.1))
    save("leaky", serialization.to_bytes(st), sequential, variables, 4)

    wrapped = Wrapped((6,) * 10 + (3,))
    variables = wrapped.init(jax.random.PRNGKey(5), ones)
    save("nested", serialization.to_bytes(variables), wrapped, variables, 5)
    print("wrote", sorted((p.name, p.stat().st_size) for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
