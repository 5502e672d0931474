"""The one exception type that means "the user gave us something we cannot use", and the
warning categories the library raises.

Library messages name library parameters in backticks (```batch_size` must be at least 1``);
the command line rewrites each backticked name into the option that sets it (``--batch-size``),
so a notebook user and a shell user each read the name they typed. The CLI turns a
:class:`TsensError` into one line on stderr and exit code 2; library callers can catch it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PARAM = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (a library's may run over several), at most
    ``limit`` characters; the exception's type name when the message is empty."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class TsensError(Exception):
    """Bad input or usage. The message names the file, key or parameter and what was expected."""

    def for_options(self, options: Mapping[str, str]) -> TsensError:
        """The same error with every backticked parameter name replaced by its command-line
        option (``options`` maps parameter names to options); unknown names lose the backticks."""
        text = _PARAM.sub(lambda m: options.get(m.group(1), m.group(1)), str(self))
        return TsensError(text)


class ThresholdExceeded(Exception):
    """A ``--fail-above``/``--fail-below`` gate was crossed (CLI exit code 1)."""


class Note(UserWarning):
    """Something the user should know that is not a problem (e.g. a limit larger than the set)."""


class OverflowWarning(UserWarning):
    """A measure came out inf or NaN in the working dtype (float64 may help)."""
