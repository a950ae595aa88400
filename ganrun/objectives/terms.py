"""Terms: penalties, constraints and regularisers added to the GAN game, as objects.

A ``Term`` is an ``nn.Module`` the training module holds in ``module.terms`` (a
``Terms`` list) and calls at fixed points of the step; every hook defaults to doing
nothing, so a term overrides only what it needs. GANModule and LAPGANModule apply
them through the same ``Terms`` methods (LAPGAN once per level's critic):

- ``critic_penalty(critic, real_in, fake_in, labels)`` -> unweighted scalar or None:
  added to D's loss as ``weight * value`` for every critic (WGAN-GP's
  ``GradientPenalty``), logged unweighted as ``loss/<name>``;
- ``after_critic_step(discriminator)``: after each D optimizer step (WGAN's ``WeightClip``);
- ``generator_loss(fake, noise, labels)`` -> unweighted scalar or None (and
  ``generator_stats()``: what to log with it): added to G's
  loss as ``weight * value`` in each G step, logged as ``loss/<name>`` (e.g. MINE:
  ``-I_T(z; G(z))``, so G maximises the mutual-information estimate);
- ``configure_optimizer()`` -> an optimizer over the term's own parameters, or None;
  a term that returns one also gets ``own_loss(fake, noise, labels)`` (minimised by
  that optimizer once per G step, after G's update, on detached fakes: MINE's
  statistics network T ascends its bound there; ``own_stats()`` then names what to log,
  e.g. ``mine/mi_estimate``). Because a term is a sub-module of
  the training module, its parameters are in the checkpoint, move with the module,
  and their gradients are averaged across ranks by ``GANDDPStrategy`` like G's and D's;
- ``check_networks(generator, discriminator)``: refuse (``ConfigError``) networks the term
  cannot work with (a gradient penalty with batch norm in the critic);
- ``setup(latent, data_shape, num_classes)``: build the term's networks for this
  run's shapes and G's input distribution (called once by ``ganrun.config.build`` before the
  module is built);
- ``double_backward``: the term differentiates through D's input gradient (so
  ``fast.compile`` leaves D uncompiled).

Training tricks are terms too (``ganrun.objectives.tricks``), through five more hooks:
``attach(module)`` once when the module is built (label smoothing sets the objective's
real target; the EMA makes ``module.generator_ema``), ``discriminator_input(x,
g_updates)`` on every input of D (instance noise), ``clip_gradients(parameters)`` after
each backward of G or D (gradient clipping), ``after_generator_step(module)`` after each
G update (the EMA), and ``discriminator_arguments(discriminator_class)``: keywords for D's
constructor (minibatch discrimination). So a new penalty, regulariser or trick is one
class and one YAML in ``configs/term/``, chosen as ``term=NAME``.

A term's weight is read at every step as ``weight_at(g_updates)``: constant, or with
``anneal_steps`` > 0 decayed linearly to 0 over that many G updates (MINE:
``tricks.mine_anneal_steps``; a ``terms.<name>`` node: ``terms.r1.anneal_steps=N``). A
term whose weight is 0 is skipped: neither its penalty, its G loss nor its own network's
step is computed. The G update count is checkpointed, so a resumed run continues the
decay where it stopped (with the same ``anneal_steps``).

``loss.gradient_penalty`` and ``loss.weight_clip`` build ``GradientPenalty`` and
``WeightClip``; any other term is a ``terms.<name>`` node with a ``_target_``. Adding a
penalty such as R1 or DRAGAN is one class here and one YAML: ``R1Penalty`` below overrides
``critic_penalty`` (``||grad_x D(x)||^2`` on real inputs) and inherits ``check_networks``
from ``GradientPenalty``; ``configs/term/r1.yaml`` (``# @package _global_`` + ``terms: {r1:
{_target_: ganrun.objectives.terms.R1Penalty, weight: 5.0}}``) makes it ``ganrun term=r1`` (several
terms: ``term=[r1,mine]``). No training code changes.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import Tensor, nn

from ganrun.errors import ConfigError


class Term(nn.Module):
    """Base class: a named, weighted addition to the game (every hook does nothing)."""

    name: str = "term"
    double_backward: bool = False
    # Terms are applied in this order, then in the order configured: those with networks of
    # their own (0) before the tricks (1), so checkpoint keys do not depend on the tricks.
    order: int = 0

    def __init__(self, weight: float = 1.0, *, anneal_steps: int = 0) -> None:
        super().__init__()
        if anneal_steps < 0:
            raise ConfigError(
                f"anneal_steps={anneal_steps} is not valid; it must be 0 (constant weight) or a number of G updates"
            )
        self.weight, self.anneal_steps = float(weight), int(anneal_steps)

    def weight_at(self, g_updates: int) -> float:
        """The weight at this G update: ``weight``, or with ``anneal_steps`` > 0 decayed
        linearly from ``weight`` to 0 over that many G updates."""
        return self.weight * linear_decay(g_updates, self.anneal_steps)

    def is_active(self, g_updates: int) -> bool:
        """Whether the term is computed at this G update: not once its weight is 0 (it would
        cost time, and 0 * nan is nan)."""
        return self.weight_at(g_updates) != 0.0

    def setup(self, *, latent, data_shape: tuple, num_classes: int) -> None:
        """Build the term's networks for this run's shapes (none by default). ``latent``: G's
        input distribution (``ganrun.training.latent``: ``dim``, ``sample``)."""

    def check_networks(self, generator: nn.Module, discriminator: nn.Module) -> None:
        """Raise ``ConfigError`` for networks this term cannot work with."""

    def attach(self, module) -> None:
        """Called once by the training module with its networks and objective in place."""

    def discriminator_arguments(self, discriminator_class) -> dict:
        """Keyword arguments this term needs D's constructor to receive (none by default)."""
        return {}

    def discriminator_input(self, x, g_updates: int):
        """One input of D (a batch, or MSG-GAN's list of scales) as D is to see it."""
        return x

    def critic_penalty(self, critic, real_in: Tensor, fake_in: Tensor, labels) -> Optional[Tensor]:
        return None

    def after_critic_step(self, discriminator: nn.Module) -> None:
        pass

    def clip_gradients(self, parameters: list) -> Optional[Tensor]:
        """Clip the gradients of G's or D's parameters after backward; return their norm
        before clipping, or None for a term that does not clip."""
        return None

    def generator_loss(self, fake: Tensor, noise: Tensor, labels) -> Optional[Tensor]:
        return None

    def generator_stats(self) -> dict[str, Tensor]:
        """Scalars to log after ``generator_loss`` (detached tensors by tag)."""
        return {}

    def after_generator_step(self, module) -> None:
        """After each G update (and its optimizer step)."""

    def configure_optimizer(self) -> Optional[torch.optim.Optimizer]:
        return None

    def own_loss(self, fake: Tensor, noise: Tensor, labels) -> Optional[Tensor]:
        return None

    def own_stats(self) -> dict[str, Tensor]:
        """Scalars to log after ``own_loss`` (detached tensors by tag; e.g. MINE's ``mine/mi_estimate``)."""
        return {}

    def extra_repr(self) -> str:
        return f"weight={self.weight}" + (f", anneal_steps={self.anneal_steps}" if self.anneal_steps else "")


