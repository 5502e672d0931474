"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-line message and exit code 2; library callers can catch it.
"""

from __future__ import annotations


class TsensError(Exception):
    """Bad input or usage. The message names the file, key or option and what was expected."""


class ThresholdExceeded(Exception):
    """A ``--fail-above``/``--fail-below`` gate was crossed (CLI exit code 1)."""
