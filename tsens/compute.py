"""Where and how a pass runs: device, dtype, batch size and seed, validated before any work."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import TsensError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
SEED_MAX = 2**63 - 1
"""Largest seed accepted (numpy and torch generators both take 0 ≤ seed ≤ 2⁶³ − 1)."""


@dataclass(frozen=True)
class Compute:
    """Device (``cpu``, ``cuda``, ``cuda:N`` or ``auto``), dtype (``float32``/``float64``), batch
    size and seed. Construction validates everything, so a bad value fails before any work."""

    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise TsensError(f"`dtype` {self.dtype!r}: expected float32 or float64")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise TsensError(f"`batch_size` must be a positive integer, got {self.batch_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX:
            raise TsensError(f"`seed` must be an integer from 0 to 2**63 - 1, got {self.seed!r}")
        self.torch_device  # noqa: B018  (validates the device)

    @property
    def torch_device(self) -> torch.device:
        """The torch device; ``auto`` is CUDA when available, else the CPU."""
        return resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` (N below the device count) or ``auto``; anything else,
    including devices torch knows but tsens does not support (mps, meta, xla), is refused."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise TsensError(f"`device` {name!r}: expected cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise TsensError(f"`device` {name!r}: CUDA is not available here; use cpu or auto")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise TsensError(
            f"`device` {name!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
        )
    return torch.device(text)
