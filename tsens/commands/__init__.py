"""Every ``tsens`` command as one library call over one checkpoint or many.

Each call plans the checkpoints into runs ordered by step (:mod:`.setup`), refuses what cannot
work before any work, loads one network at a time inside its per-checkpoint job (:mod:`.jobs`),
runs the jobs here or on a Ray cluster (:mod:`.runner`, :class:`Setup`'s ``executor``) and
returns a :class:`CommandResult` (:mod:`.result`): the table ``-o`` writes and the table
``--summary`` writes, in checkpoint order, with provenance. The command line decodes its
options into one :class:`Setup` and one of these calls, and renders what it returns::

    from tsens import commands
    result = commands.jacobian("sample_checkpoints/digits-64-32-10/*.safetensors", "digits-test")
    result.table.to_pandas()        # what `tsens jacobian ... -o` writes
    result.summary.to_pandas()      # what `--summary` writes
"""

from .bound import bound
from .estimate_gap import estimate_gap, gap_estimates
from .info import info
from .per_sample import activations, jacobian, regions
from .result import CommandResult
from .runner import Progress
from .setup import Setup
from .transitions import transitions

COMMANDS = {
    "info": info,
    "bound": bound,
    "jacobian": jacobian,
    "activations": activations,
    "regions": regions,
    "transitions": transitions,
    "estimate-gap": estimate_gap,
}
"""Every command that reads checkpoints, by its command-line name."""

__all__ = [
    "COMMANDS",
    "CommandResult",
    "Progress",
    "Setup",
    "activations",
    "bound",
    "estimate_gap",
    "gap_estimates",
    "info",
    "jacobian",
    "regions",
    "transitions",
]
