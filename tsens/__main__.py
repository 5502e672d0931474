"""``python -m tsens``: the command line, as the ``tsens`` script."""

from .cli import main

main()
