"""Latent spaces: what G takes as input and how to sample it.

The default is an isotropic Gaussian of ``z_dim`` dimensions. Models whose input
has structure (InfoGAN's latent codes) provide another class with the same three
members, named in ``model.latent._target_``; training, sample grids and
``ganrun-sample`` all draw through it.
"""

from __future__ import annotations

from typing import Optional

import torch


class GaussianLatent:
    """z ~ N(0, I) in ``z_dim`` dimensions."""

    def __init__(self, *, z_dim: int) -> None:
        self.z_dim = z_dim

    @property
    def dim(self) -> int:
        """Size of G's input vector."""
        return self.z_dim

    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.dim, generator=generator, device=device)
