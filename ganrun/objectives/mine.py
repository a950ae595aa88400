"""MINE: Mutual Information Neural Estimation (Belghazi et al. 2018).

A statistics network T(c, x) gives the Donsker-Varadhan lower bound

    I(C; X) >= E_joint[T(c, x)] - log E_marginal[exp T(c', x)]

where joint pairs are (c_i, x_i) and marginal pairs (c'_i, x_i) pair each x with an
independent draw c' of C (freshly sampled, so no pair is accidentally a true one).
Maximising the bound over T estimates I(C; X).

Gradient bias (the paper's section 3.2): the minibatch gradient of the log term,
E_B[grad T e^T] / E_B[e^T], is biased because its denominator is a minibatch
mean. MINE replaces that denominator by an exponential moving average of
E_B[e^T] over batches. ``DonskerVaradhan`` builds a surrogate loss whose value is
the (negated) bound and whose gradient uses the moving-average denominator, so a
plain ``backward()`` gives the corrected gradient. Under DDP the batch statistic is
averaged over the ranks before it enters the moving average, so every rank's
average follows the whole global batch.

In a GAN (the paper's section 5.1), G's input is split into z = [eps, c] and G
maximises I(G([eps, c]); c) with a weight: G is rewarded for outputs from which its
code c can be read, which a G that drops modes cannot do (``target="code"``, c = the
last ``code_dims`` coordinates of G's input). ``target="noise"`` estimates I(z; G(z))
over all of z instead; for a deterministic G that is the entropy of G's output,
unbounded for continuous data, so it acts as a pure "spread out" reward.
``MINEEstimator`` holds T and the moving average; it never calls backward.
``MINETerm`` plugs it into training (``term=mine``, ``tricks.mine_weight``) through
ganrun.objectives.terms.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ganrun.errors import ConfigError
from ganrun.objectives.terms import Term
from ganrun.runtime.fast import build_optimizer


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
        """Fold this batch's E_B[e^T] (over every rank's batch under DDP) into the moving
        average (the first batch starts it)."""
        batch = log_mean_across_ranks(log_mean_exp(marginal_scores.detach().float()))
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


def log_mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """log mean_r exp(value_r) over the ranks of a DDP run (equal batch sizes): ``value`` as
    if it had been computed on the global batch; ``value`` itself outside DDP."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    gathered = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, value.contiguous())
    return torch.logsumexp(torch.stack(gathered), dim=0) - math.log(len(gathered))


