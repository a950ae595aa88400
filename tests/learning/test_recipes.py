"""Pieces of the learning recipes: ganrun-sample code=K, the collapse alarm,
InfoGAN's MI term in D's step. Fast; the learning itself is in test_learning.py."""

from __future__ import annotations

import pytest
import torch
from support import FAST
from torch import nn

from ganrun.callbacks.collapse import CollapseAlarm, diversity
from ganrun.commands.sample import draw, fix_code, load_generator
from ganrun.errors import ConfigError
from ganrun.train import train
from ganrun.training.infogan import InfoGANLatent
from ganrun.training.latent import GaussianLatent

SMALL_INFOGAN = [
    "model=infogan",
    "dataset=digits",
    "dataset.image_size=16",
    "model.generator.width=8",
    "model.discriminator.width=8",
    "model.z_dim=8",
    "model.module.q_hidden=16",
]


def test_code_fixes_the_first_categorical_code():
    latent = InfoGANLatent(z_dim=4, categorical=[10, 3], continuous=2)
    noise = latent.sample(50, generator=torch.Generator().manual_seed(0))
    fixed = fix_code(latent, noise, 7)
    z, categories, continuous = latent.split(fixed)
    z0, categories0, continuous0 = latent.split(noise)
    assert (categories[:, 0] == 7).all() and torch.equal(categories[:, 1], categories0[:, 1])
    assert torch.equal(z, z0) and torch.equal(continuous, continuous0)
    assert (categories0[:, 0] != 7).any()  # the draw itself varied the code


def test_code_is_refused_out_of_range_and_for_models_without_codes():
    latent = InfoGANLatent(z_dim=4, categorical=[10], continuous=0)
    with pytest.raises(ConfigError, match=r"code=10 is not valid; .*0\.\.9"):
        fix_code(latent, latent.sample(2), 10)
    with pytest.raises(ConfigError, match="code=3 given but this model has no categorical latent code"):
        fix_code(GaussianLatent(z_dim=4), torch.zeros(2, 4), 3)


