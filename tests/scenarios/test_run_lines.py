"""What a run says about itself: the recipe line at its start (and recipe=paper), end-of-run
lines that agree (one measurement of the last G update), interrupted runs, advice that
applies to the run, and what a datamodule declares."""

from __future__ import annotations

import os
import re
import signal

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from support import FAST, TINY_GAN

from ganrun.callbacks import advice
from ganrun.callbacks.collapse import CollapseAlarm
from ganrun.callbacks.evaluation import Evaluation
from ganrun.config.build import TRICK_ALIASES, term_nodes
from ganrun.config.recipe import recipe_line
from ganrun.data.base import GANDataModule
from ganrun.metrics import protocol, suite
from ganrun.records.summary import Outcome, summary_lines
from ganrun.train import train

TINY_RING = [*TINY_GAN, "dataset=ring"]
QUIET = ["logger=none", "callbacks.landscape=null", "callbacks.timelapse=null", "callbacks.landscape_timelapse=null"]


def added(line: str) -> list[str]:
    """The phrases of ``ganrun: recipe NAME adds: A, B; recipe=paper ...`` (commas inside () and [] kept)."""
    body = line.split(" adds: ", 1)[1].rsplit("; recipe=paper", 1)[0]
    return [part.strip() for part in re.split(r",(?![^(\[]*[)\]])", body)]


