"""GANModule: the alternating update of Goodfellow et al. (2014), Algorithm 1.

Each training batch is one discriminator step; every ``n_critic``-th batch is also
followed by one generator step:

    for each batch of m real examples:
        sample m noise vectors; ascend D's objective (descend d_loss)   # _d_step
        every n_critic batches:
            sample m noise vectors; descend G's objective (g_loss)      # _g_step
            update the EMA copy of G                                     # optional

So each D step sees fresh real data, and ``g_updates`` (what ``steps=`` counts and
what every logged curve uses as its x axis) is independent of ``n_critic``.
The module knows nothing of datasets, and the objective nothing of architectures.
"""
from __future__ import annotations

import copy
import math
from functools import partial
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
from torch import nn

from ganrun.losses import clip_weights_, gradient_penalty

OptimizerFactory = Callable[[Any], torch.optim.Optimizer]


class GANModule(pl.LightningModule):
    # fast.channels_last (set by ganrun.fast.apply_to_module): real batches in NHWC like G and D.
    channels_last = False

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        objective: Any,
        *,
        latent: Any,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        n_critic: int = 1,
        num_classes: int = 0,
        max_g_updates: Optional[int] = None,
        gradient_penalty_weight: float = 0.0,
        weight_clip: Optional[float] = None,
        grad_clip_norm: Optional[float] = None,
        instance_noise_std: float = 0.0,
        instance_noise_anneal_steps: int = 0,
        ema_decay: Optional[float] = None,
        scheduler: Optional[Callable[[torch.optim.Optimizer], Any]] = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator, self.objective = generator, discriminator, objective
        self.latent, self.num_classes, self.n_critic = latent, num_classes, n_critic
        self.optimizer_g, self.optimizer_d, self.scheduler = optimizer_g, optimizer_d, scheduler
        self.max_g_updates = max_g_updates
        self.gradient_penalty_weight, self.weight_clip = gradient_penalty_weight, weight_clip
        self.grad_clip_norm = grad_clip_norm
        self.instance_noise_std, self.instance_noise_anneal_steps = instance_noise_std, instance_noise_anneal_steps
        self.generator_ema = None
        if ema_decay is not None:
            multi_avg = torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay)
            self.generator_ema = torch.optim.swa_utils.AveragedModel(
                copy.deepcopy(generator), multi_avg_fn=multi_avg, use_buffers=True
            )
            self.generator_ema.requires_grad_(False)
        # Counters that define the run's position; saved in checkpoints.
        self.batches_done = 0
        self.g_updates = 0
        self.last_metrics: dict[str, float] = {}
        self.step_stats: dict[str, Optional[torch.Tensor]] = {}
        # What ganrun-sample needs to rebuild G: set by ganrun.train.build_module.
        self.run_config: dict = {}

    # ----------------------------------------------------------------- sampling
    @property
    def sampling_generator(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when enabled."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def sample_noise(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """G's input for n samples (noise, plus codes for structured latents)."""
        return self.latent.sample(n, generator=generator, device=self.device)

    def sample_labels(self, n: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), device=self.device, generator=generator)

    # ----------------------------------------------------------------- training
    def generator_side_parameters(self):
        """What G's optimizer updates: G (subclasses add networks trained with G, e.g. InfoGAN's Q head)."""
        return list(self.generator.parameters())

    def configure_optimizers(self):
        opt_g = self.optimizer_g(self.generator_side_parameters())
        opt_d = self.optimizer_d(self.discriminator.parameters())
        if self.scheduler is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [self.scheduler(opt_g), self.scheduler(opt_d)]

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = batch
        if self.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        opt_g, opt_d = self.optimizers()
        logging = self._logging_now()
        stats = self._d_step(real, labels, opt_d, logging)
        self.batches_done += 1
        if self.batches_done % self.n_critic:
            return
        stats.update(self._g_step(len(real), labels, opt_g, logging))
        self.g_updates += 1
        self.step_stats = stats  # this G update's losses (tensors, no host sync): read by DivergenceGuard
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        self._step_schedulers()
        if logging:
            self._log_stats(stats)
        if self.max_g_updates is not None and self.g_updates >= self.max_g_updates:
            self.trainer.should_stop = True

    def _d_step(self, real: torch.Tensor, labels, opt_d, logging: bool) -> dict[str, torch.Tensor]:
        """One step of D on a real batch and as many fakes (G frozen)."""
        noise = self.sample_noise(len(real))
        with torch.no_grad():
            fake = self.generator(noise, labels)
        real_in, fake_in = self._instance_noise(real), self._instance_noise(fake)
        # Losses in float32 also under bf16 autocast (exp, log and means lose precision in bf16).
        real_out = self.discriminator(real_in, labels).float()
        fake_out = self.discriminator(fake_in, labels).float()
        loss = self.objective.d_loss(real_out=real_out, fake_out=fake_out)
        stats = {"loss/d": loss.detach()}
        extra_loss = self.extra_d_loss(fake, noise, labels)
        if extra_loss is not None:
            loss = loss + extra_loss
        if self.gradient_penalty_weight:
            penalty = gradient_penalty(self.discriminator, real_in, fake_in, labels)
            loss = loss + self.gradient_penalty_weight * penalty
            stats["loss/gradient_penalty"] = penalty.detach()
        stats["grad_norm/d"] = self._update_discriminator(loss, opt_d, logging)
        if logging:
            stats["d/real"] = self.objective.d_real_prob(real_out.detach()).mean()
            stats["d/fake"] = self.objective.d_real_prob(fake_out.detach()).mean()
            if getattr(self.objective, "is_critic", False):
                # -(critic loss) estimates the Wasserstein-1 distance (Arjovsky et al.).
                stats["wasserstein_estimate"] = (real_out.detach().mean() - fake_out.detach().mean())
        return stats

    def _update_discriminator(self, loss: torch.Tensor, opt_d, logging: bool) -> torch.Tensor:
        """Backward D's loss, clip and measure its gradients, step, clip weights (WGAN)."""
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grad_norm = self._clip_and_measure(list(self.discriminator.parameters()), logging)
        opt_d.step()
        if self.weight_clip is not None:
            clip_weights_(self.discriminator, self.weight_clip)
        return grad_norm

    def _g_step(self, n: int, labels, opt_g, logging: bool) -> dict[str, torch.Tensor]:
        """One step of G against the current D (D's parameters frozen)."""
        self.toggle_optimizer(opt_g)
        noise = self.sample_noise(n)
        fake = self.generator(noise, labels)
        fake_out = self.discriminator(self._instance_noise(fake), labels).float()
        loss = self.objective.g_loss(fake_out=fake_out)
        stats = {"loss/g": loss.detach()}
        extra_loss, extra_stats = self.extra_g_loss(fake, noise, labels)
        if extra_loss is not None:
            loss = loss + extra_loss
        stats["grad_norm/g"] = self._update_generator(loss, opt_g, logging)
        return {**stats, **extra_stats}

    def _update_generator(self, loss: torch.Tensor, opt_g, logging: bool) -> Optional[torch.Tensor]:
        """Backward G's loss, clip and measure the gradients of what opt_g updates, step,
        and unfreeze D (``_g_step`` froze it with ``toggle_optimizer``)."""
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grad_norm = self._clip_and_measure(self.generator_side_parameters(), logging)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        return grad_norm

    def extra_g_loss(self, fake: torch.Tensor, noise: torch.Tensor, labels) -> tuple[Optional[torch.Tensor], dict]:
        """Terms added to G's loss in ``_g_step`` and their stats (e.g. InfoGAN's
        mutual-information bound); none for the plain game. ``loss/g`` stays the
        objective's G loss alone."""
        return None, {}

    def extra_d_loss(self, fake: torch.Tensor, noise: torch.Tensor, labels) -> Optional[torch.Tensor]:
        """A term added to D's loss in ``_d_step`` for fakes ``fake = G(noise)`` (e.g.
        InfoGAN's mutual-information term for D's shared body); none for the plain game.
        ``loss/d`` stays the objective's D loss alone."""
        return None

    # ------------------------------------------------------------------ helpers
    def _instance_noise(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian noise on D's inputs, annealed linearly to zero (Sønderby et al. 2017)."""
        if not self.instance_noise_std:
            return x
        remaining = 1.0
        if self.instance_noise_anneal_steps:
            remaining = max(0.0, 1.0 - self.g_updates / self.instance_noise_anneal_steps)
        if remaining == 0.0:
            return x
        return x + (self.instance_noise_std * remaining) * torch.randn_like(x)

    def _clip_and_measure(self, parameters: list, logging: bool) -> Optional[torch.Tensor]:
        """Clip the parameters' gradients if configured; return their global norm when logging."""
        if self.grad_clip_norm is not None:
            return torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip_norm)
        if not logging:
            return None
        norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
        return torch.stack(norms).norm() if norms else torch.zeros((), device=self.device)

    def _step_schedulers(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def _logging_now(self) -> bool:
        """Log on the G update whose index is a multiple of trainer.log_every_n_steps."""
        next_g_update = self.g_updates + 1
        every = max(1, self.trainer.log_every_n_steps)
        return (self.batches_done + 1) % self.n_critic == 0 and (next_g_update % every == 0 or next_g_update == 1)

    def _log_stats(self, stats: dict[str, Optional[torch.Tensor]]) -> None:
        # One host sync per logged step (one transfer of all values), none in between.
        names = [name for name, value in stats.items() if value is not None]
        values = [torch.as_tensor(stats[name], device=self.device).detach().float().reshape(()) for name in names]
        values = torch.stack(values).tolist() if values else []
        metrics = dict(zip(names, values))
        metrics["lr/g"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        metrics["lr/d"] = self.trainer.optimizers[1].param_groups[0]["lr"]
        self.last_metrics = metrics
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.g_updates)
        self.log_dict(
            {"g": metrics["loss/g"], "d": metrics["loss/d"], "step": float(self.g_updates)},
            prog_bar=True,
            logger=False,
        )
        if not all(math.isfinite(v) for v in metrics.values()):
            self.print(f"warning: non-finite training statistics at G update {self.g_updates}: {metrics}")

    # -------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ganrun"] = self.run_config
        checkpoint["ganrun_counters"] = {"batches_done": self.batches_done, "g_updates": self.g_updates}
        checkpoint["ganrun_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counters = checkpoint.get("ganrun_counters", {})
        self.batches_done = counters.get("batches_done", 0)
        self.g_updates = counters.get("g_updates", 0)
        rng = checkpoint.get("ganrun_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def on_train_start(self) -> None:
        # Resuming a run that already reached steps= ends at once.
        if self.max_g_updates is not None and self.g_updates >= self.max_g_updates:
            self.trainer.should_stop = True


def optimizer_factory(config: dict, lr: float, fast_kernels: bool = False) -> OptimizerFactory:
    """``{"_target_": "torch.optim.Adam", "betas": ..., ...}`` -> params -> optimizer.

    Keys set to null are dropped, so a config can switch Adam for RMSprop by
    nulling ``betas`` (YAML merging cannot delete keys). ``fast_kernels``: the
    optimizer's fused or foreach implementation (``fast.fused_optimizers``).
    """
    from hydra.utils import get_class

    from ganrun.fast import build_optimizer

    kwargs = {k: v for k, v in config.items() if v is not None and k not in ("_target_", "lr", "lr_g", "lr_d")}
    return partial(build_optimizer, get_class(config["_target_"]), lr=lr, fast_kernels=fast_kernels, **kwargs)
