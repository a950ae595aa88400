"""End-to-end training through ``train(cfg)``: outputs, the step rule, resume, errors."""

from __future__ import annotations

import math

import pytest
import torch
from support import FAST, scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ganrun.commands.sample import draw, load_generator
from ganrun.errors import ConfigError
from ganrun.train import train

# Small networks so each run takes a second or two on a CPU.
SMALL_DCGAN = ["model=dcgan", "model.generator.width=8", "model.discriminator.width=8", "model.z_dim=16"]
SMALL_GAN = ["model=gan", "model.generator.hidden=[32,32]", "model.discriminator.hidden=[32,32]", "model.z_dim=8"]


def g_weights(ckpt) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("generator.")}


@pytest.mark.parametrize(
    "overrides",
    [
        [*SMALL_DCGAN, "dataset=digits", "dataset.image_size=16"],
        [*SMALL_DCGAN, "dataset=fake", "dataset.image_size=28", "dataset.size=128"],
        [*SMALL_DCGAN, "dataset=fake", "dataset.image_size=64", "dataset.size=32", "dataset.batch_size=8"],
        [*SMALL_GAN, "dataset=digits"],
        [*SMALL_GAN, "dataset=ring"],
        [*SMALL_GAN, "dataset=grid", "loss=minimax"],
    ],
    ids=["dcgan-digits16", "dcgan-fake28", "dcgan-fake64-rgb", "gan-digits", "gan-ring", "gan-grid-minimax"],
)
def test_short_run_writes_the_contract_outputs(make_config, tmp_path, overrides):
    cfg = make_config(*FAST, *overrides, "steps=3")
    metrics = train(cfg)
    run = tmp_path / "run"
    assert metrics["g_updates"] == 3
    assert all(math.isfinite(v) for v in metrics.values())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "samples" / "real.png").is_file()
    assert (run / "samples" / "step_0000003.png").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    tags = EventAccumulator(str(run / "tensorboard")).Reload().Tags()
    for tag in ("loss/d", "loss/g", "d/real", "d/fake", "grad_norm/d", "grad_norm/g"):
        assert tag in tags["scalars"], tag
    assert {"samples/real", "samples/generated"} <= set(tags["images"])


@pytest.mark.parametrize("n_critic", [1, 3])
def test_steps_counts_generator_updates_whatever_n_critic(make_config, tmp_path, n_critic):
    cfg = make_config(*FAST, *SMALL_GAN, "dataset=ring", "steps=7", f"n_critic={n_critic}")
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["ganrun_counters"] == {"g_updates": 7, "batches_done": 7 * n_critic}
    # every logged curve uses G updates as its x axis: 1..7, each once
    assert [step for step, _ in scalars(tmp_path / "run", "loss/g")] == list(range(1, 8))
    assert [step for step, _ in scalars(tmp_path / "run", "loss/d")] == list(range(1, 8))


def test_d_and_g_losses_move_and_d_sees_fakes(make_config, tmp_path):
    cfg = make_config(*FAST, *SMALL_DCGAN, "dataset.image_size=16", "steps=30")
    train(cfg)
    d_loss = [v for _, v in scalars(tmp_path / "run", "loss/d")]
    d_real = [v for _, v in scalars(tmp_path / "run", "d/real")]
    d_fake = [v for _, v in scalars(tmp_path / "run", "d/fake")]
    # An untrained D is undecided: loss near 2 log 2; it then learns to tell digits from fakes.
    assert abs(d_loss[0] - 2 * math.log(2)) < 0.3
    assert min(d_loss) < d_loss[0] - 0.3, d_loss
    assert max(r - f for r, f in zip(d_real, d_fake)) > 0.2
    assert all(0.0 <= v <= 1.0 for v in d_fake + d_real)  # logged as probabilities for BCE losses


