"""Checkpoints whose saved configs name classes under older module paths still load.

tests/data/*_v1.ckpt name ganrun.module.GANModule, ganrun.infogan.InfoGANModule /
InfoGANLatent and ganrun.lapgan.LAPGANModule; ``MOVED_MODULES`` in
ganrun/records/checkpoints.py maps them to today's modules at load time. They were written by:

    ganrun accelerator=cpu logger=none steps=2 hydra.run.dir=... and
    gan:     model=gan dataset=ring model.z_dim=4 model.generator.hidden=[8]
             model.discriminator.hidden=[8] tricks.ema_decay=0.9
    infogan: model=infogan dataset=digits dataset.image_size=16 model.generator.width=4
             model.discriminator.width=4 model.z_dim=4 model.module.q_hidden=8
    lapgan:  model=lapgan dataset=digits model.generator.width=4 model.discriminator.width=4
             loss=wgan_gp n_critic=1 model.z_dim=6
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from support import DATA, FAST

DATA = DATA
OLD_PATHS = {
    "gan": ("ganrun.module", "GANModule", "ganrun.training.module"),
    "infogan": ("ganrun.infogan", "InfoGANModule", "ganrun.training.infogan"),
    "lapgan": ("ganrun.lapgan", "LAPGANModule", "ganrun.training.lapgan"),
}


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_old_module_paths_are_renamed_at_load_not_kept_as_aliases(name):
    import importlib

    from ganrun.records.checkpoints import MOVED_MODULES

    old, cls, new = OLD_PATHS[name]
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
    assert MOVED_MODULES[old] == new and hasattr(importlib.import_module(new), cls)


def test_every_renamed_module_exists_and_every_config_target_imports():
    import importlib

    from hydra.utils import get_object

    from ganrun import config_dir
    from ganrun.records.checkpoints import MOVED_MODULES

    for new in MOVED_MODULES.values():
        importlib.import_module(new)
    targets = {
        match
        for path in Path(config_dir()).rglob("*.yaml")
        for match in re.findall(r"(?:^[\s-]*|{\s*)_target_:\s*(\w+(?:\.\w+)+)", path.read_text(), flags=re.M)
    }
    assert targets
    for target in targets:
        get_object(target)


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_an_old_checkpoint_rebuilds_its_module_from_its_saved_config(name):
    from ganrun.config.build import build_module, instantiate
    from ganrun.records.checkpoints import load_checkpoint

    raw = torch.load(DATA / f"{name}_v1.ckpt", map_location="cpu", weights_only=True)
    assert raw["ganrun"]["config"]["model"]["module"]["_target_"].startswith(OLD_PATHS[name][0] + ".")
    checkpoint = load_checkpoint(DATA / f"{name}_v1.ckpt")
    cfg = OmegaConf.create(checkpoint["ganrun"]["config"])
    assert cfg.model.module._target_.startswith(OLD_PATHS[name][2] + ".")
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    module.load_state_dict(checkpoint["state_dict"])  # strict: every key fits
    assert type(module).__name__ == OLD_PATHS[name][1]


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_ganrun_sample_reads_an_old_checkpoint(name, tmp_path):
    from ganrun.commands import sample

    out = tmp_path / "samples.pt"
    sample.main([f"ckpt={DATA / f'{name}_v1.ckpt'}", "n=5", f"out={out}"])
    result = torch.load(out)
    values = result.get("images", result.get("x"))
    assert len(values) == 5 and torch.isfinite(values).all()


def test_training_resumes_from_an_old_checkpoint(make_config):
    from ganrun.train import train

    overrides = [
        "model=gan",
        "dataset=ring",
        "model.z_dim=4",
        "model.generator.hidden=[8]",
        "model.discriminator.hidden=[8]",
        "tricks.ema_decay=0.9",
        "logger=none",
        "callbacks=none",
        # the ring recipe of the version that wrote it (no MINE, no LR decay)
        "tricks.mine_weight=0",
        "scheduler=null",
    ]
    metrics = train(make_config(*FAST, *overrides, "steps=3", f"ckpt_path={DATA / 'gan_v1.ckpt'}"))
    assert metrics["g_updates"] == 3.0  # two from the checkpoint, one more here


@pytest.mark.parametrize(
    "tricks, expected",
    [
        ({"mine_weight": 1.0, "mine_anneal_steps": 12000}, ["tricks.mine_target=noise"]),  # MINE before mine_target
        ({"mine_weight": 1.0, "mine_target": "code"}, []),
        ({"mine_weight": 0.0}, []),
        ({}, []),
    ],
)
def test_a_mine_run_from_before_mine_target_resumes_with_the_mine_it_trained(tricks, expected):
    """MINE once estimated I(z; G(z)) over all of G's input; such a checkpoint's T only fits
    that form, so its resume (and its stored overrides) ask for it."""
    from ganrun.records.checkpoints import compatibility_overrides

    assert compatibility_overrides({"ganrun": {"config": {"tricks": tricks}}}) == expected
