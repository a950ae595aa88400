"""Shared fixtures: compose ganrun configs the way the CLI does, small and fast."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ganrun.runtime.threads import set_wait_policy

set_wait_policy()  # before torch loads, as ganrun's commands do: short spinning OpenMP waits

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from support import FAST, group_options  # noqa: E402,F401 (fixtures' settings)

from ganrun import config_dir  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: in-process work (e.g. training a judge) takes one thread, so two
    # workers never fight over the cores (runs set their own count with threads=).
    torch.set_num_threads(1)


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


@pytest.fixture
def hydra_job(tmp_path):
    """compose(*overrides) as the ganrun command sees it: HydraConfig set, runtime choices filled."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        import ganrun.commands.cli  # noqa: F401  (registers ganrun's resolvers)

        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=[f"run_dir={tmp_path / 'run'}", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    HydraConfig.instance().cfg = None
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


# ----------------------------------------------------------------- Slurm
SLURM_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm_cluster.sh"
SLURM_DIR = Path(os.environ.get("GANRUN_SLURM_DIR", "/tmp/ganrun-slurm"))
# .ci/run sets it: there, a cluster that cannot start fails the slurm tests instead of skipping them.
REQUIRE_SLURM = "GANRUN_REQUIRE_SLURM"
# Test sessions using the cluster (one file per session, named by its main process id), and
# whether a test session started it: the last session to finish stops a cluster that tests
# started, never one started by hand. Two sessions may run at once (two people, one machine).
SLURM_USERS = SLURM_DIR / "run" / "pytest-sessions"
STARTED_BY_TESTS = SLURM_DIR / "run" / "started-by-pytest"
SESSION = "GANRUN_TEST_SESSION"


def pytest_configure(config):
    os.environ.setdefault(SESSION, str(os.getpid()))  # the main process's id; xdist workers inherit it


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The environment for commands on scripts/slurm_cluster.sh's two-node cluster
    (``SLURM_CONF``; ``tests/`` on PYTHONPATH for test-only callbacks in jobs). Started
    here unless it already runs; see SLURM_USERS for when it is stopped."""
    problem = start_slurm_cluster()
    if problem is not None:
        if os.environ.get(REQUIRE_SLURM) == "1":
            pytest.fail(f"{REQUIRE_SLURM}=1 but no Slurm cluster: {problem}", pytrace=False)
        pytest.skip(f"no Slurm cluster: {problem}")
    tests = str(Path(__file__).resolve().parent)
    return {
        **os.environ,
        "SLURM_CONF": str(SLURM_DIR / "slurm.conf"),
        "PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p),
    }


def start_slurm_cluster() -> str | None:
    """None once the cluster runs (this session registered as a user), else why it cannot run here."""
    import sys

    if not sys.platform.startswith("linux"):
        return "scripts/slurm_cluster.sh runs Slurm's Linux daemons"
    with _slurm_lock():
        if _slurm_script("status").returncode != 0:
            if os.geteuid() != 0:
                return "starting one needs root (or start it first: sudo scripts/slurm_cluster.sh start)"
            started = _slurm_script("start", timeout=900)
            if started.returncode != 0:
                lines = (started.stderr or started.stdout).strip().splitlines()
                return lines[-1] if lines else f"scripts/slurm_cluster.sh start exited with {started.returncode}"
            STARTED_BY_TESTS.touch()
        try:
            SLURM_USERS.mkdir(parents=True, exist_ok=True)
            (SLURM_USERS / os.environ[SESSION]).touch()
        except PermissionError:
            pass  # another user's cluster: used, never stopped from here
    return None


def pytest_sessionfinish(session, exitstatus):
    """In the main process, after every worker: leave the cluster; stop it if tests started it
    and no other live test session uses it."""
    me = SLURM_USERS / os.environ.get(SESSION, "")
    if hasattr(session.config, "workerinput") or not me.is_file():
        return
    with _slurm_lock():
        me.unlink()
        others = [p for p in SLURM_USERS.iterdir() if _alive(p.name)]
        if not others and STARTED_BY_TESTS.exists():
            STARTED_BY_TESTS.unlink()
            _slurm_script("stop", timeout=120)


def _slurm_script(command: str, timeout: int = 60):
    import subprocess

    return subprocess.run(
        ["bash", str(SLURM_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GANRUN_SLURM_DIR": str(SLURM_DIR)},
    )


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _slurm_lock():
    """The test sessions' lock around starting, registering and stopping (not the script's own)."""
    import fcntl

    try:
        handle = open(f"{SLURM_DIR}.pytest.lock", "a")
    except PermissionError:  # another user's lock file: this user cannot start or stop the cluster anyway
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
