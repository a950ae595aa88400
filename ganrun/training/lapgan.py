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
only sampling chains them coarse to fine (``LaplacianGenerator.forward``). The step is
GANModule's; this module only supplies the views (one per level). Per-level losses are
logged as ``loss/d_level{k}`` and ``loss/g_level{k}``.
"""

from __future__ import annotations

from typing import Optional

import torch

from ganrun.errors import ConfigError
from ganrun.models.lapgan import level_input, pyramid_levels
from ganrun.objectives.terms import Term
from ganrun.training.module import CriticView, GANModule


class LAPGANModule(GANModule):
    """GANModule whose step sees one ``CriticView`` per pyramid level (see the module docstring).

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
                    "LAPGAN takes critic penalties, constraints and tricks (loss.gradient_penalty, loss.weight_clip, term=r1, "
                    "instance noise, EMA, gradient clipping, label smoothing)"
                )
        # The D step's real conditions c_k, reused by the G step that follows it.
        self._conditions: Optional[list[Optional[torch.Tensor]]] = None

    def discriminator_views(self, real: torch.Tensor, labels) -> list[CriticView]:
        """One view per level: D_k judges (c_k, h_k) against (c_k, G_k(z_k, c_k)), the real
        pyramid's c_k at every level (fakes made without a graph through G)."""
        levels = pyramid_levels(real, self.generator.num_levels)
        self._conditions = [condition for condition, _ in levels]
        noise = self.generator.split_noise(self.sample_noise(len(real)))
        with torch.no_grad():
            fakes = [self.generator.level(k, noise[k], condition, labels) for k, (condition, _) in enumerate(levels)]
        return [
            CriticView(self.discriminator.levels[k], level_input(condition, real_target), level_input(condition, fake))
            for k, ((condition, real_target), fake) in enumerate(zip(levels, fakes))
        ]

    def generator_views(self, n: int, labels) -> tuple[list[CriticView], None, list[torch.Tensor]]:
        """One view per level, on the real conditions of the D step just taken. No single
        output for G-side terms (refused at construction)."""
        if self._conditions is None:
            raise RuntimeError("LAPGANModule's G step needs the real conditions of a preceding D step")
        noise = self.generator.split_noise(self.sample_noise(n))
        views = [
            CriticView(
                self.discriminator.levels[k],
                None,
                level_input(condition, self.generator.level(k, noise[k], condition, labels)),
            )
            for k, condition in enumerate(self._conditions)
        ]
        self._conditions = None
        return views, None, noise
