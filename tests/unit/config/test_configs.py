"""Every config option composes and instantiates; recipes and loss replacement behave."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.utils import get_class, instantiate
from support import ALIASES, group_options

GROUPS = [
    "model",
    "loss",
    "dataset",
    "accelerator",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "hparams_search",
    "launcher",
]


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), f"configs/{group}/ has no options"


@pytest.mark.parametrize("group", ["model", "loss", "dataset", "accelerator", "trainer", "logger", "callbacks"])
def test_every_option_composes(make_config, group):
    for option in group_options(group):
        overrides = [f"{group}={option}"]
        if group == "dataset" and option == "folder":
            overrides.append("dataset.path=/nonexistent")
        cfg = make_config(*overrides)
        assert cfg.model.generator._target_
        assert cfg.loss.objective._target_


@pytest.mark.parametrize("loss", group_options("loss"))
def test_every_loss_instantiates(make_config, loss):
    cfg = make_config(f"loss={loss}")
    objective = instantiate(cfg.loss.objective)
    assert callable(objective.d_loss) and callable(objective.g_loss)


@pytest.mark.parametrize("model", group_options("model"))
def test_every_model_names_importable_classes(make_config, model):
    cfg = make_config(f"model={model}")
    for node in (cfg.model.generator, cfg.model.discriminator):
        assert get_class(node._target_)
    assert get_class(cfg.model.module._target_)


def test_default_is_dcgan_on_digits_with_non_saturating_loss(make_config):
    cfg = make_config()
    assert cfg.model.generator._target_.endswith("DCGANGenerator")
    assert cfg.dataset._target_.endswith("DigitsDataModule")
    assert cfg.loss.objective._target_ == "ganrun.objectives.losses.NonSaturating"
    assert cfg.steps is None and cfg.get("experiment") is None


def test_loss_on_command_line_replaces_recipe_loss_and_brings_its_needs(make_config):
    cfg = make_config("model=dcgan", "loss=wgan_gp")
    assert cfg.loss.objective._target_ == "ganrun.objectives.losses.Wasserstein"
    assert cfg.loss.gradient_penalty == 10.0
    assert cfg.n_critic == 5
    assert cfg.model.discriminator.norm == "layer"  # no batch norm with a gradient penalty
    assert cfg.optimizer.lr == 1e-4 and list(cfg.optimizer.betas) == [0.0, 0.9]
    assert cfg.model.generator._target_.endswith("DCGANGenerator")  # architecture kept


def test_wgan_loss_switches_to_rmsprop_without_adam_arguments(make_config):
    cfg = make_config("model=dcgan", "loss=wgan")
    assert cfg.optimizer._target_ == "torch.optim.RMSprop"
    assert cfg.optimizer.betas is None and cfg.loss.weight_clip == 0.01 and cfg.n_critic == 5


def test_dcgan_with_loss_wgan_trains_what_model_wgan_trains(make_config):
    """The brief's own command: `ganrun model=dcgan loss=wgan` is the WGAN recipe."""
    from omegaconf import OmegaConf

    brief = OmegaConf.to_container(make_config("model=dcgan", "loss=wgan"), resolve=True)
    recipe = OmegaConf.to_container(make_config("model=wgan"), resolve=True)
    assert brief == recipe
    assert brief["loss"]["objective"]["_target_"] == "ganrun.objectives.losses.Wasserstein"


@pytest.mark.parametrize("group, alias, target", [(g, a, t) for g, names in ALIASES.items() for a, t in names.items()])
def test_alias_composes_like_its_target(make_config, group, alias, target):
    assert make_config(f"{group}={alias}") == make_config(f"{group}={target}")


def test_command_line_keys_beat_recipe_values(make_config):
    cfg = make_config("loss=wgan_gp", "n_critic=2", "optimizer.lr=3e-4", "optimizer.lr_d=1e-3")
    assert cfg.n_critic == 2 and cfg.optimizer.lr == 3e-4 and cfg.optimizer.lr_d == 1e-3


def test_dataset_image_size_follows_model_unless_overridden(make_config):
    assert make_config("model=gan").dataset.image_size == 28
    assert make_config("model=dcgan").dataset.image_size == 32
    assert make_config("model=dcgan", "dataset.image_size=64").dataset.image_size == 64


def test_help_lists_every_group():
    out = subprocess.run([sys.executable, "-m", "ganrun", "--help"], capture_output=True, text=True, check=True).stdout
    for group in GROUPS:
        assert f"{group}:" in out, f"--help does not list {group}"
    assert "dcgan" in out and "wgan_gp" in out


@pytest.mark.parametrize("group,first", [("model_dataset", "model"), ("loss_dataset", "loss")])
def test_dataset_specific_files_name_a_real_pair(group, first):
    """model_dataset/<model>_<dataset>.yaml is loaded only when the name matches, so a
    typo would be ignored silently: every file must name an existing option pair."""
    pairs = {f"{a}_{d}" for a in group_options(first) for d in group_options("dataset")}
    assert group_options(group)
    for name in group_options(group):
        assert name in pairs, f"configs/{group}/{name}.yaml matches no {first}_dataset pair"


def test_paper_toy_settings_load_for_points_and_yield_to_the_command_line(make_config):
    toy = make_config("model=wgan_gp", "dataset=ring")
    assert toy.loss.gradient_penalty == 0.1 and toy.model.z_dim == 2 and toy.steps == 15000
    assert toy.scheduler.total_iters == 15000 and list(toy.model.toy.generator.hidden) == [128] * 3
    assert list(toy.optimizer.betas) == [0.5, 0.9] and toy.optimizer.lr == 1e-3 and toy.tricks.ema_decay == 0.999
    assert list(make_config("model=wgan_gp", "dataset=digits").optimizer.betas) == [0.0, 0.9]  # images: the paper's
    assert make_config("model=wgan_gp", "dataset=grid").loss.gradient_penalty == 0.1
    assert make_config("model=wgan_gp", "dataset=digits").loss.gradient_penalty == 10.0  # images: the paper's 10
    assert make_config("model=wgan_gp", "dataset=ring", "loss=hinge").loss.gradient_penalty == 0.0
    mine = make_config("model=wgan_gp", "dataset=ring", "loss.gradient_penalty=1", "steps=50", "model.z_dim=8")
    assert mine.loss.gradient_penalty == 1 and mine.steps == 50 and mine.scheduler.total_iters == 50
    assert mine.model.z_dim == 8
