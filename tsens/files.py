"""Writing output files so that nothing is ever half-written: :func:`atomic_output` writes to a
hidden temporary file next to the target and renames it into place only when the write
finished. An exception (Ctrl-C included) removes the temporary file; a killed process leaves at
most that hidden ``.NAME.partial-PID`` file, never a truncated file at the target path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import TsensError


def partial_name(target: Path) -> Path:
    """The temporary file a write to ``target`` goes to first."""
    return target.with_name(f".{target.name}.partial-{os.getpid()}")


@contextmanager
def atomic_output(path: str | Path, *, what: str = "output", force: bool = False) -> Iterator[BinaryIO]:
    """A binary stream whose bytes reach ``path`` only if the ``with`` block completes.
    Refuses an existing ``path`` unless ``force``, and a directory always; ``what`` names the
    file in messages (``"output 'x.parquet'"``)."""
    target = Path(path)
    if target.is_dir():
        raise TsensError(f"{what} {str(path)!r} is a directory; expected a file path")
    if target.exists() and not force:
        raise TsensError(f"{what} {str(path)!r} exists; pass `force` to overwrite it")
    partial = partial_name(target)
    try:
        with open(partial, "wb") as stream:
            yield stream
        os.replace(partial, target)
    except OSError as exc:
        raise TsensError(f"{what} {str(path)!r}: cannot write ({exc.strerror or exc})") from None
    finally:
        partial.unlink(missing_ok=True)
