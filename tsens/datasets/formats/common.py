"""What every data file reader shares: the types a reader returns and reading a file's first
bytes (for the magic-number checks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import TsensError
from ..lazy import LazyArray

Samples = np.ndarray | LazyArray
Arrays = tuple[Samples, np.ndarray | None]
Reader = Callable[[Path], Arrays]


def first_bytes(path: Path, size: int = 8) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer when it is shorter), or a one-line refusal."""
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError as exc:
        raise TsensError(f"{path}: cannot read ({exc.strerror or exc})") from None
