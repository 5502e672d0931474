"""One torch thread in tests (the networks are tiny, threads only add contention), and a
derandomized hypothesis profile for CI: the same examples on every run, no example database."""

import os

import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
