#!/usr/bin/env python3
"""Fuzzing tsens's file readers: valid files of every format, mutated, through the library and
the command line.

Run (from the repository root)::

    python scripts/fuzz.py --cases 10000             # what `make fuzz` runs
    python scripts/fuzz.py --cases 300 --formats npy,safetensors --seed 3
    python scripts/fuzz.py --seed 3 --replay 1234    # one case again, here, with its traceback
    python scripts/fuzz.py --list-formats

**Seeds.** (a) Small valid files this script writes itself: networks as ``.safetensors``, zip and
legacy ``torch.save`` files, Lightning-style ``.ckpt`` dicts and Hugging Face directories; data
as ``.npz``, ``.npy``, Parquet, Arrow, Feather, CIFAR batch pickles, IDX (plain and gzip) and
``.safetensors``; a gzip bomb (an IDX file whose header promises 144 bytes and whose stream
inflates to 1 GiB, twice the memory a case may use); and *payload* files, pickles that would
create a marker file if anything ran them (``io.open``, ``os.system``, ``builtins.exec``/``eval``,
``subprocess.call``,
``torch.save``, ``numpy.save``, ``logging.FileHandler``, ``zipfile.ZipFile``, a chained
``operator.methodcaller``), inside zip and legacy ``.pt`` files, ``.ckpt`` dicts, Hugging Face
``pytorch_model.bin``, CIFAR batch files and object-dtype ``.npy``/``.npz``. (b) Every file under
``tests/data/formats/`` (a directory that a checkpoint format claims, e.g. a Hugging Face
directory, is one seed; ``.npz`` files named like a checkpoint beside it are reference outputs
and skipped; other non-checkpoint files are copied beside the seed unchanged), so new formats
join automatically. The first cases run every seed unchanged.

**Mutations.** Bit flips, random byte runs, interesting bytes and integer fields (sizes set to
2**32-1, 10**12, 2**63-1, ...), truncation at random and at structure boundaries, insertion,
deletion, duplication of ranges; and per structure: safetensors header edits (shapes, offsets,
dtypes, sizes of 10**12, the header length), zip records (local/central/end-of-directory size,
count and offset fields set huge, methods, CRCs; members duplicated, dropped, renamed, or
mutated themselves and re-zipped), pickle opcodes (length and memo fields huge, integers
huge, opcodes dropped or repeated, globals swapped), ``.npy`` headers (shape 10**12, dtype,
order, header length), IDX dims/dtype/rank, gzip (inner mutation, ISIZE, flags, extra
members), msgpack (length fields huge, ext codes, Flax array headers: shape/dtype/buffer, deep
nesting), HDF5 (the first KiB, dataspace dims found through h5py set huge, data addresses),
ONNX (initializer dims/dtype/raw data/external data, nodes, opsets), Parquet/Arrow footers and
metadata lengths, PNG dimensions inside image columns, JSON values and nesting.

**Cases.** A pool of long-lived worker processes (forked after tsens, torch, numpy, pyarrow,
h5py, onnx and msgpack are imported) runs each case: checkpoints through
``tsens.checkpoints.load_network`` and ``read_metadata``, data through
``tsens.datasets.load_dataset``; every ``--cli-every``-th case also through ``tsens info FILE``
or ``tsens bound FILE`` (data: ``tsens bound NET --data FILE``) under click's CliRunner. A
worker's address space is capped (``RLIMIT_AS`` = its size after the imports plus
``--memory-mb``, 512 MiB by default: the seeds are a few KiB, so any claim-driven allocation
shows) and its RSS polled against the same margin above the RSS it reports once started (not
the parent's, which grows with whatever ran in it before); a case has ``--timeout`` seconds.
Outcomes:

* ``ok``: loaded; ``refused``: a :class:`tsens.errors.TsensError` of one line that starts with
  the file's path (CLI: exit 2, one ``tsens: error:`` line, no traceback);
* bad: ``traceback`` (any other exception, or a CLI exit code other than 0 and 2), ``badmsg``
  (a TsensError of several lines or not naming the file first), ``memory`` (a MemoryError or
  failed allocation anywhere in the exception chain, the address-space cap hit, or RSS over
  the limit: the worker is killed), ``hang`` (over the time limit: killed), ``crash`` (the
  worker died, e.g. a segfault), ``payload`` (a file appeared in the worker's empty working
  directory: pickled code ran).

A worker that was killed or died is replaced. Every bad case is saved (its input files, the
mutation, the message and traceback) under ``--save-dir`` (default ``build/fuzz/``, with
``report.txt``); ``--replay N`` regenerates case N (same ``--seed`` and ``--formats``) and runs
it in this process. Everything is deterministic given ``--seed``. The script prints a table
per format and exits 1 if any case was bad.

The code is the package ``scripts/fuzzing/`` (seeds, mutators, workers, report); this file is
its command.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside this file

from fuzzing import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
