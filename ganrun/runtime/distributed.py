"""Data-parallel training of a GAN: ``GANDDPStrategy``, and which launches may start ranks.

Why not Lightning's plain ``strategy=ddp``: it wraps the whole GANModule in one
``DistributedDataParallel``, whose reducer expects every parameter to receive a
gradient in every backward. A GAN's D step leaves G without gradients and its G
step freezes D, so DDP fails ("parameters that were not used in producing the
loss") unless it searches the autograd graph for unused parameters after every
backward (``ddp_find_unused_parameters_true``). Wrapping G and D in their own DDP
wrappers avoids the search only when every call goes through the wrapper's
``forward``: LAPGAN calls ``generator.level(k, ...)`` and ``discriminator.levels[k]``,
InfoGAN calls ``discriminator.features(x)`` for its Q head, and a call that
bypasses the wrapper silently skips the gradient all-reduce.

So ``GANDDPStrategy`` keeps Lightning's DDP machinery (process launch, process
group, ranks, rank-0 logging and checkpointing) but wraps nothing. Instead:

- before training, rank 0's parameters and buffers are broadcast to every rank;
- each parameter records when backward accumulates its gradient; after every
  ``manual_backward`` the gradients *of this backward* (D's in a D step, G's and
  InfoGAN's Q head's in a G step, every LAPGAN level's) are averaged across ranks
  in one flattened all-reduce, before the module clips, measures and steps them.
  No graph search, no unused-parameter bookkeeping, any call pattern;
- after every optimizer step, rank 0's buffers (batch-norm running statistics,
  the EMA copy's) are broadcast, so every rank holds identical weights and buffers
  after each step (what DDP's ``broadcast_buffers`` does);
- at the start of training each rank offsets its random stream by its rank, so
  ranks draw different noise (the data is already sharded by the datamodule).

The cost over DDP: the all-reduce runs after backward instead of overlapping with
it, which is small next to a GAN's several forward passes per step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import _sync_module_states
from pytorch_lightning.strategies import DDPStrategy
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ganrun.errors import ConfigError


class GANDDPStrategy(DDPStrategy):
    """Lightning's DDP processes and process group, with explicit per-backward gradient averaging."""

    def configure_ddp(self) -> None:
        _sync_module_states(self.model)  # identical start: rank 0's weights and buffers
        # Trainable parameters, shared ones once (the EMA copy is not trainable).
        parameters = [p for p in dict.fromkeys(self.model.parameters()) if p.requires_grad]
        self._order = {id(p): index for index, p in enumerate(parameters)}
        self._fresh: dict[int, torch.Tensor] = {}
        self._hooks = [p.register_post_accumulate_grad_hook(self._mark_fresh) for p in parameters]

    def _mark_fresh(self, parameter: torch.Tensor) -> None:
        self._fresh[id(parameter)] = parameter

    def post_backward(self, closure_loss: torch.Tensor) -> None:
        super().post_backward(closure_loss)
        fresh = sorted(self._fresh.values(), key=lambda p: self._order[id(p)])
        self._fresh = {}
        average_gradients([p.grad for p in fresh], self.world_size)

    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any) -> Any:
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        broadcast_buffers(self.model)
        return output

    def on_train_start(self) -> None:
        super().on_train_start()
        # Every rank seeded alike (and a resumed run restores rank 0's state): derive a
        # common seed from the shared stream, then give each rank its own.
        common = int(torch.randint(2**31 - 1, (1,)))
        torch.manual_seed(common + 1_000_003 * self.global_rank)

    def teardown(self) -> None:
        for hook in getattr(self, "_hooks", []):
            hook.remove()
        self._hooks = []
        super().teardown()


def _grouped(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped by (device, dtype), in order: each group is flattened into one collective."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    return list(groups.values())


def average_gradients(grads: list[torch.Tensor], world_size: int) -> None:
    """Replace each gradient by its mean over ranks (one all-reduce per device/dtype)."""
    if world_size < 2 or not grads:
        return
    for group in _grouped(grads):
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat)  # SUM: gloo has no AVG
        flat.div_(world_size)
        for grad, averaged in zip(group, _unflatten_dense_tensors(flat, group)):
            grad.copy_(averaged)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's floating-point and integer buffers (running stats, counters) on every rank."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return
    buffers = [b for b in module.buffers() if b.numel()]
    for group in _grouped(buffers):
        flat = _flatten_dense_tensors(group)
        dist.broadcast(flat, src=0)
        for buffer, synced in zip(group, _unflatten_dense_tensors(flat, group)):
            buffer.copy_(synced)


def is_multiprocess(trainer_cfg) -> bool:
    """Whether this trainer config starts several processes (DDP on one node or several)."""
    strategy = trainer_cfg.get("strategy")
    name = strategy.get("_target_", "") if hasattr(strategy, "get") else str(strategy or "")
    return "ddp" in name.lower() or int(trainer_cfg.get("num_nodes") or 1) > 1


def check_sweep_launch(cfg, hydra_cfg) -> None:
    """Refuse ``-m`` with several processes per job unless the launcher starts them.

    Lightning starts DDP ranks 1..N-1 by re-running the command line; under a local
    ``-m`` sweep that is the whole sweep again (and a joblib worker has no command
    line to re-run). The SLURM launcher starts one task per device itself, which
    Lightning then joins, so it is the supported way to sweep multi-process jobs.
    """
    from hydra.types import RunMode

    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN or not is_multiprocess(cfg.trainer):
        return
    launcher = str(hydra_cfg.launcher.get("_target_", "")).rsplit(".", 1)[-1]
    if "slurm" in launcher.lower():  # ganrun's and hydra-submitit-launcher's SlurmLauncher
        return
    raise ConfigError(
        f"-m sweeps with a multi-process trainer (trainer.strategy={_strategy_name(cfg.trainer)}) "
        "would re-run the whole sweep in every DDP rank; sweep with launcher=slurm "
        "(one task per device), or run each multi-GPU job on its own without -m"
    )


def _strategy_name(trainer_cfg) -> str:
    strategy = trainer_cfg.get("strategy")
    if hasattr(strategy, "get"):
        return str(strategy.get("_target_", "?")).rsplit(".", 1)[-1]
    return str(strategy)
