"""Mode coverage on 2-D Gaussian mixtures (Metz et al. 2017; Srivastava et al. 2017; Lin et al. 2018).

A sample is *high quality* when it lies within 3 standard deviations of its
nearest mode; a mode is *covered* when at least 20 of every 2,500 samples are high
quality samples assigned to it (the threshold scales with the number of samples).
"""

from __future__ import annotations

import torch


def mode_coverage(samples: torch.Tensor, modes: torch.Tensor, std: float, min_per_2500: int = 20) -> dict[str, float]:
    distances = torch.cdist(samples.float(), modes.float())
    nearest_distance, nearest_mode = distances.min(dim=1)
    high_quality = nearest_distance <= 3 * std
    counts = torch.bincount(nearest_mode[high_quality], minlength=len(modes))
    threshold = min_per_2500 * len(samples) / 2500
    return {
        "modes_covered": float((counts >= threshold).sum()),
        "num_modes": float(len(modes)),
        "high_quality_fraction": float(high_quality.float().mean()),
    }
