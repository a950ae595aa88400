"""Pictures of training: the 2-D landscape (D's heat map, samples, G's-loss arrows) and the timelapse GIF."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import FAST
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from ganrun.callbacks.landscape import (
    ARROWS,
    MIDDLE,
    REAL_CONTOUR,
    SAMPLE_DOTS,
    discriminator_map,
    generator_push,
    plane_points,
    render,
)
from ganrun.objectives.losses import LeastSquares, NonSaturating, Wasserstein
from ganrun.train import train

# A ring run of a few seconds: small MLPs, no MINE, no schedule.
RING = [
    "model=gan",
    "dataset=ring",
    "model.generator.hidden=[16,16]",
    "model.discriminator.hidden=[16,16]",
    "model.z_dim=2",
    "tricks.mine_weight=0",
    "scheduler=null",
    "dataset.batch_size=64",
]
SMALL_DCGAN = [
    "model=dcgan",
    "model.generator.width=8",
    "model.discriminator.width=8",
    "model.z_dim=16",
    "dataset.image_size=16",
]
PICTURES_OFF = ["callbacks.landscape=null", "callbacks.timelapse=null", "callbacks.landscape_timelapse=null"]


def images(run_dir: Path, tag: str) -> list:
    """Every TensorBoard image event ``tag`` of a run (step, encoded bytes, width, height)."""
    folder = next(Path(run_dir, "tensorboard").rglob("events.out.tfevents.*")).parent
    events = EventAccumulator(str(folder), size_guidance={"images": 0})
    events.Reload()
    if tag not in events.Tags()["images"]:
        return []
    return events.Images(tag)


def pixels_of(image: np.ndarray, colour) -> int:
    return int((image == np.array(colour, dtype=np.uint8)).all(axis=-1).sum())


class Linear(nn.Module):
    """D(x) = w . x + b: a constructed critic whose G-loss gradient is known in closed form."""

    def __init__(self, w, b: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        with torch.no_grad():
            self.layer.weight.copy_(torch.tensor([w], dtype=torch.float32))
            self.layer.bias.fill_(b)

    def forward(self, x, labels=None):
        return self.layer(x).squeeze(1)


# ------------------------------------------------------------------ the landscape
def test_landscape_is_logged_at_every_sample_grid_step_with_content(make_config, tmp_path):
    train(make_config(*FAST, *RING, "steps=6", "callbacks.samples.every_n_steps=3", "callbacks.landscape.size=256"))
    run = tmp_path / "run"
    grid_steps = [event.step for event in images(run, "samples/generated")]
    pictures = images(run, "samples/landscape")
    assert grid_steps == [3, 6] and [event.step for event in pictures] == grid_steps
    for event in pictures:
        assert (event.width, event.height) == (256, 256 + 58)
        assert (run / "samples" / f"landscape_step_{event.step:07d}.png").is_file()
    picture = np.asarray(Image.open(io.BytesIO(pictures[-1].encoded_image_string)).convert("RGB"))
    plane = picture[20 : 20 + 256]
    # D's map varies over the plane (a constant one: one colour under the drawings, ~5 in all) ...
    assert len(np.unique(plane.reshape(-1, 3), axis=0)) > 20
    # ... and the samples, their arrows and the real density's rings are drawn on it
    assert pixels_of(plane, SAMPLE_DOTS) > 100
    assert pixels_of(plane, ARROWS) > 50
    assert pixels_of(plane, REAL_CONTOUR) > 100


def test_landscape_does_nothing_on_images(make_config, tmp_path):
    train(make_config(*FAST, *SMALL_DCGAN, "steps=2", "callbacks.samples.every_n_steps=1"))
    samples = tmp_path / "run" / "samples"
    assert (samples / "step_0000002.png").is_file()
    assert not list(samples.glob("landscape*")) and not images(tmp_path / "run", "samples/landscape")


@pytest.mark.parametrize("objective", [NonSaturating(), Wasserstein(), LeastSquares()], ids=["ns", "wgan", "ls"])
def test_arrows_are_minus_the_gradient_of_g_loss(objective):
    w = torch.tensor([0.6, -0.8])
    critic = Linear(w.tolist(), b=0.3)
    points = torch.tensor([[0.5, 0.5], [-1.0, 2.0], [2.0, -1.0]])
    push = generator_push(critic, objective, points)
    # by hand: each sample's own loss term l(o), o = w . x + b, has grad_x = l'(o) w
    o = (points @ w + 0.3).detach().requires_grad_(True)
    per_sample = objective.g_loss(fake_out=o) * len(o)
    (dl_do,) = torch.autograd.grad(per_sample, o)
    torch.testing.assert_close(push, -dl_do.unsqueeze(1) * w)
    # G's loss decreases along the arrows (a small step)
    before = objective.g_loss(fake_out=critic(points)).item()
    after = objective.g_loss(fake_out=critic(points + 1e-2 * push)).item()
    assert after < before


class Wrapped(nn.Module):
    """A network as ganrun's D: ``D(x, labels)`` -> (N,)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x, labels=None):
        return self.network(x).squeeze(1)


