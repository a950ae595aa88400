"""Training tricks as terms: each is a ``Term`` (``ganrun.objectives.terms``) with a YAML in
``configs/term/``, chosen as ``term=NAME`` or through its ``tricks.*`` key (an alias, see
``ganrun.config.build.TRICK_ALIASES``). None of them adds to a loss; each acts at one
hook of the step:

- ``InstanceNoise`` (``term=instance_noise``, ``tricks.instance_noise_std``): Gaussian
  noise on D's inputs, annealed linearly to zero (Sønderby et al. 2017, Arjovsky & Bottou
  2017): ``discriminator_input``;
- ``LabelSmoothing`` (``term=label_smoothing``, ``tricks.label_smoothing``): one-sided,
  D's real target becomes 1 - smoothing (Salimans et al. 2016): ``attach`` sets the
  objective's ``real_target``;
- ``MinibatchDiscrimination`` (``term=minibatch_discrimination``,
  ``tricks.minibatch_discrimination``): D's head also sees each example's closeness to
  the rest of its batch (Salimans et al. 2016): ``discriminator_arguments`` asks D's
  constructor for the layer (``ganrun.models.minibatch``);
- ``GradientClip`` (``term=grad_clip``, ``tricks.grad_clip_norm``): G's and D's gradients
  clipped to a global norm: ``clip_gradients``;
- ``GeneratorAverage`` (``term=ema``, ``tricks.ema_decay``): samples and evaluation from a
  bias-corrected exponential moving average of G's weights (``ganrun.training.ema``):
  ``attach`` makes ``module.generator_ema``, ``after_generator_step`` updates it.

They carry no parameters of their own, so they are ordered after the terms that do
(``Term.order``) and a checkpoint's keys do not depend on which tricks are on.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import Tensor

from ganrun.errors import ConfigError
from ganrun.objectives.terms import Term


class Trick(Term):
    """A term that changes how the game is played rather than what is minimised."""

    order = 1


class InstanceNoise(Trick):
    """N(0, std^2) noise on every input of D (real and fake, in D's and G's steps), its std
    decayed linearly to 0 over ``anneal_steps`` G updates (0: constant). The std is the
    term's weight, so its schedule is ``Term.weight_at``; on MSG-GAN's list of scales each
    scale gets noise of the same std."""

    name = "instance_noise"

    def __init__(self, std: float, *, anneal_steps: int = 0) -> None:
        if not std >= 0:
            raise ConfigError(f"terms.instance_noise.std={std} is not valid; it must be a number >= 0")
        super().__init__(std, anneal_steps=anneal_steps)

    def discriminator_input(self, x, g_updates: int):
        std = self.weight_at(g_updates)
        if torch.is_tensor(x):
            return x + std * torch.randn_like(x)
        return [scale + std * torch.randn_like(scale) for scale in x]


class LabelSmoothing(Trick):
    """One-sided label smoothing: D's target for real examples becomes 1 - ``smoothing``
    (fakes keep theirs). Needs an objective with a real-label target (minimax, ns, ls)."""

    name = "label_smoothing"

    def __init__(self, smoothing: float) -> None:
        if not 0 <= smoothing < 1:
            raise ConfigError(
                f"terms.label_smoothing.smoothing={smoothing} is not valid; it must be a number in [0, 1)"
            )
        super().__init__()
        self.smoothing = float(smoothing)

    def attach(self, module) -> None:
        objective = module.objective
        if not getattr(objective, "supports_label_smoothing", False):
            raise ConfigError(
                f"tricks.label_smoothing={self.smoothing} needs a loss with a real-label target "
                f"(minimax, ns, ls); {type(objective).__name__} has none"
            )
        objective.real_target = 1.0 - self.smoothing

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"


class MinibatchDiscrimination(Trick):
    """Asks D's constructor for a minibatch-discrimination layer before its head."""

    name = "minibatch_discrimination"

    def discriminator_arguments(self, discriminator_class) -> dict:
        if "minibatch_discrimination" not in inspect.signature(discriminator_class).parameters:
            raise ConfigError(
                f"tricks.minibatch_discrimination=true is not supported by "
                f"{discriminator_class.__module__}.{discriminator_class.__qualname__}; it works with the MLP, DCGAN "
                "and MSG-GAN discriminators (model=gan, cgan, dcgan, lsgan, wgan, wgan_gp, infogan, msggan)"
            )
        return {"minibatch_discrimination": True}

    def extra_repr(self) -> str:
        return ""


class GradientClip(Trick):
    """G's and D's gradients clipped to a global L2 norm of ``max_norm`` before each step
    (the networks that terms train themselves, such as MINE's T, are not clipped)."""

    name = "grad_clip"

    def __init__(self, max_norm: float) -> None:
        if not max_norm > 0:
            raise ConfigError(f"terms.grad_clip.max_norm={max_norm} is not valid; it must be a positive number")
        super().__init__()
        self.max_norm = float(max_norm)

    def clip_gradients(self, parameters: list) -> Optional[Tensor]:
        return torch.nn.utils.clip_grad_norm_(parameters, self.max_norm)

    def extra_repr(self) -> str:
        return f"max_norm={self.max_norm}"


class GeneratorAverage(Trick):
    """An exponential moving average of G's weights (``decay``, e.g. 0.999), bias-corrected,
    used for samples, evaluation and ``ganrun-sample``. The averaged copy is the module's
    ``generator_ema`` (its checkpoint keys), not a sub-module of the term."""

    name = "ema"

    def __init__(self, decay: float) -> None:
        if not 0 < decay < 1:
            raise ConfigError(f"terms.ema.decay={decay} is not valid; it must be a number in (0, 1), e.g. 0.999")
        super().__init__()
        self.decay = float(decay)

    def attach(self, module) -> None:
        from ganrun.training.ema import GeneratorEMA

        module.generator_ema = GeneratorEMA(module.generator, self.decay)

    def after_generator_step(self, module) -> None:
        module.generator_ema.update(module.generator)

    def extra_repr(self) -> str:
        return f"decay={self.decay}"
