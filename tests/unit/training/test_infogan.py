"""InfoGAN: the latent codes, the mutual-information term, traversals, sampling, and learning."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from support import FAST, scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ganrun.callbacks.traversal import LatentTraversal, categorical_traversals, continuous_traversals
from ganrun.commands.sample import draw, load_generator
from ganrun.errors import ConfigError
from ganrun.train import train
from ganrun.training.infogan import InfoGANLatent, best_match_accuracy, categorical_nll, gaussian_nll, random_affine
from ganrun.training.latent import GaussianLatent

SMALL_INFOGAN = [
    "model=infogan",
    "dataset=digits",
    "dataset.image_size=16",
    "model.generator.width=8",
    "model.discriminator.width=8",
    "model.z_dim=8",
    "model.module.q_hidden=16",
    # the paper's latent and no LR schedule, not model_dataset/infogan_digits.yaml's
    "model.latent.continuous=2",
    "scheduler=null",
    "model.module.q_shift=0",
    "model.module.q_rotation=0",
    "model.module.q_scale=0",  # Q reads G(z, c) as is
]


# ------------------------------------------------------------------------ latent
def test_latent_layout_shapes_one_hots_and_ranges():
    latent = InfoGANLatent(z_dim=5, categorical=[10, 3], continuous=2)
    assert latent.dim == 5 + 10 + 3 + 2
    x = latent.sample(4000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 20) and x.dtype == torch.float32
    z, one_hot_a, one_hot_b, continuous = x.split([5, 10, 3, 2], dim=1)
    for one_hot, k in ((one_hot_a, 10), (one_hot_b, 3)):
        assert set(one_hot.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(one_hot.sum(dim=1), torch.ones(4000))
        assert torch.bincount(one_hot.argmax(dim=1), minlength=k).min() > 4000 / k * 0.8  # uniform
    assert continuous.min() >= -1 and continuous.max() <= 1
    assert continuous.min() < -0.99 and continuous.max() > 0.99
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


def test_latent_split_and_join_round_trip():
    latent = InfoGANLatent(z_dim=3, categorical=[4, 2], continuous=1)
    x = latent.sample(50, generator=torch.Generator().manual_seed(1))
    z, categories, continuous = latent.split(x)
    assert z.shape == (50, 3) and categories.shape == (50, 2) and continuous.shape == (50, 1)
    assert categories.dtype == torch.int64 and categories[:, 0].max() < 4 and categories[:, 1].max() < 2
    assert torch.equal(latent.join(z, categories, continuous), x)
    # chosen codes, including continuous values outside the training range
    chosen = latent.join(torch.zeros(2, 3), torch.tensor([[3, 0], [1, 1]]), torch.tensor([[-2.0], [2.0]]))
    assert chosen.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1, 0, -2.0], [0, 0, 0, 0, 1, 0, 0, 0, 1, 2.0]]
    assert torch.equal(latent.split(chosen)[1], torch.tensor([[3, 0], [1, 1]]))


def test_latent_sampling_is_reproducible_and_validated():
    latent = InfoGANLatent(z_dim=4)
    a = latent.sample(8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, latent.sample(8, generator=torch.Generator().manual_seed(7)))
    assert latent.categorical == (10,) and latent.continuous == 2  # the paper's MNIST codes
    with pytest.raises(ConfigError, match="categorical"):
        InfoGANLatent(z_dim=4, categorical=[1])
    with pytest.raises(ConfigError, match="no codes"):
        InfoGANLatent(z_dim=4, categorical=[], continuous=0)


# --------------------------------------------------------------- the MI term
def test_mutual_information_terms_match_hand_computed_values():
    # Sample 1: uniform logits over 3 categories, true 0 -> log 3.
    # Sample 2: logits (ln 2, 0, 0), true 0 -> -log(2 / 4) = log 2.
    logits = [torch.tensor([[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0]])]
    categories = torch.tensor([[0], [0]])
    assert categorical_nll(logits, categories).item() == pytest.approx((math.log(3) + math.log(2)) / 2)
    # Two codes are summed: the same code twice doubles it.
    assert categorical_nll(logits * 2, torch.tensor([[0, 0], [0, 0]])).item() == pytest.approx(math.log(6))
    # Unit-variance Gaussian: 0.5 (c - mu)^2 + 0.5 log(2 pi) per code, summed over codes.
    means = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    values = torch.tensor([[0.0, 1.0], [1.0, -1.0]])
    expected = (0.5 * (0.25 + 1.0) + math.log(2 * math.pi) + 0.5 * (1.0 + 1.0) + math.log(2 * math.pi)) / 2
    assert gaussian_nll(means, values).item() == pytest.approx(expected)


def build_small_module(make_config, *overrides):
    from ganrun.train import build_module, instantiate

    cfg = make_config(*FAST, *SMALL_INFOGAN, *overrides)
    datamodule = instantiate(cfg.dataset, seed=0)
    datamodule.setup("fit")
    return build_module(cfg, datamodule)


def test_module_loss_is_the_weighted_sum_and_reaches_g_and_q(make_config):
    module = build_small_module(
        make_config, "model.module.lambda_categorical=0.7", "model.module.lambda_continuous=0.2"
    )
    noise = module.latent.sample(16, generator=torch.Generator().manual_seed(0))
    fake = module.generator(noise)
    loss, stats = module.mutual_information_loss(fake, noise)
    _, categories, continuous = module.latent.split(noise)
    logits, means = module.q_head(module.discriminator.features(fake))
    expected = 0.7 * categorical_nll(logits, categories) + 0.2 * gaussian_nll(means, continuous)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["loss/mutual_information"].item() == pytest.approx(loss.item())
    assert {"loss/mi_categorical", "loss/mi_continuous", "infogan/q_accuracy"} <= stats.keys()
    loss.backward()
    for name, network in (("q_head", module.q_head), ("generator", module.generator)):
        grads = [p.grad for p in network.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name


class WithoutGeneratorGradient:
    """The objective with a G loss that gives G no gradient: what reaches G is the MI term's."""

    def __init__(self, objective) -> None:
        self.objective = objective

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def g_loss(self, *, fake_out):
        return 0.0 * fake_out.sum()


