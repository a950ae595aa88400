"""Laplacian pyramid of adversarial networks (LAPGAN, Denton et al. 2015).

An image x of size S = base_size * 2^(levels-1) is split into a Laplacian pyramid:

    I_{L-1} = x,   I_{k-1} = downsample(I_k)           (Gaussian pyramid, coarse I_0)
    c_k = upsample(I_{k-1})                              (level k's condition)
    h_k = I_k - c_k                                      (level k's band-pass residual)

so x = upsample(... upsample(I_0) + h_1 ...) + h_{L-1} exactly. Level 0 is an
ordinary GAN on base_size x base_size images; each finer level k is a conditional
GAN whose generator maps (noise, c_k) to a residual h_k and whose discriminator
judges (c_k, h_k) pairs, concatenated on channels. Training takes every c_k from
real pyramids; sampling goes coarse to fine, each level conditioned on the image
the previous level made.

Downsampling is 2x2 average pooling, upsampling bilinear; both keep values in
[-1, 1]. Level 0's networks are the DCGAN ones at base_size; every level's
discriminator is a DCGAN discriminator on 2C (pair) channels. Class conditioning
(num_classes > 0) reaches every level as in the DCGAN family.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ganrun.errors import ConfigError
from ganrun.models.common import check_norm, init_dcgan_weights, one_hot
from ganrun.models.dcgan import DCGANDiscriminator, DCGANGenerator


# --------------------------------------------------------------------- pyramid
def downsample(x: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, S/2, S/2) by 2x2 averaging."""
    return F.avg_pool2d(x, 2)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, 2S, 2S), bilinear (a convex combination: stays in [-1, 1])."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def pyramid_levels(x: torch.Tensor, levels: int) -> list[tuple[Optional[torch.Tensor], torch.Tensor]]:
    """Each level's (condition, target): [(None, I_0), (c_1, h_1), ..., (c_{L-1}, h_{L-1})].

    Level 0's target is the coarsest image, level k's the residual its generator
    must produce given c_k = upsample(I_{k-1}).
    """
    images = [x]
    for _ in range(levels - 1):
        images.insert(0, downsample(images[0]))
    pairs: list[tuple[Optional[torch.Tensor], torch.Tensor]] = [(None, images[0])]
    for coarse, fine in zip(images, images[1:]):
        condition = upsample(coarse)
        pairs.append((condition, fine - condition))
    return pairs


