"""Shared fixtures: compose ganrun configs the way the CLI does, small and fast."""
from __future__ import annotations

import os
from pathlib import Path

from ganrun.threads import set_wait_policy

set_wait_policy()  # before torch loads, as ganrun's commands do: short spinning OpenMP waits

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from ganrun import config_dir  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: in-process work (e.g. training a judge) takes one thread, so two
    # workers never fight over the cores (runs set their own count with threads=).
    torch.set_num_threads(1)

# Quiet, small and CPU-only settings for tests that train.
# threads=1: bit-identical repeat runs (threads=auto follows the machine's load, see ganrun/threads.py).
FAST = [
    "accelerator=cpu",
    "threads=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every TensorBoard scalar ``tag`` a run wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(run_dir) / "tensorboard"
    # A single `ganrun` run logs to tensorboard/<override string>/ (ganrun.hparams.tensorboard_run_name).
    folder = next((p.parent for p in sorted(root.rglob("events.out.tfevents.*"))), root)
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


# Options kept only as another name of an option (tested once, in test_configs.py).
ALIASES = {"loss": {"wasserstein": "wgan"}}


def group_options(group: str) -> list[str]:
    """Every option of a config group, read from the config tree (new files are tested automatically);
    aliases of another option are left out."""
    options = (p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))
    return sorted(name for name in options if name not in ALIASES.get(group, {}))


@pytest.fixture(scope="session", autouse=True)
def ganrun_cache(tmp_path_factory):
    """Judges and reference statistics go to a per-session cache (shared by subprocesses, and
    under pytest-xdist by the workers of this session: entries are written atomically, so a
    judge is trained once per session, not once per worker)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "ganrun-cache"  # pytest-N/, above popen-gwK/
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("ganrun-cache")
    previous = os.environ.get("GANRUN_CACHE")
    os.environ["GANRUN_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("GANRUN_CACHE", None)
    else:
        os.environ["GANRUN_CACHE"] = previous


@pytest.fixture
def make_config(tmp_path):
    """make_config(*overrides) -> composed DictConfig with run_dir inside tmp_path."""

    def _make(*overrides: str, run_dir: Path | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=[f"run_dir={run_dir or tmp_path / 'run'}", *overrides])
        return cfg

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def digits_classifier():
    """A logistic regression trained on real 16x16 digits in [-1, 1] (checked on held-out digits).

    Used to judge generated digits: what class they look like, and how confidently.
    """
    from sklearn.linear_model import LogisticRegression

    from ganrun.data.images import DigitsDataModule

    dm = DigitsDataModule(batch_size=64, image_size=16)
    dm.setup()
    x = dm.real_examples(len(dm.data)).flatten(1).numpy()
    y = dm.labels.numpy()
    classifier = LogisticRegression(max_iter=3000).fit(x[:1500], y[:1500])
    accuracy = classifier.score(x[1500:], y[1500:])
    assert accuracy > 0.9, f"the judge itself is poor: held-out accuracy {accuracy:.3f}"
    return classifier


@pytest.fixture(autouse=True)
def no_hydra_config_left_behind():
    """A test that sets Hydra's global HydraConfig (composing as the launcher does) must not
    make later in-process runs believe they run inside Hydra (e.g. in a sweep)."""
    yield
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
