"""One cheap, direct test per trick and constraint of the training step.

Each test looks at the line it guards (one step, or a few steps of a tiny network)
and fails when that line is broken: EMA, weight clipping, label smoothing, instance
noise, gradient clipping, the gradient penalty (GANModule and LAPGAN), DDP gradient
averaging, and the n_critic / steps= counting. No learning runs.
"""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from support import FAST
from torch import nn

from ganrun.objectives.terms import Term
from ganrun.training.module import GANModule

# A 2-D mixture and 16-unit MLPs: a few steps take about a second.
TINY = [
    *FAST,
    "model=gan",
    "dataset=ring",
    "dataset.batch_size=32",
    "model.z_dim=4",
    "model.generator.hidden=[16]",
    "model.discriminator.hidden=[16]",
    "callbacks=none",
    "logger=none",
]


def run(make_config, *overrides: str, callbacks=()) -> dict:
    from ganrun.train import train

    return train(make_config(*TINY, *overrides), callbacks=callbacks)


class EveryGUpdate(pl.Callback):
    """Calls ``record(module)`` after every G update: the public way to observe the step
    (``training_step`` returns the G update's statistics, nothing after a D step alone)."""

    def __init__(self, record) -> None:
        self.record = record

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if outputs:
            self.record(module)


def after(method_name: str, monkeypatch, record):
    """Call ``record(module, result, *args)`` after every ``GANModule.<method_name>``."""
    original = getattr(GANModule, method_name)

    @functools.wraps(original)
    def wrapped(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        record(self, result, *args)
        return result

    monkeypatch.setattr(GANModule, method_name, wrapped)


# ------------------------------------------------------------------------- EMA
def test_ema_weights_are_the_bias_corrected_average_after_k_steps(make_config, monkeypatch):
    decay, thetas, holder = 0.6, [], {}

    def record(module):
        thetas.append({k: v.detach().clone() for k, v in module.generator.state_dict().items()})
        holder["module"] = module

    run(make_config, "steps=4", f"tricks.ema_decay={decay}", callbacks=[EveryGUpdate(record)])
    ema = holder["module"].generator_ema.module.state_dict()
    assert len(thetas) == 4
    # The mean of the iterates weighted by d^(K - i), normalised: (1 - d) d^(K - i) / (1 - d^K).
    for name, value in ema.items():
        if not value.is_floating_point():
            continue
        expected = sum((1 - decay) * decay ** (3 - i) / (1 - decay**4) * thetas[i][name] for i in range(4))
        torch.testing.assert_close(value, expected, msg=name)
        assert not torch.equal(value, thetas[-1][name])  # an average, not a copy of G


class Unconditional1d(nn.Module):
    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1, bias=False)
        self.norm = nn.BatchNorm1d(1) if batch_norm else nn.Identity()

    def forward(self, z, labels=None):
        return self.norm(self.linear(z))


def test_ema_after_500_updates_keeps_almost_nothing_of_the_first_weights():
    """With decay 0.999 a plain EMA started from G's first weights still holds 0.999^499 = 61 %
    of them after 500 updates; the bias-corrected one holds (1 - d) d^499 / (1 - d^500) = 0.15 %."""
    from ganrun.training.ema import GeneratorEMA

    generator = Unconditional1d()
    ema = GeneratorEMA(generator, 0.999)
    for k in range(1, 501):
        with torch.no_grad():
            generator.linear.weight.fill_(1.0 if k == 1 else 0.0)
        ema.update(generator)
    first_share = ema.module.linear.weight.item()
    assert first_share == pytest.approx(0.001 * 0.999**499 / (1 - 0.999**500), rel=1e-3)
    assert first_share < 0.002
    assert int(ema.n_averaged) == 500


def test_ema_batch_norm_statistics_are_those_of_the_averaged_weights():
    """The EMA's running mean and variance are recomputed from its own activations (not the
    average of G's running statistics), before it is sampled and in saved checkpoints."""
    from ganrun.training.ema import GeneratorEMA

    torch.manual_seed(0)
    generator = Unconditional1d(batch_norm=True)
    ema = GeneratorEMA(generator, 0.5)
    for weight in (1.0, 3.0, 5.0):
        with torch.no_grad():
            generator.linear.weight.fill_(weight)
        generator(torch.randn(64, 1) + 2.0)  # G's own running statistics move in training
        ema.update(generator)
    averaged = ema.module.linear.weight.item()
    assert averaged == pytest.approx((0.25 * 1 + 0.5 * 3 + 1 * 5) / 1.75)  # weights 1/4, 1/2, 1 normalised
    inputs = torch.randn(4 * 256, 1) + 2.0
    batches = iter(inputs.split(256))
    ema.refresh_batch_norm(lambda n: (next(batches), None), batches=4, batch_size=256)
    activations = averaged * inputs
    norm = ema.module.norm
    assert norm.running_mean.item() == pytest.approx(activations.mean().item(), rel=1e-4)
    per_batch_variance = torch.stack([batch.var() for batch in activations.split(256)]).mean()
    assert norm.running_var.item() == pytest.approx(per_batch_variance.item(), rel=1e-4)
    assert not ema.module.training or ema.module.training == generator.training
    assert not ema.stale


