"""GeneratorEMA: an exponential moving average of G's weights (``tricks.ema_decay``).

Samples and evaluation of a run with an EMA come from the average, which is smoother
than G's last iterate (Yazıcı et al. 2019). Two details decide whether the average is
worth judging at every point of a run, not only at its end:

* **Bias correction.** A plain EMA that starts from G's first weights keeps d^k of them
  after k more updates: with d = 0.999, 61 % after 500 G updates, so early sample grids,
  evaluations and ``best.ckpt`` would judge a mostly untrained G. Here the k-th update
  moves the average toward G by (1 − d) / (1 − d^k), which is the EMA of a zero start
  divided by 1 − d^k (Adam's correction): the average is always a weighted mean of the
  iterates so far, with weights ∝ d^(k − i). The first update copies G; once d^k is small
  the correction vanishes and this is the usual EMA.
* **Batch-norm statistics.** Averaging G's running means and variances does not give the
  statistics of the averaged weights. Parameters are averaged; batch-norm statistics
  are recomputed for the averaged weights from G's own inputs (``refresh_batch_norm``)
  before the EMA is sampled, evaluated or saved. Other buffers follow G.

The state is ``module`` (the averaged copy of G) and ``n_averaged`` (updates so far), so
checkpoints keep the keys ``generator_ema.module.*`` and ``generator_ema.n_averaged``.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class GeneratorEMA(nn.Module):
    """The bias-corrected moving average of a generator's weights."""

    def __init__(self, generator: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay} must be in (0, 1)")
        self.module = copy.deepcopy(generator).requires_grad_(False)
        self.decay = float(decay)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))
        self._updates = 0  # n_averaged on the host (no device sync per update)
        self.stale = True  # batch-norm statistics not yet computed for the current average

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._updates, self.stale = int(self.n_averaged), True  # a resumed run continues its count

    def weight(self, k: int) -> float:
        """How far the k-th update (k >= 1) moves the average toward G: (1 - d) / (1 - d^k)."""
        return (1.0 - self.decay) / (1.0 - self.decay**k)

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        """Fold G's current weights into the average (after each G update)."""
        self._updates += 1
        averaged, current = list(self.module.parameters()), list(generator.parameters())
        torch._foreach_lerp_(averaged, current, self.weight(self._updates))
        for name, buffer in self._plain_buffers(generator):
            self.module.get_buffer(name).copy_(buffer)
        self.n_averaged.fill_(self._updates)
        self.stale = True

    @staticmethod
    def _plain_buffers(generator: nn.Module):
        """G's buffers that are not batch-norm statistics (those are recomputed instead)."""
        statistics = {id(b) for m in batch_norms(generator) for b in m.buffers()}
        return [(name, b) for name, b in generator.named_buffers() if id(b) not in statistics]

    @torch.no_grad()
    def refresh_batch_norm(
        self, sample_inputs: Callable[[int], tuple], batches: int = 4, batch_size: int = 256
    ) -> None:
        """Recompute every batch-norm layer's running statistics for the averaged weights:
        the exact mean and variance over ``batches`` batches of G's inputs
        (``sample_inputs(batch_size) -> (noise, labels)``), as ``swa_utils.update_bn``
        does for SWA. Does nothing when G has no batch norm or nothing changed since."""
        layers = batch_norms(self.module)
        if not self.stale or not layers:
            self.stale = False
            return
        momenta = [layer.momentum for layer in layers]
        was_training = self.module.training
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average over the batches below
        self.module.train()
        for _ in range(batches):
            self.module(*sample_inputs(batch_size))
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        self.module.train(was_training)
        self.stale = False
