"""What a single run checks before Hydra creates (or, on a resume, rewrites) its folder.

``ganrun`` composes the command line once (``ganrun.config.command_line``) and hands the config
here: the typed schema (``ganrun.config.checks``), the accelerator, the data (prepared:
downloads are fine before the run folder exists, a failing one is a one-line error
naming the files expected) and the networks, built once as ``train()`` builds them, so
the model's own refusals (DCGAN's image sizes, a conditional model on unlabelled
data, an image architecture on 2-D points, a gradient penalty with batch norm)
fire before anything is written. On a resume the networks must also fit the
checkpoint's. ``train()`` runs the same checks again for sweeps and for tests that
call it directly; nothing here is a second copy of them.
"""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from ganrun.errors import ConfigError

DEVICE_WORDS = {"gpu": "GPU", "cuda": "GPU", "mps": "GPU (MPS)", "tpu": "TPU"}


def preflight(cfg: DictConfig, choices: Optional[dict] = None, resume=None, typed: Optional[dict] = None) -> None:
    """Raise ConfigError / FileNotFoundError (one line) for what would stop the run at its start.
    ``typed``: the values as the user typed them (echoed in the schema's errors)."""
    from ganrun.config.checks import check_config

    check_config(cfg, typed=typed)  # no torch import yet: the schema's refusals stay quick
    from omegaconf import OmegaConf

    from ganrun.config.build import build_module, instantiate

    check_accelerator(cfg.trainer, (choices or {}).get("accelerator"))
    cfg = cfg.copy()
    cfg.run_dir = "<preflight>"  # ${hydra:runtime.output_dir} does not exist yet; nothing is written here
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.prepare_shape()
    try:
        module = build_module(cfg, datamodule)
    except ConfigError as error:
        if resume is None:
            raise
        raise ConfigError(resume.refusal(str(error), built=False)) from None
    if resume is not None:
        from ganrun.records.checkpoints import network_mismatch

        problem = network_mismatch(resume.checkpoint, module)
        if problem is not None:
            resume.current_config = OmegaConf.to_container(cfg, resolve=True)
            raise ConfigError(resume.refusal(problem))


def check_accelerator(trainer: DictConfig, choice: Optional[str] = None) -> None:
    """Refuse ``accelerator=gpu`` (or ``trainer.accelerator=cuda``, ``mps``...) that this
    machine does not have, and more devices than it has, instead of Lightning's multi-line error."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "cpu"):
        return
    from pytorch_lightning.accelerators import AcceleratorRegistry  # only for a non-CPU accelerator

    name = f"accelerator={choice}" if choice and choice not in ("auto", "cpu") else f"trainer.accelerator={accelerator}"
    known = AcceleratorRegistry.available_accelerators()
    candidates = ["cuda", "mps"] if accelerator == "gpu" else [accelerator]
    if not any(c in known for c in candidates):
        raise ConfigError(f"{name} is not an accelerator; choose auto, cpu, gpu or one of {', '.join(sorted(known))}")
    classes = [AcceleratorRegistry[c]["accelerator"] for c in candidates if c in known]
    count = max(cls.auto_device_count() if cls.is_available() else 0 for cls in classes)
    if count == 0:
        raise ConfigError(
            f"{name} needs a {DEVICE_WORDS.get(accelerator, accelerator.upper())} but this machine has none visible to torch; "
            "use accelerator=cpu or accelerator=auto"
        )
    devices = trainer.get("devices", "auto")
    if isinstance(devices, int) and devices > count:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {count} {accelerator.upper()}(s); "
            f"use trainer.devices={count} or -1 (all)"
        )