def test_arrow_of_a_nonlinear_critic_lowers_g_loss_and_leaves_d_as_found():
    torch.manual_seed(0)
    critic = Wrapped(nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Dropout(0.5), nn.Linear(32, 1)))
    points = torch.randn(64, 2)
    rng = torch.get_rng_state()
    push = generator_push(critic, NonSaturating(), points)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global RNG (dropout in train mode would)
    assert critic.training and all(p.grad is None and p.requires_grad for p in critic.parameters())
    critic.eval()
    for i in range(len(points)):  # each sample's own loss term goes down along its arrow
        x, step = points[i : i + 1], 1e-3 * push[i : i + 1] / push[i].norm()
        assert NonSaturating().g_loss(fake_out=critic(x + step)) < NonSaturating().g_loss(fake_out=critic(x))


def test_arrows_are_drawn_in_their_direction_on_the_picture():
    """A sample at the centre pushed right (+x), then up (+y): its arrow's pixels lie on that side."""
    extent = (-1.0, 1.0, -1.0, 1.0)
    values = np.full((8, 8), 0.5, dtype=np.float32)
    real = torch.tensor([[0.9, 0.9]])
    for push, side in ((torch.tensor([[1.0, 0.0]]), "right"), (torch.tensor([[0.0, 1.0]]), "up")):
        image = render(values, extent, real, torch.zeros(1, 2), push, probabilities=True, size=200, arrow_length=0.2)
        rows, cols = np.nonzero((image[20:220] == np.array(ARROWS, dtype=np.uint8)).all(axis=-1))
        assert len(rows) > 10
        if side == "right":
            assert cols.min() >= 100 and abs(rows.mean() - 100) < 3
        else:
            assert rows.max() <= 100 and abs(cols.mean() - 100) < 3


def test_heat_map_is_d_of_x_for_logistic_losses_and_raw_for_critics():
    critic = Linear([0.0, 10.0])  # output 10 y: "real" at the top
    extent = (-1.0, 1.0, -1.0, 1.0)
    points = plane_points(extent, 4)
    assert points[0, 1] > 0 > points[-1, 1]  # row by row from the top
    raw = discriminator_map(critic, Wasserstein(), points)
    torch.testing.assert_close(raw, 10 * points[:, 1])
    torch.testing.assert_close(discriminator_map(critic, NonSaturating(), points), torch.sigmoid(raw))
    image = render(
        torch.sigmoid(raw).view(4, 4).numpy(),
        extent,
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        probabilities=True,
        size=128,
    )
    top, bottom = image[20 + 5, 64].astype(int), image[20 + 122, 64].astype(int)
    assert top[1] > top[0] and bottom[0] > bottom[1]  # green ("real") at the top, purple ("fake") at the bottom


def test_a_diverged_game_is_still_drawn():
    """NaN weights (a run that blew up, under callbacks.divergence.action=warn): no error, a picture."""
    critic = Linear([float("nan"), 1.0])
    extent = (-1.0, 1.0, -1.0, 1.0)
    samples = torch.tensor([[float("nan"), 0.0], [0.5, 0.5], [1e30, -1e30]])
    push = generator_push(critic, NonSaturating(), samples)
    values = discriminator_map(critic, Wasserstein(), plane_points(extent, 8)).view(8, 8).numpy()
    image = render(values, extent, torch.zeros(4, 2), samples, push, probabilities=False, size=128)
    assert image.shape == (128 + 58, 128, 3)
    assert tuple(image[20 + 5, 5]) == MIDDLE  # D's NaN output: the neutral colour


# ------------------------------------------------------------------ the timelapse
def gif_frames(data: bytes) -> int:
    image = Image.open(io.BytesIO(data))
    assert image.format == "GIF"
    return image.n_frames