def test_resume_reaches_the_same_generator_as_an_uninterrupted_run(make_config, tmp_path):
    # 14 batches per epoch, 2 D steps per G step: the interruption falls mid-epoch.
    common = [*FAST, *SMALL_DCGAN, "dataset.image_size=8", "dataset.batch_size=128", "n_critic=2", "seed=5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(make_config(*common, "steps=10", run_dir=straight))
    train(make_config(*common, "steps=5", run_dir=split))
    resumed = train(make_config(*common, "steps=10", f"ckpt_path={split / 'checkpoints' / 'last.ckpt'}", run_dir=split))
    assert resumed["g_updates"] == 10
    a, b = g_weights(straight / "checkpoints" / "last.ckpt"), g_weights(split / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    # the resumed run appends to the same TensorBoard run without repeating steps
    assert [s for s, _ in scalars(split, "loss/g")] == list(range(1, 11))


@pytest.mark.parametrize(
    "overrides,ids",
    [
        ([*SMALL_DCGAN, "dataset=digits", "dataset.image_size=16"], "images"),
        ([*SMALL_GAN, "dataset=ring"], "points"),
        ([*SMALL_GAN, "dataset=digits", "model.conditional=true"], "conditional"),
    ],
)
def test_sampling_from_a_checkpoint(make_config, tmp_path, overrides, ids):
    train(make_config(*FAST, *overrides, "steps=2"))
    generator, info = load_generator(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    out = draw(generator, info, 30, seed=4)
    if ids == "points":
        assert out["x"].shape == (30, 2) and out["x"].dtype == torch.float32
    else:
        images = out["images"]
        assert images.shape[0] == 30 and images.dim() == 4 and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
    if ids == "conditional":
        assert out["labels"].dtype == torch.int64 and out["labels"].shape == (30,)
        assert set(draw(generator, info, 5, label=3)["labels"].tolist()) == {3}
    else:
        assert "labels" not in out
    again, other = draw(generator, info, 30, seed=4), draw(generator, info, 30, seed=5)
    assert all(torch.equal(out[k], again[k]) for k in out)  # same seed, same samples
    assert not torch.equal(out.get("x", out.get("images")), other.get("x", other.get("images")))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=gan", "dataset=ring", "model.conditional=true"], "class-conditional.*has no labels"),
        (["model=dcgan", "loss=wgan_gp", "model.discriminator.norm=batch"], "gradient penalty.*batch norm"),
        (["model=dcgan", "dataset.image_size=30"], "image_size=30 is not supported.*28 or a power of two"),
        (["loss=hinge", "tricks.label_smoothing=0.1"], "label_smoothing=0.1 needs a loss"),
        (["optimizer.lr=0"], "optimizer.lr=0 is not valid"),
    ],
)
def test_bad_combinations_are_refused_with_a_reason(make_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_config(*FAST, "steps=1", *overrides))


def test_scheduler_is_stepped_once_per_generator_update(make_config, tmp_path):
    cfg = make_config(*FAST, *SMALL_GAN, "dataset=ring", "steps=4", "n_critic=2", "optimizer.lr=1e-3")
    cfg.scheduler = {
        "_target_": "torch.optim.lr_scheduler.LinearLR",
        "_partial_": True,
        "start_factor": 1.0,
        "end_factor": 0.5,
        "total_iters": 4,
    }
    train(cfg)
    lr_g = [v for _, v in scalars(tmp_path / "run", "lr/g")]
    lr_d = [v for _, v in scalars(tmp_path / "run", "lr/d")]
    # logged after each G update: 1e-3 * (1 - 0.5 * k / 4) for k = 1..4
    expected = [1e-3 * (1 - 0.125 * k) for k in range(1, 5)]
    assert lr_g == pytest.approx(expected) and lr_d == pytest.approx(expected)


def test_a_schedule_without_a_length_is_refused(make_config):
    cfg = make_config(*FAST, "model=wgan_gp", "dataset=ring", "steps=null")
    with pytest.raises(ConfigError, match=r"scheduler.total_iters=None.*set steps=N"):
        train(cfg)


def test_periodic_checkpoint_is_written_once_per_period_whatever_n_critic(make_config, monkeypatch):
    from ganrun.callbacks.checkpoint import LastCheckpoint

    saved_at = []
    original = LastCheckpoint.save

    def counting_save(self, trainer, module):
        saved_at.append(module.g_updates)
        original(self, trainer, module)

    monkeypatch.setattr(LastCheckpoint, "save", counting_save)
    train(
        make_config(
            *FAST, *SMALL_GAN, "dataset=ring", "steps=4", "n_critic=3", "callbacks.last_checkpoint.every_n_steps=2"
        )
    )
    assert saved_at == [2, 4]


def test_callbacks_none_also_removes_the_callbacks_a_model_adds(make_config, tmp_path):
    assert make_config(*FAST, "model=infogan", "callbacks=none").callbacks is None
    # An experiment that tunes a callback, with callbacks=none: skipped with a warning.
    cfg = make_config(
        *FAST,
        "experiment=wgan_gp_cifar10",
        "dataset=fake",
        "callbacks=none",
        "steps=1",
        "model.generator.width=8",
        "model.discriminator.width=8",
    )
    with pytest.warns(UserWarning, match="callbacks.samples has no _target_"):
        assert train(cfg)["g_updates"] == 1
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "samples").exists()