class MINEEstimator(nn.Module):
    """T and the moving average: ``statistics_loss`` trains T, ``bound`` scores pairs for G.

    Both take joint pairs (c, x) and independent draws ``c_marginal`` of C for the
    marginal pairs (c', x), and return the surrogate loss (to be minimised) and the
    detached estimate of I. ``statistics_loss`` updates the moving average (once per T
    step); ``bound`` does not, so G's term uses the average T was trained with.
    """

    def __init__(self, *, z_dim: int, x_dim: int, hidden: Sequence[int] = (128, 128), ema_rate: float = 0.01) -> None:
        super().__init__()
        self.statistics = StatisticsNetwork(z_dim=z_dim, x_dim=x_dim, hidden=hidden)
        self.dv = DonskerVaradhan(ema_rate)

    def scores(self, c: torch.Tensor, x: torch.Tensor, c_marginal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T on joint pairs (c_i, x_i), T on marginal pairs (c'_i, x_i))."""
        return self.statistics(c, x), self.statistics(c_marginal, x)

    def statistics_loss(
        self, c: torch.Tensor, x: torch.Tensor, c_marginal: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T's loss on (c, x) pairs with no gradient to whatever produced x."""
        joint, marginal = self.scores(c.detach(), x.detach(), c_marginal.detach())
        self.dv.update(marginal)
        return self.dv(joint, marginal)

    def bound(self, c: torch.Tensor, x: torch.Tensor, c_marginal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-(DV bound) on (c, x) with gradients to x (and c): what G minimises, times its weight."""
        joint, marginal = self.scores(c, x, c_marginal)
        return self.dv(joint, marginal)


TARGETS = ("code", "noise")


class MINETerm(Term):
    """MINE-assisted GAN training (Belghazi et al. 2018, sec. 5.1) as a term of the game.

    G's loss gains ``weight * -(DV bound of I(G([eps, c]); c))``: G maximises the
    estimated mutual information between its code c (the last ``code_dims`` coordinates
    of its input) and its output. ``target="noise"``: I(z; G(z)) over all of G's input
    instead (a spread reward, see the module docstring). T (the statistics network) has
    its own Adam optimizer and ascends the bound once per G step on detached fakes
    (``own_loss``); marginal pairs use codes from a fresh draw of G's input.
    ``anneal_steps`` decays the weight linearly to 0 over that many G updates (0:
    constant); at weight 0 neither G's term nor T's step is computed. Logged:
    ``mine/mi_estimate`` (the Donsker-Varadhan estimate in nats on T's batch: positive
    and rising as T learns, the number to watch), ``loss/mine`` (-I estimate on G's batch,
    before G's step), ``loss/mine_own`` (T's surrogate loss, with the moving-average
    correction) and ``grad_norm/mine``.
    """

    name = "mine"

    def __init__(
        self,
        weight: float = 0.5,
        *,
        anneal_steps: int = 0,
        target: str = "code",
        code_dims: int = 1,
        hidden: Sequence[int] = (128, 128),
        ema_rate: float = 0.01,
        lr: float = 1e-4,
        fast_kernels: bool = False,
    ) -> None:
        super().__init__(weight, anneal_steps=anneal_steps)
        if target not in TARGETS:
            raise ConfigError(
                f"MINE target={target} is not valid (tricks.mine_target, terms.mine.target); choose code (I(G([eps, c]); c), Belghazi et al.) "
                "or noise (I(z; G(z)), a spread reward)"
            )
        self.target, self.code_dims = target, int(code_dims)
        self.hidden, self.ema_rate, self.lr, self.fast_kernels = tuple(hidden), ema_rate, lr, fast_kernels
        self.estimator: Optional[MINEEstimator] = None
        self.latent = None
        self._estimate: Optional[Tensor] = None

    def setup(self, *, latent, data_shape: tuple, num_classes: int) -> None:
        if self.target == "code" and not 1 <= self.code_dims < latent.dim:
            raise ConfigError(
                f"tricks.mine_code_dims={self.code_dims} is not valid for G's {latent.dim}-dimensional input; "
                f"choose 1 to {latent.dim - 1} (the code c is that many of its last coordinates, the rest is eps)"
            )
        self.latent = latent
        c_dim = self.code_dims if self.target == "code" else latent.dim
        self.estimator = MINEEstimator(
            z_dim=c_dim, x_dim=math.prod(data_shape), hidden=self.hidden, ema_rate=self.ema_rate
        )

    def code(self, noise: Tensor) -> Tensor:
        """What T pairs with G's output: the code c (the input's last ``code_dims`` coordinates), or all of z."""
        return noise[:, -self.code_dims :] if self.target == "code" else noise

    def fresh_code(self, noise: Tensor) -> Tensor:
        """An independent draw of the code, for the marginal pairs."""
        return self.code(self.latent.sample(len(noise), device=noise.device).to(noise.dtype))

    def generator_loss(self, fake: Tensor, noise: Tensor, labels) -> Tensor:
        return self.estimator.bound(self.code(noise), full_resolution(fake), self.fresh_code(noise))[0]

    def configure_optimizer(self) -> torch.optim.Optimizer:
        # built like G's and D's (fast.fused_optimizers: the fused kernel, no per-step .item() of the step count)
        return build_optimizer(
            torch.optim.Adam, self.estimator.parameters(), fast_kernels=self.fast_kernels, lr=self.lr
        )

    def own_loss(self, fake: Tensor, noise: Tensor, labels) -> Tensor:
        loss, self._estimate = self.estimator.statistics_loss(
            self.code(noise), full_resolution(fake), self.fresh_code(noise)
        )
        return loss

    def own_stats(self) -> dict[str, Tensor]:
        return {} if self._estimate is None else {"mine/mi_estimate": self._estimate}

    def extra_repr(self) -> str:
        code = f"code_dims={self.code_dims}" if self.target == "code" else "target=noise"
        return f"{super().extra_repr()}, {code}"


def full_resolution(fake) -> Tensor:
    """G's examples; from MSG-GAN's list of scales (coarse to fine), the finest."""
    return fake if torch.is_tensor(fake) else fake[-1]
