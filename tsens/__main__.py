"""``python -m tsens`` runs the command line."""

from .cli import main

main()
