"""TensorBoard's HPARAMS row (ganrun/records/hparams.py) and the end-of-run evaluation of short runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ganrun.callbacks.evaluation import Evaluation
from ganrun.records.hparams import applicable_metrics, hyperparameters, log_hyperparameters


def setup_data(cfg):
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_hparams_use_option_names_and_real_values(hydra_job):
    cfg = hydra_job("model=dcgan", "loss=wgan_gp", "dataset=digits", "trainer.max_epochs=2")
    datamodule = setup_data(cfg)
    flat = hyperparameters(cfg, datamodule)
    assert (flat["model"], flat["loss"], flat["dataset"]) == ("dcgan", "wgan_gp", "digits")
    # steps unset: the planned G updates (2 epochs of batches / 5 critic steps), never -1.
    batches = len(datamodule.train_dataloader())
    assert flat["steps"] == 2 * batches // 5 and flat["n_critic"] == 5
    assert flat["monitor"] == "cfid (lower is better)"
    assert flat["tricks/ema_decay"] == "none" and flat["lr_g"] == cfg.optimizer.lr


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["term=ema"], {"tricks/ema_decay": 0.999, "tricks/instance_noise_std": "none"}),
        (["tricks.ema_decay=0.9"], {"tricks/ema_decay": 0.9}),
        (
            ["term=[instance_noise,minibatch_discrimination]", "tricks.instance_noise_anneal_steps=40"],
            {
                "tricks/instance_noise_std": 0.1,
                "tricks/instance_noise_anneal_steps": 40,
                "tricks/minibatch_discrimination": True,
            },
        ),
        (
            ["model=gan", "dataset=ring"],
            {"tricks/mine_weight": 1.0, "tricks/ema_decay": "none"},
        ),  # the recipe's terms.mine
    ],
)
def test_hparams_show_the_tricks_a_run_trains_with_however_they_were_chosen(make_config, overrides, expected):
    cfg = make_config("steps=300", *overrides)
    flat = hyperparameters(cfg, setup_data(cfg))
    assert {key: flat[key] for key in expected} == expected


def test_hparams_outside_hydra_fall_back_to_readable_names(make_config):
    cfg = make_config("model=gan", "dataset=ring", "steps=300")
    flat = hyperparameters(cfg, setup_data(cfg))
    assert flat["dataset"] == "ring" and flat["steps"] == 300
    assert flat["monitor"] == "modes_covered (higher is better)"


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["dataset=digits", "steps=50"], ["hp/loss_d", "hp/loss_g"]),  # too short to be evaluated
        (["dataset=digits", "steps=100"], ["hp/metric", "hp/loss_d", "hp/loss_g"]),
        (["dataset=digits", "steps=500", "callbacks.evaluation.every_n_steps=0"], ["hp/loss_d", "hp/loss_g"]),
        # one evaluation period (50) is reached before final_min_steps (100): evaluated at the end
        (
            ["dataset=digits", "steps=60", "callbacks.evaluation.every_n_steps=50"],
            ["hp/metric", "hp/loss_d", "hp/loss_g"],
        ),
        (
            ["model=gan", "dataset=ring", "steps=5"],
            ["hp/metric", "hp/loss_d", "hp/loss_g", "hp/modes_covered", "hp/high_quality_fraction"],
        ),
    ],
)
def test_only_metrics_that_apply_are_declared(make_config, overrides, expected):
    cfg = make_config(*overrides)
    assert applicable_metrics(cfg, setup_data(cfg)) == expected


def test_tensorboard_row_has_no_placeholder_values(make_config, tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = make_config("dataset=digits", "steps=200")
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="", default_hp_metric=False)
    log_hyperparameters([logger], cfg, setup_data(cfg))
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert events.Tags()["scalars"] == []  # no NaN cards
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["hp/metric", "hp/loss_d", "hp/loss_g"]
    assert {h.name for h in experiment.hparam_infos} >= {"model", "loss", "dataset", "monitor", "steps"}


# ------------------------------------------------------------------ end-of-run evaluation
@pytest.mark.parametrize("g_updates,evaluated", [(99, False), (100, True), (499, True)])
def test_runs_of_100_g_updates_are_evaluated_at_the_end(tmp_path, monkeypatch, g_updates, evaluated):
    callback = Evaluation(str(tmp_path), every_n_steps=500)
    calls = []
    monkeypatch.setattr(callback, "evaluate", lambda trainer, module: calls.append(module.g_updates))
    callback.on_train_end(SimpleNamespace(callbacks=[callback]), SimpleNamespace(g_updates=g_updates))
    assert calls == ([g_updates] if evaluated else [])


def test_end_of_run_evaluation_respects_off_and_signals(tmp_path, monkeypatch):
    calls = []
    off = Evaluation(str(tmp_path), every_n_steps=0)
    monkeypatch.setattr(off, "evaluate", lambda trainer, module: calls.append("off"))
    off.on_train_end(SimpleNamespace(callbacks=[off]), SimpleNamespace(g_updates=1000))
    signalled = Evaluation(str(tmp_path))
    monkeypatch.setattr(signalled, "evaluate", lambda trainer, module: calls.append("signal"))
    signalled.on_train_end(
        SimpleNamespace(callbacks=[SimpleNamespace(received_signal=15)]), SimpleNamespace(g_updates=200)
    )
    assert calls == []
