"""``python -m tsens`` and the ``tsens`` command: the command line, with Ctrl-C ending it in one
line and exit code 130 from the first moment (while the command line itself is still being
imported, nothing is written yet, so the process may simply end there)."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"tsens: interrupted\n")
    os._exit(130)


def main() -> None:
    """Import the command line under a Ctrl-C handler that ends at once, then run it with
    Python's own (a KeyboardInterrupt the command line turns into one line and 130)."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    from tsens.cli import main as cli

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(cli())
    except KeyboardInterrupt:
        # Raised again while the command line was already ending on Ctrl-C (it said so): end
        # with its code, not by the signal.
        os._exit(130)


if __name__ == "__main__":
    main()