def test_ema_in_a_run_is_saved_with_its_own_batch_norm_statistics(make_config, tmp_path, monkeypatch):
    """End to end (DCGAN, batch norm in G): last.ckpt holds the EMA's batch-norm statistics
    recomputed for its averaged weights (not G's, not left stale), and sampling loads them."""
    from ganrun.commands.sample import load_generator
    from ganrun.train import train

    holder = {}
    train(
        make_config(
            *FAST,
            "dataset=digits",
            "dataset.image_size=8",
            "model.generator.width=4",
            "model.discriminator.width=4",
            "steps=3",
            "tricks.ema_decay=0.9",
            "logger=none",
            "callbacks.samples=null",
            "callbacks.evaluation=null",
            "callbacks.collapse=null",
        ),
        callbacks=[EveryGUpdate(lambda module: holder.update(module=module))],
    )
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    ema = holder["module"].generator_ema
    ema.stale = True  # recompute from scratch, as the save must have done
    recomputed = dict(holder["module"].sampling_generator.named_buffers())
    means = [name for name in recomputed if name.endswith("running_mean")]
    assert means
    loaded, info = load_generator(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert info["ema"]
    for name in means:
        saved = state[f"generator_ema.module.{name}"]
        torch.testing.assert_close(saved, recomputed[name])
        assert not torch.allclose(saved, state[f"generator.{name}"])
        torch.testing.assert_close(loaded.get_buffer(name), saved)


# ------------------------------------------------------------- weight clipping
def test_every_critic_weight_is_within_the_clip_after_every_critic_step(make_config, monkeypatch):
    largest = []
    after(
        "_d_step",
        monkeypatch,
        lambda m, r, *a: largest.append(max(p.abs().max().item() for p in m.discriminator.parameters())),
    )
    run(make_config, "loss=wgan", "steps=2", "n_critic=3", "optimizer.lr=0.05")
    assert len(largest) == 6 and max(largest) <= 0.01  # the initial weights are far above 0.01


# ------------------------------------------------------------- label smoothing
@pytest.mark.parametrize("loss", ["ns", "minimax", "ls"])
def test_label_smoothing_sets_d_real_target_and_leaves_the_fake_one(make_config, loss):
    from ganrun.config.build import build_module, instantiate

    cfg = make_config(*TINY, f"loss={loss}", "tricks.label_smoothing=0.2")
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.setup("fit")
    objective = build_module(cfg, datamodule).objective
    real, fake = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.5, -0.4, 0.1])
    if loss == "ls":  # a=0, b=1: the real target b' = a + 0.8 (b - a) = 0.8
        expected = 0.5 * ((real - 0.8) ** 2).mean() + 0.5 * (fake**2).mean()
    else:  # binary cross-entropy with real target 0.8, fake target 0
        p_real, p_fake = torch.sigmoid(real), torch.sigmoid(fake)
        expected = -(0.8 * p_real.log() + 0.2 * (1 - p_real).log()).mean() - (1 - p_fake).log().mean()
    torch.testing.assert_close(objective.d_loss(real_out=real, fake_out=fake), expected)


# -------------------------------------------------------------- instance noise
class Unconditional(nn.Linear):
    def forward(self, x, labels=None):
        return super().forward(x)


def tiny_module(**kwargs) -> GANModule:
    from ganrun.objectives.losses import Wasserstein
    from ganrun.training.latent import GaussianLatent

    return GANModule(
        Unconditional(2, 2),
        Unconditional(2, 1),
        Wasserstein(),
        latent=GaussianLatent(z_dim=2),
        optimizer_g=torch.optim.SGD,
        optimizer_d=torch.optim.SGD,
        **kwargs,
    )


def test_instance_noise_has_the_scheduled_std_annealed_to_zero():
    from ganrun.objectives.terms import Terms
    from ganrun.objectives.tricks import InstanceNoise

    annealed = Terms([InstanceNoise(0.4, anneal_steps=4)])
    x = torch.zeros(200_000)
    for g_updates, std in [(0, 0.4), (1, 0.3), (2, 0.2), (3, 0.1)]:
        assert annealed.discriminator_input(x, g_updates).std().item() == pytest.approx(std, rel=0.02)
    assert torch.equal(annealed.discriminator_input(x, 4), x)
    constant = Terms([InstanceNoise(0.4)])
    assert constant.discriminator_input(x, 10_000).std().item() == pytest.approx(0.4, rel=0.02)


