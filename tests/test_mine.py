"""MINE (ganrun.mine): the Donsker-Varadhan bound, its corrected gradient, and the estimate."""
from __future__ import annotations

import math

import pytest
import torch

from ganrun.mine import DonskerVaradhan, MINEEstimator, log_mean_exp


def correlated_gaussians(n: int, dim: int, rho: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, x) with z, x ~ N(0, I_dim) and corr(z_k, x_k) = rho per coordinate."""
    z = torch.randn(n, dim, generator=generator)
    noise = torch.randn(n, dim, generator=generator)
    return z, rho * z + math.sqrt(1 - rho**2) * noise


def test_loss_value_is_the_negated_bound_and_its_gradient_uses_the_moving_average():
    torch.manual_seed(0)
    dv = DonskerVaradhan(ema_rate=0.5)
    joint = torch.randn(8, requires_grad=True)
    marginal = torch.randn(8, requires_grad=True)
    dv.update(torch.zeros(8))  # moving average of E[e^T] = 1 (log 0)
    dv.update(marginal)        # now log((1 + mean e^m) / 2)
    loss, estimate = dv(joint, marginal)
    expected = joint.mean() - torch.log(marginal.exp().mean())
    assert torch.allclose(estimate, expected.detach()) and torch.allclose(loss, -expected)
    loss.backward()
    ema = (1 + marginal.detach().exp().mean()) / 2
    assert torch.allclose(joint.grad, torch.full((8,), -1 / 8))
    # d/dm_i of E[e^m]/ema = e^{m_i} / (8 ema), not the minibatch e^{m_i} / sum e^m.
    assert torch.allclose(marginal.grad, marginal.detach().exp() / (8 * ema))
    assert not torch.allclose(marginal.grad, torch.softmax(marginal.detach(), 0))


def test_moving_average_is_stable_in_log_space():
    dv = DonskerVaradhan(ema_rate=0.1)
    dv.update(torch.full((4,), 200.0))  # e^200 overflows float32
    dv.update(torch.full((4,), 100.0))
    assert torch.isfinite(dv.log_ema)
    assert dv.log_ema.item() == pytest.approx(200 + math.log(0.9), abs=1e-3)
    assert log_mean_exp(torch.tensor([0.0, math.log(3.0)])).item() == pytest.approx(math.log(2.0))


@pytest.mark.parametrize("dim,rho", [(2, 0.8), (5, 0.5)])
def test_estimate_of_correlated_gaussians_is_within_10_percent_of_the_closed_form(dim, rho):
    """I(z; x) = -dim/2 * log(1 - rho^2) for coordinate-wise correlated Gaussians."""
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(0)
    exact = -dim / 2 * math.log(1 - rho**2)
    mine = MINEEstimator(z_dim=dim, x_dim=dim, hidden=(64, 64), ema_rate=0.01)
    optimizer = torch.optim.Adam(mine.parameters(), lr=1e-3)
    untrained = mine.bound(*correlated_gaussians(20000, dim, rho, data))[1].item()
    for _ in range(1500):
        loss, _ = mine.statistics_loss(*correlated_gaussians(256, dim, rho, data))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        estimate = mine.bound(*correlated_gaussians(20000, dim, rho, data))[1].item()
    print(f"dim={dim} rho={rho}: exact {exact:.3f}, untrained {untrained:.3f}, trained {estimate:.3f}")
    assert abs(untrained - exact) > 0.5 * exact
    assert abs(estimate - exact) <= 0.1 * exact


def test_statistics_loss_leaves_the_source_of_x_untouched_and_bound_does_not():
    mine = MINEEstimator(z_dim=2, x_dim=3)
    z = torch.randn(16, 2)
    weights = torch.randn(2, 3, requires_grad=True)
    mine.statistics_loss(z, z @ weights)[0].backward()
    assert weights.grad is None and mine.statistics.net[0].weight.grad is not None
    mine.bound(z, z @ weights)[0].backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0


def test_mine_weight_adds_the_term_trains_T_and_logs_the_estimate(make_config, tmp_path):
    """tricks.mine_weight > 0: G's loss gains MINE's term, T trains with its own optimizer
    (a sub-module of the training module: checkpointed, and averaged across ranks by
    GANDDPStrategy like G's and D's), and loss/mine (= -I estimate) and mine/mi_estimate are logged."""
    from conftest import FAST, scalars
    from ganrun.build import build_module
    from ganrun.mine import MINETerm
    from ganrun.train import train

    cfg = make_config(*FAST, "model=gan", "dataset=ring", "steps=30", "tricks.mine_weight=0.5")
    metrics = train(cfg)
    assert metrics["g_updates"] == 30 and "loss/mine" in metrics and "loss/mine_own" in metrics
    assert len(scalars(tmp_path / "run", "loss/mine")) == 30
    assert len(scalars(tmp_path / "run", "mine/mi_estimate")) == 30
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    trained_T = {k: v for k, v in checkpoint["state_dict"].items() if ".estimator.statistics." in k}
    assert trained_T
    module = build_module(make_config(*FAST, "model=gan", "dataset=ring", "tricks.mine_weight=0.5"), _ring())
    (term,) = [t for t in module.terms if isinstance(t, MINETerm)]
    assert term.weight == 0.5
    assert {id(p) for p in term.parameters()} <= {id(p) for p in module.parameters()}
    fresh = dict(module.state_dict())
    assert any(not torch.equal(fresh[k], v) for k, v in trained_T.items())
    off = build_module(make_config(*FAST, "model=gan", "dataset=ring", "tricks.mine_weight=0"), _ring())
    assert not any(isinstance(t, MINETerm) for t in off.terms)


def _ring():
    from ganrun.data.toy import RingDataModule

    datamodule = RingDataModule(batch_size=16, seed=0)
    datamodule.setup("fit")
    return datamodule


@pytest.mark.slow
def test_mi_estimate_rises_above_zero_as_T_learns(make_config, tmp_path):
    """mine/mi_estimate is the number a user watches: T starts as a random network
    (estimate near 0) and, as it learns, the estimate of I(z; G(z)) rises clearly
    above 0 on the ring (G is deterministic in z, so the true I is large)."""
    from conftest import FAST, scalars
    from ganrun.train import train

    train(make_config(*FAST, "model=gan", "dataset=ring", "steps=400", "tricks.mine_weight=0.5", "seed=0"))
    values = [v for _, v in scalars(tmp_path / "run", "mine/mi_estimate")]
    early, late = sum(values[:20]) / 20, sum(values[-50:]) / 50
    print("mi_estimate early", round(early, 3), "late", round(late, 3))
    assert late > 0.25 and late > early + 0.2, (early, late)  # measured (seed 0): 0.003 -> 0.48
