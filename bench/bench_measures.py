"""Speed of the exact per-sample measures against the obvious baselines, measured in one run.

Prints, for an MLP 3072-100-100-100-100-10 on 10,000 inputs (float32, CPU, 2 threads) and for
the same with width 1000 (fewer inputs, stated):

* Jacobian norms (logit and softmax) vs ``torch.func.vmap(jacrev)`` and vs a plain forward pass;
* tangent sensitivity vs author-style autograd (one forward-mode JVP of ∇_θ f per input
  coordinate) on 64-32-32-10, and vs the forward pass at CIFAR size; Hutchinson at width 1000;
* ``activations`` (counts) and ``regions`` (ids, membership, exact boundary distance) vs the
  forward pass.

Usage: python bench/bench_measures.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, jacrev, jvp, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nets import random_network  # noqa: E402

from tsens.active_units import active_counts  # noqa: E402
from tsens.jacobian import jacobian_norms  # noqa: E402
from tsens.regions import boundary_distance, log_membership, path_scores, region_ids  # noqa: E402
from tsens.tangent import tangent_norms  # noqa: E402
from tsens.trace import Tracer  # noqa: E402


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs (seconds), after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def batched(fn: Callable[[torch.Tensor], object], x: torch.Tensor, batch: int) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            for start in range(0, len(x), batch):
                fn(x[start : start + batch])

    return run


def mlp(widths: tuple[int, ...]):
    net = random_network(widths, seed=0).to(dtype=torch.float32)
    return net, Tracer(net, dtype=torch.float32), net.torch_module()


def line(name: str, seconds: float, n: int, base: float | None = None, base_name: str = "") -> None:
    ratio = f"   {base / seconds:8.1f}× faster than {base_name}" if base and base_name else ""
    print(f"  {name:<44s} {seconds:8.3f} s  {n / seconds:12,.0f} samples/s{ratio}")


def jacobian_section(width: int, n: int, batch: int) -> None:
    widths = (3072, width, width, width, width, 10)
    net, tracer, module = mlp(widths)
    x = torch.rand(n, 3072)
    print(f"\n{'-'.join(map(str, widths))}, {n:,} inputs, float32, {torch.get_num_threads()} threads")
    t_fwd = best_of(batched(module, x, batch))
    line("forward pass (nn.Sequential)", t_fwd, n)

    def ours(xb: torch.Tensor) -> None:
        jacobian_norms(tracer(xb))

    def baseline(xb: torch.Tensor) -> None:
        j = vmap(jacrev(lambda v: module(v[None])[0]))(xb)
        s = torch.softmax(module(xb), 1)
        jp = (torch.diag_embed(s) - s[:, :, None] * s[:, None, :]) @ j
        j.flatten(1).norm(dim=1), jp.flatten(1).norm(dim=1)

    t_vmap = best_of(batched(baseline, x, min(batch, 500)), repeat=1 if width > 100 else 2)
    t_ours = best_of(batched(ours, x, batch))
    line("Jacobian norms: torch.func.vmap(jacrev)", t_vmap, n)
    line("Jacobian norms: tsens closed form", t_ours, n, t_vmap, "vmap(jacrev)")
    print(f"  {'':<44s} {t_ours / t_fwd:8.2f}× the forward pass")

    if width <= 100:
        t_tan = best_of(batched(lambda xb: tangent_norms(tracer(xb), "sum"), x, batch))
        line("tangent ‖T‖_F (exact, sum)", t_tan, n)
        print(f"  {'':<44s} {t_tan / t_fwd:8.2f}× the forward pass")
        t_both = best_of(batched(lambda xb: _both(tracer(xb)), x, batch))
        line("Jacobian norms + tangent, one trace", t_both, n)
        print(f"  {'':<44s} {t_both / t_fwd:8.2f}× the forward pass")
        t_act = best_of(batched(lambda xb: active_counts(tracer(xb)), x, batch))
        line("activations (active counts)", t_act, n)
        print(f"  {'':<44s} {t_act / t_fwd:8.2f}× the forward pass")
        t_reg = best_of(batched(lambda xb: _regions(tracer(xb)), x, batch))
        line("regions (id, membership, boundary distance)", t_reg, n)
        print(f"  {'':<44s} {t_reg / t_fwd:8.2f}× the forward pass")
    else:
        m = 32
        t_exact = best_of(batched(lambda xb: tangent_norms(tracer(xb), "sum"), x[:32], 8), repeat=1)
        line("tangent ‖T‖_F exact (32 inputs)", t_exact, 32)
        print(f"  {'':<44s} {t_exact / 32 / (t_fwd / n):8.0f}× the forward pass per sample")
        g = torch.Generator().manual_seed(0)
        t_hutch = best_of(batched(lambda xb: tangent_norms(tracer(xb), "sum", m, g), x, batch // 4))
        line(f"tangent ‖T‖_F Hutchinson estimate, {m} probes", t_hutch, n)
        print(f"  {'':<44s} {t_hutch / t_fwd:8.2f}× the forward pass")
        exact = tangent_norms(tracer(x[:64]), "sum")
        est = tangent_norms(tracer(x[:64]), "sum", m, g)
        err = ((est - exact).abs() / exact).mean()
        print(f"  {'':<44s} mean relative error of the estimate: {float(err):.2%}")


def _both(trace) -> None:
    jacobian_norms(trace)
    tangent_norms(trace, "sum")


def _regions(trace) -> None:
    region_ids(trace)
    log_p = log_membership(trace)
    path_scores(trace, log_p)
    boundary_distance(trace)


def tangent_vs_autograd(n: int) -> None:
    widths = (64, 32, 32, 10)
    net, tracer, module = mlp(widths)
    x = torch.rand(n, 64)
    params = {k: v.detach() for k, v in module.named_parameters()}
    print(f"\n{'-'.join(map(str, widths))}: tangent sensitivity, {n} inputs")

    def param_grad(v: torch.Tensor) -> torch.Tensor:
        grads = torch.func.grad(lambda p: functional_call(module, p, (v[None],)).sum())(params)
        return torch.cat([g.reshape(-1) for g in grads.values()])

    def author_style() -> None:
        eye = torch.eye(64)
        for v in x:
            cols = [jvp(param_grad, (v,), (eye[i],))[1] for i in range(64)]
            torch.stack(cols, 1).norm()

    t_auto = best_of(author_style, repeat=1)
    t_ours = best_of(lambda: tangent_norms(tracer(x), "sum"))
    line("author-style autograd (one JVP per input coord.)", t_auto, n)
    line("tsens closed form", t_ours, n, t_auto, "autograd")


TORCH_FUNC_SCRIPT = """
import sys, numpy as np, torch
from safetensors.torch import load_file
from torch.func import jacrev, vmap
torch.set_num_threads(2)
state = load_file(sys.argv[1])
n_lin = len([k for k in state if k.endswith("weight")])
layers = []
for i in range(n_lin):
    w = state[f"{2 * i}.weight"]
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    lin.load_state_dict({"weight": w, "bias": state[f"{2 * i}.bias"]})
    layers += [lin, torch.nn.ReLU()] if i < n_lin - 1 else [lin]