# ---------------------------------------------------------------- the functions
def linear_decay(step: int, steps: int) -> float:
    """What is left of a linear anneal at ``step``: ``1 - step / steps``, 0 from ``steps``
    on, and 1 throughout when ``steps`` is 0 (no anneal). Term weights and instance noise
    both decay this way."""
    if not steps:
        return 1.0
    return max(0.0, 1.0 - step / steps)


def gradient_penalty(critic: Callable[..., Tensor], real: Tensor, fake: Tensor, *critic_args: object) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E[(||grad_x f(x_hat)||_2 - 1)^2].

    x_hat = eps * x + (1 - eps) * x_fake with one eps ~ U(0, 1) per sample,
    shaped (N, 1, ..., 1) to broadcast over ``real``. The norm runs over all
    non-batch dims. ``create_graph=True`` so the penalty backpropagates into
    the critic's parameters; ``fake`` is detached here so no gradient reaches
    the generator. ``critic_args`` (e.g. class labels) are passed to the critic.
    The caller multiplies by the weight (lambda = 10 in the paper).
    """
    real, fake = real.detach(), fake.detach()
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    out = critic(mixed, *critic_args)
    (grad,) = torch.autograd.grad(outputs=out.sum(), inputs=mixed, create_graph=True)
    grad_norm = torch.linalg.vector_norm(grad.flatten(start_dim=1), dim=1)  # (N,)
    return ((grad_norm - 1.0) ** 2).mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, clip: float) -> None:
    """WGAN weight clipping (Arjovsky et al. 2017): clamp every parameter of
    ``module`` to [-clip, clip] in place (c = 0.01 in the paper), after each
    critic step."""
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    for param in module.parameters():
        param.clamp_(-clip, clip)


def has_batch_norm(network: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())


# -------------------------------------------------------------------- the terms
class GradientPenalty(Term):
    """WGAN-GP: ``weight * E[(||grad f(x_hat)|| - 1)^2]`` added to every critic's loss
    (lambda = 10 in the paper), on D's inputs as D saw them (after instance noise)."""

    name = "gradient_penalty"
    double_backward = True
    described_as = "a gradient penalty (loss=wgan_gp)"

    def __init__(self, weight: float = 10.0, *, anneal_steps: int = 0) -> None:
        if not weight > 0:
            raise ConfigError(
                f"loss.gradient_penalty={weight} is not valid; it must be a positive weight (10 in WGAN-GP) or 0 for none"
            )
        super().__init__(weight, anneal_steps=anneal_steps)

    def check_networks(self, generator: nn.Module, discriminator: nn.Module) -> None:
        # The penalty is per example: a layer that mixes the examples of a batch makes D's
        # output for one example depend on the others, so its input gradient mixes theirs.
        if has_batch_norm(discriminator):
            raise ConfigError(
                f"{self.described_as} cannot be used with batch norm in the critic "
                "(model.discriminator.norm=batch); use model.discriminator.norm=layer or none"
            )
        if any(getattr(layer, "mixes_examples", False) for layer in discriminator.modules()):
            raise ConfigError(
                f"{self.described_as} cannot be used with tricks.minibatch_discrimination=true: the layer makes "
                "D's output for one example depend on the rest of its batch, so the per-example gradient norm "
                "mixes examples; use tricks.minibatch_discrimination=false, or a loss without a penalty "
                "(ns, minimax, ls, hinge, wgan)"
            )

    def critic_penalty(self, critic, real_in: Tensor, fake_in: Tensor, labels) -> Tensor:
        return gradient_penalty(critic, real_in, fake_in, labels)