def test_g_step_passes_the_mutual_information_gradient_to_g(make_config):
    """In the module's own G step (not only in ``mutual_information_loss``), G's parameters get
    the MI term's gradient: G's output reaches Q with its graph."""
    import contextlib

    module = build_small_module(make_config)
    module.objective = WithoutGeneratorGradient(module.objective)
    module.manual_backward = lambda loss: loss.backward()
    module._training_only = lambda optimizer: contextlib.nullcontext()
    module._term_steps = lambda *args: {}
    optimizer = torch.optim.SGD(module.generator_side_parameters(), lr=0.0)
    stats = module._g_step(16, None, optimizer, logging=False)
    assert stats["loss/mutual_information"] > 0
    gradient = sum(p.grad.abs().sum() for p in module.generator.parameters() if p.grad is not None)
    assert gradient > 0


def test_random_affine_moves_each_image_and_keeps_the_background():
    torch.manual_seed(0)
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, :, 6:10, 7:9] = 1.0  # a bar in the middle, background -1
    assert torch.equal(random_affine(x), x)  # no move asked: the images as they are
    moved = random_affine(x, shift=0.25, rotation=25, scale=0.15)
    assert moved.shape == x.shape
    assert torch.equal(random_affine(torch.full_like(x, -1.0), shift=0.25, rotation=25), torch.full_like(x, -1.0))
    assert moved.min() >= -1 - 1e-5 and moved.max() <= 1 + 1e-5
    changed = (moved - x).abs().flatten(1).amax(dim=1) > 0.5
    assert changed.float().mean() > 0.5  # most images moved by more than interpolation noise
    assert len({tuple(m.flatten().round(decimals=3).tolist()) for m in moved}) > 32  # each its own move
    # a pure shift of 0.25 (half-width units) moves the bar by at most 2 of 16 pixels
    shifted = random_affine(x, shift=0.25)
    rows = torch.arange(16.0).view(1, 1, 16, 1)
    centre = ((shifted + 1) * rows).sum(dim=(1, 2, 3)) / (shifted + 1).sum(dim=(1, 2, 3))
    assert (centre - 7.5).abs().max() <= 2.01
    x.requires_grad_(True)
    random_affine(x, shift=0.1, rotation=10, scale=0.1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable: G learns through it


def test_q_reads_a_moved_copy_only_when_asked(make_config):
    """With q_shift / q_rotation / q_scale set, the MI term is Q's cross-entropy on a randomly
    moved copy of G(z, c) (random_affine, drawn from torch's RNG); without them, on G(z, c)."""
    module = build_small_module(
        make_config,
        "model.module.q_shift=0.25",
        "model.module.q_rotation=25",
        "model.module.q_scale=0.15",
        "model.latent.continuous=0",
    )
    module.eval()  # Q's batch norm on running statistics: the same images give the same logits
    noise = module.latent.sample(32, generator=torch.Generator().manual_seed(0))
    categories = module.latent.split(noise)[1]
    fake = module.generator(noise).detach()

    def cross_entropy(images):
        return categorical_nll(module.predict_codes(images)[0], categories).item()

    torch.manual_seed(3)
    loss = module.mutual_information_loss(fake, noise)[0].item()
    torch.manual_seed(3)
    moved = random_affine(fake, shift=0.25, rotation=25, scale=0.15)
    assert loss == pytest.approx(0.5 * cross_entropy(moved), rel=1e-5)  # lambda_categorical 0.5 (the digits recipe)
    assert (moved - fake).abs().max() > 0.1 and abs(cross_entropy(moved) - cross_entropy(fake)) > 1e-4
    module.q_view = dict(shift=0.0, rotation=0.0, scale=0.0)
    assert module.mutual_information_loss(fake, noise)[0].item() == pytest.approx(0.5 * cross_entropy(fake), rel=1e-5)


class GradientsAtGeneratorStep(pl.Callback):
    """At each step of G's optimizer: do G and Q hold gradients, and are D's gradients
    still exactly those of the D step before it (nothing added by the G step)?"""

    def __init__(self) -> None:
        self.seen: list[dict[str, bool]] = []
        self.d_grads: list[torch.Tensor] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if optimizer is trainer.optimizers[1]:
            self.d_grads = [p.grad.clone() for p in module.discriminator.parameters()]
            return

        def has_grad(network):
            return all(p.grad is not None for p in network.parameters()) and any(
                bool(p.grad.abs().sum() > 0) for p in network.parameters()
            )

        d_now = [p.grad for p in module.discriminator.parameters()]
        self.seen.append(
            {
                "generator": has_grad(module.generator),
                "q_head": has_grad(module.q_head),
                "discriminator_unchanged": all(torch.equal(a, b) for a, b in zip(self.d_grads, d_now)),
            }
        )


def test_q_trains_with_g_and_d_body_gets_no_gradient_from_the_mi_term(make_config, monkeypatch):
    """Design decision: Q's head is in G's optimizer; D's shared body is frozen in the
    G step, so the MI term trains G and Q only (D's body learns from the GAN loss)."""
    module = build_small_module(make_config)
    optimizers = module.configure_optimizers()
    g_params = {id(p) for group in optimizers[0].param_groups for p in group["params"]}
    d_params = {id(p) for group in optimizers[1].param_groups for p in group["params"]}
    assert {id(p) for p in module.q_head.parameters()} <= g_params
    assert {id(p) for p in module.discriminator.parameters()} == d_params
    assert not g_params & d_params

    from ganrun import train as train_module

    recorder, real_instantiate = GradientsAtGeneratorStep(), train_module.instantiate

    def with_recorder(node, **kwargs):  # adds the recorder to the trainer's callbacks
        if "callbacks" in kwargs:
            kwargs["callbacks"] = [*kwargs["callbacks"], recorder]
        return real_instantiate(node, **kwargs)

    monkeypatch.setattr(train_module, "instantiate", with_recorder)
    train(make_config(*FAST, *SMALL_INFOGAN, "steps=2"))
    assert recorder.seen == [{"generator": True, "q_head": True, "discriminator_unchanged": True}] * 2


def test_infogan_module_needs_a_latent_with_codes(make_config):
    with pytest.raises(ConfigError, match="InfoGANLatent"):
        build_small_module(make_config, "model.latent=null")


# ------------------------------------------------------------- code matching
def test_best_match_accuracy_is_invariant_to_relabelling_codes():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    assert best_match_accuracy(torch.tensor([2, 2, 0, 0, 1, 1, 1]), labels) == (1.0, {0: 1, 1: 2, 2: 0})
    # One sample off: code 1 holds two of class 2 and one of class 1.
    accuracy, mapping = best_match_accuracy(torch.tensor([2, 2, 0, 1, 1, 1, 1]), labels)
    assert accuracy == pytest.approx(6 / 7) and mapping == {0: 1, 1: 2, 2: 0}
    # All samples in one code: only one class can be matched.
    assert best_match_accuracy(torch.zeros(7, dtype=torch.long), labels, 3, 3)[0] == pytest.approx(3 / 7)


# ------------------------------------------------------------------ traversals
def test_traversal_latents_vary_one_code_and_hold_the_rest():
    latent = InfoGANLatent(z_dim=3, categorical=[4], continuous=2)
    fixed = latent.split(latent.sample(5, generator=torch.Generator().manual_seed(0)))
    (grid,) = categorical_traversals(latent, fixed, num_columns=5)
    z, categories, continuous = latent.split(grid)
    assert grid.shape == (4 * 5, latent.dim)
    assert torch.equal(categories[:, 0], torch.arange(4).repeat_interleave(5))  # row r = category r
    assert torch.equal(z.view(4, 5, 3), fixed[0].expand(4, 5, 3))  # same z down each column
    values = torch.linspace(-2, 2, 6)
    first, second = continuous_traversals(latent, fixed, num_rows=5, values=values)
    z, categories, continuous = latent.split(first)
    assert torch.equal(continuous[:, 0].view(5, 6), values.expand(5, 6)) and continuous[:, 1].abs().max() == 0
    assert torch.equal(z.view(5, 6, 3), fixed[0][:, None].expand(5, 6, 3))  # one z per row
    assert torch.equal(latent.split(second)[2][:, 1].view(5, 6), values.expand(5, 6))


def test_traversal_callback_refuses_a_latent_without_codes():
    class PlainModule:
        latent = GaussianLatent(z_dim=4)

    with pytest.raises(ConfigError, match="model=infogan"):
        LatentTraversal(dirpath="unused").on_train_start(None, PlainModule())


def test_short_run_writes_traversals_mi_curves_and_samples(make_config, tmp_path):
    metrics = train(make_config(*FAST, *SMALL_INFOGAN, "steps=3"))
    run = tmp_path / "run"
    assert metrics["g_updates"] == 3 and all(math.isfinite(v) for v in metrics.values())
    tags = EventAccumulator(str(run / "tensorboard")).Reload().Tags()
    assert {"traversal/categorical_0", "traversal/continuous_0", "traversal/continuous_1"} <= set(tags["images"])
    assert {"samples/real", "samples/generated"} <= set(tags["images"])
    for name in ("categorical_0", "continuous_0", "continuous_1"):
        assert (run / "samples" / f"traversal_{name}_step_0000003.png").is_file()
    for tag in ("loss/mutual_information", "loss/mi_categorical", "loss/mi_continuous", "infogan/q_accuracy", "loss/g"):
        assert [step for step, _ in scalars(run, tag)] == [1, 2, 3], tag
    # An untrained Q is at chance on the 10-way code: cross-entropy near log 10.
    assert abs(scalars(run, "loss/mi_categorical")[0][1] - math.log(10)) < 0.5


def test_sampling_an_infogan_checkpoint(make_config, tmp_path):
    from ganrun.commands.cli import sample_main

    train(make_config(*FAST, *SMALL_INFOGAN, "steps=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    generator, info = load_generator(str(ckpt))
    assert isinstance(info["latent"], InfoGANLatent) and info["latent"].dim == 8 + 10 + 2
    out = draw(generator, info, 12, seed=4)
    assert out["images"].shape == (12, 1, 16, 16) and "labels" not in out
    assert torch.equal(out["images"], draw(generator, info, 12, seed=4)["images"])
    sample_main([f"ckpt={ckpt}", "n=6", f"out={tmp_path / 's.pt'}", f"grid={tmp_path / 'g.png'}"])
    assert torch.load(tmp_path / "s.pt")["images"].shape == (6, 1, 16, 16)
    assert (tmp_path / "g.png").is_file()
