"""LAPGAN: the pyramid, the per-level networks, training outputs, sampling, and learning."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from support import FAST
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ganrun.commands.sample import draw, load_generator
from ganrun.data.images import DigitsDataModule
from ganrun.errors import ConfigError
from ganrun.models.lapgan import (
    LaplacianDiscriminator,
    LaplacianGenerator,
    laplacian_pyramid,
    level_input,
    pyramid_levels,
    reconstruct,
)
from ganrun.train import build_latent, build_networks, train

SMALL_LAPGAN = ["model=lapgan", "model.generator.width=8", "model.discriminator.width=8", "model.z_dim=16"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, two threads that wait on each other
    made these runs about ten times slower (13 s instead of 1 s for 3 G updates)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------- pyramid
@pytest.mark.parametrize("shape,levels", [((2, 1, 32, 32), 3), ((2, 3, 64, 64), 4), ((2, 3, 64, 64), 3)])
def test_reconstruct_inverts_the_laplacian_pyramid(shape, levels):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    coarse, residuals = laplacian_pyramid(x, levels)
    size = shape[-1] // 2 ** (levels - 1)
    assert coarse.shape == (*shape[:2], size, size)
    assert [r.shape[-1] for r in residuals] == [size * 2**k for k in range(1, levels)]
    torch.testing.assert_close(reconstruct(coarse, residuals), x, rtol=0, atol=1e-6)


def test_pyramid_levels_are_conditions_and_band_pass_residuals():
    flat = torch.full((1, 1, 32, 32), 0.3)
    coarse, residuals = laplacian_pyramid(flat, 3)
    torch.testing.assert_close(coarse, torch.full((1, 1, 8, 8), 0.3))
    assert all(r.abs().max() < 1e-6 for r in residuals)  # a flat image has no detail
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    levels = pyramid_levels(x, 3)
    assert levels[0][0] is None
    for condition, _ in levels[1:]:
        assert condition.min() >= -1 and condition.max() <= 1  # real conditions stay in range
    assert level_input(*levels[2]).shape == (3, 2, 32, 32)  # (c_k, h_k) on channels


# -------------------------------------------------------------------- networks
@pytest.mark.parametrize(
    "data_shape,levels,base_size,num_classes",
    [((1, 32, 32), 3, 8, 0), ((3, 32, 32), 3, 8, 0), ((1, 64, 64), 4, 8, 0), ((3, 64, 64), 3, 16, 10)],
    ids=["32-gray", "32-rgb", "64-gray-4levels", "64-rgb-base16-conditional"],
)
def test_networks_shapes(data_shape, levels, base_size, num_classes):
    torch.manual_seed(0)
    kwargs = dict(data_shape=data_shape, num_classes=num_classes, levels=levels, base_size=base_size, width=8)
    generator = LaplacianGenerator(z_dim=20, **kwargs).eval()
    discriminator = LaplacianDiscriminator(**kwargs)
    assert sum(generator.level_z_dims) == 20 and len(generator.level_z_dims) == levels
    z = torch.randn(5, 20)
    labels = torch.arange(5) if num_classes else None
    images = generator(z, labels)
    assert images.shape == (5, *data_shape) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(generator(z, labels), images)  # the split of z is fixed
    stages = generator.stages(z, labels)
    assert [s.image.shape[-1] for s in stages] == [base_size * 2**k for k in range(levels)]
    assert stages[0].condition is None and stages[-1].residual.shape == (5, *data_shape)
    scores = discriminator(images, labels)
    assert scores.shape == (5,)
    torch.testing.assert_close(discriminator.head(discriminator.features(images, labels)), scores)
    assert discriminator.features(images, labels).shape == (5, discriminator.feature_dim)
    for k, (condition, target) in enumerate(pyramid_levels(images, levels)):
        fake = generator.level(k, generator.split_noise(z)[k], condition, labels)
        assert fake.shape == target.shape
        assert discriminator.level(k, level_input(condition, fake), labels).shape == (5,)


def test_bad_image_size_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"dataset.image_size=28 .* valid: 32 .* 64 \(levels=4\)") as error:
        LaplacianGenerator(z_dim=16, data_shape=(1, 28, 28))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="needs images"):
        LaplacianDiscriminator(data_shape=(2,))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["dataset.image_size=28"], r"dataset.image_size=28 is not supported by LAPGAN.*valid: 32"),
        (["model.discriminator.levels=2", "model.discriminator.base_size=16"], r"\(levels, base_size\).*differ"),
    ],
)
def test_bad_configs_are_refused_before_training(make_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_config(*FAST, *SMALL_LAPGAN, "steps=1", *overrides))


# -------------------------------------------------------------------- training
def test_short_run_writes_pyramid_grids_checkpoint_and_samples(make_config, tmp_path):
    metrics = train(make_config(*FAST, *SMALL_LAPGAN, "steps=3"))
    run = tmp_path / "run"
    assert metrics["g_updates"] == 3 and all(math.isfinite(v) for v in metrics.values())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    for k in range(3):
        assert (run / "samples" / f"pyramid_level{k}_step_0000003.png").is_file()
    assert (run / "samples" / "step_0000003.png").is_file()
    tags = EventAccumulator(str(run / "tensorboard")).Reload().Tags()
    assert {"pyramid/level_0", "pyramid/level_1", "pyramid/level_2", "samples/generated"} <= set(tags["images"])
    for k in range(3):
        assert {f"loss/d_level{k}", f"loss/g_level{k}"} <= set(tags["scalars"])
    # loss/d and loss/g are the sums over levels
    assert metrics["loss/d"] == pytest.approx(sum(metrics[f"loss/d_level{k}"] for k in range(3)), rel=1e-5)
    assert metrics["loss/g"] == pytest.approx(sum(metrics[f"loss/g_level{k}"] for k in range(3)), rel=1e-5)

    # the ganrun-sample path: G rebuilt from the checkpoint alone
    generator, info = load_generator(str(run / "checkpoints" / "last.ckpt"))
    out = draw(generator, info, 12, seed=4)
    assert out["images"].shape == (12, 1, 32, 32) and out["images"].dtype == torch.float32
    assert out["images"].min() >= -1 and out["images"].max() <= 1
    assert torch.equal(draw(generator, info, 12, seed=4)["images"], out["images"])


@pytest.mark.parametrize(
    "overrides,tag",
    [
        (["model.conditional=true"], "loss/d"),
        (["loss=wgan_gp", "n_critic=2"], "loss/gradient_penalty"),
        (
            [
                "dataset=fake",
                "model.image_size=64",
                "model.generator.levels=4",
                "dataset.size=16",
                "dataset.batch_size=8",
            ],
            "loss/d_level3",
        ),
    ],
    ids=["conditional", "wgan_gp", "fake64-rgb-4levels"],
)
def test_variants_train(make_config, tmp_path, overrides, tag):
    metrics = train(make_config(*FAST, *SMALL_LAPGAN, "steps=2", *overrides))
    assert metrics["g_updates"] == 2 and math.isfinite(metrics[tag])
    generator, info = load_generator(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    out = draw(generator, info, 4, seed=0, label=3 if info["num_classes"] else None)
    assert out["images"].shape[0] == 4 and out["images"].shape[1:] == tuple(info["data_shape"])


# -------------------------------------------------------------------- learning
def sample_statistics(images: torch.Tensor, real: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Not blank, varied, and digit-like: numbers to compare with real digits.

    - per_image_std: pixel std within each image (blank ~ 0), averaged.
    - between_std: std across samples of each pixel (all alike ~ 0), averaged.
    - histogram_l1: L1 distance of the 10-bin pixel histogram to real digits' (max 2).
    - nearest_class_mean: RMS pixel distance to the nearest real class-mean image.
    - classes: classes (by nearest class mean) holding at least 2% of the samples.
    """

    def histogram(t):
        return torch.histc(t, bins=10, min=-1, max=1) / t.numel()

    class_means = torch.stack([real[labels == c].mean(0) for c in range(10)]).flatten(1)
    distances = torch.cdist(images.flatten(1), class_means) / math.sqrt(class_means.shape[1])
    counts = distances.argmin(1).bincount(minlength=10)
    return {
        "per_image_std": images.flatten(1).std(dim=1).mean().item(),
        "between_std": images.std(dim=0).mean().item(),
        "histogram_l1": (histogram(images) - histogram(real)).abs().sum().item(),
        "nearest_class_mean": distances.min(1).values.mean().item(),
        "classes": int((counts >= 0.02 * len(images)).sum()),
    }


