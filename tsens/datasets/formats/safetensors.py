"""``.safetensors`` data files: tensor ``x`` holds the inputs, read by slices through
``safe_open`` (:class:`~..lazy.SafetensorsSource`), and the optional tensor ``y`` the labels,
read whole; bfloat16 comes out as float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ...errors import TsensError
from ..lazy import LazyArray, SafetensorsSource
from .common import Arrays


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def read_safetensors(path: Path) -> Arrays:
    """Tensors ``x`` (inputs, read by slices) and optional ``y`` (labels) of a .safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if "x" not in keys:
                raise TsensError(f"{path}: no tensor 'x' (inputs); found {keys}")
            y = _to_numpy(f.get_tensor("y")) if "y" in keys else None
            if not f.get_slice("x").get_shape():
                return _to_numpy(f.get_tensor("x")), y
        return LazyArray(SafetensorsSource(path, "x")), y
    except TsensError:
        raise
    except Exception as exc:  # safetensors raises its own (non-exported) error type
        raise TsensError(f"{path}: cannot read .safetensors ({exc})") from None
