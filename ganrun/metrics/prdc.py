"""Precision, recall, density and coverage of generated samples in a feature space.

Kynkäänniemi et al. 2019, *Improved precision and recall metric for assessing
generative models* (precision, recall); Naeem et al. 2020, *Reliable fidelity and
diversity metrics for generative models* (density, coverage).

Real features X_1..X_N and generated ones Y_1..Y_M, with N = M (the caller draws as
many of each). NND_k(X_i) is the distance from X_i to its k-th nearest neighbour
among the *other* real features (a point is not its own neighbour; k = 5, Naeem et
al.'s choice); B(x, r) is the closed ball of radius r around x:

- precision = 1/M Σ_j 1[Y_j ∈ ∪_i B(X_i, NND_k(X_i))]: generated samples inside the
  real manifold (fidelity).
- recall = 1/N Σ_i 1[X_i ∈ ∪_j B(Y_j, NND_k(Y_j))]: real samples inside the
  generated manifold, whose radii come from the generated set (diversity).
- density = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, NND_k(X_i))]: how many real balls hold
  each generated sample, over k. About 1 for a fresh draw of the real distribution;
  above 1 when samples sit where real balls pile up, e.g. on the real samples
  themselves ((k + 1)/k for a copy of the real set); at most N/k.
- coverage = 1/N Σ_i 1[∃ j: Y_j ∈ B(X_i, NND_k(X_i))]: real samples whose own ball
  holds a generated one (diversity that real outliers cannot inflate).

All four: higher is better. Distances are Euclidean, computed a block of rows at a
time (10,000 x 10,000 takes 32 MB blocks, never the 800 MB matrix) in float64 (the
ring's k-NN radii are ~0.004: float32 rounding of ||a||² + ||b||² - 2 a·b would be a
few percent of their squares), with no randomness: the same samples give the same numbers.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from ganrun.errors import ConfigError

NAMES = ("precision", "recall", "density", "coverage")
K = 5  # nearest neighbours (Naeem et al. 2020; Kynkäänniemi et al. 2019 used 3)
BLOCK_BYTES = 32 * 2**20  # one block of float64 distances


def check_sets(real: torch.Tensor, fake: torch.Tensor, k: int) -> None:
    """One-line ConfigError unless real and fake are N x d feature sets of one size and width, with N > k."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k={k} is not valid; the number of nearest neighbours must be a positive integer")
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ConfigError(
            f"precision/recall/density/coverage compare N x d feature sets of one width (got {tuple(real.shape)} real "
            f"and {tuple(fake.shape)} generated)"
        )
    if len(real) != len(fake):
        raise ConfigError(
            f"precision/recall/density/coverage need as many real as generated samples (got {len(real)} real and {len(fake)} generated)"
        )
    if len(real) <= k:
        raise ConfigError(f"k={k} nearest neighbours need at least {k + 1} samples per set (got {len(real)})")


def squared_distance_blocks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, D) with D[i, j] = ||a[start + i] - b[j]||², a block of rows of ``a`` at a time.

    One matrix product per block: ||a||² + ||b||² - 2 a·b as [a, ||a||², 1] · [-2b, 1, ||b||²]."""
    ones_a, ones_b = a.new_ones(len(a), 1), b.new_ones(len(b), 1)
    a = torch.cat([a, a.pow(2).sum(1, keepdim=True), ones_a], dim=1)
    b = torch.cat([-2 * b, ones_b, b.pow(2).sum(1, keepdim=True)], dim=1)
    rows = max(1, BLOCK_BYTES // (8 * len(b)))
    for start in range(0, len(a), rows):
        yield start, a[start : start + rows] @ b.T  # (rows, len(b))


def knn_radii_squared(features: torch.Tensor, k: int = K) -> torch.Tensor:
    """NND_k² of each row of ``features`` (N x d): the squared distance to its k-th nearest other row."""
    radii = torch.empty(len(features), dtype=features.dtype, device=features.device)
    for start, distances in squared_distance_blocks(features, features):
        rows = torch.arange(len(distances), device=features.device)
        distances[rows, start + rows] = math.inf  # a point is not its own neighbour (its duplicates still are)
        radii[start : start + len(distances)] = distances.topk(k, dim=1, largest=False).values[:, -1]
    return radii


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = K, device="cpu") -> dict[str, float]:
    """``precision``, ``recall``, ``density``, ``coverage`` of ``fake`` (N x d) against ``real`` (N x d).

    Compares squared distances with squared radii: the same verdicts, without square roots."""
    check_sets(real, fake, k)
    real, fake = real.to(device, torch.float64), fake.to(device, torch.float64)
    real_radii, fake_radii = knn_radii_squared(real, k), knn_radii_squared(fake, k)
    real_balls_holding = torch.empty(len(fake), dtype=torch.float64, device=device)  # per Y_j: #{i: Y_j in B(X_i)}
    in_fake_manifold = torch.zeros(len(real), dtype=torch.bool, device=device)  # per X_i: in some B(Y_j)
    nearest_fake = torch.full(
        (len(real),), math.inf, dtype=torch.float64, device=device
    )  # per X_i: min_j ||X_i - Y_j||²
    for start, distances in squared_distance_blocks(fake, real):  # rows: generated, columns: real
        stop = start + len(distances)
        real_balls_holding[start:stop] = (distances <= real_radii).sum(1)
        in_fake_manifold |= (distances <= fake_radii[start:stop, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, distances.min(0).values)
    return {
        "precision": float((real_balls_holding > 0).double().mean()),
        "recall": float(in_fake_manifold.double().mean()),
        "density": float(real_balls_holding.sum() / (k * len(fake))),
        "coverage": float((nearest_fake <= real_radii).double().mean()),
    }


def requested(result: dict[str, float], names: set[str]) -> dict[str, float]:
    """The four numbers of ``result`` that are in ``names``."""
    return {name: value for name, value in result.items() if name in names}


# How each feature space pairs real with generated samples (recorded as protocol["prdc"]).
SPACES = {
    "plane": "the plane (2-D points as they are); real: as many fresh draws from the mixture (seed 12345)",
    "judge": (
        "the judge's 64-d features (penultimate layer); real: all training images, or a random subset (seed 0) "
        "as large as the generated set when that is smaller; generated: the first as many as there are real"
    ),
    "inception": (
        "Inception-v3 2,048-d pool features; real: the KID reference (up to 10,000 training images, seed 0), "
        "cut to a random subset (seed 0) as large as the generated set when that is smaller; generated: the first "
        "as many as there are real"
    ),
}


def describe(space: str, k: int = K) -> str:
    """The protocol line recorded with the four numbers."""
    return f"Kynkäänniemi et al. 2019 / Naeem et al. 2020, k={k} nearest neighbours within each set, in {SPACES[space]}"
