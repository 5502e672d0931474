"""One case in this process: the entry points (``load_network`` and ``read_metadata``, or
``load_dataset``; then ``tsens info``/``tsens bound`` under click's CliRunner) on the case's
files, each classified as ok, refused (one line naming the file), or bad: a traceback, a bad
message, a failed allocation. The worker adds hang, crash, memory and payload."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tsens.checkpoints
import tsens.cli
import tsens.datasets
from tsens.errors import TsensError

from .seeds import CHECKPOINT

OUTCOMES = ("ok", "refused", "traceback", "badmsg", "memory", "hang", "crash", "payload")
BAD = frozenset(OUTCOMES[2:])
_RANK = {o: i for i, o in enumerate(OUTCOMES)}

_ALLOC_WORDS = (
    "can't allocate memory", "unable to allocate", "bad_alloc", "out of memory", "not enough memory",
    "memoryerror", "cannot allocate memory", "allocation failed", "failed to allocate",
)  # fmt: skip


def _memory_error(exc: BaseException | None) -> BaseException | None:
    """The first MemoryError or failed allocation in ``exc``'s chain (a reader that turned one
    into a TsensError still counts)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not e for e in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    found = [e for e in chain if isinstance(e, MemoryError)]
    found += [e for e in chain if _says_allocation(str(e))]
    return found[0] if found else None


def _says_allocation(text: str) -> bool:
    return any(w in text.lower() for w in _ALLOC_WORDS)


@dataclass
class Result:
    """An outcome (one of OUTCOMES), the step it happened in, its message and traceback."""

    outcome: str
    step: str = ""
    message: str = ""
    trace: str = ""

    def as_tuple(self) -> tuple[str, str, str, str]:
        return self.outcome, self.step, self.message, self.trace


def _attempt(step: str, call: Callable[[], object], prefix: str) -> Result:
    try:
        call()
    except TsensError as e:
        message = str(e)
        memory = _memory_error(e)
        if memory is not None:
            if memory is not e:  # the reader turned a failed allocation into a refusal
                message += f" [after {type(memory).__name__}: {str(memory)[:300]}]"
            return Result("memory", step, message, "".join(traceback.format_exception(memory)))
        if "\n" in message.strip() or not message.startswith(prefix):
            return Result("badmsg", step, message)
        return Result("refused", step, message)
    except BaseException as e:  # noqa: BLE001 - every other exception is what we look for
        if isinstance(e, KeyboardInterrupt):
            raise
        return _raised(step, e, "".join(traceback.format_exception(e)))
    return Result("ok", step)


def _raised(step: str, exc: BaseException, trace: str) -> Result:
    """A foreign exception: ``memory`` if an allocation failed in its chain, else ``traceback``."""
    outcome = "memory" if _memory_error(exc) is not None else "traceback"
    return Result(outcome, step, f"{type(exc).__name__}: {exc}"[:2000], trace)


def cli_outcome(args: list[str]) -> Result:
    """``tsens ARGS`` under click's CliRunner: exit 0, or exit 2 with one ``tsens: error:`` line."""
    from click.testing import CliRunner

    step = "tsens " + " ".join(a if "/" not in a else Path(a).name for a in args)
    result = CliRunner().invoke(tsens.cli.main, args)
    err, out = result.stderr, result.stdout
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else repr(exc)
        return _raised(step, exc, trace)
    if result.exit_code not in (0, 2) or "Traceback" in err or "Traceback" in out:
        return Result("traceback", step, f"exit {result.exit_code}: {err.strip()[-2000:]}", err + out)
    if result.exit_code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("tsens: error: ")]
        if _says_allocation(err):
            return Result("memory", step, err.strip()[-2000:])
        if len(errors) != 1 or lines[-1] != errors[0]:
            return Result("badmsg", step, err.strip()[-2000:])
        return Result("refused", step, errors[0])
    return Result("ok", step)


def run_case(kind: str, target: str, case_dir: str, cli: list[str] | None) -> Result:
    """The entry points on one case's files: the worst outcome, and where it happened."""
    path = Path(target)
    prefix = case_dir
    if kind == CHECKPOINT:
        steps = [
            ("load_network", lambda: tsens.checkpoints.load_network(path)),
            ("read_metadata", lambda: tsens.checkpoints.read_metadata(path)),
        ]
    else:

        def load_and_read() -> None:
            data = tsens.datasets.load_dataset(str(path))
            for _ in data.batches(3):  # lazy readers decode as the batches come
                pass

        steps = [("load_dataset", load_and_read)]
    worst = Result("ok", steps[0][0])
    for step, call in steps:
        result = _attempt(step, call, prefix)
        if _RANK[result.outcome] > _RANK[worst.outcome]:
            worst = result
        if result.outcome in BAD:
            return worst
    if cli:
        result = cli_outcome(cli)
        if _RANK[result.outcome] > _RANK[worst.outcome] or result.outcome in BAD:
            worst = result
    return worst