def flat(node, prefix: str = "") -> dict:
    """Leaves of a resolved container as {dotted key: value} (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out = {}
    for key, value in node.items():
        out.update(flat(value, f"{prefix}{key}."))
    return out


def resolved(cfg) -> dict:
    cfg = cfg.copy()
    cfg.run_dir = "."
    return OmegaConf.to_container(cfg, resolve=True)


# ------------------------------------------------------------------ recipe=paper
def test_recipe_paper_trains_the_papers_setting(make_config):
    tuned, paper = make_config("model=gan", "dataset=ring"), make_config("model=gan", "dataset=ring", "recipe=paper")
    assert "mine" in term_nodes(tuned) and tuned.optimizer.lr == 1e-3 and tuned.steps == 12000
    assert "mine" not in term_nodes(paper) and paper.optimizer.lr == 2e-4 and paper.steps is None
    assert paper.scheduler is None and paper.model.z_dim == 64
    # both recipe kinds are left out: model x dataset and loss x dataset
    assert make_config("model=wgan_gp", "dataset=ring").loss.gradient_penalty == 0.1
    assert make_config("model=wgan_gp", "dataset=ring", "recipe=paper").loss.gradient_penalty == 10.0
    assert make_config("model=dcgan", "loss=wgan_gp", "dataset=grid", "recipe=paper").loss.gradient_penalty == 10.0
    # the command line still wins, and experiments keep their own settings
    assert make_config("model=gan", "dataset=ring", "recipe=paper", "steps=300").steps == 300
    assert make_config("experiment=mine_grid", "recipe=paper").terms.mine.target == "noise"


def test_a_misspelt_recipe_is_refused_in_one_line():
    from ganrun.config.compose import compose_or_explain
    from ganrun.errors import ConfigError

    with pytest.raises(ConfigError, match=r"recipe=papr is not a known recipe option; did you mean recipe=paper\?"):
        compose_or_explain(["recipe=papr"])


# ------------------------------------------------------------------ the recipe line
@pytest.mark.parametrize(
    "overrides",
    [
        ["model=gan", "dataset=ring"],
        ["model=wgan_gp", "dataset=grid"],
        ["model=dcgan", "loss=wgan_gp", "dataset=ring"],
        ["model=infogan"],
        ["model=lsgan", "dataset=ring"],
    ],
)
def test_recipe_line_lists_exactly_what_the_recipe_changes(make_config, overrides):
    """Every setting listed differs from recipe=paper's, and every setting that differs is listed
    (terms as the run builds them; a tricks.* alias with its term)."""
    tuned, paper = make_config(*overrides), make_config(*overrides, "recipe=paper")
    phrases = added(recipe_line(overrides))
    listed = [re.split(r"[= ]", phrase, maxsplit=1)[0] for phrase in phrases]
    assert len(listed) == len(set(listed)), phrases
    tuned_flat, paper_flat = flat(resolved(tuned)), flat(resolved(paper))
    aliases = {f"tricks.{key}" for key in TRICK_ALIASES}
    differing = {
        key
        for key in tuned_flat
        if tuned_flat[key] != paper_flat.get(key, object()) and not key.startswith("terms.") and key not in aliases
    }
    differing |= {
        f"terms.{name}" for name in term_nodes(tuned) if term_nodes(tuned)[name] != term_nodes(paper).get(name)
    }
    covered = {key for key in differing if any(key == item or key.startswith(item + ".") for item in listed)}
    raw = flat(OmegaConf.to_container(tuned, resolve=False))
    follows = {
        key
        for key in differing - covered  # e.g. dataset.image_size: ${model.image_size}, listed as model.image_size
        if isinstance(raw.get(key), str) and raw[key].startswith("${") and raw[key][2:-1] in listed
    }
    assert covered | follows == differing, sorted(differing - covered - follows)
    for item in listed:  # nothing listed that does not differ
        assert any(key == item or key.startswith(item + ".") for key in differing), item


def test_recipe_line_names_the_ring_recipe_and_leaves_out_what_the_command_line_sets():
    line = recipe_line(["model=gan", "dataset=ring"])
    assert line.startswith("ganrun: recipe gan_ring adds: ")
    phrases = added(line)
    for phrase in (
        "terms.mine (weight 1 → 0 over 12000 G updates)",
        "optimizer.lr=1e-3",
        "steps=12000",
        "scheduler LinearLR(start_factor=1, end_factor=0, total_iters=12000)",
        "model.z_dim=2",
    ):
        assert phrase in phrases, phrases
    mine = added(recipe_line(["model=gan", "dataset=ring", "steps=3000", "optimizer.lr=1e-3", "model.z_dim=2"]))
    assert not any(p.startswith(("steps=", "optimizer.lr=", "model.z_dim=")) for p in mine), mine
    assert "terms.mine (weight 1 → 0 over 3000 G updates)" in mine  # the recipe's MINE follows the given steps
    assert not any(
        p.startswith("terms.mine") for p in added(recipe_line(["model=gan", "dataset=ring", "tricks.mine_weight=0"]))
    )
    weighted = added(recipe_line(["model=gan", "dataset=ring", "terms.mine.weight=0.3"]))  # a key only the recipe has
    assert "terms.mine (weight 0.3 → 0 over 12000 G updates)" in weighted
    assert recipe_line(["model=gan", "dataset=ring", "recipe=paper"]) is None
    assert recipe_line(["model=dcgan"]) is None  # no dcgan_digits recipe


def test_the_recipe_line_is_printed_once_after_the_run_directory(make_config, capsys):
    overrides = [*FAST, *QUIET, *TINY_RING, "steps=3"]
    train(make_config(*overrides), overrides=overrides)
    lines = capsys.readouterr().out.splitlines()
    recipe = [i for i, line in enumerate(lines) if line.startswith("ganrun: recipe ")]
    assert len(recipe) == 1 and lines[recipe[0] - 1].startswith("ganrun: run directory"), lines[:4]
    phrases = added(lines[recipe[0]])
    assert "terms.mine (weight 1 → 0 over 3 G updates)" in phrases and "model.generator.batch_norm=false" in phrases
    assert not any(p.startswith(("steps=", "model.z_dim=", "model.generator.hidden=")) for p in phrases), phrases


def test_a_run_trained_with_recipe_paper_resumes_with_it(make_config, tmp_path):
    from ganrun.config.command_line import prepare_overrides
    from ganrun.config.compose import compose_or_explain

    run_dir = tmp_path / "run"
    overrides = [*FAST, *QUIET, *TINY_RING, "steps=2", "recipe=paper"]
    train(make_config(*overrides, run_dir=run_dir), overrides=overrides)
    resumed = prepare_overrides([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "steps=4"])
    assert "recipe=paper" in resumed
    cfg = compose_or_explain(resumed)[0]
    assert cfg.optimizer.lr == 2e-4 and "mine" not in term_nodes(cfg) and cfg.steps == 4


# ------------------------------------------------------------------ one number per G update
def test_the_end_of_run_lines_read_one_measurement(make_config, capsys, monitor_coverage):
    """The alarm's mode count, the summary's modes_covered, hp/modes_covered and eval/modes_covered
    are one number: the final evaluation's, not a second draw."""
    overrides = [*FAST, *QUIET, "model=lsgan", "dataset=ring", "steps=300", "seed=0"]
    metrics = train(make_config(*overrides), overrides=overrides)
    out = capsys.readouterr().out
    covered = int(metrics["eval/modes_covered"])
    assert covered < 8, metrics  # measured: 2 of 8 at 300 G updates (seed 0)
    assert f"G covers {covered} of the data's 8 modes at the end (G update 300)" in out, out
    assert re.search(rf"modes_covered {covered} at G update 300 \(best", out), out
    assert (
        metrics["hp/modes_covered"] == covered
        and metrics["hp/high_quality_fraction"] == metrics["eval/high_quality_fraction"]
    )
    assert monitor_coverage == []  # nothing drew a second sample set


