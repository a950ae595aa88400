"""GAN objectives and critic penalties.

Conventions shared by everything in this file:

* The discriminator returns RAW outputs of shape ``(N,)``: a logit for the
  logistic objectives, a critic value for Wasserstein, a variational function
  value ``v`` for f-GAN. Nothing here expects a sigmoid to have been applied.
* Both ``d_loss`` and ``g_loss`` return a scalar to MINIMISE. A discriminator
  that maximises a value ``V`` therefore gets ``d_loss = -V``.
* Objectives only compute. They never call ``backward`` or step optimizers;
  the training module owns the alternating update.
* Penalties and constraints (gradient penalty, weight clipping) are separate
  objects in ``ganrun.objectives.terms``, so a config can combine any objective with any
  penalty and weight (``gradient_penalty`` and ``clip_weights_`` are re-exported here).

Objectives are plain objects picked by Hydra, e.g.
``objective: {_target_: ganrun.objectives.losses.LeastSquares, a: -1.0, b: 1.0, c: 0.0}``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from ganrun.objectives.terms import clip_weights_, gradient_penalty  # noqa: F401 (re-exported)

# exp(80) ~ 5.5e34 is far below the float32 maximum (~3.4e38), so clamping
# exponent arguments here keeps f-GAN terms finite for |v| up to 80 and beyond.
# Past the clamp the term is constant and its gradient is zero.
_MAX_EXP = 80.0
_LOG_2 = math.log(2.0)


def _exp(x: Tensor) -> Tensor:
    """exp with its argument clamped to ``_MAX_EXP`` (see above)."""
    return torch.exp(x.clamp(max=_MAX_EXP))


def _check_real_target(real_target: float) -> float:
    if not 0.0 < real_target <= 1.0:
        raise ValueError(f"real_target must be in (0, 1], got {real_target}")
    return float(real_target)


class Objective(ABC):
    """A GAN objective: a pair of losses on raw discriminator outputs.

    ``supports_label_smoothing``: the constructor takes ``real_target``.
    ``is_critic``: D is an unbounded critic whose ``-d_loss`` estimates a
    distance (the trainer logs it as the Wasserstein estimate).
    ``d_outputs_are_probabilities``: ``d_real_prob`` gives D(x) in [0, 1] (the
    divergence guard then watches for D winning completely).
    """

    supports_label_smoothing: bool = False
    is_critic: bool = False
    d_outputs_are_probabilities: bool = False

    @abstractmethod
    def d_loss(self, *, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """Scalar the discriminator minimises."""

    @abstractmethod
    def g_loss(self, *, fake_out: Tensor) -> Tensor:
        """Scalar the generator minimises."""

    def d_real_prob(self, out: Tensor) -> Tensor:
        """What to log as "D(x)": the batch mean of the raw output (detached)."""
        return out.detach().mean()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------
# Logistic (cross-entropy) objectives, Goodfellow et al. 2014
# --------------------------------------------------------------------------


class _Logistic(Objective):
    """Shared discriminator of the original GAN (Goodfellow et al. 2014).

    D(x) = sigmoid(o(x)) and D maximises E_x[log D(x)] + E_z[log(1 - D(G(z)))]:

        d_loss = E_x[softplus(-o(x))] + E_z[softplus(o(G(z)))]

    (binary cross-entropy with logits, real target 1, fake target 0; the two
    batch means are summed, as in the value function). One-sided label
    smoothing (Salimans et al. 2016): the real target becomes ``real_target``
    (e.g. 0.9); the fake target always stays 0.
    """

    supports_label_smoothing = True
    d_outputs_are_probabilities = True

    def __init__(self, *, real_target: float = 1.0) -> None:
        self.real_target = _check_real_target(real_target)

    def d_loss(self, *, real_out: Tensor, fake_out: Tensor) -> Tensor:
        real_target = torch.full_like(real_out, self.real_target)
        real_term = F.binary_cross_entropy_with_logits(real_out, real_target)
        fake_term = F.softplus(fake_out).mean()  # BCE with target 0
        return real_term + fake_term

    def d_real_prob(self, out: Tensor) -> Tensor:
        """D(x) = sigmoid(logit), averaged over the batch (detached)."""
        return torch.sigmoid(out.detach()).mean()


class Minimax(_Logistic):
    """Saturating minimax GAN (Goodfellow et al. 2014).

    G minimises E_z[log(1 - D(G(z)))] = -E_z[softplus(o(G(z)))].
    Its gradient vanishes when D confidently rejects fakes (hence "saturating").
    """

    def g_loss(self, *, fake_out: Tensor) -> Tensor:
        return -F.softplus(fake_out).mean()


class NonSaturating(_Logistic):
    """Non-saturating GAN (Goodfellow et al. 2014, the practical G objective).

    G minimises -E_z[log D(G(z))] = E_z[softplus(-o(G(z)))],
    i.e. cross-entropy with fakes labelled real.
    """

    def g_loss(self, *, fake_out: Tensor) -> Tensor:
        return F.softplus(-fake_out).mean()


# --------------------------------------------------------------------------
# Least squares, Wasserstein, hinge
# --------------------------------------------------------------------------


class LeastSquares(Objective):
    """Least squares GAN (Mao et al. 2017), no sigmoid on D.

        d_loss = 1/2 E_x[(D(x) - b)^2] + 1/2 E_z[(D(G(z)) - a)^2]
        g_loss = 1/2 E_z[(D(G(z)) - c)^2]

    Common choices: a=0, b=c=1 (default) or a=-1, b=1, c=0. Label smoothing
    moves the real target toward the fake one: b' = a + real_target * (b - a).
    "D(x)" is logged as the raw output, which D regresses toward b on reals.
    """

    supports_label_smoothing = True

    def __init__(self, *, a: float = 0.0, b: float = 1.0, c: float = 1.0, real_target: float = 1.0) -> None:
        self.a, self.b, self.c = float(a), float(b), float(c)
        self.real_target = _check_real_target(real_target)

    def d_loss(self, *, real_out: Tensor, fake_out: Tensor) -> Tensor:
        b = self.a + self.real_target * (self.b - self.a)
        return 0.5 * ((real_out - b) ** 2).mean() + 0.5 * ((fake_out - self.a) ** 2).mean()

    def g_loss(self, *, fake_out: Tensor) -> Tensor:
        return 0.5 * ((fake_out - self.c) ** 2).mean()


class Wasserstein(Objective):
    """Wasserstein GAN (Arjovsky et al. 2017); f is an unbounded critic.

        d_loss = E_z[f(G(z))] - E_x[f(x)]     (so -d_loss estimates W1)
        g_loss = -E_z[f(G(z))]

    The Lipschitz constraint is NOT applied here: combine with the
    ``WeightClip`` (WGAN) or ``GradientPenalty`` (WGAN-GP, Gulrajani et
    al. 2017) term of ``ganrun.objectives.terms``. "D(x)" is logged as the raw critic value.
    """

    is_critic = True

    def d_loss(self, *, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return fake_out.mean() - real_out.mean()

    def g_loss(self, *, fake_out: Tensor) -> Tensor:
        return -fake_out.mean()


class Hinge(Objective):
    """Hinge GAN (Lim & Ye 2017; Miyato et al. 2018), raw outputs o.

        d_loss = E_x[relu(1 - o(x))] + E_z[relu(1 + o(G(z)))]
        g_loss = -E_z[o(G(z))]

    Not a critic (its D loss is not a distance estimate); "D(x)" is logged as
    the raw output.
    """

    def d_loss(self, *, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.relu(1.0 - real_out).mean() + F.relu(1.0 + fake_out).mean()

    def g_loss(self, *, fake_out: Tensor) -> Tensor:
        return -fake_out.mean()


# --------------------------------------------------------------------------
# f-GAN, Nowozin et al. 2016
# --------------------------------------------------------------------------


class FDivergence(Objective):
    """Variational f-divergence objective (f-GAN, Nowozin et al. 2016).

    D's raw output v goes through the output activation g_f, giving
    T = g_f(v) inside the domain of the convex conjugate f*. With P the data
    and Q the model, D maximises the lower bound of D_f(P || Q):

        d_loss = -(E_x[g_f(v(x))] - E_z[f*(g_f(v(G(z))))])
        g_loss = -E_z[g_f(v(G(z)))]      (the paper's non-saturating G step)

    A subclass defines ``activation`` (g_f) and ``conjugate`` (f*), and
    overrides ``conjugate_of_activation`` with a stable closed form when the
    naive composition can overflow. Exponent arguments are clamped at 80
    (module constant ``_MAX_EXP``), which keeps float32 losses finite.
    "D(x)" is logged as the raw output v.
    """

    @abstractmethod
    def activation(self, v: Tensor) -> Tensor:
        """Output activation g_f: raw v -> T in the domain of f*."""

    @abstractmethod
    def conjugate(self, t: Tensor) -> Tensor:
        """Fenchel conjugate f*(t)."""

    def conjugate_of_activation(self, v: Tensor) -> Tensor:
        """f*(g_f(v)); subclasses override with a numerically stable form."""
        return self.conjugate(self.activation(v))

    def d_loss(self, *, real_out: Tensor, fake_out: Tensor) -> Tensor:
        bound = self.activation(real_out).mean() - self.conjugate_of_activation(fake_out).mean()
        return -bound

    def g_loss(self, *, fake_out: Tensor) -> Tensor:
        return -self.activation(fake_out).mean()


class KL(FDivergence):
    """Kullback-Leibler, f(u) = u log u.

    g_f(v) = v;  f*(t) = exp(t - 1);  f*(g_f(v)) = exp(v - 1) (clamped).
    """

    def activation(self, v: Tensor) -> Tensor:
        return v

    def conjugate(self, t: Tensor) -> Tensor:
        return torch.exp(t - 1.0)

    def conjugate_of_activation(self, v: Tensor) -> Tensor:
        return _exp(v - 1.0)


class ReverseKL(FDivergence):
    """Reverse Kullback-Leibler, f(u) = -log u.

    g_f(v) = -exp(-v);  f*(t) = -1 - log(-t);  f*(g_f(v)) = -1 + v.
    """

    def activation(self, v: Tensor) -> Tensor:
        return -_exp(-v)

    def conjugate(self, t: Tensor) -> Tensor:
        return -1.0 - torch.log(-t)

    def conjugate_of_activation(self, v: Tensor) -> Tensor:
        return v - 1.0


class Pearson(FDivergence):
    """Pearson chi-squared, f(u) = (u - 1)^2.

    g_f(v) = v;  f*(t) = t^2 / 4 + t;  f*(g_f(v)) = v^2 / 4 + v (already stable).
    """

    def activation(self, v: Tensor) -> Tensor:
        return v

    def conjugate(self, t: Tensor) -> Tensor:
        return 0.25 * t**2 + t


class SquaredHellinger(FDivergence):
    """Squared Hellinger, f(u) = (sqrt(u) - 1)^2.

    g_f(v) = 1 - exp(-v);  f*(t) = t / (1 - t);
    f*(g_f(v)) = (1 - exp(-v)) / exp(-v) = exp(v) - 1 (clamped, via expm1).
    """

    def activation(self, v: Tensor) -> Tensor:
        return -torch.expm1(-v.clamp(min=-_MAX_EXP))

    def conjugate(self, t: Tensor) -> Tensor:
        return t / (1.0 - t)

    def conjugate_of_activation(self, v: Tensor) -> Tensor:
        return torch.expm1(v.clamp(max=_MAX_EXP))


class JensenShannon(FDivergence):
    """Jensen-Shannon as in f-GAN, f(u) = u log u - (1 + u) log((1 + u) / 2).

    This is 2 * JSD; with the optimal D its bound equals 2 JSD(P||Q).
    g_f(v) = log 2 - log(1 + exp(-v)) = log 2 - softplus(-v);
    f*(t) = -log(2 - exp(t));
    f*(g_f(v)) = -log(2 - 2 sigmoid(v)) = softplus(v) - log 2.
    """

    def activation(self, v: Tensor) -> Tensor:
        return _LOG_2 - F.softplus(-v)

    def conjugate(self, t: Tensor) -> Tensor:
        return -torch.log(2.0 - torch.exp(t))

    def conjugate_of_activation(self, v: Tensor) -> Tensor:
        return F.softplus(v) - _LOG_2


class TotalVariation(FDivergence):
    """Total variation, f(u) = |u - 1| / 2.

    g_f(v) = tanh(v) / 2;  f*(t) = t (on |t| <= 1/2);  f*(g_f(v)) = tanh(v) / 2.
    """

    def activation(self, v: Tensor) -> Tensor:
        return 0.5 * torch.tanh(v)

    def conjugate(self, t: Tensor) -> Tensor:
        return t
