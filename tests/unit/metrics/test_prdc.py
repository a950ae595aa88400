"""Precision, recall, density and coverage (ganrun/metrics/prdc.py): a case computed by
hand, a brute-force reference, blocks of any size, and constructed sample sets on the
ring (identical, half the modes, one repeated point) in the plane."""

from __future__ import annotations

import re

import pytest
import torch

from ganrun.errors import ConfigError
from ganrun.metrics import prdc as prdc_module
from ganrun.metrics.prdc import NAMES, K, prdc


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


# Real {1, 3, 5, 9, 11} and generated {-4, 8, 13, 16, 17} on a line, k = 2.
# Real NND_2 (self excluded): 1 -> 4 (to 5), 3 -> 2, 5 -> 4, 9 -> 4, 11 -> 6.
# Generated NND_2: -4 -> 17 (to 13), 8 -> 8, 13 -> 4, 16 -> 3, 17 -> 4.
# Real balls holding each generated point: -4: none; 8: those of 5, 9, 11; 13: those of 9
# (|13 - 9| = 4, on the sphere: balls are closed) and 11; 16: 11's; 17: 11's (|17 - 11| = 6).
# precision 4/5; density (0 + 3 + 2 + 1 + 1) / (2 * 5) = 0.7; recall 5/5 (-4's ball, radius
# 17, holds every real point: an outlier inflates recall); coverage 3/5 (the balls of 5, 9 and
# 11 hold 8; those of 1 and 3 hold nothing).
HAND_REAL, HAND_FAKE = column(1, 3, 5, 9, 11), column(-4, 8, 13, 16, 17)
HAND_RESULT = {"precision": 0.8, "recall": 1.0, "density": 0.7, "coverage": 0.6}


def test_a_case_computed_by_hand():
    result = prdc(HAND_REAL, HAND_FAKE, k=2)
    assert result == pytest.approx(HAND_RESULT, abs=1e-12)
    assert list(result) == list(NAMES)


def test_blocks_of_any_size_give_the_same_numbers(monkeypatch):
    """Distances come a block of rows at a time; the diagonal (a point is not its own
    neighbour) must be found in every block, the last one shorter."""
    for rows in (1, 2, 3):
        monkeypatch.setattr(prdc_module, "BLOCK_BYTES", 8 * 5 * rows)
        assert prdc(HAND_REAL, HAND_FAKE, k=2) == pytest.approx(HAND_RESULT, abs=1e-12), rows


def brute_force(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The papers' formulas over whole distance matrices (small sets only)."""

    def radii(x):
        d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
        d.fill_diagonal_(float("inf"))
        return d.sort(dim=1).values[:, k - 1]

    real_radii, fake_radii = radii(real), radii(fake)
    d = torch.cdist(fake, real, compute_mode="donot_use_mm_for_euclid_dist")  # (generated, real)
    inside_real = d <= real_radii[None, :]
    return {
        "precision": inside_real.any(1).double().mean().item(),
        "recall": (d <= fake_radii[:, None]).any(0).double().mean().item(),
        "density": inside_real.double().sum().item() / (k * len(fake)),
        "coverage": inside_real.any(0).double().mean().item(),
    }


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_the_formulas_on_random_sets(k, monkeypatch):
    generator = torch.Generator().manual_seed(k)
    real = torch.randn(300, 3, generator=generator, dtype=torch.float64)
    fake = torch.randn(300, 3, generator=generator, dtype=torch.float64) * 1.3 + 0.4
    monkeypatch.setattr(prdc_module, "BLOCK_BYTES", 8 * 300 * 64)  # 64 rows a block: 5 blocks
    assert prdc(real, fake, k=k) == brute_force(real, fake, k)
    assert prdc(real.float(), fake.float(), k=k) == brute_force(real, fake, k)  # computed in float64 anyway


def test_k_is_five_by_default():
    assert K == 5
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, 2, generator=generator), torch.randn(200, 2, generator=generator)
    assert prdc(real, fake) == prdc(real, fake, k=5) != prdc(real, fake, k=3)


# ---------------------------------------------------------- constructed sets on the ring
@pytest.fixture(scope="module")
def ring():
    from ganrun.data.toy import RingDataModule

    return RingDataModule(batch_size=64)


