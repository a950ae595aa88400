"""ganrun from Python: ``ganrun.run``, ``ganrun.load``, ``ganrun.evaluate`` (docs/python-api.md).

``run(overrides)`` trains what ``ganrun OVERRIDES`` trains, in this process: the same checks
before anything is written (``ganrun.config.command_line.prepare_overrides``), the same Hydra
composition of configs/train.yaml and the same job (``ganrun.commands.cli.train_and_record``:
``.hydra/config.yaml``, ``overrides.yaml``, ``result.json``). ``load`` is ``ganrun-sample``'s
loading (``ganrun.commands.sample``), ``evaluate`` is ``ganrun-eval``
(``ganrun.commands.evaluate.evaluate_checkpoint``).

A notebook calls these many times, so each call leaves the caller's process as it found
it (``caller_state_kept``): working directory, environment variables (Lightning's
``PL_GLOBAL_SEED``...), torch's thread count, determinism and cuDNN flags, the random
generators of ``random``, numpy and torch, warnings filters, the levels and handlers of
existing loggers, and Hydra's globals (GlobalHydra, HydraConfig). Where it differs from the command:

* Hydra's logging set-up is skipped: the caller's logging stays as it is, and the run folder
  has no ``cli.log`` (the command's holds only warnings, usually nothing).
* One process: a trainer that starts several (DDP) is refused in one line, because
  Lightning starts the other ranks by re-running the command line, which a notebook lacks.
* User errors are all ``ConfigError`` (the command's missing-file errors included), with the
  line the command prints after ``ganrun: error:``.
* OpenMP's wait policy (``ganrun.runtime.threads.set_wait_policy``) is set, as by the command,
  only when ganrun is what imports torch: OpenMP reads it once, as torch loads, so it is a
  property of the process from then on and stays in ``os.environ``, where environment.json and
  child processes see the truth. It makes idle threads sleep sooner: speed, never results.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from ganrun.errors import ConfigError

# Hydra's name for the ``ganrun`` command's job (from ganrun/commands/cli.py): identical .hydra/hydra.yaml.
JOB_NAME = "cli"


@dataclass(frozen=True)
class RunResult:
    """What ``ganrun.run`` trained.

    ``metrics``: result.json's metrics (``g_updates``, ``hp/metric``, the last losses, ...);
    ``run_dir``: the run folder (absolute); ``last_checkpoint`` / ``best_checkpoint``: its
    ``checkpoints/last.ckpt`` / ``best.ckpt``, None when the run wrote none; ``status``:
    ``completed``, or ``interrupted`` when a signal stopped it (``last.ckpt`` resumes it).
    """

    metrics: dict
    run_dir: Path
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    status: str = "completed"


def run(overrides: Sequence[str] = (), run_dir: Union[str, os.PathLike, None] = None) -> RunResult:
    """Train ``ganrun OVERRIDES`` here, e.g. ``run(["model=gan", "dataset=ring", "steps=500"])``.

    ``run_dir``: the run folder (``hydra.run.dir``); default a new ``runs/DATE/TIME`` below the
    working directory, as the command's. ``ckpt_path=RUN/checkpoints/last.ckpt`` resumes in
    RUN. Bad input raises ``ConfigError`` before anything is written; a diverged run raises
    ``TrainingDiverged`` (its result.json says so, as the command's).
    """
    command_line = _command_line(overrides, run_dir)
    _imported("ganrun.commands.cli", "ganrun.train", "ganrun.metrics.suite")  # cli: ganrun's OmegaConf resolvers
    with _as_config_errors(), caller_state_kept():
        from ganrun.config.command_line import prepare_overrides, quote_value
        from ganrun.config.resume import key_of

        prepared = prepare_overrides(command_line)
        if not any(key_of(item) == "hydra.run.dir" for item in prepared):
            prepared.append(f"hydra.run.dir={quote_value(str(fresh_run_dir()))}")
        _refuse_several_processes(prepared)
        return _run_job(prepared)


def _command_line(overrides: Sequence[str], run_dir) -> list[str]:
    """``overrides`` as the command line ``ganrun`` would get, ``run_dir`` as ``hydra.run.dir``."""
    from ganrun.config.command_line import quote_value
    from ganrun.config.resume import key_of

    if isinstance(overrides, (str, bytes)):
        raise TypeError(
            f"overrides is a list of strings such as ['model=gan', 'steps=100'], not the string {overrides!r}"
        )
    items = [str(item) for item in overrides]
    flags = [item for item in items if item.startswith("-")]
    if flags:
        raise ConfigError(
            f"{flags[0]} is a flag of the ganrun command; ganrun.run takes overrides (group=option, "
            "key=value) and trains one run: sweep with a loop over ganrun.run"
        )
    if run_dir is not None:
        if any(key_of(item) == "hydra.run.dir" for item in items):
            raise ConfigError("run_dir and hydra.run.dir both given; name the run folder once")
        items.append(f"hydra.run.dir={quote_value(str(Path(run_dir).expanduser()))}")
    return items


def fresh_run_dir() -> Path:
    """A folder no run uses yet, named as the command's default (configs/train.yaml's
    ``hydra.run.dir``: ``runs/DATE/TIME``, relative to the working directory), with ``_2``,
    ``_3``, ... appended when runs start within the same second."""
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    from ganrun import config_dir

    setup_globals()  # Hydra's ${now:...}
    pattern = OmegaConf.load(Path(config_dir()) / "train.yaml").hydra.run.dir
    base = Path(OmegaConf.create({"dir": pattern}).dir)
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}_{number}")
    return candidate


def _refuse_several_processes(overrides: list[str]) -> None:
    """ConfigError (nothing written yet) for a trainer that would start more than this process."""
    from ganrun.config.compose import compose_or_explain
    from ganrun.runtime.distributed import is_multiprocess
    from ganrun.train import processes_on_node

    cfg, choices = compose_or_explain(overrides)
    if is_multiprocess(cfg.trainer) or processes_on_node(cfg.trainer) > 1:
        nodes = int(cfg.trainer.get("num_nodes") or 1)
        trainer = f"accelerator={choices.get('accelerator')} with trainer.devices={cfg.trainer.get('devices')}"
        trainer += f" and trainer.num_nodes={nodes}" if nodes > 1 else ""
        raise ConfigError(
            f"{trainer} starts several processes, and Lightning starts them by re-running the command line: "
            "ganrun.run trains in this process only; run it with the command, "
            "e.g. subprocess.run(['ganrun', *overrides], check=True)"
        )


def _run_job(overrides: list[str]) -> RunResult:
    """Hydra's run of configs/train.yaml with ``overrides``, as ``@hydra.main`` does for ``ganrun``
    (composition, run folder, .hydra/ records), without its logging set-up."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from ganrun import config_dir
    from ganrun.commands.cli import train_and_record

    outcome: dict = {}

    def job(cfg) -> None:
        outcome["run_dir"] = Path(cfg.run_dir)
        try:
            outcome["metrics"] = train_and_record(cfg, HydraConfig.get())
        except Exception as error:  # raised below, without Hydra's "Error executing job" line
            outcome["error"] = error

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name=JOB_NAME):
        # hydra.mode=RUN: what @hydra.main adds to a command line without -m (recorded in .hydra/hydra.yaml).
        GlobalHydra.instance().hydra.run(
            config_name="train",
            task_function=job,
            overrides=[*overrides, "hydra.mode=RUN"],
            with_log_configuration=False,
        )
    if "error" in outcome:
        raise outcome["error"]
    metrics, run_dir = outcome["metrics"], outcome["run_dir"]
    record = json.loads((run_dir / "result.json").read_text())
    checkpoints = run_dir / "checkpoints"
    return RunResult(
        metrics=record["metrics"],
        run_dir=run_dir,
        last_checkpoint=_existing(checkpoints / "last.ckpt"),
        best_checkpoint=_existing(checkpoints / "best.ckpt"),
        status="interrupted" if "stopped_by_signal" in metrics else "completed",
    )


