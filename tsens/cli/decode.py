"""Turning a command's parsed options, once, into the library call's arguments: a
:class:`tsens.commands.Setup` (checkpoint loading, preprocessing, compute, executor) and the
command's progress reporter. The library is imported here, when a command runs, never when the
command line starts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import render

PREPROCESS_OPTIONS = ("normalize", "mean", "std", "crop")


def setup(params: Mapping[str, Any]) -> Any:
    """The :class:`~tsens.commands.Setup` the options describe, validated before any work."""
    from ..commands import Setup
    from ..compute import Compute
    from ..datasets import Preprocess

    preprocess = None
    if any(params.get(k) is not None for k in PREPROCESS_OPTIONS):
        preprocess = Preprocess(params["normalize"] or "none", params["mean"], params["std"], params["crop"])
    layers = params.get("layers")
    return Setup(
        activation=params.get("activation"),
        layers=tuple(p.strip() for p in layers.split(",")) if layers else None,
        run_pattern=params.get("run_pattern"),
        preprocess=preprocess,
        data_root=params.get("data_root"),
        limit=params.get("limit"),
        compute=Compute(
            params.get("device", "cpu"),
            params.get("dtype", "float32"),
            params.get("batch_size", 1024),
            params.get("seed", 0),
        ),
        executor=params.get("executor", "local"),
        ray_address=params.get("ray_address"),
    )


def progress(params: Mapping[str, Any], show: render.Show | None = None) -> render.TerminalProgress:
    """What the command reports as it runs: progress on a terminal, and each checkpoint's
    summary through ``show`` (nothing with ``-q``)."""
    return render.TerminalProgress(bool(params.get("quiet")), show)


def call(
    run: Callable[..., Any],
    params: Mapping[str, Any],
    args: Sequence[str],
    options: Sequence[str] = (),
    show: render.Show | None = None,
    **given: Any,
) -> Any:
    """The command's one library call: ``run`` with the parameters named by ``args`` (in order)
    and ``options`` (by name), ``given`` values, and the setup and progress the options describe."""
    return run(
        *(params[a] for a in args),
        **{k: params[k] for k in options},
        **given,
        setup=setup(params),
        progress=progress(params, show),
    )
