"""Shared plumbing for feature-space metrics: image preparation, and torchmetrics'
FID / IS on features computed once per image set, with the real side's FID
statistics cached on disk.

Generated images are quantised to 8 bits, exactly like the real ones (which are
stored as uint8), before any feature extractor sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ganrun.metrics import cache

REAL_FID_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def reference_subset(num_real: int, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of the real samples a reference uses: all of them when there are at most
    ``size``, else ``size`` drawn at random (fixed ``seed``), in sorted order."""
    if num_real <= size:
        return torch.arange(num_real)
    return torch.randperm(num_real, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255 (as the real data is stored)."""
    return ((images.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


class Precomputed(nn.Module):
    """Identity on (N, num_features) feature batches: torchmetrics' metrics take a
    feature-extractor module; ours are run beforehand, once per image set."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(fake: torch.Tensor, real: Callable[[], torch.Tensor], cache_path: Path) -> float:
    """torchmetrics' FrechetInceptionDistance between feature sets (N x d). The real
    side's statistics come from ``cache_path``, computed from ``real()`` the first time."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=Precomputed(fake.shape[1]), reset_real_features=False)
    cached = cache.load(cache_path)
    if cached is not None and all(key in cached for key in REAL_FID_STATES):
        for key in REAL_FID_STATES:
            setattr(metric, key, cached[key])
    else:
        metric.update(real(), real=True)
        cache.save({key: getattr(metric, key) for key in REAL_FID_STATES}, cache_path)
    metric.update(fake, real=False)
    return float(metric.compute())


def inception_score(logits: torch.Tensor, splits: int = 10) -> float:
    """torchmetrics' InceptionScore (mean over ``splits``) of class logits (N x classes).
    Its split assignment is a random permutation: seeded, without touching the caller's stream."""
    from torchmetrics.image.inception import InceptionScore

    score = InceptionScore(feature=Precomputed(logits.shape[1]), splits=splits)
    score.update(logits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return float(score.compute()[0])