def test_d_sees_noisy_real_and_fake_inputs_in_both_steps(make_config, monkeypatch):
    stds = []
    original_forward = nn.Sequential.forward

    def recording_forward(self, x):  # the MLP critic's body gets D's input first
        if x.shape[-1] == 2:
            stds.append(x.detach().std().item())
        return original_forward(self, x)

    monkeypatch.setattr(nn.Sequential, "forward", recording_forward)
    run(make_config, "steps=1", "tricks.instance_noise_std=50")
    inputs_of_d = [s for s in stds if s > 10]  # ring data and G's outputs have std ~1.5
    assert len(inputs_of_d) >= 3  # real and fake in the D step, fake in the G step


# ----------------------------------------------------------- gradient clipping
def test_gradients_are_clipped_to_the_norm_before_every_step(make_config, monkeypatch):
    norms, logged = [], {}

    def record(module, result, *args):
        for optimizer in module.trainer.optimizers[:2]:  # G's and D's (MINE's T is not clipped)
            if not getattr(optimizer, "_probed", False):
                optimizer._probed = True
                optimizer.register_step_pre_hook(
                    lambda opt, *_: norms.append(
                        torch.stack(
                            [p.grad.norm() for g in opt.param_groups for p in g["params"] if p.grad is not None]
                        )
                        .norm()
                        .item()
                    )
                )
        logged.update(result)

    after("_d_step", monkeypatch, record)
    run(make_config, "steps=3", "tricks.grad_clip_norm=0.001")
    assert len(norms) >= 4  # D and G steps after the hooks were set
    assert max(norms) <= 0.001 * (1 + 1e-4)
    assert logged["grad_norm/d"] > 0.001  # the norm before clipping: clipping had work to do


# ------------------------------------------------------------ gradient penalty
class ScaledFirstCoordinate(nn.Module):
    """A linear critic x -> scale * x[0]: its input gradient has norm |scale| everywhere."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x, labels=None):
        return self.scale * x.flatten(start_dim=1)[:, 0]


def d_loss_of_one_step(module, real):
    """D's step with the optimizer update replaced by recording the loss it would descend."""
    seen = {}

    def update(loss, optimizer, parameters, logging):
        seen["loss"] = loss.detach()

    module._update = update
    stats = module._d_step(real, None, None, logging=False)
    return seen["loss"], stats


def test_gradient_penalty_on_a_linear_critic_is_the_squared_norm_gap_in_d_loss():
    from ganrun.objectives.terms import GradientPenalty

    module = tiny_module(terms=[GradientPenalty(10.0)])
    module.discriminator = ScaledFirstCoordinate(3.0)
    loss, stats = d_loss_of_one_step(module, torch.randn(8, 2))
    torch.testing.assert_close(stats["loss/gradient_penalty"], torch.tensor(4.0))  # (3 - 1)^2
    torch.testing.assert_close(loss, stats["loss/d"] + 10.0 * 4.0)


def test_gradient_penalty_is_two_sided_a_norm_below_one_is_penalised_too():
    """WGAN-GP penalises (||grad|| - 1)^2 on both sides of 1, not only norms above it."""
    from ganrun.objectives.terms import GradientPenalty

    module = tiny_module(terms=[GradientPenalty(10.0)])
    module.discriminator = ScaledFirstCoordinate(0.5)
    loss, stats = d_loss_of_one_step(module, torch.randn(8, 2))
    torch.testing.assert_close(stats["loss/gradient_penalty"], torch.tensor(0.25))  # (0.5 - 1)^2
    torch.testing.assert_close(loss, stats["loss/d"] + 10.0 * 0.25)


class HalfSquaredNorm(nn.Module):
    """A critic x -> ||x||^2 / 2: its input gradient is x itself, different for every input."""

    def forward(self, x, labels=None):
        return 0.5 * x.flatten(start_dim=1).pow(2).sum(dim=1)


def test_r1_is_the_squared_input_gradient_on_real_examples_only():
    """R1 = E_real[||grad D(x)||^2]; on this critic that is E||x||^2 over the real batch, which
    the fakes (G's outputs, near 0 here) would not give."""
    from ganrun.objectives.terms import R1Penalty

    module = tiny_module(terms=[R1Penalty(5.0)])
    module.discriminator = HalfSquaredNorm()
    real = torch.full((8, 2), 3.0)
    with torch.no_grad():
        module.generator.weight.mul_(0.01)
    loss, stats = d_loss_of_one_step(module, real)
    torch.testing.assert_close(stats["loss/r1"], torch.tensor(18.0))  # 3^2 + 3^2
    torch.testing.assert_close(loss, stats["loss/d"] + 5.0 * 18.0)