def mixture_samples(ring, n: int, seed: int, modes=None) -> torch.Tensor:
    """n points of the ring's mixture (8 Gaussians, std 0.02), or of its ``modes`` only."""
    generator = torch.Generator().manual_seed(seed)
    centres = ring.modes if modes is None else ring.modes[modes]
    which = torch.randint(len(centres), (n,), generator=generator)
    return centres[which] + ring.std * torch.randn(n, 2, generator=generator)


def test_identical_sets(ring):
    real = mixture_samples(ring, 2500, seed=0)
    result = prdc(real, real.clone())
    assert result["precision"] == result["recall"] == result["coverage"] == 1.0
    # Each real ball holds its centre and its k neighbours: density (k + 1) / k, above 1.
    assert result["density"] == pytest.approx(1.2, abs=0.005)


def test_two_draws_of_one_distribution(ring):
    result = prdc(mixture_samples(ring, 2500, seed=0), mixture_samples(ring, 2500, seed=1))
    assert result["precision"] > 0.95 and result["recall"] > 0.95
    assert result["density"] == pytest.approx(1.0, abs=0.05)
    # Naeem et al.: E[coverage] = 1 - (1/2)^k for two equal-sized samples of one distribution.
    assert result["coverage"] == pytest.approx(1 - 0.5**5, abs=0.015)


def test_half_the_modes(ring):
    real = mixture_samples(ring, 2500, seed=0)
    half = mixture_samples(ring, 2500, seed=1, modes=[0, 1, 2, 3])
    result = prdc(real, half)
    assert result["recall"] == pytest.approx(0.5, abs=0.04) and result["coverage"] == pytest.approx(0.5, abs=0.04)
    # Every sample is as realistic as a real one.
    assert result["precision"] > 0.95 and result["density"] == pytest.approx(1.0, abs=0.05)


def test_one_repeated_point(ring):
    real = mixture_samples(ring, 2500, seed=0)
    result = prdc(real, real[:1].expand(2500, -1))
    assert result["coverage"] < 0.01 and result["recall"] < 0.01
    assert result["precision"] == 1.0  # a real point is realistic: precision cannot see collapse


def test_far_away_samples_score_zero(ring):
    real = mixture_samples(ring, 500, seed=0)
    far = mixture_samples(ring, 500, seed=1) + 100.0
    assert prdc(real, far) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_numbers_do_not_depend_on_where_the_data_sits(ring):
    """||a||² + ||b||² - 2 a·b cancels far from the origin: in float64 the ring's squared
    radii (~1e-5) survive a shift by (100, 100), where |a|² ~ 2e4 (float32 would keep ~1e-3)."""
    real, fake = mixture_samples(ring, 2500, seed=0).double(), mixture_samples(ring, 2500, seed=1).double()
    assert prdc(real + 100, fake + 100) == pytest.approx(prdc(real, fake), abs=0.001)


def test_same_samples_same_numbers_and_order_does_not_matter(ring):
    real, fake = mixture_samples(ring, 1000, seed=0), mixture_samples(ring, 1000, seed=1, modes=[0, 1, 2])
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(2))
    first = prdc(real, fake)
    assert prdc(real, fake) == first
    assert prdc(real[order], fake[order.flip(0)]) == pytest.approx(first, abs=1e-12)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "real, fake, k, message",
    [
        (
            torch.zeros(10, 2),
            torch.zeros(9, 2),
            5,
            "need as many real as generated samples (got 10 real and 9 generated)",
        ),
        (torch.zeros(10, 2), torch.zeros(10, 3), 5, "one width (got (10, 2) real and (10, 3) generated)"),
        (torch.zeros(10), torch.zeros(10), 5, "N x d feature sets"),
        (torch.zeros(5, 2), torch.zeros(5, 2), 5, "k=5 nearest neighbours need at least 6 samples per set (got 5)"),
        (torch.zeros(10, 2), torch.zeros(10, 2), 0, "k=0 is not valid"),
    ],
)
def test_bad_input_is_one_line(real, fake, k, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        prdc(real, fake, k=k)
    assert "\n" not in str(error.value)