def _existing(path: Path) -> Optional[Path]:
    return path if path.is_file() else None


# ------------------------------------------------------------------ load and evaluate
def load(ckpt: Union[str, os.PathLike], ema: bool = True) -> "LoadedGenerator":
    """The generator of a ganrun checkpoint (``RUN/checkpoints/last.ckpt`` or ``best.ckpt``),
    in eval mode on the CPU, with the EMA weights when the run kept them (``ema=False``: the
    trained weights). ``g = ganrun.load(ckpt); x = g.sample(16)``."""
    _imported("ganrun.commands.sample")
    with _as_config_errors(), _kept(_random_generators):  # building G draws initial weights
        from ganrun.commands.sample import load_generator

        generator, info = load_generator(str(ckpt), use_ema=ema)
    return LoadedGenerator(generator, info, Path(ckpt))


class LoadedGenerator:
    """A trained generator and what it needs to sample: its latent distribution and classes.

    ``sample(n)``: n samples as one tensor; ``draw(n)``: the dict ``ganrun-sample`` saves;
    ``noise(n)`` and ``g(noise, labels)``: G on latents of your own (interpolations).
    Attributes: ``generator`` (the ``nn.Module``), ``latent``, ``num_classes`` (None when
    not class-conditional), ``is_image``, ``ema`` (the EMA weights were loaded),
    ``g_updates``, ``config`` (the run's composed config, a dict) and ``ckpt``.
    """

    def __init__(self, generator, info: dict, ckpt: Path) -> None:
        self.generator = generator
        self.info = info
        self.latent = info["latent"]
        self.num_classes: Optional[int] = info["num_classes"] or None
        self.is_image: bool = bool(info["is_image"])
        self.ema: bool = info["ema"]
        self.g_updates: Optional[int] = info.get("g_updates")
        self.config: dict = info["config"]
        self.ckpt = ckpt

    def sample(self, n: int, labels=None, seed: Optional[int] = None, code: Optional[int] = None):
        """``n`` samples: images N x C x H x W in [-1, 1], or points N x 2 (float32, CPU).

        ``labels`` (class-conditional models): one class (int) or one per sample (n ints);
        default uniform over the classes. ``seed``: the same samples as ``ganrun-sample
        seed=SEED``; default a fresh draw from torch's global generator (``torch.manual_seed``
        repeats it). ``code``: InfoGAN's first categorical code."""
        result = self.draw(n, labels=labels, seed=seed, code=code)
        return result["images"] if self.is_image else result["x"]

    def draw(self, n: int, labels=None, seed: Optional[int] = None, code: Optional[int] = None) -> dict:
        """``sample``'s draw as the dict ``ganrun-sample out=FILE.pt`` saves: ``images`` or ``x``,
        plus ``labels`` (the classes drawn) for a class-conditional model and ``codes``."""
        import torch

        from ganrun.commands.sample import draw

        if seed is None:
            seed = int(torch.randint(2**62, ()))
        with _as_config_errors():
            return draw(self.generator, self.info, n, seed=seed, label=labels, code=code)

    def noise(self, n: int, seed: Optional[int] = None):
        """``n`` latent vectors of G's input (N x z), seeded, or from torch's global generator."""
        import torch

        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return self.latent.sample(n, generator=generator)

    def __call__(self, noise, labels=None):
        """G on ``noise`` (and class ``labels``), in eval mode without gradients, on the CPU."""
        from ganrun.training.sampling import generate

        return generate(self.generator, noise, labels)

    def to(self, device) -> "LoadedGenerator":
        """G moved to ``device`` (e.g. "cuda"); samples still come back on the CPU."""
        self.generator.to(device)
        return self

    def __repr__(self) -> str:
        kind = "images" if self.is_image else "points"
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        return f"LoadedGenerator({self.ckpt}, {kind}{classes}, g_updates={self.g_updates}, ema={self.ema})"