def test_lapgan_adds_the_gradient_penalty_of_every_level_to_d_loss():
    from ganrun.models.lapgan import LaplacianDiscriminator, LaplacianGenerator
    from ganrun.objectives.losses import Wasserstein
    from ganrun.objectives.terms import GradientPenalty
    from ganrun.training.lapgan import LAPGANModule
    from ganrun.training.latent import GaussianLatent

    shape = dict(data_shape=(1, 16, 16), levels=2, base_size=8, width=4)
    generator = LaplacianGenerator(z_dim=4, **shape)
    discriminator = LaplacianDiscriminator(norm="layer", **shape)
    module = LAPGANModule(
        generator,
        discriminator,
        Wasserstein(),
        latent=GaussianLatent(z_dim=4),
        terms=[GradientPenalty(10.0)],
        optimizer_g=torch.optim.SGD,
        optimizer_d=torch.optim.SGD,
    )
    discriminator.levels = nn.ModuleList(
        [ScaledFirstCoordinate(3.0), ScaledFirstCoordinate(0.5)]
    )  # (3-1)^2 + (0.5-1)^2
    loss, stats = d_loss_of_one_step(module, torch.rand(4, 1, 16, 16) * 2 - 1)
    torch.testing.assert_close(stats["loss/gradient_penalty"], torch.tensor(4.25))
    torch.testing.assert_close(loss, stats["loss/d"] + 10.0 * 4.25)


# ------------------------------------------------------------ n_critic, steps=
def test_n_critic_d_steps_per_g_step_and_steps_counts_g_updates(make_config, monkeypatch):
    calls = []
    after("_d_step", monkeypatch, lambda m, r, *a: calls.append(("d", m.g_updates)))
    after("_g_step", monkeypatch, lambda m, r, *a: calls.append(("g", m.g_updates)))
    metrics = run(make_config, "steps=3", "n_critic=4")
    expected = [c for g in range(3) for c in [("d", g)] * 4 + [("g", g)]]
    assert calls == expected and metrics["g_updates"] == 3.0


# ------------------------------------------------------------- DDP averaging
class StatisticsTerm(Term):
    """A term with a network of its own (like MINE's T): its gradients must be averaged too."""

    name = "statistics"

    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Linear(2, 1)


def _ddp_problem():
    """One module (G, D and a trainable term) and a batch of 8: the loss touches every parameter."""
    torch.manual_seed(0)
    module = tiny_module(terms=[StatisticsTerm()])
    x, y = torch.randn(8, 2), torch.randn(8)
    return module, x, y


def _ddp_loss(module, x, y):
    fake = module.generator(x)
    return ((module.discriminator(fake).squeeze(1) - y) ** 2).mean() + module.terms["statistics"].network(x).pow(
        2
    ).mean()


def _ddp_rank(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from lightning_fabric.plugins.environments import LightningEnvironment

    from ganrun.runtime.distributed import GANDDPStrategy

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    environment = LightningEnvironment()
    environment.set_world_size(world_size)
    environment.set_global_rank(rank)
    strategy = GANDDPStrategy(cluster_environment=environment)
    module, x, y = _ddp_problem()
    strategy.model = module
    strategy.configure_ddp()  # the hooks that mark which gradients a backward produced
    half = len(x) // world_size
    loss = _ddp_loss(module, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
    loss.backward()
    strategy.post_backward(loss)  # averages this backward's gradients across ranks
    torch.save({name: p.grad for name, p in module.named_parameters()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_process_gradients_equal_single_process_gradients_on_the_combined_batch(tmp_path):
    """GANDDPStrategy's averaging of G's, D's and a trainable term's gradients, on two gloo ranks."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the ranks start at once, without re-importing torch and the test module
    mp.start_processes(_ddp_rank, args=(2, port, str(tmp_path)), nprocs=2, start_method="fork")
    module, x, y = _ddp_problem()
    _ddp_loss(module, x, y).backward()
    expected = {name: p.grad for name, p in module.named_parameters()}
    assert any(name.startswith("terms.") for name in expected)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], msg=name)


def test_non_finite_statistics_are_reported_once_by_name(monkeypatch):
    """A run that blows up logs inf/nan at every logged step; the console gets one line naming
    the non-finite statistics (it printed one per logged step: 131 lines for fgan_rkl on the ring)."""
    module, printed = tiny_module(), []
    monkeypatch.setattr(module, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
    module._warn_if_non_finite({"loss/g": 0.5, "grad_norm/g": 1.0})
    assert printed == []
    module.g_updates = 7
    module._warn_if_non_finite({"loss/g": 0.5, "grad_norm/g": float("inf"), "loss/d": float("nan")})
    module._warn_if_non_finite({"loss/g": float("inf")})
    assert len(printed) == 1, printed
    assert "at G update 7" in printed[0] and "grad_norm/g=inf" in printed[0] and "loss/d=nan" in printed[0]
    assert "loss/g" not in printed[0]
