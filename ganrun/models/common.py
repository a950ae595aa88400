"""Pieces shared by the architecture families: label conditioning, norms, init.

Interface every family follows (so the trainer and the losses need nothing else):
- ``Generator(z, labels=None) -> x`` with x of shape (N, *data_shape).
- ``Discriminator(x, labels=None) -> (N,)`` raw outputs (logits / critic values);
  ``Discriminator.features(x, labels)`` -> (N, feature_dim) is the body that
  auxiliary heads (InfoGAN's Q) share, and ``head(features)`` finishes it.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganrun.errors import ConfigError

NORMS = ("batch", "layer", "none")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ConfigError(f"model.discriminator.norm={norm} is not valid; choose one of {', '.join(NORMS)}")
    return norm


def norm_2d(norm: str, channels: int) -> nn.Module:
    """Batch norm, layer norm over (C, H, W) (GroupNorm with one group), or nothing."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def norm_1d(norm: str, features: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(features)
    if norm == "layer":
        return nn.LayerNorm(features)
    return nn.Identity()


def one_hot(labels: Optional[torch.Tensor], num_classes: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """(N,) int labels -> (N, num_classes) float in ``like``'s dtype/device; None when unconditional."""
    if num_classes == 0:
        return None
    if labels is None:
        raise ConfigError("this model is class-conditional: it needs labels")
    return nn.functional.one_hot(labels, num_classes).to(like.dtype)


def init_dcgan_weights(module: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02); norm scales ~ N(1, 0.02), shifts 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
