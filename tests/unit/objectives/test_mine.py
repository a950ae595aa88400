"""MINE (ganrun.objectives.mine): the Donsker-Varadhan bound, its corrected gradient, and the estimate."""

from __future__ import annotations

import math

import pytest
import torch

from ganrun.objectives.mine import DonskerVaradhan, MINEEstimator, log_mean_exp


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
    dv.update(marginal)  # now log((1 + mean e^m) / 2)
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
    untrained = mine.bound(*correlated_gaussians(20000, dim, rho, data), torch.randn(20000, dim, generator=data))[
        1
    ].item()
    for _ in range(1500):
        loss, _ = mine.statistics_loss(
            *correlated_gaussians(256, dim, rho, data), torch.randn(256, dim, generator=data)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        estimate = mine.bound(*correlated_gaussians(20000, dim, rho, data), torch.randn(20000, dim, generator=data))[
            1
        ].item()
    print(f"dim={dim} rho={rho}: exact {exact:.3f}, untrained {untrained:.3f}, trained {estimate:.3f}")
    assert abs(untrained - exact) > 0.5 * exact
    assert abs(estimate - exact) <= 0.1 * exact


def test_statistics_loss_leaves_the_source_of_x_untouched_and_bound_does_not():
    mine = MINEEstimator(z_dim=2, x_dim=3)
    z = torch.randn(16, 2)
    weights = torch.randn(2, 3, requires_grad=True)
    mine.statistics_loss(z, z @ weights, torch.randn(16, 2))[0].backward()
    assert weights.grad is None and mine.statistics.net[0].weight.grad is not None
    mine.bound(z, z @ weights, torch.randn(16, 2))[0].backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0


def test_mine_weight_adds_the_term_trains_T_and_logs_the_estimate(make_config, tmp_path):
    """tricks.mine_weight > 0: G's loss gains MINE's term, T trains with its own optimizer
    (a sub-module of the training module: checkpointed, and averaged across ranks by
    GANDDPStrategy like G's and D's), and loss/mine (= -I estimate) and mine/mi_estimate are logged."""
    from support import FAST, scalars

    from ganrun.config.build import build_module
    from ganrun.objectives.mine import MINETerm
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
    from support import FAST, scalars

    from ganrun.train import train

    train(make_config(*FAST, "model=gan", "dataset=ring", "steps=400", "tricks.mine_weight=0.5", "seed=0"))
    values = [v for _, v in scalars(tmp_path / "run", "mine/mi_estimate")]
    early, late = sum(values[:20]) / 20, sum(values[-50:]) / 50
    print("mi_estimate early", round(early, 3), "late", round(late, 3))
    assert late > 0.25 and late > early + 0.2, (early, late)  # measured (seed 0): 0.003 -> 0.48


# ------------------------------------------------------------ the estimator's own mechanisms
def test_statistics_loss_gives_T_the_moving_average_corrected_gradient():
    """MINEEstimator.statistics_loss (what trains T in a run) uses the DV loss with the
    moving-average denominator: T's gradient is -(E[grad T_joint] - E[grad T_m e^T_m] / ema),
    not the plain minibatch DV gradient."""
    torch.manual_seed(0)
    mine = MINEEstimator(z_dim=2, x_dim=2, hidden=(8,), ema_rate=0.01)
    mine.dv.log_ema.fill_(2.0)  # a moving average far from this batch's E[e^T]
    c, x, c_marginal = torch.randn(32, 2), torch.randn(32, 2), torch.randn(32, 2)
    loss, _ = mine.statistics_loss(c, x, c_marginal)
    parameters = list(mine.statistics.parameters())
    got = torch.autograd.grad(loss, parameters)
    ema = mine.dv.log_ema.exp()  # after this batch's update, as the loss used it
    joint, marginal = mine.statistics(c, x), mine.statistics(c_marginal, x)
    corrected = -(joint.mean() - marginal.exp().mean() / ema)
    plain = -(joint.mean() - log_mean_exp(marginal))
    naive = torch.autograd.grad(plain, parameters, retain_graph=True)
    for g, want in zip(got, torch.autograd.grad(corrected, parameters)):
        torch.testing.assert_close(g, want)
    assert any(not torch.allclose(g, n, atol=1e-4) for g, n in zip(got, naive))


def ring_term(**kwargs):
    from ganrun.objectives.mine import MINETerm
    from ganrun.training.latent import GaussianLatent

    term = MINETerm(1.0, **kwargs)
    term.setup(latent=GaussianLatent(z_dim=3), data_shape=(2,), num_classes=0)
    return term


def test_T_reads_the_code_slice_and_marginals_pair_x_with_fresh_codes(monkeypatch):
    """target=code: T sees (c, G(z)) with c the last code_dims coordinates of G's input; the
    marginal pairs use codes from a fresh draw of the latent, not a permutation of the batch."""
    term = ring_term(code_dims=1)
    assert term.estimator.statistics.net[0].in_features == 1 + 2
    seen = []
    monkeypatch.setattr(term.estimator, "scores", lambda c, x, m: seen.append((c, x, m)) or (c.sum(1), m.sum(1)))
    noise, fake = torch.randn(256, 3), torch.randn(256, 2)
    term.own_loss(fake, noise, None)
    ((c, x, marginal),) = seen
    torch.testing.assert_close(c, noise[:, 2:])
    assert marginal.shape == (256, 1)
    # a fresh draw shares no value with the batch's codes (a permutation would share all of them)
    assert not torch.isin(marginal, c).any()
    assert marginal.std().item() == pytest.approx(1.0, abs=0.15)
    noise_form = ring_term(target="noise")
    assert noise_form.estimator.statistics.net[0].in_features == 3 + 2


def test_a_code_as_wide_as_the_input_is_refused():
    from ganrun.errors import ConfigError

    with pytest.raises(ConfigError, match="tricks.mine_code_dims=3 is not valid .* choose 1 to 2"):
        ring_term(code_dims=3)
    with pytest.raises(ConfigError, match="target=entropy is not valid"):
        ring_term(target="entropy")


def test_g_step_on_the_mine_term_raises_the_estimate():
    """The sign of G's term, end to end through Terms: one small step of G down its MINE
    loss raises the DV estimate of I(G([eps, c]); c) (same T, same marginal codes)."""
    from ganrun.objectives.terms import Terms

    torch.manual_seed(0)
    term, generator = ring_term(code_dims=1), torch.nn.Linear(3, 2)
    terms, noise = Terms([term]), torch.randn(512, 3)

    def estimate_and_loss():
        torch.manual_seed(1)  # the same fresh marginal codes each time
        fake = generator(noise)
        loss = terms.weighted(torch.zeros(()), terms.generator_losses(fake, noise, None, g_updates=0), {}, 0)
        torch.manual_seed(1)
        _, estimate = term.estimator.bound(term.code(noise), fake, term.fresh_code(noise))
        return estimate, loss

    before, loss = estimate_and_loss()
    torch.testing.assert_close(loss, -before)  # G's term is minus the estimate, weight 1
    loss.backward()
    with torch.no_grad():
        for p in generator.parameters():
            p -= 1.0 * p.grad
    after, _ = estimate_and_loss()
    assert after > before + 1e-4, (before, after)


def test_a_term_whose_weight_has_decayed_to_zero_is_not_computed(make_config, monkeypatch):
    """MINE with anneal_steps=3 over a 5-update run: G's term and T's step run at G updates
    0-2 only; after that nothing of MINE is computed (no cost, and no 0 * nan)."""
    from ganrun.objectives.mine import MINETerm
    from ganrun.train import train

    calls = {"generator_loss": [], "own_loss": []}
    for name in calls:
        original = getattr(MINETerm, name)
        monkeypatch.setattr(MINETerm, name, lambda self, *a, _o=original, _n=name: calls[_n].append(1) or _o(self, *a))
    metrics = train(make_config(*TINY_RING, "steps=5", "tricks.mine_weight=1.0", "tricks.mine_anneal_steps=3"))
    assert metrics["g_updates"] == 5
    assert len(calls["generator_loss"]) == 3 and len(calls["own_loss"]) == 3


def test_gradient_clipping_leaves_T_alone(make_config, monkeypatch):
    """tricks.grad_clip_norm clips G's and D's gradients, not MINE's T."""
    from ganrun.train import train
    from ganrun.training.module import GANModule

    clipped = []
    original = GANModule._clip_and_measure

    def record(self, parameters, logging, clip=True):
        clipped.append((len(parameters), clip))
        return original(self, parameters, logging, clip)

    monkeypatch.setattr(GANModule, "_clip_and_measure", record)
    train(make_config(*TINY_RING, "steps=2", "tricks.mine_weight=1.0", "tricks.grad_clip_norm=0.1"))
    t_size = 6  # StatisticsNetwork(hidden=(128, 128)): 3 linear layers, weight and bias each
    assert [clip for size, clip in clipped if size == t_size] == [False, False]
    assert all(clip for size, clip in clipped if size != t_size)


def _all_reduce_rank(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    dv = DonskerVaradhan(ema_rate=1.0)  # the average is the last batch's value
    scores = (
        torch.tensor([0.0, 1.0])
        if rank == 0
        else torch.tensor(
            [
                2.0,
                3.0,
            ]
        )
        + 1.0
    )
    dv.update(scores)
    torch.save(dv.log_ema, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_under_ddp_the_moving_average_follows_every_ranks_batch(tmp_path):
    """Each rank folds the global batch's E[e^T] into its moving average, not its own batch's."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_all_reduce_rank, args=(2, port, str(tmp_path)), nprocs=2)
    everything = torch.tensor([0.0, 1.0, 3.0, 4.0])
    for rank in (0, 1):
        assert torch.load(tmp_path / f"{rank}.pt").item() == pytest.approx(log_mean_exp(everything).item(), rel=1e-6)


TINY_RING = [
    "accelerator=cpu",
    "threads=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "model=gan",
    "dataset=ring",
    "dataset.batch_size=32",
    "model.generator.hidden=[16]",
    "model.discriminator.hidden=[16]",
    "callbacks=none",
    "logger=none",
    "scheduler=null",
]
