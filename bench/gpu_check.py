"""Helpers of ``bench/gpu_check.sh`` (one prepared script for a machine with an NVIDIA GPU).

Subcommands (each prints greppable ``key=value`` lines and exits non-zero on failure):

* ``env``: torch version, CUDA availability, device name and memory, threads.
* ``gpu-tests``: the node ids of the tests that mention CUDA or a GPU (found by reading the
  test files, so a new one is picked up), one per line.
* ``compare A B``: two tables written by ``tsens ... -o`` (Parquet, Arrow, CSV): the same
  columns and rows; floating columns within 1e-6 relative or 1e-9 absolute; every other column
  equal. Prints ``max_rel=… max_abs=… rows=… worst=… PASS|FAIL``.
* ``agree --device D --tmp DIR NAME -- CMD ARGS...``: ``tsens CMD ARGS`` in float64 on cpu and
  on D, in this process; both tables and summaries compared as ``compare`` does; prints
  ``agree NAME max_rel=… PASS|FAIL`` and one line per table.
* ``make-cifar DIR``: a CIFAR-size MLP 3072-100-100-100-100-10 (``bench_gap``'s He-init
  networks) as safetensors checkpoints and random uint8 CIFAR-shaped train/test sets (.npz).
* ``speed --device D [--cold] -- ARGS...``: ``tsens ARGS...`` in this process (so a warm-up
  warms the CUDA context and kernels): ``--warmup`` runs, then ``--repeat`` timed ones; with
  ``--cold`` first one run in a fresh ``python -m tsens`` process (start-up, imports, CUDA
  context and data loading included); prints ``time device=D cold=c warmup=w runs=a,b median=m``.

Usage: PYTHONPATH=. python bench/gpu_check.py SUBCOMMAND ...
"""

from __future__ import annotations

import argparse
import ast
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-6
ATOL = 1e-9


def cmd_env(args: argparse.Namespace) -> int:
    import torch

    print(f"torch={torch.__version__} cuda_build={torch.version.cuda} threads={torch.get_num_threads()}")
    available = torch.cuda.is_available()
    print(f"cuda_available={available}")
    if available:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            print(
                f"gpu{i} name={props.name!r} memory_gib={total / 2**30:.1f} free_gib={free / 2**30:.1f} "
                f"capability={props.major}.{props.minor}"
            )
        x = torch.randn(256, 256, device="cuda", dtype=torch.float64)
        err = (x @ x - (x.cpu() @ x.cpu()).cuda()).abs().max().item()
        print(f"gpu_matmul_float64_vs_cpu max_abs={err:.3g}")
    return 0


def cmd_gpu_tests(args: argparse.Namespace) -> int:
    pattern = re.compile(r"cuda|gpu", re.IGNORECASE)
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        source = path.read_text()
        if not pattern.search(source):
            continue
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                text = "\n".join(source.splitlines()[first - 1 : node.end_lineno])
                if pattern.search(text):
                    print(f"{path.relative_to(ROOT)}::{node.name}")
    return 0


def _read_table(path: str):  # noqa: ANN202
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix == ".csv":
        return pcsv.read_csv(path)
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


