"""The fuzz harness behind ``scripts/fuzz.py`` (documented there): ``seeds``, ``generated``
and ``payloads`` make the valid inputs, ``mutators`` change them, ``cases`` plans a run,
``outcomes`` classifies one case, ``runner`` runs them in workers with limits, ``report``
counts and saves them, ``command`` is the command line."""

from .cases import DEFAULT_SAVE_DIR, Case, Options, Plan, all_seeds, select
from .command import fuzz, main, replay
from .outcomes import BAD, OUTCOMES, Result, cli_outcome, run_case
from .payloads import MARKER, PAYLOADS
from .report import Failure, Summary, save_failures
from .runner import run_cases
from .seeds import CHECKPOINT, DATA, EXTERNAL, Seed, SeedFile, external_seeds, structure_of

__all__ = [
    "BAD",
    "CHECKPOINT",
    "DATA",
    "DEFAULT_SAVE_DIR",
    "EXTERNAL",
    "MARKER",
    "OUTCOMES",
    "PAYLOADS",
    "Case",
    "Failure",
    "Options",
    "Plan",
    "Result",
    "Seed",
    "SeedFile",
    "Summary",
    "all_seeds",
    "cli_outcome",
    "external_seeds",
    "fuzz",
    "main",
    "replay",
    "run_case",
    "run_cases",
    "save_failures",
    "select",
    "structure_of",
]
