"""What tests share: settings for small runs, the commands as a user runs them, readers of
what runs write, and where things are. Imported as ``support`` (``tests/`` is on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ganrun import config_dir

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"

# Quiet, small and CPU-only settings for tests that train.
# threads=1: bit-identical repeat runs (threads=auto follows the machine's load, see ganrun/runtime/threads.py).
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
    # A single `ganrun` run logs to tensorboard/<override string>/ (ganrun.records.hparams.tensorboard_run_name).
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


# Proxies that refuse at once: downloads fail immediately instead of timing out.
OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
    "NO_PROXY": "",
}

QUIET = ["accelerator=cpu", "threads=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
TINY_GAN = ["model=gan", "model.generator.hidden=[16]", "model.discriminator.hidden=[16]", "model.z_dim=4"]


def run(*args: str, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def ganrun(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "ganrun", *args, **kwargs)


def sample(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(sys.executable, "-c", "from ganrun.commands.cli import sample_main; sample_main()", *args, **kwargs)


def in_process(entry: str, *args: str, cwd, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """A console command run in this test process, as ``ganrun(...)`` runs it in a new one:
    ``entry`` (``train_main``, ``sample_main``, ``eval_main``) with ``args`` as its command
    line, in ``cwd``, with ``env`` set; its exit status and printed output come back.
    For refusals: they end before training, and a Python start-up (~6 s with Lightning's
    imports) per case is what the test suite spends most on. A few refusals stay
    end-to-end subprocess tests (test_first_contact, test_unknown_group_option_...)."""
    import contextlib
    import io

    from ganrun.commands import cli

    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    saved_argv, saved_cwd, saved_env = sys.argv[:], os.getcwd(), dict(os.environ)
    try:
        sys.argv[:] = [entry, *args]
        os.chdir(cwd)
        os.environ.update(env or {})
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                getattr(cli, entry)()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except Exception:  # noqa: BLE001 - a traceback is what the one-line checks must catch
                import traceback

                traceback.print_exc(file=stderr)
                code = 1
    finally:
        sys.argv[:] = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([entry, *args], code, stdout.getvalue(), stderr.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# Small digits runs for the learning tests.
DIGITS16 = [*FAST, "dataset=digits", "dataset.image_size=16", "seed=0", "trainer.log_every_n_steps=50"]


def judge(classifier, images) -> dict[str, float]:
    """What the digits classifier (conftest's ``digits_classifier``) makes of images: mean
    confidence, the classes it reads confidently, and its prediction per image."""
    import numpy as np

    probabilities = classifier.predict_proba(images.flatten(1).numpy())
    predicted = probabilities.argmax(axis=1)
    confident = probabilities.max(axis=1) > 0.8
    return {
        "confidence": float(probabilities.max(axis=1).mean()),
        "classes": int(len(np.unique(predicted[confident]))),
        "predicted": predicted,
    }


def samples(run_dir, n=500, **kwargs) -> dict:
    """``n`` samples (seed 1) of a run's ``last.ckpt``, as ``ganrun-sample`` draws them."""
    from ganrun.commands.sample import draw, load_generator

    generator, info = load_generator(str(run_dir / "checkpoints" / "last.ckpt"))
    return draw(generator, info, n, seed=1, **kwargs)