def test_ganrun_sample_code_writes_samples_of_that_code(make_config, tmp_path):
    from ganrun.commands.cli import sample_main

    train(make_config(*FAST, *SMALL_INFOGAN, "steps=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    generator, info = load_generator(str(ckpt))
    a, b = draw(generator, info, 6, seed=3, code=2), draw(generator, info, 6, seed=3, code=5)
    assert (a["codes"] == 2).all() and not torch.equal(a["images"], b["images"])
    sample_main([f"ckpt={ckpt}", "n=4", f"out={tmp_path / 's.pt'}", "code=4"])
    assert torch.load(tmp_path / "s.pt")["codes"].tolist() == [4, 4, 4, 4]


def test_ganrun_sample_refuses_code_for_a_model_without_codes(make_config, tmp_path, capsys):
    from ganrun.commands.cli import sample_main

    train(make_config(*FAST, "model=gan", "dataset=ring", "steps=2"))
    out = tmp_path / "s.pt"
    with pytest.raises(SystemExit) as exit_info:
        sample_main([f"ckpt={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", "n=4", f"out={out}", "code=1"])
    assert exit_info.value.code == 2 and not out.exists()
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "code=1 given but this model has no categorical latent code" in message


# --------------------------------------------------------------- collapse alarm
class _Stub:
    """The bits of a GANModule the alarm reads: a sampling generator, latent, classes, counters,
    the last logged metrics, the objective and the run's config (no command line: nothing to suggest)."""

    def __init__(self, generator: nn.Module, z_dim: int = 2) -> None:
        self.generator, self.latent = generator, GaussianLatent(z_dim=z_dim)
        self.num_classes, self.g_updates, self.device = 0, 300, torch.device("cpu")
        self.sampling_generator = generator
        self.last_metrics, self.run_config, self.max_g_updates = {}, {}, None
        self.objective = type("Objective", (), {"d_outputs_are_probabilities": False})()


class _Data:
    """The bits of a datamodule the alarm reads: real examples and, for mixtures, the modes."""

    def __init__(self, real: torch.Tensor) -> None:
        self.real, self.modes, self.std = real, None, None

    def real_examples(self, n: int) -> torch.Tensor:
        return self.real[:n]

    @property
    def is_mixture(self) -> bool:
        return self.modes is not None


class _Trainer:
    def __init__(self, real: torch.Tensor) -> None:
        self.datamodule = _Data(real)
        self.is_global_zero = True
        self.callbacks = []


class _Constant(nn.Module):
    def forward(self, z, labels=None):
        return torch.zeros(len(z), 2) + 0.001 * z[:, :1]


class _Identity(nn.Module):
    def forward(self, z, labels=None):
        return z


def test_diversity_is_the_mean_pairwise_distance():
    assert diversity(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
    assert diversity(torch.zeros(5, 1, 4, 4)) == 0.0


def test_collapse_alarm_warns_once_for_collapsed_samples_and_not_for_diverse_ones(capsys):
    real = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    for generator, collapsed in ((_Constant(), True), (_Identity(), False)):
        alarm, module, trainer = CollapseAlarm(every_n_steps=1, patience=2), _Stub(generator), _Trainer(real)
        alarm.on_train_start(trainer, module)
        alarm.draw(trainer, module)
        assert "warning" not in capsys.readouterr().out  # one collapsed check is not enough
        alarm.draw(trainer, module)
        alarm.draw(trainer, module)
        out = capsys.readouterr().out
        assert out.count("warning: samples collapsed at G update 300") == (1 if collapsed else 0), out
        assert (alarm.last_ratio < 0.5) == collapsed, alarm.last_ratio


def test_collapse_alarm_warns_when_2d_samples_miss_the_modes(capsys):
    modes = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    real = modes.repeat(32, 1) + 0.02 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    trainer = _Trainer(real)
    trainer.datamodule.modes, trainer.datamodule.std = modes, 0.02
    for generator, off_modes in ((_Far(), True), (_Snap(modes), False)):
        alarm, module = CollapseAlarm(every_n_steps=1, patience=1), _Stub(generator)
        alarm.on_train_start(trainer, module)
        alarm.draw(trainer, module)
        out = capsys.readouterr().out
        assert ("lie near the data's modes" in out) == off_modes, out


class _Far(nn.Module):
    """Diverse points well away from modes at (+-2, 0)."""

    def forward(self, z, labels=None):
        return z + torch.tensor([0.0, 5.0])


class _Snap(nn.Module):
    """Each noise vector to the nearest of ``modes``: samples right on the data's modes."""

    def __init__(self, modes: torch.Tensor) -> None:
        super().__init__()
        self.modes = modes

    def forward(self, z, labels=None):
        return self.modes[(z[:, 0] > 0).long()]


def test_collapse_alarm_refuses_bad_settings():
    with pytest.raises(ConfigError, match="min_ratio=1.5 is not valid"):
        CollapseAlarm(min_ratio=1.5)


class _OnModes(nn.Module):
    """Samples on the first ``used`` of ``modes``: diverse and on the modes, the rest dropped."""

    def __init__(self, modes: torch.Tensor, used: int) -> None:
        super().__init__()
        self.modes, self.used = modes, used

    def forward(self, z, labels=None):
        return self.modes[(z[:, 0].abs() * 1000).long() % self.used] + 0.01 * z


def test_collapse_alarm_names_dropped_modes_at_the_end_of_a_2d_run(capsys):
    """Partial collapse (4 of 8 modes, samples diverse and on the modes) passes the periodic
    checks; at the end the alarm counts modes as hp/modes_covered does and says so, on rank 0
    only, suggesting what applies to the run (MINE only when it is off)."""
    from ganrun.data.toy import RingDataModule

    ring = RingDataModule(batch_size=64)
    covers_4 = "G covers 4 of the data's 8 modes at the end (G update 300): partial mode collapse; try "
    no_mine = ["model=gan", "dataset=ring", "tricks.mine_weight=0"]
    cases = (
        (4, True, no_mine, [covers_4 + "tricks.mine_weight=0.5, steps=3000, loss=wgan_gp"]),
        (4, True, ["model=gan", "dataset=ring"], [covers_4 + "steps=3000, loss=wgan_gp"]),  # MINE already on
        (8, True, no_mine, None),
        (4, False, no_mine, None),
    )
    for used, rank_zero, overrides, expected in cases:
        trainer = _Trainer(ring.real_examples(64))
        trainer.datamodule, trainer.is_global_zero = ring, rank_zero
        alarm, module = CollapseAlarm(every_n_steps=1, patience=1), _Stub(_OnModes(ring.modes, used))
        module.run_config = {"overrides": overrides}
        alarm.on_train_start(trainer, module)
        alarm.draw(trainer, module)
        alarm.on_train_end(trainer, module)
        out = capsys.readouterr().out
        assert "samples collapsed" not in out, out
        if expected:
            assert all(fragment in out for fragment in expected), out
        else:
            assert "G covers" not in out, out
        assert alarm.measured_at(300)["modes_covered"] == used  # shared with hp/modes_covered, on every rank


def test_end_of_run_mode_warning_agrees_with_hp_modes_covered(make_config, capsys):
    """A short ring run without the recipe's MINE and decay drops modes; the one-line warning
    names exactly the count the run reports as hp/modes_covered."""
    metrics = train(
        make_config(
            *FAST,
            "model=gan",
            "dataset=ring",
            "steps=150",
            "tricks.mine_weight=0",
            "scheduler=null",
            "seed=0",
            "logger=none",
        )
    )
    out = capsys.readouterr().out
    covered = int(metrics["hp/modes_covered"])
    assert covered < 8, metrics  # measured: a few of 8 at 150 G updates
    assert f"G covers {covered} of the data's 8 modes at the end (G update 150)" in out, out


def test_final_evaluation_warns_when_the_judge_finds_dropped_classes(tmp_path, capsys):
    """A run whose final evaluation reads fewer classes than the data has (e.g. fgan_rkl at
    300 G updates: 7 of 10) says so in one line; a run covering every class, or another rank, does not."""
    from ganrun.callbacks.evaluation import Evaluation

    for covered, rank_zero, warns in ((7.0, True, True), (10.0, True, False), (7.0, False, False)):
        callback = Evaluation(dirpath=str(tmp_path), every_n_steps=0)
        callback.last, callback._evaluated_at = {"classes_covered": covered, "cfid": 250.0}, 300
        trainer = type(
            "T", (), {"callbacks": [], "is_global_zero": rank_zero, "datamodule": type("D", (), {"num_classes": 10})()}
        )()
        callback.on_train_end(trainer, _Stub(_Identity()))
        out = capsys.readouterr().out
        assert ("warning: G's samples cover 7 of the data's 10 classes at the end (G update 300" in out) == warns, out


@pytest.mark.slow
def test_the_cgan_and_infogan_digits_recipes_keep_the_step_their_model_is_for(make_config, tmp_path):
    """best.ckpt of the CGAN / InfoGAN digits recipes is picked by cond_accuracy /
    code_accuracy (their cfid is lowest early, before the label or code means the digit)."""
    assert make_config("model=cgan").eval.monitor == "cond_accuracy"
    assert make_config("model=dcgan").eval.monitor == "auto"
    cfg = make_config(
        *FAST,
        *SMALL_INFOGAN,
        "steps=4",
        "callbacks.evaluation.every_n_steps=2",
        "callbacks.evaluation.num_samples=20",
        "callbacks.evaluation.final_min_steps=1",
        run_dir=tmp_path / "run",
    )
    assert cfg.eval.monitor == "code_accuracy"
    result = train(cfg)
    assert "best/code_accuracy" in result and result["best/step"] in (2.0, 4.0)
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
