"""Checkpoints written before the modules moved to ganrun/modules/ still load.

tests/data/*_v1.ckpt were written by ganrun at commit 6fe3090 (the code before the
move, whose saved configs name ganrun.module.GANModule, ganrun.infogan.InfoGANModule /
InfoGANLatent and ganrun.lapgan.LAPGANModule), with:

    ganrun accelerator=cpu logger=none steps=2 hydra.run.dir=... and
    gan:     model=gan dataset=ring model.z_dim=4 model.generator.hidden=[8]
             model.discriminator.hidden=[8] tricks.ema_decay=0.9
    infogan: model=infogan dataset=digits dataset.image_size=16 model.generator.width=4
             model.discriminator.width=4 model.z_dim=4 model.module.q_hidden=8
    lapgan:  model=lapgan dataset=digits model.generator.width=4 model.discriminator.width=4
             loss=wgan_gp n_critic=1 model.z_dim=6
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST

DATA = Path(__file__).parent / "data"
OLD_PATHS = {
    "gan": ("ganrun.module", "GANModule", "ganrun.modules.gan"),
    "infogan": ("ganrun.infogan", "InfoGANModule", "ganrun.modules.infogan"),
    "lapgan": ("ganrun.lapgan", "LAPGANModule", "ganrun.modules.lapgan"),
}


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_old_class_paths_are_the_new_classes(name):
    import importlib

    old, cls, new = OLD_PATHS[name]
    assert getattr(importlib.import_module(old), cls) is getattr(importlib.import_module(new), cls)


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_an_old_checkpoint_rebuilds_its_module_from_its_saved_config(name):
    from ganrun.build import build_module, instantiate
    from ganrun.checkpoint_io import load_checkpoint

    checkpoint = load_checkpoint(DATA / f"{name}_v1.ckpt")
    cfg = OmegaConf.create(checkpoint["ganrun"]["config"])
    assert cfg.model.module._target_.startswith(OLD_PATHS[name][0])  # the fixture names the old path
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    module.load_state_dict(checkpoint["state_dict"])  # strict: every key fits
    assert type(module).__name__ == OLD_PATHS[name][1]


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_ganrun_sample_reads_an_old_checkpoint(name, tmp_path):
    from ganrun import sample

    out = tmp_path / "samples.pt"
    sample.main([f"ckpt={DATA / f'{name}_v1.ckpt'}", "n=5", f"out={out}"])
    result = torch.load(out)
    values = result.get("images", result.get("x"))
    assert len(values) == 5 and torch.isfinite(values).all()


def test_training_resumes_from_an_old_checkpoint(make_config):
    from ganrun.train import train

    overrides = ["model=gan", "dataset=ring", "model.z_dim=4", "model.generator.hidden=[8]",
                 "model.discriminator.hidden=[8]", "tricks.ema_decay=0.9", "logger=none", "callbacks=none",
                 # the ring recipe of the version that wrote it (no MINE, no LR decay)
                 "tricks.mine_weight=0", "scheduler=null"]
    metrics = train(make_config(*FAST, *overrides, "steps=3", f"ckpt_path={DATA / 'gan_v1.ckpt'}"))
    assert metrics["g_updates"] == 3.0  # two from the checkpoint, one more here


@pytest.mark.parametrize(
    "tricks, expected",
    [({"mine_weight": 1.0, "mine_anneal_steps": 12000}, ["tricks.mine_target=noise"]),  # MINE before mine_target
     ({"mine_weight": 1.0, "mine_target": "code"}, []),
     ({"mine_weight": 0.0}, []),
     ({}, [])],
)
def test_a_mine_run_from_before_mine_target_resumes_with_the_mine_it_trained(tricks, expected):
    """MINE once estimated I(z; G(z)) over all of G's input; such a checkpoint's T only fits
    that form, so its resume (and its stored overrides) ask for it."""
    from ganrun.checkpoint_io import compatibility_overrides

    assert compatibility_overrides({"ganrun": {"config": {"tricks": tricks}}}) == expected