def test_without_a_final_evaluation_the_mode_count_is_measured_once(make_config, capsys, monitor_coverage):
    overrides = [
        *FAST,
        *QUIET,
        "model=lsgan",
        "dataset=ring",
        "steps=300",
        "seed=0",
        "callbacks.evaluation.every_n_steps=0",
    ]
    metrics = train(make_config(*overrides), overrides=overrides)
    out = capsys.readouterr().out
    assert len(monitor_coverage) == 1  # the alarm measured; hp/modes_covered reused it
    assert f"G covers {int(metrics['hp/modes_covered'])} of the data's 8 modes" in out, out
    assert monitor_coverage[0]["modes_covered"] == metrics["hp/modes_covered"]


def test_a_short_run_reports_its_one_mode_count_and_calls_g_undertrained(make_config, capsys):
    """Below the evaluation's 100 G updates: the alarm's count is the summary's and hp/modes_covered,
    and a G of 50 updates is undertrained, not collapsed."""
    overrides = [*FAST, *QUIET, *TINY_RING, "steps=50", "tricks.mine_weight=0"]
    metrics = train(make_config(*overrides), overrides=overrides)
    out = capsys.readouterr().out
    covered = int(metrics["hp/modes_covered"])
    assert covered < 8, metrics  # measured: 0 of 8 after 50 G updates
    assert f"modes_covered {covered} at G update 50 (end of run; best.ckpt is kept from 100 G updates on)" in out, out
    assert (
        f"G covers {covered} of the data's 8 modes at the end (G update 50): "
        "undertrained (only 50 G updates): train longer (steps=1000)"
    ) in out, out
    assert "mode collapse" not in out, out


@pytest.fixture
def monitor_coverage(monkeypatch):
    """Every mode count measured outside the Evaluation callback."""
    calls = []
    measure = protocol.measure_coverage

    def counted(module, datamodule):
        calls.append(measure(module, datamodule))
        return calls[-1]

    monkeypatch.setattr(protocol, "measure_coverage", counted)
    return calls