def laplacian_pyramid(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """x -> (coarsest image I_0, residuals [h_1, ..., h_{L-1}] coarse to fine)."""
    pairs = pyramid_levels(x, levels)
    return pairs[0][1], [residual for _, residual in pairs[1:]]


def reconstruct(coarse: torch.Tensor, residuals: Sequence[torch.Tensor]) -> torch.Tensor:
    """The inverse of ``laplacian_pyramid`` (exact up to float rounding)."""
    image = coarse
    for residual in residuals:
        image = upsample(image) + residual
    return image


def level_input(condition: Optional[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """What a level's discriminator sees: I_0 at level 0, the (c_k, h_k) pair on channels above."""
    return target if condition is None else torch.cat([condition, target], dim=1)


def check_pyramid(data_shape: Sequence[int], levels: int, base_size: int) -> int:
    """Image channels for a valid (data_shape, levels, base_size), else a one-line ConfigError."""
    if len(data_shape) != 3:
        raise ConfigError(
            f"LAPGAN needs images (C, H, W), got examples of shape {tuple(data_shape)}; use model=gan, lsgan, wgan or wgan_gp for 2-D data (they switch to MLPs there)"
        )
    if not isinstance(levels, int) or levels < 1:
        raise ConfigError(f"model.generator.levels={levels} is not valid; it must be a positive integer")
    if base_size < 8 or base_size & (base_size - 1):
        raise ConfigError(f"model.generator.base_size={base_size} is not valid; choose a power of two >= 8 (8, 16, 32)")
    size = base_size * 2 ** (levels - 1)
    if tuple(data_shape[-2:]) != (size, size):
        others = ", ".join(f"{base_size * 2 ** (n - 1)} (levels={n})" for n in range(1, 6) if n != levels)
        raise ConfigError(
            f"dataset.image_size={data_shape[-1]} is not supported by LAPGAN with levels={levels} and "
            f"base_size={base_size}; valid: {size} (= base_size * 2^(levels-1)); for other sizes set "
            f"model.image_size and model.generator.levels together: {others}"
        )
    return data_shape[0]


# ------------------------------------------------------------------- generator
class ResidualGenerator(nn.Module):
    """Level k >= 1: (z_k, c_k) -> residual h_k, all at the level's size S.

    z_k is projected to one S x S noise plane, stacked with the condition's C
    channels (Denton et al. present noise as an extra colour plane) and, for
    conditional models, constant one-hot label planes. Three same-size
    convolutions; batch norm and ReLU inside, a linear output (residuals are
    signed and unbounded).
    """

    def __init__(self, *, z_dim: int, channels: int, size: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.size, self.num_classes = size, num_classes
        self.noise_plane = nn.Linear(z_dim, size * size)
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1 + num_classes, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor, condition: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        planes = [condition, self.noise_plane(z).view(-1, 1, self.size, self.size)]
        label_vector = one_hot(labels, self.num_classes, z)
        if label_vector is not None:
            planes.append(label_vector[:, :, None, None].expand(-1, -1, self.size, self.size))
        return self.net(torch.cat(planes, dim=1))


class Stage(NamedTuple):
    """One level of a sample: its condition (None at level 0), residual (None at level 0), image."""

    condition: Optional[torch.Tensor]
    residual: Optional[torch.Tensor]
    image: torch.Tensor


class LaplacianGenerator(nn.Module):
    """z (N, z_dim) -> (N, C, S, S), sampled coarse to fine.

    z is the concatenation [z_0 | z_1 | ... | z_{L-1}], one block per level, split
    by ``level_z_dims``: z_dim divided as evenly as possible with the remainder
    going to the coarsest levels (z_dim=100, levels=3 -> 34, 33, 33). The split is
    fixed, so the same z always gives the same image. ``width`` is G_0's DCGAN
    width and the channels of every residual generator.
    """

    def __init__(
        self,
        *,
        z_dim: int,
        data_shape: Sequence[int],
        num_classes: int = 0,
        bounded_output: bool = True,
        levels: int = 3,
        base_size: int = 8,
        width: int = 32,
    ) -> None:
        super().__init__()
        channels = check_pyramid(data_shape, levels, base_size)
        if z_dim < levels:
            raise ConfigError(
                f"model.z_dim={z_dim} is too small for LAPGAN: it needs at least one dimension per level ({levels})"
            )
        self.num_levels, self.base_size, self.num_classes = levels, base_size, num_classes
        self.bounded_output = bounded_output
        share, extra = divmod(z_dim, levels)
        self.level_z_dims = [share + (k < extra) for k in range(levels)]
        coarse = DCGANGenerator(
            z_dim=self.level_z_dims[0],
            data_shape=(channels, base_size, base_size),
            num_classes=num_classes,
            bounded_output=bounded_output,
            width=width,
        )
        refiners = [
            ResidualGenerator(
                z_dim=self.level_z_dims[k],
                channels=channels,
                size=base_size * 2**k,
                num_classes=num_classes,
                width=width,
            )
            for k in range(1, levels)
        ]
        self.levels = nn.ModuleList([coarse, *refiners])
        for refiner in refiners:
            refiner.apply(init_dcgan_weights)

    def split_noise(self, z: torch.Tensor) -> list[torch.Tensor]:
        """(N, z_dim) -> [z_0, ..., z_{L-1}]."""
        return list(torch.split(z, self.level_z_dims, dim=1))

    def level(
        self, k: int, z_k: torch.Tensor, condition: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Level 0: z_0 -> I_0. Level k: (z_k, c_k) -> residual h_k."""
        if k == 0:
            return self.levels[0](z_k, labels)
        return self.levels[k](z_k, condition, labels)

    def stages(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> list[Stage]:
        """Sample coarse to fine, keeping every level's condition, residual and image.

        With bounded output each level's image is clamped to [-1, 1], the range of
        the real conditions the next level was trained on.
        """
        noise = self.split_noise(z)
        image = self.level(0, noise[0], labels=labels)
        stages = [Stage(None, None, image)]
        for k in range(1, self.num_levels):
            condition = upsample(image)
            residual = self.level(k, noise[k], condition, labels)
            image = condition + residual
            if self.bounded_output:
                image = image.clamp(-1.0, 1.0)
            stages.append(Stage(condition, residual, image))
        return stages

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.stages(z, labels)[-1].image


# --------------------------------------------------------------- discriminator
class LaplacianDiscriminator(nn.Module):
    """One DCGAN discriminator per level: D_0 on I_0 (C channels), D_k on (c_k, h_k) (2C channels).

    ``forward(x, labels)`` on a full image builds x's own pyramid and returns the
    mean of the levels' raw outputs, (N,): a whole-image score for generic code
    paths. Training uses the levels one by one (``levels[k]`` / ``level``).
    ``features`` concatenates the levels' features and ``head`` averages their heads,
    so ``head(features(x)) == forward(x)``.
    """

    def __init__(
        self,
        *,
        data_shape: Sequence[int],
        num_classes: int = 0,
        levels: int = 3,
        base_size: int = 8,
        width: int = 32,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_norm(norm)
        channels = check_pyramid(data_shape, levels, base_size)
        self.num_levels, self.base_size, self.num_classes = levels, base_size, num_classes
        self.levels = nn.ModuleList(
            DCGANDiscriminator(
                data_shape=(channels if k == 0 else 2 * channels, base_size * 2**k, base_size * 2**k),
                num_classes=num_classes,
                width=width,
                norm=norm,
            )
            for k in range(levels)
        )
        self.level_feature_dims = [d.feature_dim for d in self.levels]
        self.feature_dim = sum(self.level_feature_dims)

    def level(self, k: int, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """D_k on ``level_input(condition, target)`` -> (N,) raw outputs."""
        return self.levels[k](x, labels)

    def features(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        inputs = [level_input(c, t) for c, t in pyramid_levels(x, self.num_levels)]
        return torch.cat([d.features(i, labels) for d, i in zip(self.levels, inputs)], dim=1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        parts = torch.split(features, self.level_feature_dims, dim=1)
        return torch.stack([d.head(f) for d, f in zip(self.levels, parts)]).mean(dim=0)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.features(x, labels))
