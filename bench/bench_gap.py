"""Speed of ``estimate-gap`` against plain forward passes over the same data, in one run.

Setup (issue 8): 50 checkpoints of a CIFAR-size MLP 3072-100-100-100-100-10 (He-init weights,
biases N(0, 0.1²), one seed per checkpoint, five runs of ten), 50,000 training and 10,000 test
inputs (random uint8 images, cifar10 normalization recorded in each checkpoint), float32, CPU.

* baseline: ``nn.Sequential`` forward passes of every checkpoint over the preprocessed train
  and test inputs already in memory, timed again after each tsens run; each ratio divides by
  the fastest baseline timed so far (timings on this shared machine vary by about ±30 %);
* tsens: :func:`tsens.commands.estimate_gap` from loading the checkpoints and data to the last
  estimate, test labels given (so the calibrated estimators are cross-fitted leave-one-run-out)
  and the five runs siblings (one ``config``: disagreement and agreement run): ``naive`` alone
  (the floor: one pass per set); the default (every estimator that can run, the calibrated one
  choosing among feature sets up to ``field``); and the default with ``--features sensitivity``
  and ``all`` (the Jacobian, tangent, active-unit, membership, boundary, region and margin
  measures).

Usage: python bench/bench_gap.py [--checkpoints 50] [--train 50000] [--test 10000] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nets import random_network  # noqa: E402

import tsens  # noqa: E402
from tsens.commands import estimate_gap  # noqa: E402

WIDTHS = (3072, 100, 100, 100, 100, 10)


def he_network(seed: int) -> tsens.Network:
    net = random_network(WIDTHS, seed=seed, scale=2**0.5)  # N(0, 2/fan_in): He init
    g = torch.Generator().manual_seed(seed + 10_000)
    layers = tuple(
        type(layer)(layer.weight, 0.1 * torch.randn(layer.out_features, generator=g, dtype=torch.float64))
        for layer in net.layers
    )
    return type(net)(layers, net.activation)


def write_checkpoints(root: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        run, step = divmod(i, 10)
        net = he_network(i)
        state = {k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}
        path = root / f"run{run}" / f"step={step}.safetensors"
        path.parent.mkdir(exist_ok=True)
        meta = {
            "run": f"run{run}",
            "step": str(step),
            "config": "one",
            "tsens.preprocess": '{"normalize": "cifar10"}',
        }
        save_file(state, str(path), metadata=meta)
        paths.append(str(path))
    return paths


def write_data(root: Path, n: int, name: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    path = root / f"{name}.npz"
    np.savez(path, x=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), y=rng.integers(0, 10, n))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=50)
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="Skip --features all (the slowest).")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_checkpoints(root, args.checkpoints)
        train_path = write_data(root, args.train, "train", 0)
        test_path = write_data(root, args.test, "test", 1)
        print(f"{args.checkpoints} checkpoints {'-'.join(map(str, WIDTHS))}, {args.train:,} train + "
              f"{args.test:,} test inputs, float32, {torch.get_num_threads()} threads")  # fmt: skip

        train, test = tsens.load_dataset(train_path), tsens.load_dataset(test_path)
        inputs = [x for ds in (train, test) for x, _ in tsens.stream.prepared_for(
            tsens.load_network(paths[0]), ds).batches(1024)]  # fmt: skip

        def forward_passes() -> float:
            start = time.perf_counter()
            with torch.no_grad():
                for path in paths:
                    module = tsens.load_network(path).to(dtype=torch.float32).torch_module()
                    for x in inputs:
                        module(x)
            return time.perf_counter() - start

        forward = forward_passes()
        print(f"  plain forward passes (nn.Sequential, data in memory)  {forward:8.1f} s")

        refs = tsens.plan_runs(paths)
        runs: list[tuple[str, dict]] = [
            ("estimate-gap, naive only (one pass per set)", {"estimators": ["naive"]}),
            ("estimate-gap, the default", {}),
            ("estimate-gap, --features sensitivity", {"features": "sensitivity"}),
        ]
        if not args.quick:
            runs.append(("estimate-gap, --features all", {"features": "all"}))
        for label, options in runs:
            start = time.perf_counter()
            result = estimate_gap(
                refs, str(train_path), str(test_path), **options,
                setup=tsens.Setup(compute=tsens.Compute(batch_size=1024)),
            )  # fmt: skip
            took = time.perf_counter() - start
            print(f"  {label:<52s} {took:8.1f} s  = {took / forward:5.2f}× the forward passes")
            print(f"    estimators: {', '.join(result.extra['gap'].names)}")
            again = forward_passes()
            forward = min(forward, again)  # the faster baseline, so the ratio is never flattered
            print(f"  plain forward passes again                             {again:8.1f} s")


if __name__ == "__main__":
    main()
