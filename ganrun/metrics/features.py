"""Shared plumbing for feature-space metrics: image preparation, batching, and
torchmetrics' FID with reference statistics cached on disk.

Generated images are quantised to 8 bits, exactly like the real ones (which are
stored as uint8), before any feature extractor sees them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from ganrun.data.base import resize_uint8
from ganrun.metrics import cache

REAL_FID_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255 (as the real data is stored)."""
    return ((images.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def batches(images: torch.Tensor, size: int = 500) -> Iterator[torch.Tensor]:
    yield from images.split(size)


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    return resize_uint8(images, size)


class Extractor(nn.Module):
    """``fn(images) -> (N, num_features)`` as the ``nn.Module`` torchmetrics expects."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], num_features: int, owner: nn.Module) -> None:
        super().__init__()
        self.fn, self.num_features, self.owner = fn, num_features, owner

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def frechet_distance(extractor: Extractor, reference: Callable[[], Iterable[torch.Tensor]], cache_path: Path):
    """torchmetrics' FrechetInceptionDistance on ``extractor``'s features, with the real
    side loaded from ``cache_path`` (computed from ``reference()`` batches the first time)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
    cached = cache.load(cache_path)
    if cached is not None and all(key in cached for key in REAL_FID_STATES):
        for key in REAL_FID_STATES:
            setattr(metric, key, cached[key])
    else:
        for batch in reference():
            metric.update(batch, real=True)
        cache.save({key: getattr(metric, key) for key in REAL_FID_STATES}, cache_path)
    return metric
