"""The ``tsens`` command line: decodes options into one library call, renders what it returns.

User errors (:class:`tsens.errors.TsensError`, and click's usage errors) end in one line on
stderr and exit code 2; ``--debug`` (anywhere on the command line) shows the traceback. Exit
code 1 is reserved for ``--fail-above/--fail-below``; Ctrl-C ends a command with one line and
130; a reader that closes the pipe early (``| head``) ends it quietly with 141, the shell's code
for SIGPIPE. Warnings are shown once per cause when the command ends (not after a user
error, which is one line). Nothing heavy is
imported until a command runs, so ``tsens --help`` answers at once.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click

from ..errors import Note, ThresholdExceeded, TsensError
from ..version import __version__
from . import render
from .activations import activations
from .bound import bound
from .command import option_names
from .datasets import datasets
from .estimate_gap import estimate_gap_command
from .info import info
from .jacobian import jacobian
from .options import debug_option
from .regions import regions
from .transitions import transitions

INTERRUPTED = 130
BROKEN_PIPE = 141


class _Group(click.Group):
    """A click group that turns user errors into one-line messages with exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        gathered = render.Warnings()

        def show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            command = click.get_current_context(silent=True)
            names = option_names(command.command) if command else {}
            gathered.add(str(TsensError(str(message)).for_options(names)), issubclass(category, Note))

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = show_warning
                try:
                    return super().invoke(ctx)
                except (TsensError, click.UsageError):
                    gathered.clear()  # a user error is one line: what it stopped is moot
                    raise
                finally:
                    gathered.flush()
        except TsensError as exc:
            if ctx.meta.get("tsens.debug"):
                raise
            render.error("tsens: error: ", str(exc))
            ctx.exit(2)
        except click.UsageError as exc:
            if ctx.meta.get("tsens.debug"):
                raise
            where = exc.ctx.command_path if exc.ctx is not None else "tsens"
            render.error("tsens: error: ", f"{exc.format_message()} (see {where} --help)")
            ctx.exit(2)
        except ThresholdExceeded as exc:
            render.error("tsens: threshold crossed: ", str(exc))
            ctx.exit(1)
        except KeyboardInterrupt:
            if ctx.meta.get("tsens.debug"):
                raise
            render.error("tsens: interrupted", "")
            ctx.exit(INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (| head): silence the interpreter's last flush of stdout.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(BROKEN_PIPE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tsens")
@debug_option
def main() -> None:
    """Sensitivity, activation regions and generalization estimates of trained ReLU MLPs,
    from checkpoints and unlabeled data. Tables go to -o (or stdout with -o -) and --summary;
    summaries to stderr."""


for _command in (info, datasets, bound, jacobian, activations, regions, transitions, estimate_gap_command):
    main.add_command(_command)