def compare(a_path: str, b_path: str) -> tuple[bool, str]:
    """(pass, ``key=value`` report) for two tables."""
    import numpy as np
    import pyarrow as pa

    a, b = _read_table(a_path), _read_table(b_path)
    if a.schema.names != b.schema.names or a.num_rows != b.num_rows:
        only = sorted(set(a.schema.names) ^ set(b.schema.names))
        shapes = f"rows={a.num_rows}/{b.num_rows} cols={a.num_columns}/{b.num_columns}"
        return False, f"max_rel=nan shape_mismatch {shapes} differ={only}"
    max_rel, max_abs, worst, bad = 0.0, 0.0, "-", []
    floats = 0
    for name in a.schema.names:
        ta, tb = a.schema.field(name).type, b.schema.field(name).type
        if pa.types.is_floating(ta) and pa.types.is_floating(tb):
            floats += 1
            x = a.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            y = b.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            both_nan = np.isnan(x) & np.isnan(y)
            same_inf = np.isinf(x) & (x == y)
            ok = both_nan | same_inf
            if (np.isnan(x) ^ np.isnan(y)).any() or ((np.isinf(x) | np.isinf(y)) & ~ok).any():
                bad.append(f"{name}:nan/inf")
            xf, yf = np.where(ok, 0.0, x), np.where(ok, 0.0, y)
            xf, yf = np.nan_to_num(xf), np.nan_to_num(yf)
            diff = np.abs(xf - yf)
            scale = np.maximum(np.abs(xf), np.abs(yf))
            rel = np.where(diff > ATOL, diff / np.where(scale > 0, scale, 1.0), 0.0)
            if diff.size:
                col_abs, col_rel = float(diff.max()), float(rel.max())
                max_abs = max(max_abs, col_abs)
                if col_rel > max_rel:
                    max_rel, worst = col_rel, name
                if ((diff > ATOL) & (diff > RTOL * scale)).any():
                    bad.append(f"{name}:rel={col_rel:.3g}")
        else:
            if a.column(name).to_pylist() != b.column(name).to_pylist():
                x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
                count = sum(p != q for p, q in zip(x, y, strict=True))
                bad.append(f"{name}:{count}_unequal")
    ok = not bad
    report = (
        f"max_rel={max_rel:.3g} max_abs={max_abs:.3g} rows={a.num_rows} cols={a.num_columns} "
        f"float_cols={floats} worst={worst}"
    )
    if bad:
        report += " bad=" + ",".join(bad[:6]) + (f",+{len(bad) - 6}" if len(bad) > 6 else "")
    return ok, report


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        ok, report = compare(args.a, args.b)
    except Exception as exc:  # a missing or unreadable table is a failure of this check
        print(f"max_rel=nan error={type(exc).__name__}:{str(exc)[:200]!r} FAIL")
        return 1
    print(f"{report} {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_agree(args: argparse.Namespace) -> int:
    """``tsens CMD ARGS`` with ``--dtype float64 --device cpu`` and ``--device DEVICE`` (the
    options it has; without ``--device`` the same command twice), in this process, then the two
    tables (``-o``) and summaries (``--summary``) compared."""
    from tsens.cli import main

    name, cmd, rest = args.name, args.tsens_args[0], args.tsens_args[1:]
    command = main.commands.get(cmd)
    if command is None:
        print(f"agree {name} max_rel=nan FAIL (no command {cmd!r})")
        return 1
    options = {opt for param in command.params for opt in getattr(param, "opts", ())}
    note = ""
    sides = {"a": [], "b": []}
    if "--dtype" in options:
        sides = {k: [*v, "--dtype", "float64"] for k, v in sides.items()}
    if "--device" in options:
        sides["a"] += ["--device", "cpu"]
        sides["b"] += ["--device", args.device]
    else:
        note = " note=no-device-option(same-command-twice)"
    tmp = Path(args.tmp)
    tables = {}
    for side, extra in sides.items():
        out = {"table": tmp / f"{name}.{side}.parquet"}
        argv = [cmd, *rest, *extra, "-o", str(out["table"]), "-q", "--force"]
        if "--summary" in options:
            out["summary"] = tmp / f"{name}.{side}.summary.parquet"
            argv += ["--summary", str(out["summary"])]
        try:
            _run_cli(argv)
        except Exception as exc:
            what = f"run {side}: {' '.join(extra)}: {type(exc).__name__}: {exc}"
            print(f"agree {name} max_rel=nan FAIL ({what})")
            return 1
        tables[side] = out
    ok, lines, worst = True, [], 0.0
    for kind in tables["a"]:
        try:
            good, report = compare(str(tables["a"][kind]), str(tables["b"][kind]))
        except Exception as exc:
            good, report = False, f"max_rel=nan error={type(exc).__name__}:{str(exc)[:200]!r}"
        ok &= good
        rel = float(re.search(r"max_rel=(\S+)", report).group(1))
        worst = rel if math.isnan(rel) or math.isnan(worst) else max(worst, rel)
        lines.append(f"    {kind + ':':8s} {report} {'PASS' if good else 'FAIL'}")
    print(f"agree {name} max_rel={worst:.3g} {'PASS' if ok else 'FAIL'}{note}")
    print("\n".join(lines))
    return 0 if ok else 1


WIDTHS = (3072, 100, 100, 100, 100, 10)


def _write_he_checkpoints(root: Path, count: int) -> list[str]:
    """``bench_gap.write_checkpoints``'s networks without its imports (a fallback where that
    module does not import): He-init weights, biases N(0, 0.1²), cifar10 preprocessing."""
    import torch
    from safetensors.torch import save_file

    paths = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        state = {}
        for k, (fan_in, fan_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True)):
            w = (2 / fan_in) ** 0.5 * torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64)
            state[f"{2 * k}.weight"] = w.float().contiguous()
            state[f"{2 * k}.bias"] = 0.1 * torch.randn(fan_out, generator=g).float()
        run, step = divmod(i, 10)
        path = root / f"run{run}" / f"step={step}.safetensors"
        path.parent.mkdir(exist_ok=True)
        meta = {"run": f"run{run}", "step": str(step), "tsens.preprocess": '{"normalize": "cifar10"}'}
        save_file(state, str(path), metadata=meta)
        paths.append(str(path))
    return paths


