"""LAPGANModule: all levels of a Laplacian pyramid GAN (Denton et al. 2015) trained jointly.

Denton et al. train each level's GAN on its own; here one run trains them all,
level by level inside each step, with GANModule's alternating update unchanged
(n_critic, EMA, schedulers, logging, checkpoints). For each real batch x with
pyramid [(None, I_0), (c_1, h_1), ..., (c_{L-1}, h_{L-1})]:

    D step:  level 0:  I_0            vs  G_0(z_0)
             level k:  (c_k, h_k)     vs  (c_k, G_k(z_k, c_k))      same real c_k
             d_loss = sum over levels of objective.d_loss (+ gradient penalty per level)
    G step:  g_loss = sum over levels of objective.g_loss on D_k's output for G_k's fakes,
             conditioned on the c_k of the batch the D step just saw.

Every level's condition comes from real data, so the levels learn in parallel;
only sampling chains them coarse to fine (``LaplacianGenerator.forward``).
Per-level losses are logged as ``loss/d_level{k}`` and ``loss/g_level{k}``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ganrun.errors import ConfigError
from ganrun.models.lapgan import level_input, pyramid_levels
from ganrun.training.module import GANModule
from ganrun.objectives.terms import Term, sum_values


class LAPGANModule(GANModule):
    """GANModule whose D and G steps run once per pyramid level (see the module docstring).

    Needs ``ganrun.models.lapgan.LaplacianGenerator`` / ``LaplacianDiscriminator``
    with the same levels and base size.
    """

    def __init__(self, generator, discriminator, objective, **kwargs) -> None:
        super().__init__(generator, discriminator, objective, **kwargs)
        for network in (generator, discriminator):
            if not hasattr(network, "num_levels"):
                raise ConfigError(
                    f"model.module=LAPGANModule needs the Laplacian networks, got {type(network).__name__}; "
                    "use ganrun.models.lapgan.LaplacianGenerator and LaplacianDiscriminator"
                )
        g_pyramid = (generator.num_levels, generator.base_size)
        d_pyramid = (discriminator.num_levels, discriminator.base_size)
        if g_pyramid != d_pyramid:
            raise ConfigError(
                f"model.generator (levels, base_size)={g_pyramid} and model.discriminator {d_pyramid} differ; "
                "set both to the same values"
            )
        for term in self.terms:
            if type(term).generator_loss is not Term.generator_loss or type(term).own_loss is not Term.own_loss:
                raise ConfigError(
                    f"term {term.name} acts on G's samples, which LAPGAN draws level by level; "
                    "LAPGAN takes critic penalties and constraints only (loss.gradient_penalty, loss.weight_clip)"
                )
        # The D step's real conditions c_k, reused by the G step that follows it.
        self._conditions: Optional[list[Optional[torch.Tensor]]] = None

    def _d_step(self, real: torch.Tensor, labels, opt_d, logging: bool) -> dict[str, torch.Tensor]:
        """One D step at every level on the real pyramid and as many fakes (G frozen);
        the terms' critic penalties apply to each level's critic and are summed."""
        levels = pyramid_levels(real, self.generator.num_levels)
        self._conditions = [condition for condition, _ in levels]
        noise = self.generator.split_noise(self.sample_noise(len(real)))
        with torch.no_grad():
            fakes = [self.generator.level(k, noise[k], condition, labels) for k, (condition, _) in enumerate(levels)]
        stats: dict[str, torch.Tensor] = {}
        objective_losses, penalties, real_outs, fake_outs = [], [], [], []
        for k, ((condition, real_target), fake_target) in enumerate(zip(levels, fakes)):
            critic = self.discriminator.levels[k]
            real_in = self._instance_noise(level_input(condition, real_target))
            fake_in = self._instance_noise(level_input(condition, fake_target))
            # float32 outputs: the losses stay float32 under bf16 autocast
            real_out, fake_out = critic(real_in, labels).float(), critic(fake_in, labels).float()
            objective_losses.append(self.objective.d_loss(real_out=real_out, fake_out=fake_out))
            penalties.append(self.terms.critic_penalties(critic, real_in, fake_in, labels, g_updates=self.g_updates))
            real_outs.append(real_out.detach())
            fake_outs.append(fake_out.detach())
            stats[f"loss/d_level{k}"] = objective_losses[-1].detach()
        loss = torch.stack(objective_losses).sum()
        stats["loss/d"] = loss.detach()
        loss = self.terms.weighted(loss, sum_values(penalties), stats, self.g_updates)
        stats["grad_norm/d"] = self._update(loss, opt_d, self.discriminator.parameters(), logging)
        self.terms.after_critic_step(self.discriminator)
        if logging:
            stats.update(self._d_output_stats(real_outs, fake_outs))
        return stats

    def _g_step(self, n: int, labels, opt_g, logging: bool) -> dict[str, torch.Tensor]:
        """One G step at every level against the current D (D frozen), on the last D step's real conditions."""
        if self._conditions is None:
            raise RuntimeError("LAPGANModule's G step needs the real conditions of a preceding D step")
        with self._training_only(opt_g):
            noise = self.generator.split_noise(self.sample_noise(n))
            stats: dict[str, torch.Tensor] = {}
            losses = []
            for k, condition in enumerate(self._conditions):
                fake_target = self.generator.level(k, noise[k], condition, labels)
                fake_in = self._instance_noise(level_input(condition, fake_target))
                fake_out = self.discriminator.level(k, fake_in, labels).float()
                losses.append(self.objective.g_loss(fake_out=fake_out))
                stats[f"loss/g_level{k}"] = losses[-1].detach()
            loss = torch.stack(losses).sum()
            grad_norm = self._update(loss, opt_g, self.generator_side_parameters(), logging)
        self._conditions = None
        stats.update({"loss/g": loss.detach(), "grad_norm/g": grad_norm})
        return stats