@pytest.mark.slow
def test_lapgan_learns_digits(make_config, tmp_path):
    """250 G updates on digits at 32x32 (3 levels from 8x8) make varied, digit-like samples.

    Measured (seed 0, lr 5e-4 for a short run; seeds 1, 2 alike), trained vs untrained G:
    per-image std 0.59 vs 0.006 (real 0.65); between-sample std 0.32 vs 0.006 (real 0.37);
    histogram L1 0.25 vs 1.76; nearest class mean 0.38 vs 0.65 (real 0.30); 9-10 classes vs 1.
    About 30-50 s of training on a shared 2-core CPU.
    """
    cfg = make_config(
        *FAST,
        "model=lapgan",
        "model.generator.width=16",
        "model.discriminator.width=16",
        "dataset=digits",
        "optimizer.lr=5e-4",
        "steps=250",
        "seed=0",
        "trainer.log_every_n_steps=50",
    )
    datamodule = DigitsDataModule(batch_size=64, image_size=32)
    datamodule.setup()
    real, labels = datamodule.real_examples(len(datamodule.data)), datamodule.labels
    pl.seed_everything(0, verbose=False)
    untrained, _ = build_networks(cfg.model, real.shape[1:], 0, True)
    info = {"num_classes": 0, "is_image": True, "latent": build_latent(cfg.model)}
    before = sample_statistics(draw(untrained.eval(), info, 512, seed=0)["images"], real, labels)

    train(cfg)
    generator, info = load_generator(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    after = sample_statistics(draw(generator, info, 512, seed=0)["images"], real, labels)

    assert after["per_image_std"] > 0.35, (before, after)
    assert after["between_std"] > 0.2, (before, after)
    assert after["histogram_l1"] < min(0.6, before["histogram_l1"] / 2), (before, after)
    assert after["nearest_class_mean"] < min(0.5, before["nearest_class_mean"] - 0.1), (before, after)
    assert after["classes"] >= 6 > before["classes"], (before, after)
