"""The one training loop of tsens's sample-making scripts (tsens itself never trains).

Plain minibatch training with cross-entropy: each epoch draws a permutation from ``generator``
and steps ``optimizer`` once per batch; after each epoch listed in ``save_at`` the caller gets
the epoch number and the optimizer steps so far, to evaluate and save a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def train_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    generator: torch.Generator,
    save_at: tuple[int, ...],
) -> Iterator[tuple[int, int]]:
    """Train ``model`` on ``data = (x, y)`` until the last epoch of ``save_at``, yielding
    ``(epoch, step)`` after each epoch of ``save_at``."""
    x, y = data
    step = 0
    for epoch in range(1, max(save_at) + 1):
        model.train()
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            step += 1
        if epoch in save_at:
            yield epoch, step
