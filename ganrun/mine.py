"""MINE: Mutual Information Neural Estimation (Belghazi et al. 2018).

A statistics network T(z, x) gives the Donsker-Varadhan lower bound

    I(Z; X) >= E_joint[T(z, x)] - log E_marginal[exp T(z, x')]

where joint pairs are (z_i, x_i) and marginal pairs (z_i, x_j) mix the batch
(x shuffled against z). Maximising the bound over T estimates I(Z; X).

Gradient bias (the paper's section 3.2): the minibatch gradient of the log term,
E_B[grad T e^T] / E_B[e^T], is biased because its denominator is a minibatch
mean. MINE replaces that denominator by an exponential moving average of
E_B[e^T] over batches. ``DonskerVaradhan`` builds a surrogate loss whose value is
the (negated) bound and whose gradient uses the moving-average denominator, so a
plain ``backward()`` gives the corrected gradient.

In a GAN (the paper's section 5.1), G maximises the estimated I(z; G(z)) with a
weight: G is rewarded for outputs from which its noise can be told apart, which
counters mode collapse (collapsed outputs carry no information about z).
``MINEEstimator`` holds T and the moving average; it never calls backward.
``MINETerm`` plugs it into training (``tricks.mine_weight``) through ganrun.terms.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ganrun.fast import build_optimizer
from ganrun.terms import Term


class StatisticsNetwork(nn.Module):
    """T(z, x): z (N, z_dim) and x (N, *) flattened and concatenated -> ELU MLP -> (N,) scores."""

    def __init__(self, *, z_dim: int, x_dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = z_dim + x_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ELU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z.flatten(1), x.flatten(1)], dim=1)).squeeze(1)


def log_mean_exp(scores: torch.Tensor) -> torch.Tensor:
    """log((1/N) sum_i exp(s_i)), without overflow."""
    return torch.logsumexp(scores, dim=0) - math.log(len(scores))


class DonskerVaradhan(nn.Module):
    """The DV bound with MINE's moving-average gradient correction.

    ``log_ema`` is the log of the exponential moving average of E_B[e^T] over
    marginal batches (kept in log space: e^T overflows float32 quickly). It is a
    buffer, so it is checkpointed and, under DDP, broadcast from rank 0 with the
    other buffers.
    """

    def __init__(self, ema_rate: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < ema_rate <= 1.0:
            raise ValueError(f"ema_rate={ema_rate} must be in (0, 1]")
        self.ema_rate = ema_rate
        self.register_buffer("log_ema", torch.tensor(float("nan")))

    @torch.no_grad()
    def update(self, marginal_scores: torch.Tensor) -> None:
        """Fold this batch's E_B[e^T] into the moving average (the first batch starts it)."""
        batch = log_mean_exp(marginal_scores.detach().float())
        rate = self.ema_rate
        average = torch.logaddexp(self.log_ema + math.log1p(-rate), batch + math.log(rate)) if rate < 1 else batch
        # torch.where, not an ``if``: no host sync on an accelerator.
        self.log_ema.copy_(torch.where(torch.isnan(self.log_ema), batch, average))

    def forward(self, joint_scores: torch.Tensor, marginal_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(surrogate loss, bound estimate).

        estimate = mean(T_joint) - log mean(exp T_marginal). The loss equals
        -estimate in value; its gradient is -(E[grad T_joint] - E[grad T e^T] / ema),
        i.e. the log term's denominator is the moving average (MINE, eq. 12).
        Before any ``update`` the plain minibatch gradient is used.
        """
        joint_scores, marginal_scores = joint_scores.float(), marginal_scores.float()
        log_term = log_mean_exp(marginal_scores)
        estimate = joint_scores.mean() - log_term
        denominator = torch.where(torch.isnan(self.log_ema), log_term.detach(), self.log_ema)
        # exp(log_term - log ema) has gradient (E_B[e^T] / ema) * grad log_term = E_B[grad T e^T] / ema.
        ratio = torch.exp(log_term - denominator)
        corrected = joint_scores.mean() - (log_term.detach() + ratio - ratio.detach())
        return -corrected, estimate.detach()


def marginal_pairs(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x with its rows permuted: paired with the unpermuted z, samples of p(z) p(x)."""
    return x[torch.randperm(len(x), generator=generator, device=x.device)]


class MINEEstimator(nn.Module):
    """T and the moving average: ``statistics_loss`` trains T, ``bound`` scores pairs for G.

    Both return the surrogate loss (to be minimised) and the detached estimate of I.
    ``statistics_loss`` updates the moving average (once per T step);
    ``bound`` does not, so G's term uses the average T was trained with.
    """

    def __init__(self, *, z_dim: int, x_dim: int, hidden: Sequence[int] = (128, 128), ema_rate: float = 0.01) -> None:
        super().__init__()
        self.statistics = StatisticsNetwork(z_dim=z_dim, x_dim=x_dim, hidden=hidden)
        self.dv = DonskerVaradhan(ema_rate)

    def scores(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T on joint pairs (z_i, x_i), T on marginal pairs (z_i, x_perm(i)))."""
        return self.statistics(z, x), self.statistics(z, marginal_pairs(x))

    def statistics_loss(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T's loss on (z, x) pairs with no gradient to whatever produced x."""
        joint, marginal = self.scores(z.detach(), x.detach())
        self.dv.update(marginal)
        return self.dv(joint, marginal)

    def bound(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-(DV bound) on (z, x) with gradients to x (and z): what G minimises, times its weight."""
        joint, marginal = self.scores(z, x)
        return self.dv(joint, marginal)


class MINETerm(Term):
    """MINE-assisted GAN training (Belghazi et al. 2018, sec. 5.1) as a term of the game.

    G's loss gains ``weight * -(DV bound of I(z; G(z)))``: G maximises the estimated
    mutual information between its noise and its output. T (the statistics network)
    has its own Adam optimizer and ascends the bound once per G step on detached
    fakes (``own_loss``). Built by ``tricks.mine_weight`` (0: off); ``tricks.mine_anneal_steps``
    (``anneal_steps``) decays the weight linearly to 0 over that many G updates (0: constant). Logged:
    ``mine/mi_estimate`` (the Donsker-Varadhan estimate of I(z; G(z)) in nats on T's
    batch: positive and rising as T learns, the number to watch), ``loss/mine``
    (-I estimate on G's batch, before G's step), ``loss/mine_own`` (T's surrogate loss,
    with the moving-average correction) and ``grad_norm/mine``.
    """

    name = "mine"

    def __init__(
        self, weight: float, *, anneal_steps: int = 0, hidden: Sequence[int] = (128, 128), ema_rate: float = 0.01,
        lr: float = 1e-4, fast_kernels: bool = False,
    ) -> None:
        super().__init__(weight, anneal_steps=anneal_steps)
        self.hidden, self.ema_rate, self.lr, self.fast_kernels = tuple(hidden), ema_rate, lr, fast_kernels
        self.estimator: Optional[MINEEstimator] = None
        self._estimate: Optional[Tensor] = None

    def setup(self, *, latent_dim: int, data_shape: tuple, num_classes: int) -> None:
        self.estimator = MINEEstimator(
            z_dim=latent_dim, x_dim=math.prod(data_shape), hidden=self.hidden, ema_rate=self.ema_rate
        )

    def generator_loss(self, fake: Tensor, noise: Tensor, labels) -> Tensor:
        return self.estimator.bound(noise, full_resolution(fake))[0]

    def configure_optimizer(self) -> torch.optim.Optimizer:
        # built like G's and D's (fast.fused_optimizers: the fused kernel, no per-step .item() of the step count)
        return build_optimizer(torch.optim.Adam, self.estimator.parameters(), fast_kernels=self.fast_kernels, lr=self.lr)

    def own_loss(self, fake: Tensor, noise: Tensor, labels) -> Tensor:
        loss, self._estimate = self.estimator.statistics_loss(noise, full_resolution(fake))
        return loss

    def own_stats(self) -> dict[str, Tensor]:
        return {} if self._estimate is None else {"mine/mi_estimate": self._estimate}


def full_resolution(fake) -> Tensor:
    """G's examples; from MSG-GAN's list of scales (coarse to fine), the finest."""
    return fake if torch.is_tensor(fake) else fake[-1]
