"""Every model x every loss: trains a few steps with finite statistics, or is refused
with the documented one-line reason."""

from __future__ import annotations

import math

import pytest
from omegaconf import open_dict
from support import FAST, group_options

from ganrun.errors import ConfigError
from ganrun.train import train

# Combinations that cannot work, with the reason the user is shown (regex).
REFUSED: dict[tuple[str, str], str] = {
    ("msggan", "wgan_gp"): "model=msggan does not support gradient penalties",
}


def shrink(cfg) -> None:
    """Smallest networks the recipe allows, so the matrix runs in seconds."""
    with open_dict(cfg):
        toy = cfg.model.get("toy")
        toy_nets = (toy.generator, toy.discriminator) if toy is not None else ()
        for node in (cfg.model.generator, cfg.model.discriminator, *toy_nets):
            if "width" in node:
                node.width = 8
            if "hidden" in node:
                node.hidden = [16]
        cfg.model.z_dim = 8
        cfg.dataset.batch_size = 16


def matrix() -> list:
    """Every (model, loss) pair. The fast tier keeps a diagonal that has every model and
    every loss at least once; the other pairs are marked slow (the full suite runs them)."""
    models, losses = group_options("model"), group_options("loss")
    diagonal = {(models[i % len(models)], losses[i % len(losses)]) for i in range(max(len(models), len(losses)))}
    return [
        pytest.param(model, loss, id=f"{model}-{loss}", marks=() if (model, loss) in diagonal else pytest.mark.slow)
        for model in models
        for loss in losses
    ]


@pytest.mark.parametrize("model,loss", matrix())
def test_model_trains_with_loss_or_is_refused(make_config, tmp_path, model, loss):
    cfg = make_config(*FAST, f"model={model}", f"loss={loss}", "steps=2", "n_critic=2", "callbacks=none")
    shrink(cfg)
    if (model, loss) in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[model, loss]):
            train(cfg)
        return
    metrics = train(cfg)
    assert metrics["g_updates"] == 2
    finite = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    assert not finite, finite


# On 2-D points: image-only architectures and class-conditional models are refused.
REFUSED_ON_POINTS = {
    "dcgan": "DCGAN architecture needs images .* use model=gan, lsgan, wgan or wgan_gp",
    "infogan": "DCGAN architecture needs images",
    "lapgan": "LAPGAN needs images",
    "msggan": "DCGAN architecture needs images",
    "cgan": "class-conditional but RingDataModule .* has no labels",
}


@pytest.mark.parametrize("model", group_options("model"))
def test_model_on_2d_points_trains_or_is_refused(make_config, model):
    cfg = make_config(*FAST, f"model={model}", "dataset=ring", "steps=2", "n_critic=2", "callbacks=none")
    shrink(cfg)
    if model in REFUSED_ON_POINTS:
        with pytest.raises(ConfigError, match=REFUSED_ON_POINTS[model]):
            train(cfg)
        return
    metrics = train(cfg)
    assert metrics["g_updates"] == 2 and math.isfinite(metrics["hp/high_quality_fraction"])


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_trains(make_config, experiment):
    """Each reproduction config composes and trains two G updates (downloadable
    datasets swapped for dataset=fake, networks shrunk)."""
    probe = make_config(f"experiment={experiment}")
    needs_download = probe.dataset._target_.split(".")[-1] in {
        "MNISTDataModule",
        "FashionMNISTDataModule",
        "CIFAR10DataModule",
    }
    swap = ["dataset=fake", f"dataset.channels={3 if 'cifar' in experiment else 1}"] if needs_download else []
    cfg = make_config(*FAST, f"experiment={experiment}", *swap, "steps=2", "n_critic=2", "callbacks=none")
    shrink(cfg)
    assert train(cfg)["g_updates"] == 2