def evaluate(
    ckpt: Union[str, os.PathLike],
    metrics: Union[str, Sequence[str], None] = None,
    n: Optional[int] = None,
    seed: int = 0,
    ema: bool = True,
    device: str = "auto",
    features: str = "auto",
    threads: Union[int, str] = "auto",
) -> dict:
    """``ganrun-eval ckpt=CKPT``'s result as a dict: the metrics under their names (``cfid``,
    ``modes_covered``, ``precision``, ...), ``g_updates``, ``protocol``, ``ckpt``, ``eval_time_s``.

    ``metrics``: names (``["modes_covered", "precision"]``), ``"auto"`` or ``"all"`` (default:
    the run's ``eval.metrics``); ``n``: samples (default: the dataset's protocol); ``threads``:
    torch's CPU threads while evaluating (``auto`` as the command; yours are restored after).
    """
    _imported("ganrun.commands.evaluate", "ganrun.metrics.suite")
    with _as_config_errors(), caller_state_kept():
        from ganrun.commands.evaluate import evaluate_checkpoint
        from ganrun.config.checks import SCHEMA
        from ganrun.runtime.threads import use

        check, allowed = SCHEMA["threads"]
        setting = int(threads) if str(threads).isdigit() else threads
        if not check(setting):
            raise ConfigError(f"threads={threads} is not valid; {allowed}")
        use(setting)
        return evaluate_checkpoint(
            str(ckpt), metrics=metrics, n=n, seed=seed, ema=ema, device=device, features=features
        )


