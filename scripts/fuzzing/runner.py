"""The case loop: a pool of long-lived worker processes, forked after the heavy imports, runs
the cases. Each worker's address space is capped and its RSS polled against a limit above its
own size when it started, so a claim-driven allocation shows whatever the parent's size; a case
over its time is a hang. A worker that was killed or died is replaced."""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path

import torch

from .cases import Case, Options, Plan
from .encoding import FEATURES, net_state
from .outcomes import Result, run_case
from .payloads import payload_result, take_markers
from .report import Summary

READY_TIMEOUT = 60.0  # seconds a new worker may take to report its size

for _name in ("msgpack", "h5py", "onnx", "pyarrow.parquet", "pyarrow.feather", "PIL.Image", "psutil"):
    with contextlib.suppress(ImportError):  # imported before the workers fork, so cases are fast
        __import__(_name)


def _statm(pid: int | str, resident: bool) -> int:
    """A process's resident or virtual size in bytes (psutil where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1 if resident else 0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        info = psutil.Process(None if pid == "self" else int(pid)).memory_info()
        return int(info.rss if resident else info.vms)


def rss(pid: int | str = "self") -> int:
    """The resident size of a process; 0 once it is gone."""
    try:
        return _statm(pid, resident=True)
    except Exception:
        return 0


def cap_address_space(memory: int) -> None:
    """RLIMIT_AS: this process's current size plus ``memory`` bytes (torch, numpy and pyarrow
    are imported before, so their reservations are in the base)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = _statm("self", resident=False) + memory
    resource.setrlimit(
        resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
    )


def _worker_main(conn: Connection, cwd: str, log: str, memory: int, rlimit: bool) -> None:
    """A worker: reports its resident size once set up, then runs the cases it receives until
    it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.disable()  # a crash is the parent's to report (pytest enables it on its stderr)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["TMPDIR"] = str(Path(log).parent / "tmp")
    tempfile.tempdir = None
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if rlimit and memory:
        cap_address_space(memory)
    conn.send(rss())
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, kind, target, case_dir, cli = message
        conn.send((index, *run_case(kind, target, case_dir, cli).as_tuple()))


class _Worker:
    """A worker process, its directories (case files, an empty working directory, TMPDIR)
    and the case it is running."""

    def __init__(self, slot: int, root: Path, options: Options) -> None:
        self.root = root / f"w{slot}"
        self.case_dir = self.root / "case"
        self.cwd = self.root / "cwd"
        for d in (self.case_dir, self.cwd, self.root / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        memory = options.memory_mb << 20
        args = (child, str(self.cwd), str(self.root / "worker.log"), memory, options.rlimit)
        self.proc = ctx.Process(target=_worker_main, args=args, daemon=True)
        self.proc.start()
        child.close()
        # the limit is the worker's own size plus `memory`: the parent's size (which grows with
        # whatever ran in it before, e.g. other tests) says nothing of the worker's
        self.rss_limit = self._ready() + memory
        self.case: Case | None = None
        self.started = 0.0

    def _ready(self) -> int:
        """The size the worker reports once it is set up."""
        try:
            if self.conn.poll(READY_TIMEOUT):
                return int(self.conn.recv())
        except (EOFError, OSError):
            pass
        self.kill()
        raise RuntimeError(f"a fuzz worker did not start (exit code {self.proc.exitcode}); see {self.root}")

    def submit(self, case: Case, nets: dict[int, Path]) -> None:
        shutil.rmtree(self.case_dir, ignore_errors=True)
        self.case_dir.mkdir(parents=True)
        target = case.write(self.case_dir)
        cli = case.cli_args(target, nets)
        self.case, self.started = case, time.monotonic()
        self.conn.send((case.index, case.seed.kind, str(target), str(self.case_dir), cli))

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()


def cli_nets(root: Path) -> dict[int, Path]:
    """Valid networks for `tsens bound NET --data FILE`, one per input width."""
    from safetensors.torch import save_file

    nets = {}
    for width in (FEATURES, 3072):
        path = root / f"net{width}.safetensors"
        save_file(net_state(inputs=width), str(path))
        nets[width] = path
    return nets


def run_cases(plan: Plan, indices: Sequence[int], options: Options, root: Path) -> Summary:
    """The cases through a pool of workers, with the time, memory and payload checks."""
    summary = Summary()
    nets = cli_nets(root)
    start = time.monotonic()
    torch.set_num_threads(1)
    workers = [_Worker(i, root, options) for i in range(max(options.workers, 1))]
    todo: Iterator[int] = iter(indices)
    done, last_report = 0, time.monotonic()

    def finish(w: _Worker, result: Result) -> None:
        nonlocal done
        assert w.case is not None
        summary.add(w.case, payload_result(result, take_markers(w.cwd)))
        w.case = None
        done += 1

    try:
        while True:
            for w in workers:
                if w.case is None:
                    index = next(todo, None)
                    if index is not None:
                        w.submit(plan.case(index), nets)
            busy = [w for w in workers if w.case is not None]
            if not busy:
                break
            ready = wait([w.conn for w in busy], timeout=0.02)
            now = time.monotonic()
            for i, w in enumerate(workers):
                if w.case is None:
                    continue
                replace = None
                if w.conn in ready:
                    try:
                        _index, *fields = w.conn.recv()
                        finish(w, Result(*fields))
                    except (EOFError, OSError):
                        w.proc.join(5)
                        code = w.proc.exitcode
                        why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                        replace = Result("crash", "worker", f"the worker died ({why})")
                elif now - w.started > options.timeout:
                    replace = Result("hang", "worker", f"no result after {options.timeout:g} s; killed")
                elif rss(w.proc.pid) > w.rss_limit:
                    replace = Result("memory", "worker", f"RSS over {options.memory_mb} MiB; killed")
                if replace is not None:
                    w.kill()
                    finish(w, replace)
                    workers[i] = _Worker(i, root, options)
            if not options.quiet and time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"fuzz: {done} cases, {summary.bad} bad, {last_report - start:.0f} s", file=sys.stderr)
    finally:
        for w in workers:
            w.stop()
    summary.seconds = time.monotonic() - start
    return summary
