"""Bring-your-own networks (docs/networks.md): a user's package trained through the CLI, and
the one-line refusals of ``ganrun.models.contract`` for networks that break the contract."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from support import QUIET, assert_one_line_error, ganrun, in_process, run, sample

# The user's package: mypkg/nets.py. Parameter names start with byo_ so that a checkpoint
# key shows whose network was trained; the broken classes each break one rule.
USER_NETS = '''
import math

import torch
from torch import nn


class MyGenerator(nn.Module):
    def __init__(self, *, z_dim, data_shape, hidden=32):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.byo_body = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(self.data_shape)))

    def forward(self, z, labels=None):
        x = self.byo_body(z).reshape(len(z), *self.data_shape)
        return torch.tanh(x) if len(self.data_shape) == 3 else x


class MyCritic(nn.Module):
    """Scores of shape (N, 1)."""

    def __init__(self, *, data_shape, hidden=32):
        super().__init__()
        self.byo_critic = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), hidden), nn.LeakyReLU(0.2),
                                        nn.Linear(hidden, 1))

    def forward(self, x, labels=None):
        return self.byo_critic(x)


class MyFlatCritic(MyCritic):
    """Scores of shape (N,)."""

    def forward(self, x, labels=None):
        return self.byo_critic(x).squeeze(1)


class MyInfoCritic(MyFlatCritic):
    feature_dim = 32

    def features(self, x, labels=None):
        return self.byo_critic[:-1](x)


class MyConditionalGenerator(MyGenerator):
    def __init__(self, *, z_dim, data_shape, num_classes):
        super().__init__(z_dim=z_dim + num_classes, data_shape=data_shape)
        self.num_classes = num_classes

    def forward(self, z, labels=None):
        one_hot = nn.functional.one_hot(labels, self.num_classes).to(z.dtype)
        return super().forward(torch.cat([z, one_hot], dim=1))


class MyConditionalCritic(MyFlatCritic):
    def __init__(self, *, data_shape, num_classes):
        super().__init__(data_shape=(math.prod(data_shape) + num_classes,))
        self.num_classes = num_classes

    def forward(self, x, labels=None):
        one_hot = nn.functional.one_hot(labels, self.num_classes).to(x.dtype)
        return super().forward(torch.cat([x.flatten(1), one_hot], dim=1))


class NoZDimGenerator(MyGenerator):
    def __init__(self, *, data_shape):
        super().__init__(z_dim=100, data_shape=data_shape)


class FlatGenerator(MyGenerator):
    def forward(self, z, labels=None):
        return super().forward(z).flatten(1)


class NoLabelsGenerator(MyGenerator):
    def forward(self, z):
        return super().forward(z)


class ManyScoresCritic(MyCritic):
    def __init__(self, *, data_shape):
        super().__init__(data_shape=data_shape, hidden=7)

    def forward(self, x, labels=None):
        return self.byo_critic[:-1](x)


class PlainCritic:
    def __init__(self, *, data_shape):
        self.data_shape = data_shape

    def __call__(self, x, labels=None):
        return x.flatten(1).sum(1)


class BatchNormCritic(MyFlatCritic):
    def __init__(self, *, data_shape):
        super().__init__(data_shape=data_shape)
        self.byo_critic.insert(2, nn.BatchNorm1d(32))
'''
NETS = "mypkg.nets"


def networks(generator: str = "MyGenerator", critic: str = "MyCritic") -> list[str]:
    return [f"model.generator._target_={NETS}.{generator}", f"model.discriminator._target_={NETS}.{critic}"]


@pytest.fixture(scope="module")
def user_package(tmp_path_factory) -> Path:
    """A folder holding the user's package mypkg (to put on PYTHONPATH / sys.path)."""
    root = tmp_path_factory.mktemp("project")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "nets.py").write_text(USER_NETS)
    (root / "mypkg" / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    yield root
    for name in [name for name in sys.modules if name == "mypkg" or name.startswith("mypkg.")]:
        del sys.modules[name]


@pytest.fixture
def on_path(user_package, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(user_package))
    return user_package


def with_package(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}


# ------------------------------------------------------------------- training
@pytest.mark.parametrize(
    "loss,dataset,critic",
    [
        ("ns", "digits", "MyCritic"),
        pytest.param("wgan_gp", "ring", "MyFlatCritic", marks=pytest.mark.slow),
        pytest.param("hinge", "ring", "MyCritic", marks=pytest.mark.slow),
    ],
)
def test_user_networks_train_through_the_cli(user_package, tmp_path, monkeypatch, loss, dataset, critic):
    run_dir = tmp_path / "run"
    result = ganrun(
        *QUIET,
        *networks(critic=critic),
        f"loss={loss}",
        f"dataset={dataset}",
        "dataset.batch_size=16",
        "steps=3",
        f"hydra.run.dir={run_dir}",
        env=with_package(user_package),
    )
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "completed" and record["metrics"]["g_updates"] == 3.0
    # The recipe's (model=dcgan's) settings for its own networks were left out, and said so.
    assert "model.generator.width" in result.stdout and "model.discriminator.norm" in result.stdout
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert "generator.byo_body.0.weight" in state and "discriminator.byo_critic.1.weight" in state
    assert not any(key.startswith("generator.net.") for key in state)  # not ganrun's DCGAN / MLP

    if dataset != "digits":
        return  # sampling a user's G back: once (below), for the images run
    out, ckpt = tmp_path / "samples.pt", run_dir / "checkpoints" / "last.ckpt"
    sample(f"ckpt={ckpt}", "n=6", f"out={out}", env=with_package(user_package))
    drawn = torch.load(out)
    assert drawn["images"].shape == (6, 1, 32, 32) and drawn["images"].abs().max() <= 1
    # Without the package on the path, the class the checkpoint names is refused in one line.
    for name in [name for name in sys.modules if name.split(".")[0] == "mypkg"]:
        monkeypatch.delitem(sys.modules, name)
    missing = in_process("sample_main", f"ckpt={ckpt}", "n=2", f"out={tmp_path / 'other.pt'}", cwd=tmp_path)
    assert_one_line_error(missing, "model.generator._target_=mypkg.nets.MyGenerator cannot be imported", "mypkg")


# ---------------------------------------------------------- built, not refused
def build(make_config, *overrides: str):
    from ganrun.config.build import build_module, instantiate

    cfg = make_config(*overrides)
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.prepare_shape()
    return build_module(cfg, datamodule)


def test_a_users_networks_replace_the_toy_mlps_on_2d_data(on_path, make_config):
    module = build(make_config, "model=wgan_gp", "dataset=ring", *networks(critic="MyFlatCritic"))
    assert type(module.generator).__name__ == "MyGenerator" and type(module.discriminator).__name__ == "MyFlatCritic"
    # Without user classes the same recipe trains its MLPs there.
    assert type(build(make_config, "model=wgan_gp", "dataset=ring").generator).__name__ == "MLPGenerator"


def test_infogan_and_class_conditional_user_networks_are_built(on_path, make_config):
    infogan = build(make_config, "model=infogan", *networks(critic="MyInfoCritic"))
    assert infogan.q_head.net[0].in_features == 32  # Q's head reads MyInfoCritic.features()
    conditional = build(make_config, "model=cgan", *networks("MyConditionalGenerator", "MyConditionalCritic"))
    assert conditional.num_classes == 10 and type(conditional.generator).__name__ == "MyConditionalGenerator"


def test_the_check_leaves_the_random_stream_as_it_was(on_path, make_config):
    from ganrun.models.contract import check_networks

    module = build(make_config, "dataset=ring", *networks())
    cfg = make_config("dataset=ring", *networks())
    before = torch.get_rng_state()
    check_networks(cfg, module.generator, module.discriminator, data_shape=(2,), num_classes=0, is_image=False)
    assert torch.equal(before, torch.get_rng_state())


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (
            networks("NoZDimGenerator"),
            [
                "model.generator._target_=mypkg.nets.NoZDimGenerator",
                "does not accept z_dim",
                "ganrun passes z_dim, data_shape",
            ],
        ),
        (
            networks("FlatGenerator"),
            ["model.generator._target_=mypkg.nets.FlatGenerator", "returned shape (5, 1024)", "(5, 1, 32, 32)"],
        ),
        (
            networks(critic="ManyScoresCritic"),
            [
                "model.discriminator._target_=mypkg.nets.ManyScoresCritic",
                "returned shape (5, 7)",
                "one raw score per example",
            ],
        ),
        (
            ["model=infogan", *networks(critic="MyFlatCritic")],
            ["model.discriminator._target_=mypkg.nets.MyFlatCritic", "MyFlatCritic has no features() method"],
        ),
        (
            ["model=cgan", *networks("NoLabelsGenerator", "MyFlatCritic")],
            ["model.generator._target_=mypkg.nets.NoLabelsGenerator", "does not accept num_classes"],
        ),
        (
            ["dataset=ring", *networks("NoLabelsGenerator")],
            [
                "model.generator._target_=mypkg.nets.NoLabelsGenerator",
                "NoLabelsGenerator.forward takes no labels argument",
            ],
        ),
        (
            networks(critic="PlainCritic"),
            ["model.discriminator._target_=mypkg.nets.PlainCritic", "it built a PlainCritic, not a torch.nn.Module"],
        ),
        (
            ["loss=wgan_gp", *networks(critic="BatchNormCritic")],
            ["model.discriminator._target_=mypkg.nets.BatchNormCritic", "batch norm", "byo_critic.2: BatchNorm1d"],
        ),
        (
            ["model=msggan", *networks()],
            ["model.generator._target_=mypkg.nets.MyGenerator", "MSGGANModule trains networks of its own kind"],
        ),
        (
            networks("Missing"),
            [
                "model.generator._target_=mypkg.nets.Missing cannot be imported",
                "mypkg.nets has no Missing",
                "check the name",
            ],
        ),
        (
            ["model.generator._target_=mypkg.broken.Generator"],
            [
                "model.generator._target_=mypkg.broken.Generator cannot be imported",
                "importing mypkg.broken failed: RuntimeError: half-written module",
            ],
        ),
        (
            ["model.discriminator._target_=otherpkg.nets.Critic"],
            ["model.discriminator._target_=otherpkg.nets.Critic cannot be imported", "No module named 'otherpkg'"],
        ),
    ],
)
def test_networks_that_break_the_contract_are_refused_in_one_line(on_path, tmp_path, overrides, fragments):
    run_dir = tmp_path / "run"
    result = in_process("train_main", *QUIET, *overrides, "steps=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert not run_dir.exists()


@pytest.mark.slow  # a Python start-up; the in-process cases above cover the messages
def test_the_cli_refuses_an_unimportable_class_before_writing(tmp_path):
    """End to end, as a user without the package on PYTHONPATH meets it."""
    run_dir = tmp_path / "run"
    result = run(
        sys.executable,
        "-m",
        "ganrun",
        *QUIET,
        *networks(),
        "dataset=ring",
        "steps=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        check=False,
    )
    assert_one_line_error(
        result,
        "model.generator._target_=mypkg.nets.MyGenerator cannot be imported",
        "No module named 'mypkg'",
        "PYTHONPATH",
    )
    assert not run_dir.exists()
