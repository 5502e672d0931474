"""The command class every ``tsens`` subcommand uses: library messages name library
parameters in backticks; this rewrites them into the options that set them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from ..errors import TsensError


def option_names(command: click.Command | None) -> dict[str, str]:
    """Parameter name → how the user typed it: the longest option (``--batch-size``), or the
    argument's metavar (``CHECKPOINTS``), and the command's ``aliases`` (library parameters it
    sets from an option of another name)."""
    if command is None:
        return {}
    names = {}
    for param in command.params:
        if param.name is None:
            continue
        if isinstance(param, click.Option):
            names[param.name] = max(param.opts, key=len)
        else:
            names[param.name] = param.name.upper()
    names.update(getattr(command, "aliases", {}))
    return names


class TsensCommand(click.Command):
    """A click command whose user errors name its options (``--batch-size``), not the
    library's parameters (`batch_size`)."""

    def __init__(self, *args: Any, aliases: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = dict(aliases or {})

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TsensError as exc:
            if ctx.meta.get("tsens.debug"):
                raise
            raise exc.for_options(option_names(self)) from None


def command(name: str | None = None, **kwargs: Any) -> Any:
    """``click.command`` with :class:`TsensCommand` (``aliases=`` maps library parameters to
    the options that set them)."""
    return click.command(name, cls=TsensCommand, **kwargs)