model = torch.nn.Sequential(*layers).eval()
x = np.load(sys.argv[2], mmap_mode="r")
norms = []
for s in range(0, len(x), 500):
    xb = torch.from_numpy(np.asarray(x[s : s + 500], dtype=np.float32) / 255)
    j = vmap(jacrev(lambda v: model(v[None])[0]))(xb)
    p = torch.softmax(model(xb), 1)
    jp = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) @ j
    norms.append(torch.stack([j.flatten(1).norm(dim=1), jp.flatten(1).norm(dim=1)], 1).detach())
print(torch.cat(norms).shape)
"""


def whole_process(n: int) -> None:
    """`tsens jacobian` (both measures, whole process, table written) vs a torch.func script
    that computes the Jacobian norms alone, on n CIFAR-size inputs."""
    import tempfile

    from safetensors.torch import save_file

    widths = (3072, 100, 100, 100, 100, 10)
    net, _, module = mlp(widths)
    print(f"\nwhole process, {'-'.join(map(str, widths))}, {n:,} CIFAR-size uint8 inputs")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, data, script = Path(tmp, "net.safetensors"), Path(tmp, "x.npy"), Path(tmp, "baseline.py")
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(ckpt))
        rng = np.random.default_rng(0)
        np.save(data, rng.integers(0, 256, (n, 3072), dtype=np.uint8))
        script.write_text(TORCH_FUNC_SCRIPT)
        tsens_cmd = [
            sys.executable,
            "-m",
            "tsens",
            "jacobian",
            str(ckpt),
            "--data",
            str(data),
            "-o",
            str(Path(tmp, "out.parquet")),
            "-q",
            "--batch-size",
            "1000",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        t_tsens = _timed(tsens_cmd, env)
        t_func = _timed([sys.executable, str(script), str(ckpt), str(data)], env)
    line("torch.func script, Jacobian norms only", t_func, n)
    line("tsens jacobian, both measures, table written", t_tsens, n, t_func, "torch.func script")


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    import subprocess

    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    n = 1000 if args.quick else 10_000
    jacobian_section(100, n, 1000)
    jacobian_section(1000, n // 5, 500)
    tangent_vs_autograd(5 if args.quick else 20)
    whole_process(5_000 if args.quick else 50_000)


if __name__ == "__main__":
    main()
