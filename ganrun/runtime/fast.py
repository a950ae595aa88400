"""Fast paths: the ``fast.*`` config switches, resolved for the device a run lands on.

Each switch changes speed, not the algorithm, and takes ``auto``, ``true`` or
``false``; ``auto`` turns it on where it is known to pay off:

- ``data_on_device``: keep an in-memory dataset on the GPU and index batches there
  (no per-step host-to-device copy). auto: on CUDA when the data takes under a
  quarter of the GPU's free memory. 2-D mixtures draw fresh points per batch and
  are unaffected.
- ``channels_last``: convolutional G and D (and real batches) in NHWC memory
  format. auto: on for networks with 2-D convolutions (faster on GPUs and, measured,
  on CPUs too).
- ``compile``: ``torch.compile`` G's and D's forward (``nn.Module.compile``, so
  checkpoints keep their keys). auto: on CUDA. The default is ``false``: compiling
  costs start-up time (and G recompiles when sample grids put it in eval mode),
  which pays off only in long GPU runs. D is left uncompiled under a gradient
  penalty, whose double backward torch.compile does not support.
- ``fused_optimizers``: the optimizer's fused kernel where it has one for the
  parameters' device (Adam, AdamW, SGD on CPU and CUDA), else its multi-tensor
  ``foreach`` form. auto: on.

bf16 autocast is the trainer's precision: ``trainer.precision=auto`` (the default
of ``accelerator=auto``) means bf16-mixed on a CUDA GPU that supports it, else 32-true.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

# The switches and their check live with the other config checks (no torch import there).
from ganrun.config.checks import check_fast as check  # noqa: F401


def switch(fast: Any, name: str, auto: bool) -> bool:
    """The switch's value, with ``auto`` (and an absent switch) replaced by ``auto``'s answer."""
    value = (fast or {}).get(name, "auto")
    return auto if value == "auto" else bool(value)


# trainer.precision=auto on a CPU with native bf16 (AVX512-BF16 / AMX): bf16-mixed for convolutional
# networks. Decided by measurement (docs/performance.md): the default job's ganrun-eval cfid
# over seeds 0-2, bf16-mixed against float32, was mean 7.71 vs 7.13 on an Intel Xeon with AMX
# (8% above) and 10.32 vs 11.03 on an AMD EPYC with AVX512-BF16 (6% below), so the quality holds.
# Set to False to make float32 the CPU default again.
CPU_BF16_BY_DEFAULT = True


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo's flags)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: Any, accelerator: Any = "auto", convolutional: bool = True) -> Any:
    """``auto``: bf16-mixed when training on a CUDA GPU with bf16 support; on a CPU (also a GPU
    machine told ``trainer.accelerator=cpu``) bf16-mixed only for convolutional networks, where
    the CPU has native bf16 and ``CPU_BF16_BY_DEFAULT`` says the quality held, else 32-true.
    Small MLPs (2-D data) stay float32 on a CPU: autocast costs them more than it saves, and
    bf16's 8-bit mantissa is coarser than a ring's mode width. Other values pass through."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    cpu_bf16 = CPU_BF16_BY_DEFAULT and convolutional and cpu_has_native_bf16()
    return "bf16-mixed" if cpu_bf16 else "32-true"


@dataclass
class FastPaths:
    """The switches resolved for one run's device (all off: plain eager fp32 loop)."""

    data_on_device: bool = False
    channels_last: bool = False
    compile: bool = False
    fused_optimizers: bool = False

    @classmethod
    def resolve(cls, fast: Any, device: torch.device) -> "FastPaths":
        check(fast)
        cuda = device.type == "cuda"
        return cls(
            data_on_device=switch(fast, "data_on_device", cuda),
            channels_last=switch(fast, "channels_last", True),
            compile=switch(fast, "compile", cuda),
            fused_optimizers=switch(fast, "fused_optimizers", True),
        )


def has_convolutions(*networks: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for network in networks for m in network.modules())


def apply_to_module(paths: FastPaths, module, *, gradient_penalty: bool) -> None:
    """Memory format and compilation of the module's G and D (before ``Trainer.fit``)."""
    networks = [module.generator, module.discriminator]
    if module.generator_ema is not None:
        networks.append(module.generator_ema)
    if paths.channels_last and has_convolutions(*networks):
        for network in networks:
            network.to(memory_format=torch.channels_last)
        module.channels_last = True
    if paths.compile:
        module.generator.compile()
        if not gradient_penalty:
            module.discriminator.compile()
        else:
            warnings.warn("fast.compile: D is not compiled under a gradient penalty (double backward)")


def data_device(enabled: bool, device: torch.device, nbytes: int) -> Optional[torch.device]:
    """Where an in-memory dataset of ``nbytes`` should live: ``device`` when worth it, else None (CPU)."""
    if not enabled or device.type == "cpu":
        return None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes > free // 4:
            size = f"{nbytes / 2**30:.1f} GiB"
            warnings.warn(
                f"fast.data_on_device: the data ({size}) stays on the CPU: over a quarter of the GPU's free memory"
            )
            return None
    return device


def build_optimizer(optimizer_class: type, params, *, fast_kernels: bool, **kwargs) -> torch.optim.Optimizer:
    """``optimizer_class(params, **kwargs)``, with its fused kernel when ``fast_kernels`` and it has one for
    the parameters' device, else its multi-tensor ``foreach`` form, else as it is. Keys the config sets
    (``optimizer.fused``, ``optimizer.foreach``) win."""
    params = list(params)
    accepted = inspect.signature(optimizer_class).parameters
    chosen = "fused" in kwargs or "foreach" in kwargs
    variants = [{"fused": True}, {"foreach": True}] if fast_kernels and not chosen else []
    for variant in variants:
        if all(key in accepted for key in variant):
            try:
                return optimizer_class(params, **kwargs, **variant)
            except (RuntimeError, ValueError):  # no such kernel for this device or dtype
                continue
    return optimizer_class(params, **kwargs)