class R1Penalty(GradientPenalty):
    """R1 (Mescheder et al. 2018): ``weight * E_x[||grad_x D(x)||^2]`` on real inputs only
    (weight = gamma / 2). Per example like WGAN-GP, so also refused with batch norm."""

    name = "r1"
    described_as = "the R1 penalty (term=r1)"

    def __init__(self, weight: float = 5.0, *, anneal_steps: int = 0) -> None:
        Term.__init__(self, weight, anneal_steps=anneal_steps)

    def critic_penalty(self, critic, real_in: Tensor, fake_in: Tensor, labels) -> Tensor:
        real = real_in.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(real, labels).sum(), real, create_graph=True)
        return grad.flatten(start_dim=1).pow(2).sum(dim=1).mean()


class R2Penalty(R1Penalty):
    """R2 (Mescheder et al. 2018): ``weight * E[||grad D(x~)||^2]`` on G's samples, the
    fake-side twin of R1, for ablations."""

    name = "r2"
    described_as = "the R2 penalty (term=r2)"

    def critic_penalty(self, critic, real_in: Tensor, fake_in: Tensor, labels) -> Tensor:
        return super().critic_penalty(critic, fake_in, real_in, labels)


class WeightClip(Term):
    """WGAN: every parameter of D clamped to [-clip, clip] after each critic step (c = 0.01)."""

    name = "weight_clip"

    def __init__(self, clip: float) -> None:
        if not clip > 0:
            raise ConfigError(
                f"loss.weight_clip={clip} is not valid; it must be a positive number (0.01 in WGAN) or null"
            )
        super().__init__(weight=0.0)
        self.clip = float(clip)

    def after_critic_step(self, discriminator: nn.Module) -> None:
        clip_weights_(discriminator, self.clip)

    def extra_repr(self) -> str:
        return f"clip={self.clip}"