# ------------------------------------------------------------------ the caller's process, kept
def _imported(*modules: str) -> None:
    """The command's OpenMP wait policy when torch is not loaded yet (see the module's docstring),
    then ``modules`` imported. What an import does (e.g. ganrun.metrics.suite's warnings filter)
    is the process's for good, as with any import: no call's state to undo afterwards."""
    import importlib

    if "torch" not in sys.modules:
        from ganrun.runtime.threads import set_wait_policy

        set_wait_policy()
    for module in modules:
        importlib.import_module(module)


@contextmanager
def _as_config_errors() -> Iterator[None]:
    """A missing file the user named (checkpoint, data folder) as ConfigError, with its one line."""
    try:
        yield
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from error


@contextmanager
def caller_state_kept() -> Iterator[None]:
    """Inside: anything may change the process's global state; after: the caller's, restored."""
    import warnings

    with _kept(_working_directory, _environment, _torch_settings, _random_generators, _loggers, _hydra_globals):
        with warnings.catch_warnings():  # filters ganrun adds (ganrun.callbacks.progress.quiet_third_party)
            yield


@contextmanager
def _kept(*savers: Callable[[], Callable[[], None]]) -> Iterator[None]:
    """Each saver saves one piece of state and returns the function that puts it back."""
    restores = [save() for save in savers]
    try:
        yield
    finally:
        for restore in reversed(restores):
            restore()


def _working_directory() -> Callable[[], None]:
    cwd = os.getcwd()
    return lambda: os.chdir(cwd)


def _environment() -> Callable[[], None]:
    saved = dict(os.environ)

    def restore() -> None:
        for key in [key for key in os.environ if key not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value

    return restore


def _torch_settings() -> Callable[[], None]:
    """Thread count (``threads=``), determinism and cuDNN flags (Lightning's Trainer sets them)."""
    import torch

    threads = torch.get_num_threads()
    deterministic, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    benchmark, cudnn_deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    matmul_precision = torch.get_float32_matmul_precision()

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, cudnn_deterministic
        torch.set_float32_matmul_precision(matmul_precision)

    return restore


def _random_generators() -> Callable[[], None]:
    """random's, numpy's and torch's global generators (CUDA's when CUDA is initialised); a run seeds them all."""
    import random

    import numpy
    import torch

    python, numpy_state, torch_state = random.getstate(), numpy.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore() -> None:
        random.setstate(python)
        numpy.random.set_state(numpy_state)
        torch.random.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    return restore


def _loggers() -> Callable[[], None]:
    """Level, handlers, propagation of the root logger and every existing one (ganrun quiets Lightning's)."""
    import logging

    existing = [logging.getLogger()] + [
        item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)
    ]
    saved = [(logger, logger.level, list(logger.handlers), logger.propagate, logger.disabled) for logger in existing]

    def restore() -> None:
        for logger, level, handlers, propagate, disabled in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled

    return restore


def _hydra_globals() -> Callable[[], None]:
    """GlobalHydra (cleared inside: ganrun initialises its own), HydraConfig and Hydra's job name."""
    import copy

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime

    global_hydra = GlobalHydra.instance()
    hydra, config, runtime = global_hydra.hydra, HydraConfig.instance().cfg, copy.deepcopy(JobRuntime.instance().conf)
    global_hydra.clear()

    def restore() -> None:
        GlobalHydra.instance().clear()
        if hydra is not None:
            GlobalHydra.instance().initialize(hydra)
        HydraConfig.instance().cfg = config
        JobRuntime.instance().conf = runtime

    return restore
