"""The command line (``scripts/fuzz.py``): a run of ``--cases`` cases with a table per format,
the list of formats, or one case replayed in this process with its traceback."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .cases import DEFAULT_SAVE_DIR, Options, Plan, all_seeds, select
from .outcomes import BAD, Result, run_case
from .payloads import payload_result, take_markers
from .report import Summary, save_failures
from .runner import cap_address_space, cli_nets, run_cases
from .seeds import EXTERNAL

DESCRIPTION = (
    "Fuzzing tsens's file readers: valid files of every format, mutated, through the library and"
    " the command line (see the docstring of scripts/fuzz.py)."
)


def fuzz(options: Options) -> Summary:
    """Run ``options.cases`` cases; bad ones are saved under ``options.save_dir``."""
    plan = Plan.of(options)
    with tempfile.TemporaryDirectory(prefix="tsens-fuzz-") as tmp:
        summary = run_cases(plan, range(options.cases), options, Path(tmp))
    if summary.failures:
        save_failures(summary, options)
    return summary


def replay(options: Options, index: int) -> Result:
    """Case ``index`` again, in this process (with the address-space cap, no time limit),
    printed in full."""
    case = Plan.of(options).case(index)
    print(f"case {index} [{case.seed.fmt}] seed {case.seed.name}: {case.mutation}")
    with tempfile.TemporaryDirectory(prefix="tsens-replay-") as tmp:
        root = Path(tmp)
        case_dir, cwd = root / "case", root / "cwd"
        case_dir.mkdir()
        cwd.mkdir()
        target = case.write(case_dir)
        cli = case.cli_args(target, cli_nets(root)) if case.cli else None
        old = os.getcwd()
        os.chdir(cwd)
        if options.rlimit and options.memory_mb:
            cap_address_space(options.memory_mb << 20)
        try:
            result = run_case(case.seed.kind, str(target), str(case_dir), cli)
        finally:
            os.chdir(old)
        result = payload_result(result, take_markers(cwd))
    print(f"{result.outcome} in {result.step}: {result.message}")
    if result.trace:
        print(result.trace)
    return result


def _options(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument(
        "--formats", default="", help="comma-separated formats (see --list-formats); default all"
    )
    parser.add_argument(
        "--workers", type=int, default=Options.workers, help="worker processes (default: CPUs)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case (default 10)")
    parser.add_argument(
        "--memory-mb", type=int, default=512, help="memory per case beyond the imports, MiB (default 512)"
    )
    parser.add_argument("--no-rlimit", action="store_true", help="poll RSS only, no RLIMIT_AS cap")
    parser.add_argument(
        "--cli-every", type=int, default=10, help="every Nth case also through the CLI (0: never)"
    )
    parser.add_argument(
        "--save-dir", type=Path, default=DEFAULT_SAVE_DIR, help="where bad cases go (build/fuzz)"
    )
    parser.add_argument("--no-external", action="store_true", help="only the generated seeds")
    parser.add_argument("--replay", type=int, metavar="N", help="run case N again here, verbosely")
    parser.add_argument("--list-formats", action="store_true", help="list the formats and their seeds")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    options = Options(
        seed=args.seed,
        cases=args.cases,
        formats=tuple(f for f in args.formats.split(",") if f),
        workers=args.workers,
        timeout=args.timeout,
        memory_mb=args.memory_mb,
        rlimit=not args.no_rlimit,
        cli_every=args.cli_every,
        save_dir=args.save_dir,
        external=None if args.no_external else EXTERNAL,
        quiet=args.quiet,
    )
    return options, args


def main(argv: Sequence[str] | None = None) -> int:
    options, args = _options(argv)
    if args.list_formats:
        seeds = select(all_seeds(options.external), options.formats)
        for fmt in sorted({s.fmt for s in seeds}):
            print(f"{fmt}: {', '.join(s.name for s in seeds if s.fmt == fmt)}")
        return 0
    if args.replay is not None:
        return int(replay(options, args.replay).outcome in BAD)
    summary = fuzz(options)
    print(summary.table())
    rate = sum(summary.total.values()) / max(summary.seconds, 1e-9)
    cases = sum(summary.total.values())
    print(f"{cases} cases in {summary.seconds:.0f} s ({rate:.0f}/s), seed {options.seed}: ", end="")
    if summary.failures:
        print(f"{summary.bad} bad; see {Path(options.save_dir) / 'report.txt'}")
        return 1
    print("no bad outcome")
    return 0
