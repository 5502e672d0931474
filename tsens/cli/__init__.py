"""The ``tsens`` command line: parses options, calls the library, renders results.

User errors (:class:`tsens.errors.TsensError`) end in one line on stderr and exit code 2;
``--debug`` shows the traceback. Exit code 1 is reserved for ``--fail-above/--fail-below``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import click

from .. import __version__
from ..errors import ThresholdExceeded, TsensError
from . import render
from .activations import activations
from .bound import bound
from .datasets import datasets
from .info import info
from .jacobian import jacobian
from .regions import regions


class _Group(click.Group):
    """A click group that turns user errors into one-line messages with exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:] or bool(ctx.params.get("debug"))
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except TsensError as exc:
            if debug:
                raise
            render.error("tsens: error: ", str(exc))
            ctx.exit(2)
        except ThresholdExceeded as exc:
            render.error("tsens: threshold crossed: ", str(exc))
            ctx.exit(1)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    render.warn(str(message))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tsens")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """Sensitivity, activation regions and generalization estimates of trained ReLU MLPs,
    from checkpoints and unlabeled data. Tables go to -o (or stdout with -o -); summaries to
    stderr."""


for _command in (info, datasets, bound, jacobian, activations, regions):
    main.add_command(_command)
