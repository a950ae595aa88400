"""Fully connected generator and discriminator (Goodfellow et al. 2014; Mirza & Osindero 2014).

Works for images (flattened) and for 2-D points. With ``num_classes > 0`` the
one-hot label is concatenated to G's noise and to D's input (CGAN).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ganrun.models.common import check_norm, norm_1d, one_hot
from ganrun.models.minibatch import MinibatchDiscrimination


class MLPGenerator(nn.Module):
    """z (N, z_dim) [+ one-hot label] -> hidden ReLU layers -> x (N, *data_shape)."""

    def __init__(
        self,
        *,
        z_dim: int,
        data_shape: Sequence[int],
        num_classes: int = 0,
        bounded_output: bool = True,
        hidden: Sequence[int] = (256, 512),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.data_shape, self.num_classes = tuple(data_shape), num_classes
        layers: list[nn.Module] = []
        width = z_dim + num_classes
        for size in hidden:
            layers += [nn.Linear(width, size), norm_1d("batch" if batch_norm else "none", size), nn.ReLU(inplace=True)]
            width = size
        layers.append(nn.Linear(width, math.prod(self.data_shape)))
        if bounded_output:  # images live in [-1, 1]; 2-D points are unbounded
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        condition = one_hot(labels, self.num_classes, z)
        if condition is not None:
            z = torch.cat([z, condition], dim=1)
        return self.net(z).view(len(z), *self.data_shape)


class MLPDiscriminator(nn.Module):
    """x flattened [+ one-hot label] -> hidden LeakyReLU(0.2) layers -> one raw output.

    ``minibatch_discrimination``: the head reads the last features together with
    their closeness to the rest of the batch (Salimans et al. 2016).
    """

    def __init__(
        self,
        *,
        data_shape: Sequence[int],
        num_classes: int = 0,
        hidden: Sequence[int] = (512, 256),
        norm: str = "none",
        dropout: float = 0.0,
        minibatch_discrimination: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        width = math.prod(data_shape) + num_classes
        for index, size in enumerate(hidden):
            layers.append(nn.Linear(width, size))
            if index > 0:  # no normalisation on the input layer
                layers.append(norm_1d(check_norm(norm), size))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, 1)
        if minibatch_discrimination:
            minibatch = MinibatchDiscrimination(width)
            self.head = nn.Sequential(minibatch, nn.Linear(minibatch.out_features, 1))

    def features(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x.flatten(1)
        condition = one_hot(labels, self.num_classes, x)
        if condition is not None:
            x = torch.cat([x, condition], dim=1)
        return self.body(x)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.features(x, labels)).squeeze(1)
