"""Running G to draw samples, written once: eval mode, no gradients, in chunks.

Sample grids, latent traversals, pyramid grids, evaluation during training,
``ganrun-sample`` and ``ganrun-eval`` all draw through ``generate`` (or ``eval_mode``
for a network's other methods), so batch-norm generators always sample with their
running statistics and training resumes in the mode it was in.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn


@contextmanager
def eval_mode(network: nn.Module) -> Iterator[nn.Module]:
    """``network`` in eval mode inside the block, back in its previous mode after."""
    was_training = network.training
    network.eval()
    try:
        yield network
    finally:
        network.train(was_training)


@torch.no_grad()
def generate(
    network: nn.Module,
    noise: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    *,
    device=None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """``network(noise, labels)`` in eval mode, ``batch_size`` rows at a time on ``device``
    (default: the network's), as float32 on the CPU."""
    if device is None:
        device = next(network.parameters()).device
    out = []
    with eval_mode(network):
        for start in range(0, len(noise), batch_size):
            z = noise[start : start + batch_size].to(device)
            y = None if labels is None else labels[start : start + batch_size].to(device)
            out.append(network(z, y).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
