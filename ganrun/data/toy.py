"""2-D Gaussian mixtures used to study mode collapse (Metz et al. 2017, Srivastava et al. 2017).

Each batch is drawn fresh from the mixture with a generator seeded by the global
batch index, so runs are reproducible and resumable; an "epoch" is a fixed number
of batches.
"""

from __future__ import annotations

import math

import torch

from ganrun.data.base import Batch, BatchStream, GANDataModule


class GaussianMixtureDataModule(GANDataModule):
    """Equal-weight isotropic Gaussians at ``modes`` (M x 2) with standard deviation ``std``
    (the mixture attributes ``GANDataModule`` declares: mode-coverage metrics apply)."""

    data_shape = (2,)
    is_image = False

    def __init__(self, *, modes: torch.Tensor, std: float, batches_per_epoch: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        self.modes = modes.float()
        self.std = std
        self.batches_per_epoch = batches_per_epoch

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.randint(len(self.modes), (n,), generator=generator)
        return self.modes[which] + self.std * torch.randn(n, 2, generator=generator)

    def make_batch(self, index: int) -> Batch:
        # Distinct ranks draw distinct streams: index * world_size + rank.
        stream = index * self.world_size + self.rank
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + stream)
        return self.sample(self.batch_size, generator), None

    def train_dataloader(self) -> BatchStream:
        self._attach_to_ranks()
        return BatchStream(self.make_batch, self.batches_per_epoch, self.batches_done)

    def real_examples(self, n: int) -> torch.Tensor:
        return self.sample(n, torch.Generator().manual_seed(12345))


class RingDataModule(GaussianMixtureDataModule):
    """``num_modes`` Gaussians evenly spaced on a circle (default: 8, radius 2, std 0.02)."""

    def __init__(self, *, num_modes: int = 8, radius: float = 2.0, std: float = 0.02, **kwargs) -> None:
        angles = torch.arange(num_modes) * (2 * math.pi / num_modes)
        modes = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        super().__init__(modes=modes, std=std, **kwargs)


class GridDataModule(GaussianMixtureDataModule):
    """Gaussians on a square grid (default: 25 at {-4,-2,0,2,4}^2, std 0.05)."""

    def __init__(self, *, side: int = 5, spacing: float = 2.0, std: float = 0.05, **kwargs) -> None:
        coords = (torch.arange(side) - (side - 1) / 2) * spacing
        modes = torch.cartesian_prod(coords, coords)
        super().__init__(modes=modes, std=std, **kwargs)