def cmd_make_cifar(args: argparse.Namespace) -> int:
    import numpy as np

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_gap import WIDTHS as widths  # imports tests/nets.py
        from bench_gap import write_checkpoints

        source = "bench_gap.write_checkpoints"
    except Exception as exc:  # bench_gap.py being changed, or tests/ absent
        print(f"note: bench_gap does not import ({type(exc).__name__}): writing the networks here")
        widths, write_checkpoints, source = WIDTHS, _write_he_checkpoints, "gpu_check"
    paths = write_checkpoints(root, args.checkpoints)
    for name, n, seed in (("train", args.train, 0), ("test", args.test, 1)):
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        np.savez(root / f"{name}.npz", x=x, y=rng.integers(0, 10, n))
    print(
        f"widths={'-'.join(map(str, widths))} checkpoints={len(paths)} train={args.train} "
        f"test={args.test} networks_from={source}"
    )
    for p in paths:
        print(f"checkpoint={p}")
    return 0


def _run_cli(argv: list[str]) -> float:
    from tsens.cli import main

    start = time.perf_counter()
    try:
        code = main.main(args=argv, prog_name="tsens", standalone_mode=False)
    except SystemExit as exc:  # ctx.exit(...) on an error
        code = exc.code
    took = time.perf_counter() - start
    if code not in (None, 0):
        raise RuntimeError(f"tsens {' '.join(argv[:1])} exited {code}")
    return took


def cmd_speed(args: argparse.Namespace) -> int:
    import torch

    import tsens.cli
    import tsens.commands  # noqa: F401  (imported before timing: the runs time the work)

    argv = [*args.tsens_args, "--device", args.device]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"time device={args.device} error=no-cuda FAIL")
        return 1

    def timed() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        took = _run_cli(argv)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return took

    began = time.perf_counter()
    cold = "-"
    if args.cold:  # a fresh process, as a user runs it: interpreter, imports, CUDA start, data
        done = subprocess.run([sys.executable, "-m", "tsens", *argv], capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            print(f"time device={args.device} error=exit-{done.returncode}:{tail[:300]!r} FAIL")
            return 1
        cold = f"{time.perf_counter() - began:.3f}"
    try:
        warm = [timed() for _ in range(args.warmup)]
        runs = [timed()]
        # Another run only where it fits the budget (a slow CPU then reports one run, not none).
        while len(runs) < args.repeat and time.perf_counter() - began + max(runs) < args.budget:
            runs.append(timed())
    except Exception as exc:
        print(f"time device={args.device} error={type(exc).__name__}:{str(exc)[:200]!r} FAIL")
        return 1
    median = statistics.median(runs)
    warmups = ",".join(f"{t:.3f}" for t in warm) or "-"
    print(
        f"time device={args.device} threads={torch.get_num_threads()} cold={cold} warmup={warmups} "
        f"runs={','.join(f'{t:.3f}' for t in runs)} median={median:.3f}"
    )
    return 0 if math.isfinite(median) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env").set_defaults(fn=cmd_env)
    sub.add_parser("gpu-tests").set_defaults(fn=cmd_gpu_tests)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("agree")
    p.add_argument("name")
    p.add_argument("--device", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("tsens_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_agree)
    p = sub.add_parser("make-cifar")
    p.add_argument("dir")
    p.add_argument("--checkpoints", type=int, default=2)
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--test", type=int, default=2_000)
    p.set_defaults(fn=cmd_make_cifar)
    p = sub.add_parser("speed")
    p.add_argument("--device", required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cold", action="store_true", help="First time one run in a fresh process.")
    p.add_argument("--budget", type=float, default=math.inf, help="Seconds: no timed run past this.")
    p.add_argument("tsens_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_speed)
    args = parser.parse_args()
    if getattr(args, "tsens_args", None) and args.tsens_args[0] == "--":
        args.tsens_args = args.tsens_args[1:]
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
