"""Peak resident memory of every per-sample command on a data set larger than memory should need.

Setup (issue: data larger than memory): a float32 data set of 350,000 × 3072 inputs (4.3 GB;
N(0, 1) values, labels 0..9) written once under ``--dir`` as

* ``data.npy``: the inputs alone (memory-mapped by tsens; commands that need labels get them
  from ``data.npz``),
* ``data.npz``: inputs and labels, stored uncompressed (``np.savez``'s layout; the inputs
  member is memory-mapped inside the archive),
* ``data.parquet``: a fixed-size list column ``x`` and ``label``, row groups of 10,000 rows,
  no compression, no dictionary (random floats do not compress),

plus one checkpoint 3072-100-100-100-100-10 (He-init weights, as ``bench_gap.py`` builds them;
safetensors, no recorded preprocessing). Each command runs in its own process on each format
(``--normalize standard``, so the statistics pass over the whole set is part of it), writes its
table with ``-o`` and is measured: wall time, and peak resident memory — the kernel's high-water
mark of the child (``ru_maxrss`` from ``wait4``, file-backed pages of memory maps included)
and, as a check, psutil's RSS of the child's process tree polled every 20 ms.

Usage: python bench/bench_memory.py [--dir /tmp/tsens-bench-memory] [--rows 350000]
       [--formats npy,npz,parquet] [--commands bound,jacobian,...] [--limit-slow N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import random_network  # noqa: E402

WIDTHS = (3072, 100, 100, 100, 100, 10)
CHUNK = 10_000  # rows generated (and one Parquet row group) at a time
BAR_MB = 1500
COMMANDS = ("bound", "jacobian", "activations", "regions", "estimate-gap", "transitions")
MEASURES = {
    "bound": "data-free bounds; with --data the active-count Gaussian fit and the measured ‖T‖, ‖J‖ "
    "(exact tangent, sum reading)",
    "jacobian": "jacobian, tangent (defaults: exact closed forms, --tangent sum); with labels also loss, "
    "correct and the true class's ‖J_y‖",
    "activations": "active units per layer and in total (counts)",
    "regions": "region id, log membership (preact), exact boundary distance and its layer, path score, ‖T‖",
    "estimate-gap": "every estimator (naive, layer-norm, kummer, membership, jacobian, confidence, doc, atc; "
    "disagreement, mean-gap, calibrated fall back: one run)",
    "transitions": "20 ellipses through the data, exact transition counts",
}


# ---------------------------------------------------------------------- writing the data


def _chunks(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        yield rng.standard_normal((n, WIDTHS[0]), dtype=np.float32), rng.integers(0, 10, n)


def _npy_header(rows: int) -> bytes:
    """The .npy header (magic included) of a C-ordered rows × 3072 float32 array."""
    import io

    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(np.float32))
    np.lib.format.write_array_header_2_0(
        buf, {"descr": descr, "fortran_order": False, "shape": (rows, WIDTHS[0])}
    )
    return buf.getvalue()


def write_data(root: Path, rows: int, formats: list[str]) -> dict[str, Path]:
    """The data files (reused when a finished set of the same size is there)."""
    stamp = root / "data.json"
    paths = {f: root / f"data.{f}" for f in ("npy", "npz", "parquet")}
    if stamp.exists() and json.loads(stamp.read_text()) == {"rows": rows, "formats": formats}:
        return paths
    root.mkdir(parents=True, exist_ok=True)
    for p in paths.values():
        p.unlink(missing_ok=True)
    start = time.perf_counter()
    schema = pa.schema([("x", pa.list_(pa.float32(), WIDTHS[0])), ("label", pa.int64())])
    npy = paths["npy"].open("wb") if "npy" in formats else None
    zf = zipfile.ZipFile(paths["npz"], "w", zipfile.ZIP_STORED, allowZip64=True) if "npz" in formats else None
    member = zf.open("x.npy", "w", force_zip64=True) if zf else None
    writer = (
        pq.ParquetWriter(paths["parquet"], schema, compression="none", use_dictionary=False)
        if "parquet" in formats
        else None
    )
    labels = []
    for sink in (npy, member):
        if sink:
            sink.write(_npy_header(rows))
    for x, y in _chunks(rows):
        for sink in (npy, member):
            if sink:
                sink.write(x.tobytes())
        if writer:
            column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), WIDTHS[0])
            writer.write_table(pa.table({"x": column, "label": y}, schema=schema), row_group_size=CHUNK)
        labels.append(y)
    if npy:
        npy.close()
    if member and zf:
        member.close()
        with zf.open("y.npy", "w") as f:
            np.lib.format.write_array(f, np.concatenate(labels))
        zf.close()
    if writer:
        writer.close()
    stamp.write_text(json.dumps({"rows": rows, "formats": formats}))
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e9:.2f} GB" for p in paths.values() if p.exists())
    print(f"wrote {rows:,} × {WIDTHS[0]} float32 in {time.perf_counter() - start:.0f} s: {sizes}")
    return paths


def write_checkpoint(root: Path) -> Path:
    net = random_network(WIDTHS, seed=0, scale=2**0.5)  # N(0, 2/fan_in): He init
    g = torch.Generator().manual_seed(10_000)
    layers = tuple(
        type(layer)(layer.weight, 0.1 * torch.randn(layer.out_features, generator=g, dtype=torch.float64))
        for layer in net.layers
    )
    net = type(net)(layers, net.activation)
    state = {k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}
    path = root / "net" / "step=0.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"run": "bench", "step": "0"})
    return path


# ---------------------------------------------------------------------- measuring


_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, file=sys.stderr)
"""


