"""Counting the outcomes (a table per format), and saving the bad cases: each one's input
files under ``--save-dir``/failures/, and ``report.txt`` with its mutation, message, traceback
and the command that replays it."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cases import Case, Options
from .outcomes import BAD, OUTCOMES, Result


@dataclass
class Failure:
    """A bad case and what happened."""

    case: Case
    result: Result


@dataclass
class Summary:
    """Counts per format and outcome, and the bad cases."""

    counts: dict[str, Counter] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, case: Case, result: Result) -> None:
        self.counts.setdefault(case.seed.fmt, Counter())[result.outcome] += 1
        if result.outcome in BAD:
            self.failures.append(Failure(case, result))

    @property
    def total(self) -> Counter:
        total: Counter = Counter()
        for c in self.counts.values():
            total.update(c)
        return total

    @property
    def bad(self) -> int:
        return sum(n for o, n in self.total.items() if o in BAD)

    def table(self) -> str:
        width = max([len("format"), *(len(f) for f in self.counts)]) + 2

        def row(name: str, cells: Sequence[object]) -> str:
            return name.ljust(width) + "".join(str(cell).rjust(10) for cell in cells)

        def counts(c: Counter) -> list[int]:
            return [sum(c.values()), *(c[o] for o in OUTCOMES)]

        head = row("format", ("cases", *OUTCOMES))
        rule = "-" * len(head)
        rows = [row(fmt, counts(self.counts[fmt])) for fmt in sorted(self.counts)]
        return "\n".join([head, rule, *rows, rule, row("total", counts(self.total))])


def replay_command(options: Options, index: int) -> str:
    """The command line that runs case ``index`` of this run again."""
    formats = f" --formats {','.join(options.formats)}" if options.formats else ""
    return f"python scripts/fuzz.py --seed {options.seed}{formats} --replay {index}"


def save_failures(summary: Summary, options: Options) -> Path:
    """Each bad case's files under save_dir/failures/<index>/ and a report.txt."""
    out = Path(options.save_dir)
    shutil.rmtree(out / "failures", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for f in summary.failures:
        c, r = f.case, f.result
        where = out / "failures" / f"{c.index:06d}-{c.seed.fmt.replace('/', '_')}"
        where.mkdir(parents=True, exist_ok=True)
        c.write(where)
        lines += [
            f"=== case {c.index} [{c.seed.fmt}] {r.outcome} in {r.step}",
            f"seed: {c.seed.name} (target {c.seed.target})",
            f"mutation: {c.mutation}",
            f"input: {where}",
            f"replay: {replay_command(options, c.index)}",
            f"message: {r.message}",
            r.trace.rstrip(),
            "",
        ]
    report = out / "report.txt"
    report.write_text("\n".join(lines) if lines else "no bad cases\n")
    return report