# ------------------------------------------------------- applying them together
class Terms(nn.ModuleDict):
    """The module's terms by name (checkpoint keys ``terms.<name>.*``), applied in one place
    by every training module; iterating gives the terms in ``Term.order``, then as configured."""

    def __init__(self, terms: Iterable[Term] = ()) -> None:
        terms = sorted(terms, key=lambda term: term.order)
        names = [term.name for term in terms]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ConfigError(f"term {duplicated[0]} is configured twice; keep one")
        super().__init__({term.name: term for term in terms})
        self.register_load_state_dict_pre_hook(_load_numbered_keys)

    def __iter__(self) -> Iterator[Term]:
        return iter(self.values())

    def numbered_to_named(self, state_dict: dict, prefix: str = "terms.") -> dict:
        """``state_dict`` with keys of checkpoints that numbered the terms (``terms.<i>.*``,
        the i-th term with networks of its own, in configured order) renamed to
        ``terms.<name>.*``; unchanged when it names them."""
        own = [term.name for term in self if term.order == 0]
        renamed = {}
        for key, value in state_dict.items():
            index, dot, rest = key[len(prefix) :].partition(".") if key.startswith(prefix) else ("", "", "")
            if dot and index.isdigit() and int(index) < len(own):
                key = f"{prefix}{own[int(index)]}.{rest}"
            renamed[key] = value
        return renamed

    def attach(self, module) -> None:
        for term in self:
            term.attach(module)

    def discriminator_arguments(self, discriminator_class) -> dict:
        arguments: dict = {}
        for term in self:
            arguments.update(term.discriminator_arguments(discriminator_class))
        return arguments

    def discriminator_input(self, x, g_updates: int):
        for term in self.active(g_updates):
            x = term.discriminator_input(x, g_updates)
        return x

    def clip_gradients(self, parameters: list) -> Optional[Tensor]:
        """The norm from the first term that clips, None when none does."""
        for term in self:
            norm = term.clip_gradients(parameters)
            if norm is not None:
                return norm
        return None

    def after_generator_step(self, module) -> None:
        for term in self:
            term.after_generator_step(module)

    @property
    def double_backward(self) -> bool:
        return any(term.double_backward for term in self)

    def check_networks(self, generator: nn.Module, discriminator: nn.Module) -> None:
        for term in self:
            term.check_networks(generator, discriminator)

    def active(self, g_updates: int) -> list[Term]:
        """The terms computed at this G update (``Term.is_active``)."""
        return [term for term in self if term.is_active(g_updates)]

    def critic_penalties(
        self, critic, real_in: Tensor, fake_in: Tensor, labels, *, g_updates: int
    ) -> dict[str, Tensor]:
        """Every active term's unweighted penalty on one critic, by name."""
        values = {}
        for term in self.active(g_updates):
            value = term.critic_penalty(critic, real_in, fake_in, labels)
            if value is not None:
                values[term.name] = value
        return values

    def after_critic_step(self, discriminator: nn.Module) -> None:
        for term in self:
            term.after_critic_step(discriminator)

    def generator_losses(self, fake: Tensor, noise: Tensor, labels, *, g_updates: int) -> dict[str, Tensor]:
        """Every active term's unweighted addition to G's loss, by name."""
        values = {}
        for term in self.active(g_updates):
            value = term.generator_loss(fake, noise, labels)
            if value is not None:
                values[term.name] = value
        return values

    def generator_stats(self, g_updates: int) -> dict[str, Tensor]:
        stats: dict[str, Tensor] = {}
        for term in self.active(g_updates):
            stats.update(term.generator_stats())
        return stats

    def weighted(self, loss: Tensor, values: dict[str, Tensor], stats: dict, g_updates: int) -> Tensor:
        """``loss + sum(weight * value)`` with each term's weight at G update ``g_updates``
        (``Term.weight_at``); the unweighted values go to ``stats`` as ``loss/<name>``."""
        weights = {term.name: term.weight_at(g_updates) for term in self}
        for name, value in values.items():
            loss = loss + weights[name] * value
            stats[f"loss/{name}"] = value.detach()
        return loss


def _load_numbered_keys(terms: Terms, state_dict, prefix, *args) -> None:
    renamed = terms.numbered_to_named(state_dict, prefix)
    if list(renamed) != list(state_dict):
        state_dict.clear()
        state_dict.update(renamed)


def sum_values(per_critic: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per-critic penalty values (LAPGAN's levels) summed by name."""
    total: dict[str, Tensor] = {}
    for values in per_critic:
        for name, value in values.items():
            total[name] = total[name] + value if name in total else value
    return total