# ------------------------------------------------------------------ interrupted runs
class SignalAt(pl.Callback):
    """Sends this process ``signum`` after G update ``g_update`` (as SLURM or Ctrl-C would)."""

    def __init__(self, g_update: int, signum: int = signal.SIGTERM) -> None:
        self.g_update, self.signum, self.sent = g_update, signum, False

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.g_updates == self.g_update and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def test_an_interrupted_run_says_it_was_not_evaluated_and_how_to_evaluate_it(make_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = [
        *FAST,
        *QUIET,
        *TINY_RING,
        "steps=300",
        "tricks.mine_weight=0",
        "+callbacks.interrupt._target_=test_run_lines.SignalAt",
        "+callbacks.interrupt.g_update=146",
    ]
    metrics = train(make_config(*overrides, run_dir=run_dir), overrides=overrides)
    out = capsys.readouterr().out
    assert metrics["stopped_by_signal"] == signal.SIGTERM and metrics["g_updates"] == 147
    last = run_dir.resolve() / "checkpoints" / "last.ckpt"
    assert (
        f"modes_covered not evaluated: the run was interrupted at G update 147, before its evaluation; "
        f"evaluate it with: ganrun-eval ckpt={last}"
    ) in out, out
    assert "evaluated from" not in out and "warning:" not in out, out
    assert "hp/modes_covered" not in metrics and "eval/modes_covered" not in metrics  # nothing measured at the end


def test_an_interrupted_run_prints_no_collapse_warning(capsys):
    """The same dropped modes warn at the end of a run, and not when a signal stopped it."""
    from ganrun.data.toy import RingDataModule

    ring = RingDataModule(batch_size=64)
    for signalled in (False, True):
        trainer = _trainer(ring, [type("Checkpoint", (), {"received_signal": signal.SIGTERM if signalled else None})()])
        alarm, module = CollapseAlarm(every_n_steps=1, patience=1), _module(_OnFourModes(ring.modes))
        alarm.on_train_start(trainer, module)
        alarm.on_train_end(trainer, module)
        out = capsys.readouterr().out
        assert ("G covers 4 of the data's 8 modes" in out) == (not signalled), out
        assert (alarm.measured_at(module.g_updates) is None) == signalled


@pytest.mark.parametrize(
    "status,planned,expected",
    [
        (
            "interrupted (resume with the ckpt_path printed above)",
            300,
            "the run was interrupted at G update 147, before its evaluation",
        ),
        ("diverged (stopped by the divergence guard)", 300, "the run diverged at G update 147, before its evaluation"),
        ("completed", 50, "not evaluated (runs are evaluated from 100 G updates on)"),
        (
            "interrupted (resume with the ckpt_path printed above)",
            50,
            "not evaluated (runs are evaluated from 100 G updates on)",
        ),
    ],
)
def test_the_summary_says_why_a_run_was_not_evaluated(tmp_path, status, planned, expected):
    last = tmp_path / "last.ckpt"
    outcome = Outcome(
        status, 147 if planned == 300 else 40, planned, 3.0, tmp_path, monitor="cfid", files={"last.ckpt": last}
    )
    line = next(line for line in summary_lines(outcome) if line.strip().startswith("cfid"))
    assert expected in line, line
    assert ("ganrun-eval ckpt=" + str(last) in line) == (planned == 300), line
    outcome.files["last.ckpt"] = None
    if planned == 300:
        assert "no checkpoint was written to evaluate" in next(x for x in summary_lines(outcome) if "cfid" in x)


# ------------------------------------------------------------------ advice that applies
def test_suggestions_are_checked_against_the_run(make_config):
    """MSG-GAN already uses loss=ns and refuses gradient penalties: neither is suggested; DCGAN takes wgan_gp."""
    candidates = [advice.Suggestion(s) for s in ("loss=ns", "loss=wgan_gp", "loss=ls", "optimizer.lr=1e-4")]
    msggan = _module(None, overrides=["model=msggan", "steps=200"])
    assert advice.applicable(msggan, _digits(make_config("model=msggan")), candidates) == [
        "loss=ls",
        "optimizer.lr=1e-4",
    ]
    dcgan = _module(None, overrides=["model=dcgan", "loss=ls"])
    assert advice.applicable(dcgan, _digits(make_config("model=dcgan")), candidates) == [
        "loss=ns",
        "loss=wgan_gp",
        "optimizer.lr=1e-4",
    ]
    assert (
        advice.applicable(_module(None), _digits(make_config("model=dcgan")), candidates) == []
    )  # command line unknown


def test_checking_suggestions_leaves_the_training_random_stream_alone(make_config):
    module = _module(None, overrides=["model=dcgan"])
    datamodule = _digits(make_config("model=dcgan"))
    torch.manual_seed(7)
    advice.applicable(module, datamodule, [advice.Suggestion("loss=ls")])
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))


@pytest.mark.parametrize(
    "g_updates,d_real,d_fake,verdict",
    [
        (
            200,
            0.9998,
            0.0007,
            "undertrained (D far ahead after 200 G updates: D(x)=0.9998, D(G(z))=0.0007): train longer (steps=2000)",
        ),
        (50, 0.6, 0.4, "undertrained (only 50 G updates): train longer (steps=1000)"),
        (3000, 0.9998, 0.0007, "mode collapse; try "),
        (200, 0.6, 0.4, "mode collapse; try "),
    ],
)
def test_an_early_g_is_called_undertrained_not_collapsed(make_config, capsys, g_updates, d_real, d_fake, verdict):
    module = _module(None, overrides=["model=msggan", "steps=200"], g_updates=g_updates, probabilities=True)
    module.last_metrics = {"d/real": d_real, "d/fake": d_fake}
    module.run_config["config"] = {"optimizer": {"lr": 2e-4}}
    callback = Evaluation(dirpath=".", every_n_steps=0)
    callback.last = {"classes_covered": 1.0}
    callback._warn_dropped_classes(_digits(make_config("model=msggan")), module)
    out = capsys.readouterr().out
    assert f"cover 1 of the data's 10 classes at the end (G update {g_updates}, read by the judge): {verdict}" in out, (
        out
    )
    if "mode collapse" in verdict:
        assert "try optimizer.lr=1e-4, tricks.instance_noise_std=0.1, steps=" in out and "loss=ls" in out, out
        assert "loss=ns" not in out and "loss=wgan_gp" not in out, out  # in effect / refused for MSG-GAN


