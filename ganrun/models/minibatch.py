"""Minibatch discrimination (Salimans et al. 2016, "Improved Techniques for Training GANs", sec. 3.2).

D looks at each example together with the rest of its batch: a collapsed G makes
batches whose examples are all alike, which D can then spot, so G is pushed to
spread out. For features f(x_i) in R^A and a learned tensor T in R^{A x B x C}:

    M_i = f(x_i) T                            (B rows of C numbers)
    c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_1)
    o(x_i)_b = sum_{j != i} c_b(x_i, x_j)     (B closeness features)

and D's head reads [f(x_i), o(x_i)]. Real and fake batches are judged separately
(GANModule calls D on each), as the paper prescribes.
"""

from __future__ import annotations

import torch
from torch import nn


class MinibatchDiscrimination(nn.Module):
    """(N, A) features -> (N, A + B): the features followed by their closeness to the rest of the batch."""

    # D's output for one example depends on the other examples of its batch: per-example
    # gradient penalties (WGAN-GP, R1) refuse such a critic (ganrun.objectives.terms.GradientPenalty).
    mixes_examples = True

    # Cost grows with batch^2 x num_kernels x kernel_dim: small defaults keep CPU runs practical.
    def __init__(self, in_features: int, num_kernels: int = 8, kernel_dim: int = 4) -> None:
        super().__init__()
        self.num_kernels, self.kernel_dim = num_kernels, kernel_dim
        self.out_features = in_features + num_kernels
        # Small init: the L1 distances start moderate, so exp(-d) neither saturates at 0 nor at 1.
        self.T = nn.Parameter(torch.randn(in_features, num_kernels * kernel_dim) * 0.1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rows = (features @ self.T.to(features.dtype)).view(-1, self.num_kernels, self.kernel_dim)  # (N, B, C)
        rows = rows.transpose(0, 1).float()  # (B, N, C); distances in float32 also under autocast
        distances = torch.cdist(rows, rows, p=1)  # (B, N, N) L1 between examples, per kernel
        closeness = torch.exp(-distances).sum(dim=2) - 1.0  # sum over j, minus j == i (exp(0) = 1)
        return torch.cat([features, closeness.t().to(features.dtype)], dim=1)
