"""GANModule: the alternating update of Goodfellow et al. (2014), Algorithm 1.

Each training batch is one discriminator step; every ``n_critic``-th batch is also
followed by one generator step (``is_g_step``, the one place that decides):

    for each batch of m real examples:
        sample m noise vectors; descend D's loss + critic penalties      # _d_step
        apply the constraints (WGAN weight clipping)
        if is_g_step():
            sample m noise vectors; descend G's loss + G-side terms      # _g_step, D frozen
            step the terms' own networks (e.g. MINE's T)                  # _term_steps
            after the G update: e.g. the EMA copy of G                    # terms

Both steps work on what the critic sees (``CriticView``: a critic, its real input, its
fake input), so a family changes what D judges, not the step: GANModule has one view
(D, the real batch, G's fakes), MSG-GAN's views hold every scale, LAPGAN has one view per
pyramid level. Both players update through ``_update`` (zero_grad, backward, clip,
measure, step); ``_training_only`` freezes and unfreezes the other player in the same
block. Penalties, constraints, regularisers and tricks (instance noise, label smoothing,
gradient clipping, EMA, minibatch discrimination) are ``ganrun.objectives.terms`` objects
in ``self.terms``, applied at fixed hooks of the step.
Each D step sees fresh real data, and ``g_updates`` (what ``steps=`` counts and
what every logged curve uses as its x axis) is independent of ``n_critic``.
The module knows nothing of datasets, and the objective nothing of architectures.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, NamedTuple, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from ganrun.objectives.terms import Term, Terms, sum_values

OptimizerFactory = Callable[[Any], torch.optim.Optimizer]


class CriticView(NamedTuple):
    """What one critic judges in a step: the critic, the real input (None in G's step)
    and the fake input, before the terms' ``discriminator_input`` (instance noise)."""

    critic: Callable
    real: Any
    fake: Any


class GANModule(pl.LightningModule):
    # fast.channels_last (set by ganrun.runtime.fast.apply_to_module): real batches in NHWC like G and D.
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
        terms: Sequence[Term] = (),
        scheduler: Optional[Callable[[torch.optim.Optimizer], Any]] = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator, self.objective = generator, discriminator, objective
        self.latent, self.num_classes, self.n_critic = latent, num_classes, n_critic
        self.optimizer_g, self.optimizer_d, self.scheduler = optimizer_g, optimizer_d, scheduler
        self.max_g_updates = max_g_updates
        # The bias-corrected EMA of G's weights (ganrun.training.ema) for samples and
        # evaluation, when the ema term (tricks.ema_decay) makes one.
        self.generator_ema = None
        # Penalties, constraints, regularisers and tricks (ganrun.objectives.terms): sub-modules, so checkpointed.
        self.terms = terms if isinstance(terms, Terms) else Terms(terms)
        self.terms.check_networks(generator, discriminator)
        self.terms.attach(self)
        self._trainable_terms: list[Term] = []
        # Counters that define the run's position; saved in checkpoints.
        self.batches_done = 0
        self.g_updates = 0
        self._warned_non_finite = False
        self.last_metrics: dict[str, float] = {}
        self.step_stats: dict[str, Optional[torch.Tensor]] = {}
        # What ganrun-sample needs to rebuild G: set by ganrun.config.build.build_module.
        self.run_config: dict = {}

    # ----------------------------------------------------------------- sampling
    @property
    def sampling_generator(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when enabled, its
        batch-norm statistics computed for the averaged weights."""
        if self.generator_ema is None:
            return self.generator
        self.generator_ema.refresh_batch_norm(self._ema_inputs)
        return self.generator_ema.module

    def _ema_inputs(self, n: int) -> tuple:
        """G's inputs for the EMA's batch-norm statistics, from their own seeded stream (the
        training RNG is not touched, so a run with an EMA trains as the same run without)."""
        stream = torch.Generator(self.device).manual_seed(self.g_updates)
        labels = (
            torch.randint(self.num_classes, (n,), generator=stream, device=self.device) if self.num_classes else None
        )
        return self.sample_noise(n, generator=stream), labels

    def sample_noise(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """G's input for n samples (noise, plus codes for structured latents)."""
        return self.latent.sample(n, generator=generator, device=self.device)

    # ----------------------------------------------------------------- training
    def generator_side_parameters(self):
        """What G's optimizer updates: G (subclasses add networks trained with G, e.g. InfoGAN's Q head)."""
        return list(self.generator.parameters())

    def configure_optimizers(self):
        """G's, D's, then one per term that trains its own network (e.g. MINE's T);
        the schedule applies to G's and D's."""
        opt_g = self.optimizer_g(self.generator_side_parameters())
        opt_d = self.optimizer_d(self.discriminator.parameters())
        optimizers, self._trainable_terms = [opt_g, opt_d], []
        for term in self.terms:
            optimizer = term.configure_optimizer()
            if optimizer is not None:
                optimizers.append(optimizer)
                self._trainable_terms.append(term)
        if self.scheduler is None:
            return optimizers
        return optimizers, [self.scheduler(opt_g), self.scheduler(opt_d)]

    def training_step(self, batch, batch_idx: int) -> Optional[dict[str, torch.Tensor]]:
        """One D step, and on every n_critic-th batch one G step. Returns that G update's
        statistics (tensors by tag, no host sync) and nothing after a D step alone, so a
        Lightning callback's ``on_train_batch_end(trainer, module, outputs, ...)`` observes
        each G update (``outputs`` empty in between)."""
        real, labels = batch
        if self.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        opt_g, opt_d, *_ = self.optimizers()
        g_step = self.is_g_step()
        logging = g_step and self._logging_due()
        stats = self._d_step(real, labels, opt_d, logging)  # k = n_critic D steps ...
        self.batches_done += 1
        if not g_step:
            return None
        stats.update(self._g_step(len(real), labels, opt_g, logging))  # ... then one G step
        self.g_updates += 1
        self.step_stats = stats  # this G update's losses (tensors, no host sync): read by DivergenceGuard
        self.terms.after_generator_step(self)  # e.g. the EMA of G's weights
        self._step_schedulers()
        if logging:
            self._log_stats(stats)
        if self.max_g_updates is not None and self.g_updates >= self.max_g_updates:
            self.trainer.should_stop = True
        return stats

    def discriminator_views(self, real: torch.Tensor, labels) -> list[CriticView]:
        """What D judges in its step: the real batch and as many fakes (made without a graph
        through G)."""
        with torch.no_grad():
            fake = self.generate_for_discriminator(self.sample_noise(len(real)), labels)
        return [CriticView(self.discriminator, self.real_for_discriminator(real), fake)]

    def generator_views(self, n: int, labels) -> tuple[list[CriticView], Any, torch.Tensor]:
        """What D judges in G's step (n fresh fakes, with their graph), G's output as the
        terms see it, and G's input."""
        noise = self.sample_noise(n)
        fake = self.generate_for_discriminator(noise, labels)
        return [CriticView(self.discriminator, None, fake)], fake, noise

    def generate_for_discriminator(self, noise: torch.Tensor, labels) -> torch.Tensor:
        """G's output as D judges it in training: the batch of examples (MSGGANModule:
        the image at every scale)."""
        return self.generator(noise, labels)

    def real_for_discriminator(self, real: torch.Tensor) -> torch.Tensor:
        """A real batch as D judges it in training, in the same form as
        ``generate_for_discriminator``'s fakes (MSGGANModule: the image at every scale), so
        that instance noise reaches real and fake inputs alike."""
        return real

    def is_g_step(self) -> bool:
        """Whether the batch now starting ends with a G step: every n_critic-th batch."""
        return (self.batches_done + 1) % self.n_critic == 0

    def _d_step(self, real: torch.Tensor, labels, opt_d, logging: bool) -> dict[str, torch.Tensor]:
        """One step of D: the objective's D loss on every view (summed), plus the terms'
        penalties on each view's critic; then the constraints."""
        losses, penalties, real_outs, fake_outs = [], [], [], []
        for view in self.discriminator_views(real, labels):
            real_in = self.terms.discriminator_input(view.real, self.g_updates)
            fake_in = self.terms.discriminator_input(view.fake, self.g_updates)
            # Losses in float32 also under bf16 autocast (exp, log and means lose precision in bf16).
            real_out = view.critic(real_in, labels).float()
            fake_out = view.critic(fake_in, labels).float()
            losses.append(self.objective.d_loss(real_out=real_out, fake_out=fake_out))
            penalties.append(
                self.terms.critic_penalties(view.critic, real_in, fake_in, labels, g_updates=self.g_updates)
            )
            real_outs.append(real_out.detach())
            fake_outs.append(fake_out.detach())
        loss, stats = _summed(losses, "d")
        loss = self.terms.weighted(loss, sum_values(penalties), stats, self.g_updates)
        stats["grad_norm/d"] = self._update(loss, opt_d, self.discriminator.parameters(), logging)
        self.terms.after_critic_step(self.discriminator)
        if logging:
            stats.update(self._d_output_stats(real_outs, fake_outs))
        return stats

    def _g_step(self, n: int, labels, opt_g, logging: bool) -> dict[str, torch.Tensor]:
        """One step of G against the current D (D frozen): the objective's G loss on every
        view plus the terms' G losses; then the terms' own networks."""
        with self._training_only(opt_g):
            views, fake, noise = self.generator_views(n, labels)
            losses = []
            for view in views:
                fake_out = view.critic(self.terms.discriminator_input(view.fake, self.g_updates), labels).float()
                losses.append(self.objective.g_loss(fake_out=fake_out))
            loss, stats = _summed(losses, "g")
            term_losses = self.terms.generator_losses(fake, noise, labels, g_updates=self.g_updates)
            stats.update(self.terms.generator_stats(self.g_updates))
            loss = self.terms.weighted(loss, term_losses, stats, self.g_updates)
            stats["grad_norm/g"] = self._update(loss, opt_g, self.generator_side_parameters(), logging)
        if self._trainable_terms:
            stats.update(self._term_steps(detached(fake), noise, labels, logging))
        return stats

    def _term_steps(self, fake: torch.Tensor, noise: torch.Tensor, labels, logging: bool) -> dict[str, torch.Tensor]:
        """One step of each active term that trains its own network (e.g. MINE's T), all else
        frozen. ``tricks.grad_clip_norm`` clips G and D only, not these networks."""
        stats = {}
        for term, optimizer in zip(self._trainable_terms, self.optimizers()[2:]):
            if not term.is_active(self.g_updates):
                continue
            with self._training_only(optimizer):
                loss = term.own_loss(fake, noise, labels)
                stats[f"loss/{term.name}_own"] = loss.detach()
                stats[f"grad_norm/{term.name}"] = self._update(loss, optimizer, term.parameters(), logging, clip=False)
            stats.update(term.own_stats())
        return stats

    def _update(
        self, loss: torch.Tensor, optimizer, parameters, logging: bool, clip: bool = True
    ) -> Optional[torch.Tensor]:
        """One player's update: zero_grad, backward (GANDDPStrategy averages the gradients
        across ranks here), clip (``tricks.grad_clip_norm``, unless ``clip=False``) and measure
        the gradients, step. Returns the gradient norm (None when neither clipping nor
        logging asked for it)."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grad_norm = self._clip_and_measure(list(parameters), logging, clip)
        optimizer.step()
        return grad_norm

    @contextmanager
    def _training_only(self, optimizer):
        """Freeze every parameter the optimizer does not update (D in G's step), unfreeze after."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def _d_output_stats(self, real_outs: list[torch.Tensor], fake_outs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """ "D(x)" and "D(G(z))" averaged over critics (LAPGAN: levels); for critics, the
        summed Wasserstein estimates E[f(x)] - E[f(G(z))] (Arjovsky et al.)."""
        prob = self.objective.d_real_prob
        stats = {
            "d/real": torch.stack([prob(out).mean() for out in real_outs]).mean(),
            "d/fake": torch.stack([prob(out).mean() for out in fake_outs]).mean(),
        }
        if getattr(self.objective, "is_critic", False):
            stats["wasserstein_estimate"] = sum(r.mean() - f.mean() for r, f in zip(real_outs, fake_outs))
        return stats

    # ------------------------------------------------------------------ helpers
    def _clip_and_measure(self, parameters: list, logging: bool, clip: bool = True) -> Optional[torch.Tensor]:
        """Clip the parameters' gradients if a term does (``tricks.grad_clip_norm``); return
        their global norm when clipped or logging."""
        if clip:
            norm = self.terms.clip_gradients(parameters)
            if norm is not None:
                return norm
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

    def _logging_due(self) -> bool:
        """Log on the G update whose index is a multiple of trainer.log_every_n_steps (and the first)."""
        next_g_update = self.g_updates + 1
        every = max(1, self.trainer.log_every_n_steps)
        return next_g_update % every == 0 or next_g_update == 1

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
        self._warn_if_non_finite(metrics)

    def _warn_if_non_finite(self, metrics: dict[str, float]) -> None:
        """One line, once per run, naming the statistics that are inf or nan (a run that blows
        up would otherwise print one at every logged step; TensorBoard keeps every value)."""
        bad = [name for name, value in metrics.items() if not math.isfinite(value)]
        if bad and not self._warned_non_finite:
            self._warned_non_finite = True
            values = ", ".join(f"{name}={metrics[name]}" for name in bad)
            self.print(
                f"warning: non-finite training statistics at G update {self.g_updates}: {values} (printed once per run)"
            )

    # -------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.generator_ema is not None and self.generator_ema.stale:  # saved with its own batch-norm statistics
            for name, buffer in self.sampling_generator.named_buffers():
                checkpoint["state_dict"][f"generator_ema.module.{name}"] = buffer.detach().clone()
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

    from ganrun.runtime.fast import build_optimizer

    kwargs = {k: v for k, v in config.items() if v is not None and k not in ("_target_", "lr", "lr_g", "lr_d")}
    return partial(build_optimizer, get_class(config["_target_"]), lr=lr, fast_kernels=fast_kernels, **kwargs)


def detached(fake):
    """A batch of fakes, or MSG-GAN's list of scales, without its graph."""
    return fake.detach() if torch.is_tensor(fake) else [scale.detach() for scale in fake]


def _summed(losses: list[torch.Tensor], player: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sum of the views' losses and its stats: ``loss/<player>``, and with several views
    (LAPGAN's levels) each one as ``loss/<player>_level<k>``."""
    if len(losses) == 1:
        return losses[0], {f"loss/{player}": losses[0].detach()}
    stats = {f"loss/{player}_level{k}": loss.detach() for k, loss in enumerate(losses)}
    total = torch.stack(losses).sum()
    stats[f"loss/{player}"] = total.detach()
    return total, stats
