"""Deep convolutional generator and discriminator (Radford et al. 2016).

Guidelines followed: strided convolutions in D and fractionally-strided
(transposed) convolutions in G instead of pooling; batch norm in both, except G's
output and D's input layer; no fully connected hidden layers; ReLU in G with a Tanh
output; LeakyReLU(0.2) in D; weights ~ N(0, 0.02).

Sizes: G starts from a ``base`` x ``base`` map (4, or 7 for 28 x 28 images) and
doubles it until ``image_size``; channel width halves at each doubling and ends
at ``width``. D mirrors G. Class conditioning (CGAN) concatenates the one-hot label
to z in G and as constant label maps to D's input channels.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ganrun.errors import ConfigError
from ganrun.models.common import check_norm, init_dcgan_weights, norm_2d, one_hot
from ganrun.models.minibatch import MinibatchDiscrimination


def pyramid(data_shape: Sequence[int]) -> tuple[int, int]:
    """(base size, number of doublings) for a supported image shape, else a clear error."""
    if len(data_shape) != 3:
        raise ConfigError(
            f"the DCGAN architecture needs images (C, H, W), got examples of shape {tuple(data_shape)}; "
            "use model=gan, lsgan, wgan or wgan_gp for 2-D data (they switch to MLPs there)"
        )
    image_size = data_shape[-1]
    base = 7 if image_size == 28 else 4
    doublings = math.log2(image_size / base)
    if image_size < 8 or doublings != int(doublings):
        raise ConfigError(
            f"dataset.image_size={image_size} is not supported by the DCGAN architecture; "
            "choose 28 or a power of two >= 8 (8, 16, 32, 64, 128)"
        )
    return base, int(doublings)


class DCGANGenerator(nn.Module):
    """z (N, z_dim) -> (N, C, S, S) in [-1, 1]."""

    def __init__(
        self,
        *,
        z_dim: int,
        data_shape: Sequence[int],
        num_classes: int = 0,
        bounded_output: bool = True,
        width: int = 64,
    ) -> None:
        super().__init__()
        base, doublings = pyramid(data_shape)
        channels = data_shape[0]
        self.num_classes = num_classes
        hidden = width * 2 ** (doublings - 1)
        # Project z to base x base with a full-size transposed convolution.
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim + num_classes, hidden, base, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        ]
        for _ in range(doublings - 1):
            layers += [
                nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(hidden // 2),
                nn.ReLU(inplace=True),
            ]
            hidden //= 2
        layers.append(nn.ConvTranspose2d(hidden, channels, 4, 2, 1))
        if bounded_output:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        condition = one_hot(labels, self.num_classes, z)
        if condition is not None:
            z = torch.cat([z, condition], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """(N, C, S, S) -> (N,) raw outputs. ``norm``: batch (paper), layer (for gradient penalty) or none.

    ``minibatch_discrimination``: the last layer reads the flattened features and
    their closeness to the rest of the batch (Salimans et al. 2016) through a linear
    layer (what the base x base convolution is on a flattened map).
    """

    def __init__(
        self,
        *,
        data_shape: Sequence[int],
        num_classes: int = 0,
        width: int = 64,
        norm: str = "batch",
        minibatch_discrimination: bool = False,
    ) -> None:
        super().__init__()
        check_norm(norm)
        base, doublings = pyramid(data_shape)
        channels = data_shape[0]
        self.num_classes = num_classes
        layers: list[nn.Module] = [
            nn.Conv2d(channels + num_classes, width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        hidden = width
        for _ in range(doublings - 1):
            layers += [
                nn.Conv2d(hidden, hidden * 2, 4, 2, 1, bias=norm == "none"),
                norm_2d(norm, hidden * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            hidden *= 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = hidden * base * base
        # The last convolution covers the whole base x base map: one output per image.
        if minibatch_discrimination:
            minibatch = MinibatchDiscrimination(self.feature_dim)
            self.head = nn.Sequential(minibatch, nn.Linear(minibatch.out_features, 1), nn.Flatten(0))
        else:
            self.head = nn.Sequential(
                nn.Unflatten(1, (hidden, base, base)), nn.Conv2d(hidden, 1, base, 1, 0), nn.Flatten(0)
            )
        self.apply(init_dcgan_weights)

    def features(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        condition = one_hot(labels, self.num_classes, x)
        if condition is not None:
            x = torch.cat([x, condition[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1)
        return self.body(x)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.features(x, labels))