def test_the_collapse_alarm_suggests_only_what_applies_and_waits_for_an_undertrained_g(make_config, capsys):
    digits = _digits(make_config("model=msggan"))
    for g_updates, at_end, expected in (
        (3000, False, "likely cause: mode collapse; try optimizer.lr=1e-4"),
        (50, False, None),  # still learning, the run goes on: not judged
        (50, True, "likely cause: undertrained (only 50 G updates): train longer (steps=1000)"),
    ):
        module = _module(_Collapsed(), overrides=["model=msggan", "steps=5000"], g_updates=g_updates)
        module.run_config["config"] = {"optimizer": {"lr": 2e-4}}
        trainer, alarm = _trainer(digits, []), CollapseAlarm(every_n_steps=1, patience=1)
        alarm.on_train_start(trainer, module)
        alarm.on_train_end(trainer, module) if at_end else alarm.draw(trainer, module)
        out = capsys.readouterr().out
        if expected is None:
            assert out == "", out
            continue
        assert f"warning: samples collapsed at G update {g_updates}: their diversity is" in out and expected in out, out
        assert "loss=ns" not in out and "loss=wgan_gp" not in out, out  # in effect / refused for MSG-GAN


class _Collapsed(torch.nn.Module):
    def forward(self, z, labels=None):
        return torch.zeros(len(z), 1, 32, 32) + 0.001 * z[:, :1, None, None]


def test_longer_run_rounds_up_to_two_digits():
    assert [advice.longer_run(g) for g in (5, 100, 147, 200, 1234)] == [1000, 1000, 1500, 2000, 13000]


# ------------------------------------------------------------------ what a datamodule declares
@pytest.mark.parametrize(
    "option,mixture,labelled,classes",
    [("ring", True, False, 0), ("grid", True, False, 0), ("digits", False, True, 10), ("fake", False, True, 10)],
)
def test_every_dataset_declares_what_it_offers(make_config, option, mixture, labelled, classes):
    from hydra.utils import instantiate

    datamodule = instantiate(make_config(f"dataset={option}").dataset, seed=0)
    datamodule.setup("fit")
    assert (datamodule.is_mixture, datamodule.labelled, datamodule.num_classes) == (mixture, labelled, classes)
    assert (datamodule.modes is not None) == mixture and (datamodule.std is not None) == mixture
    assert datamodule.is_image != mixture and (datamodule.labels is not None) == labelled
    assert suite.default_monitor(datamodule) == ("modes_covered" if mixture else "cfid")


def test_a_dataset_that_declares_nothing_more_is_unlabelled_images():
    """A new dataset subclassing GANDataModule gets the declared defaults: no modes, no labels."""

    class Plain(GANDataModule):
        data_shape = (3, 8, 8)

    plain = Plain(batch_size=4)
    assert (plain.is_mixture, plain.labelled, plain.num_classes, plain.modes, plain.labels) == (
        False,
        False,
        0,
        None,
        None,
    )
    assert suite.default_monitor(plain) is None and suite.why_not("modes_covered", plain, 0, None)


# ------------------------------------------------------------------ stand-ins
class _OnFourModes(torch.nn.Module):
    """Samples on the first 4 of ``modes``, spread over them: diverse, on the modes, half dropped."""

    def __init__(self, modes: torch.Tensor) -> None:
        super().__init__()
        self.modes = modes

    def forward(self, z, labels=None):
        return self.modes[(z[:, 0].abs() * 1000).long() % 4] + 0.01 * z[:, :2]


def _module(generator, overrides=None, g_updates: int = 300, probabilities: bool = False):
    """The parts of a GANModule the alarm, the evaluation's warning and the advice read."""
    from types import SimpleNamespace

    from ganrun.training.latent import GaussianLatent

    objective = SimpleNamespace(d_outputs_are_probabilities=probabilities)
    return SimpleNamespace(
        generator=generator,
        sampling_generator=generator,
        latent=GaussianLatent(z_dim=2),
        num_classes=0,
        g_updates=g_updates,
        device=torch.device("cpu"),
        last_metrics={},
        objective=objective,
        max_g_updates=None,
        n_critic=1,
        run_config={"overrides": overrides},
    )


def _trainer(datamodule, callbacks):
    from types import SimpleNamespace

    return SimpleNamespace(
        datamodule=datamodule, callbacks=callbacks, is_global_zero=True, num_training_batches=100, max_epochs=100
    )


def _digits(cfg):
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.dataset, seed=0)
    datamodule.setup("fit")
    return datamodule