def run_measured(argv: list[str]) -> tuple[int, float, float, float, str]:
    """Exit status, wall seconds, peak RSS (MB) and psutil's polled RSS (MB) of the command, and
    the tail of its stderr.

    The peak is the kernel's high-water mark (``ru_maxrss``) of the command's process, read with
    ``wait4`` by a small launcher process: a child forked from this (large) process would
    inherit its resident pages into the mark before ``exec``; forked from the launcher it
    inherits the launcher's (about 10 MB), which makes the mark conservative by that much. The
    polled figure sums the RSS of the launcher's process tree every 20 ms."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", _LAUNCHER, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    polled = [0]
    done = threading.Event()

    def poll() -> None:
        try:
            launcher = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                children = launcher.children(recursive=True)
                polled[0] = max(polled[0], sum(p.memory_info().rss for p in children))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    thread.join()
    lines = err.decode(errors="replace").strip().splitlines()
    rc, maxrss_kb = (int(v) for v in lines[-1].split())
    return rc, wall, maxrss_kb / 1024, polled[0] / 2**20, " | ".join(lines[-4:-1])


def command_line(cmd: str, ckpt: Path, data: Path, labelled: Path, out: Path, limit: int | None) -> list[str]:
    tsens = [sys.executable, "-m", "tsens", cmd, str(ckpt)]
    common = ["--normalize", "standard", "-o", str(out), "--force", "-q"]
    if limit is not None:
        common += ["--limit", str(limit)]
    if cmd == "estimate-gap":
        return [*tsens, "--train", str(labelled), "--test", str(data), *common]
    extra = ["--count", "20"] if cmd == "transitions" else []
    return [*tsens, "--data", str(data), *extra, *common]


def measured_row(label: str, what: str, argv: list[str], out: Path, limit: int | None = None) -> dict:
    """Run ``argv`` measured, print its table row and return it (with the output's columns)."""
    out.unlink(missing_ok=True)
    rc, wall, peak, polled, tail = run_measured(argv)
    rows, columns = 0, []
    if rc == 0 and out.exists():
        rows, columns = pq.read_metadata(out).num_rows, pq.read_schema(out).names
    ok = "yes" if rc == 0 and peak < BAR_MB else "NO"
    note = "" if rc == 0 else f"  exit {rc}: {tail}"
    name = what + (f" (--limit {limit})" if limit else "")
    print(f"{label:<8} {name:<13} {rows:>9,} {wall:>8.1f} {peak:>12.0f} {polled:>9.0f}  {ok}{note}")
    sys.stdout.flush()
    out.unlink(missing_ok=True)
    return {"format": label, "command": what, "rows": rows, "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak), "polled_rss_mb": round(polled), "exit": rc, "limit": limit,
            "columns": columns, "load_average": os.getloadavg()[0]}  # fmt: skip


def gap_case(root: Path) -> dict:
    """``bench_gap.py``'s setup through the command line: 50 checkpoints, 50,000 + 10,000 uint8
    inputs (.npz, read whole), cifar10 normalization; the input cache keeps both sets'
    preprocessed batches (about 740 MB) for the 50 passes."""
    import bench_gap

    gap = root / "gap"
    shutil.rmtree(gap, ignore_errors=True)
    gap.mkdir(parents=True)
    paths = bench_gap.write_checkpoints(gap, 50)
    train = bench_gap.write_data(gap, 50_000, "train", 0)
    test = bench_gap.write_data(gap, 10_000, "test", 1)
    out = gap / "out.parquet"
    argv = [sys.executable, "-m", "tsens", "estimate-gap", *paths, "--train", train, "--test", test,
            "-o", str(out), "--force", "-q"]  # fmt: skip
    try:
        return measured_row("gap", "estimate-gap", argv, out)
    finally:
        shutil.rmtree(gap, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/tsens-bench-memory"))
    parser.add_argument("--rows", type=int, default=350_000)
    parser.add_argument("--formats", default="npy,npz,parquet")
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument(
        "--limit-slow", type=int, default=None, metavar="N", help="Run regions and transitions on --limit N."
    )
    parser.add_argument(
        "--gap", action="store_true", help="Also bench_gap.py's case (50 checkpoints, 60,000 cached inputs)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the data files for the next run.")
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    root = args.dir
    paths = write_data(root, args.rows, formats) if formats and commands else {}
    ckpt = write_checkpoint(root)
    print(
        f"{args.rows:,} × {WIDTHS[0]} float32 inputs ({args.rows * WIDTHS[0] * 4 / 1e9:.2f} GB per file), "
        f"checkpoint {'-'.join(map(str, WIDTHS))}, {os.cpu_count()} CPUs, bar {BAR_MB} MB, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    header = f"{'format':<8} {'command':<13} {'rows':>9} {'wall s':>8} {'peak RSS MB':>12} {'(polled)':>9}"
    print(header + "  <1.5 GB")
    print("-" * (len(header) + 9))
    results = []
    try:
        for fmt in formats:
            data = paths[fmt]
            labelled = paths["npz"] if fmt == "npy" and "npz" in formats else data
            for cmd in commands:
                if cmd == "estimate-gap" and fmt == "npy" and labelled == data:
                    continue  # no labels in a .npy
                limit = args.limit_slow if cmd in ("regions", "transitions") else None
                out = root / f"out-{fmt}-{cmd}.parquet"
                argv = command_line(cmd, ckpt, data, labelled, out, limit)
                results.append(measured_row(fmt, cmd, argv, out, limit))
        if args.gap:
            results.append(gap_case(root))
    finally:
        (root / "results.json").write_text(json.dumps(results, indent=1))
        if not args.keep:
            for p in [*paths.values(), root / "data.json"]:
                p.unlink(missing_ok=True)
            shutil.rmtree(root / "net", ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work on this machine slows the runs)")
    print("\nmeasures computed:")
    for cmd in commands:
        print(f"  {cmd}: {MEASURES[cmd]}")
    print(f"results (with each table's columns): {root / 'results.json'}")


if __name__ == "__main__":
    main()
