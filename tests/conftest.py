"""One torch thread in tests: the networks are tiny, and threads only add contention."""

import torch

torch.set_num_threads(1)