def test_timelapse_gif_has_one_frame_per_sample_grid_and_is_logged(make_config, tmp_path):
    train(make_config(*FAST, *SMALL_DCGAN, "steps=5", "callbacks.samples.every_n_steps=2"))
    samples = tmp_path / "run" / "samples"
    grids = sorted(samples.glob("step_*.png"))
    assert [p.name for p in grids] == ["step_0000002.png", "step_0000004.png", "step_0000005.png"]
    gif = (samples / "timelapse.gif").read_bytes()
    assert gif_frames(gif) == len(grids)
    # frame i is grid i (in step order), above its caption
    pictures = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in grids]
    animation = Image.open(io.BytesIO(gif))
    for i in range(len(grids)):
        animation.seek(i)
        frame = np.asarray(animation.convert("RGB"), dtype=np.float32)
        height, width = pictures[0].shape[:2]
        factor = frame.shape[1] // width  # small grids are enlarged by a whole factor
        shown = frame[: height * factor : factor, ::factor]
        assert np.argmin([np.abs(shown - picture).mean() for picture in pictures]) == i
    (logged,) = images(tmp_path / "run", "samples/timelapse")
    assert logged.step == 5 and logged.encoded_image_string == gif


def test_ring_run_also_writes_the_landscape_gif(make_config, tmp_path):
    train(make_config(*FAST, *RING, "steps=4", "callbacks.samples.every_n_steps=2", "callbacks.landscape.size=128"))
    samples = tmp_path / "run" / "samples"
    assert gif_frames((samples / "landscape.gif").read_bytes()) == len(list(samples.glob("landscape_step_*.png"))) == 2
    assert gif_frames((samples / "timelapse.gif").read_bytes()) == 2


def boom_callback(at: int):
    """A test callback (``+callbacks.boom``): fails the run at G update ``at``, after its sample grid."""
    import pytorch_lightning as pl

    class _Boom(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            if module.g_updates == at:
                raise RuntimeError("boom")

    return _Boom()


def test_timelapse_is_written_when_a_run_fails_and_after_a_resume(make_config, tmp_path):
    run = tmp_path / "run"
    common = [
        *FAST,
        *RING,
        "callbacks.samples.every_n_steps=2",
        "callbacks.last_checkpoint.every_n_steps=2",
        "callbacks.landscape=null",
    ]
    failing = [*common, "steps=8", "+callbacks.boom._target_=test_pictures.boom_callback", "+callbacks.boom.at=4"]
    with pytest.raises(RuntimeError, match="boom"):
        train(make_config(*failing, run_dir=run))
    assert gif_frames((run / "samples" / "timelapse.gif").read_bytes()) == 2  # steps 2 and 4
    # a grid beyond the resumed run's end (from an abandoned continuation) is left out
    (run / "samples" / "step_0000099.png").write_bytes((run / "samples" / "step_0000004.png").read_bytes())
    train(make_config(*common, "steps=8", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", run_dir=run))
    assert gif_frames((run / "samples" / "timelapse.gif").read_bytes()) == 4  # 2, 4 from before; 6, 8; not 99


# ------------------------------------------------------------------ the switch, and nothing changes
def test_switches_turn_the_pictures_off(make_config, tmp_path):
    train(make_config(*FAST, *RING, "steps=4", "callbacks.samples.every_n_steps=2", *PICTURES_OFF))
    samples = tmp_path / "run" / "samples"
    assert (samples / "step_0000004.png").is_file()
    assert not list(samples.glob("landscape*")) and not list(samples.glob("*.gif"))
    for tag in ("samples/landscape", "samples/timelapse", "samples/landscape_timelapse"):
        assert not images(tmp_path / "run", tag), tag


def test_landscape_follows_the_sample_grid_period(make_config):
    assert make_config("callbacks.samples.every_n_steps=7").callbacks.landscape.every_n_steps == 7
    assert make_config("callbacks.samples=null").callbacks.landscape.every_n_steps == 250


def test_training_is_bit_identical_with_and_without_the_pictures(make_config, tmp_path):
    """Pictures at every G update; D with dropout (draws from the global RNG in train mode) and
    G with batch norm (running statistics move in train mode): the weights must not notice."""
    common = [
        *FAST,
        *RING,
        "seed=3",
        "steps=6",
        "callbacks.samples.every_n_steps=1",
        "callbacks.landscape.size=128",
        "model.discriminator.dropout=0.3",
        "model.generator.batch_norm=true",
    ]
    runs = {"with": tmp_path / "with", "without": tmp_path / "without"}
    train(make_config(*common, run_dir=runs["with"]))
    train(make_config(*common, *PICTURES_OFF, run_dir=runs["without"]))
    assert len(list((runs["with"] / "samples").glob("landscape_step_*.png"))) == 6
    states = [
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        for run in runs.values()
    ]
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
