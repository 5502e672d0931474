"""Optional extras: importing a package that only some features need, or one clear line.

Each extra of ``pyproject.toml`` (``tsens[plot]``, ``tsens[flax]``, ``tsens[keras]``,
``tsens[onnx]``, ...) names the packages one feature needs; :func:`require` imports one of them
or raises a one-line :class:`~tsens.errors.TsensError` saying which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import TsensError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a TsensError: "<purpose> needs <package>: pip install 'tsens[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".", 1)[0]
        raise TsensError(f"{purpose} needs the {package} package: pip install 'tsens[{extra}]'") from None
