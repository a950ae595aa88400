"""Tests for ganrun.objectives.losses.

Reference values are written independently with ``math`` in float64 from the
textbook formulas, never with the functions under test. Objective classes are
discovered from the module, so a new objective fails
``test_every_objective_has_reference_values`` until it gets reference values.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from ganrun.objectives import losses
from ganrun.objectives.losses import (
    KL,
    FDivergence,
    Hinge,
    JensenShannon,
    LeastSquares,
    Minimax,
    NonSaturating,
    Objective,
    Pearson,
    ReverseKL,
    SquaredHellinger,
    TotalVariation,
    Wasserstein,
    clip_weights_,
    gradient_penalty,
)

REAL = [0.5, -1.0, 2.0]
FAKE = [-0.3, 1.2, -1.5, 0.7]  # different length from REAL: catches mixed-up means


def _concrete_subclasses(base: type) -> list[type]:
    found = [
        obj
        for _, obj in inspect.getmembers(losses, inspect.isclass)
        if issubclass(obj, base) and obj.__module__ == losses.__name__ and not inspect.isabstract(obj)
    ]
    return sorted(found, key=lambda cls: cls.__name__)


ALL_OBJECTIVES = _concrete_subclasses(Objective)
F_DIVERGENCES = _concrete_subclasses(FDivergence)


def _t(values: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def sigmoid(o: float) -> float:
    return 1.0 / (1.0 + math.exp(-o))


# ---- f-divergence reference table: textbook g_f, f*, optimal v and D_f(P||Q) ----


@dataclass(frozen=True)
class FCase:
    cls: type
    activation: Callable[[float], float]  # g_f(v)
    conjugate: Callable[[float], float]  # f*(t)
    optimal_v: Callable[[float], float]  # v* = g_f^{-1}(f'(u)) at u = p(x)/q(x)
    divergence: Callable[[list, list], float]  # D_f(P||Q) in closed form


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


F_CASES = [
    FCase(
        KL,
        activation=lambda v: v,
        conjugate=lambda t: math.exp(t - 1),
        optimal_v=lambda u: 1 + math.log(u),
        divergence=_kl,
    ),
    FCase(
        ReverseKL,
        activation=lambda v: -math.exp(-v),
        conjugate=lambda t: -1 - math.log(-t),
        optimal_v=lambda u: math.log(u),
        divergence=lambda p, q: _kl(q, p),
    ),
    FCase(
        Pearson,
        activation=lambda v: v,
        conjugate=lambda t: t * t / 4 + t,
        optimal_v=lambda u: 2 * (u - 1),
        divergence=lambda p, q: sum((pi - qi) ** 2 / qi for pi, qi in zip(p, q)),
    ),
    FCase(
        SquaredHellinger,
        activation=lambda v: 1 - math.exp(-v),
        conjugate=lambda t: t / (1 - t),
        optimal_v=lambda u: 0.5 * math.log(u),
        divergence=lambda p, q: sum((math.sqrt(pi) - math.sqrt(qi)) ** 2 for pi, qi in zip(p, q)),
    ),
    FCase(
        JensenShannon,
        activation=lambda v: math.log(2) - math.log(1 + math.exp(-v)),
        conjugate=lambda t: -math.log(2 - math.exp(t)),
        optimal_v=lambda u: math.log(u),
        # f-GAN's JS generator gives twice the Jensen-Shannon divergence.
        divergence=lambda p, q: (
            _kl(p, [(a + b) / 2 for a, b in zip(p, q)]) + _kl(q, [(a + b) / 2 for a, b in zip(p, q)])
        ),
    ),
    FCase(
        TotalVariation,
        activation=lambda v: 0.5 * math.tanh(v),
        conjugate=lambda t: t,
        # f'(u) = sign(u - 1) / 2 is reached only as v -> +-inf; tanh(20) == 1.0 in float64.
        optimal_v=lambda u: 20.0 * math.copysign(1.0, u - 1),
        divergence=lambda p, q: 0.5 * sum(abs(pi - qi) for pi, qi in zip(p, q)),
    ),
]
F_CASE_IDS = [case.cls.__name__ for case in F_CASES]


def _f_reference(case: FCase) -> tuple[float, float]:
    g = case.activation
    d = -(mean(g(r) for r in REAL) - mean(case.conjugate(g(f)) for f in FAKE))
    return d, -mean(g(f) for f in FAKE)


# ---- Exact values for every objective ----------------------------------------


def _logistic_d(real_target: float = 1.0) -> float:
    """-mean(t log D(x) + (1 - t) log(1 - D(x))) - mean(log(1 - D(G(z)))), D = sigmoid."""
    t = real_target
    real = mean(-(t * math.log(sigmoid(r)) + (1 - t) * math.log(1 - sigmoid(r))) for r in REAL)
    return real + mean(-math.log(1 - sigmoid(f)) for f in FAKE)


MINIMAX_G = mean(math.log(1 - sigmoid(f)) for f in FAKE)
NON_SATURATING_G = mean(-math.log(sigmoid(f)) for f in FAKE)


def _least_squares(a: float, b: float, c: float) -> tuple[float, float]:
    d = 0.5 * mean((r - b) ** 2 for r in REAL) + 0.5 * mean((f - a) ** 2 for f in FAKE)
    return d, 0.5 * mean((f - c) ** 2 for f in FAKE)


REFERENCE_CASES = [
    pytest.param(Minimax(), _logistic_d(), MINIMAX_G, id="Minimax"),
    pytest.param(Minimax(real_target=0.9), _logistic_d(0.9), MINIMAX_G, id="Minimax-0.9"),
    pytest.param(NonSaturating(), _logistic_d(), NON_SATURATING_G, id="NonSaturating"),
    pytest.param(NonSaturating(real_target=0.9), _logistic_d(0.9), NON_SATURATING_G, id="NS-0.9"),
    pytest.param(LeastSquares(), *_least_squares(0.0, 1.0, 1.0), id="LeastSquares"),
    pytest.param(LeastSquares(a=-1, b=1, c=0), *_least_squares(-1.0, 1.0, 0.0), id="LeastSquares-a-1"),
    # b' = a + real_target * (b - a) = -1 + 0.9 * 2 = 0.8
    pytest.param(LeastSquares(a=-1, b=1, c=0, real_target=0.9), *_least_squares(-1.0, 0.8, 0.0), id="LSQ-0.9"),
    pytest.param(Wasserstein(), mean(FAKE) - mean(REAL), -mean(FAKE), id="Wasserstein"),
    pytest.param(
        Hinge(),
        mean(max(0.0, 1 - r) for r in REAL) + mean(max(0.0, 1 + f) for f in FAKE),
        -mean(FAKE),
        id="Hinge",
    ),
    *[pytest.param(case.cls(), *_f_reference(case), id=case.cls.__name__) for case in F_CASES],
]


def test_every_objective_has_reference_values():
    covered = {type(param.values[0]) for param in REFERENCE_CASES}
    assert covered == set(ALL_OBJECTIVES)
    assert {case.cls for case in F_CASES} == set(F_DIVERGENCES)


@pytest.mark.parametrize("objective, expected_d, expected_g", REFERENCE_CASES)
def test_losses_match_textbook_formulas(objective, expected_d, expected_g):
    d = objective.d_loss(real_out=_t(REAL), fake_out=_t(FAKE))
    g = objective.g_loss(fake_out=_t(FAKE))
    assert_close(d, torch.tensor(expected_d, dtype=torch.float64))
    assert_close(g, torch.tensor(expected_g, dtype=torch.float64))


# ---- Interface shared by every objective -------------------------------------


@pytest.mark.parametrize("cls", ALL_OBJECTIVES)
def test_losses_are_differentiable_scalars(cls):
    objective = cls()
    real = _t(REAL, torch.float32).requires_grad_(True)
    fake = _t(FAKE, torch.float32).requires_grad_(True)
    d = objective.d_loss(real_out=real, fake_out=fake)
    g = objective.g_loss(fake_out=fake)
    for loss in (d, g):
        assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    d_real, d_fake = torch.autograd.grad(d, (real, fake))
    (g_fake,) = torch.autograd.grad(g, fake)
    assert d_real.abs().sum() > 0 and d_fake.abs().sum() > 0 and g_fake.abs().sum() > 0


@pytest.mark.parametrize("cls", ALL_OBJECTIVES)
def test_objectives_are_plain_objects_with_keyword_only_losses(cls):
    objective = cls()
    assert not isinstance(objective, nn.Module)
    assert isinstance(cls.supports_label_smoothing, bool) and isinstance(cls.is_critic, bool)
    assert cls.__doc__ and cls.__name__ in repr(objective)
    with pytest.raises(TypeError):
        objective.d_loss(_t(REAL), _t(FAKE))
    with pytest.raises(TypeError):
        objective.g_loss(_t(FAKE))


@pytest.mark.parametrize("cls", ALL_OBJECTIVES)
def test_real_target_argument_matches_supports_label_smoothing(cls):
    if cls.supports_label_smoothing:
        assert cls(real_target=0.9).real_target == 0.9
        for bad in (0.0, 1.5):
            with pytest.raises(ValueError):
                cls(real_target=bad)
    else:
        with pytest.raises(TypeError):
            cls(real_target=0.9)


@pytest.mark.parametrize("cls", ALL_OBJECTIVES)
def test_d_real_prob_is_sigmoid_for_logistic_and_raw_otherwise(cls):
    out = _t(REAL).requires_grad_(True)
    logged = cls().d_real_prob(out)
    logistic = cls in (Minimax, NonSaturating)
    expected = mean(sigmoid(r) for r in REAL) if logistic else mean(REAL)
    assert_close(logged, torch.tensor(expected, dtype=torch.float64))
    assert not logged.requires_grad


def test_only_wasserstein_is_a_critic():
    assert Wasserstein.is_critic
    assert not any(cls.is_critic for cls in ALL_OBJECTIVES if cls is not Wasserstein)


def test_label_smoothing_support_flags():
    assert Minimax.supports_label_smoothing and NonSaturating.supports_label_smoothing
    assert LeastSquares.supports_label_smoothing
    assert not (Wasserstein.supports_label_smoothing or Hinge.supports_label_smoothing)
    assert not any(cls.supports_label_smoothing for cls in F_DIVERGENCES)


# ---- One-sided label smoothing -----------------------------------------------


@pytest.mark.parametrize("cls", [Minimax, NonSaturating])
def test_label_smoothing_changes_only_the_real_term(cls):
    plain, smooth = cls(), cls(real_target=0.9)
    real = _t(REAL)
    # Smoothing shifts the real term only: the shift does not depend on fakes.
    expected_shift = mean(0.1 * (math.log(sigmoid(r)) - math.log(1 - sigmoid(r))) for r in REAL)
    for fake in (_t(FAKE), _t([3.0, -2.0]), _t([0.0])):
        shift = smooth.d_loss(real_out=real, fake_out=fake) - plain.d_loss(real_out=real, fake_out=fake)
        assert_close(shift, torch.tensor(expected_shift, dtype=torch.float64))
        assert_close(smooth.g_loss(fake_out=fake), plain.g_loss(fake_out=fake))


# ---- f-GAN divergences -------------------------------------------------------


@pytest.mark.parametrize("case", F_CASES, ids=F_CASE_IDS)
def test_f_pair_matches_textbook_and_stable_composition_matches_naive(case):
    divergence = case.cls()
    v = torch.linspace(-5.0, 5.0, 41, dtype=torch.float64)
    t = divergence.activation(v)
    assert_close(t, _t([case.activation(x) for x in v.tolist()]))
    assert_close(divergence.conjugate(t), _t([case.conjugate(x) for x in t.tolist()]))
    assert_close(divergence.conjugate_of_activation(v), divergence.conjugate(t))


@pytest.mark.parametrize("cls", F_DIVERGENCES)
def test_f_losses_and_gradients_are_finite_for_large_outputs(cls):
    divergence = cls()
    # float32 exp overflows past ~88.7; |v| up to 100 exercises the clamps in losses.py
    v = torch.linspace(-100.0, 100.0, 401).requires_grad_(True)
    for loss in (divergence.d_loss(real_out=v, fake_out=v), divergence.g_loss(fake_out=v)):
        (grad,) = torch.autograd.grad(loss, v)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # not merely finite: still correct at |v| = 60 in float32
    sixty = torch.tensor([-60.0, 60.0])
    exact = divergence.conjugate_of_activation(sixty.double())
    assert_close(divergence.conjugate_of_activation(sixty), exact.float(), rtol=1e-5, atol=1e-5)


# Discrete P (data) and Q (model) on four points, as empirical samples:
# P puts mass (1, 2, 3, 4)/10 and Q mass (4, 3, 2, 1)/10 on points 0..3.
P = [0.1, 0.2, 0.3, 0.4]
Q = [0.4, 0.3, 0.2, 0.1]
P_COUNTS, Q_COUNTS = [1, 2, 3, 4], [4, 3, 2, 1]


def _variational_bound(divergence: FDivergence, v_per_point: list[float]) -> float:
    """-d_loss with D's output v(x) at each point, real batch ~ P, fake ~ Q."""
    v = _t(v_per_point)
    real_out = v.repeat_interleave(torch.tensor(P_COUNTS))
    fake_out = v.repeat_interleave(torch.tensor(Q_COUNTS))
    return -divergence.d_loss(real_out=real_out, fake_out=fake_out).item()


@pytest.mark.parametrize("case", F_CASES, ids=F_CASE_IDS)
def test_optimal_discriminator_recovers_true_divergence(case):
    divergence = case.cls()
    true_value = case.divergence(P, Q)
    v_star = [case.optimal_v(p / q) for p, q in zip(P, Q)]
    assert _variational_bound(divergence, v_star) == pytest.approx(true_value, abs=1e-9)
    # Any other D gives at most D_f (the bound is a lower bound), and less once g_f(v) moves.
    for v_other in ([v + 0.3 for v in v_star], [v - 0.3 for v in v_star], [0.2 * v for v in v_star]):
        assert _variational_bound(divergence, v_other) <= true_value + 1e-12
    assert _variational_bound(divergence, [0.2 * v for v in v_star]) < true_value - 1e-6


# ---- Gradient penalty --------------------------------------------------------


def _linear_critic(w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x) = <w, x> per sample; grad_x f = w everywhere, for any input shape."""
    return lambda x: (x * w).flatten(start_dim=1).sum(dim=1)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 3)], ids=["vectors", "images"])
def test_gradient_penalty_of_linear_critic_is_exact(shape):
    torch.manual_seed(0)
    w = (2.0 * torch.randn(shape[1:], dtype=torch.float64)).requires_grad_(True)
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    penalty = gradient_penalty(_linear_critic(w), real, fake)
    norm = w.detach().norm()
    assert_close(penalty, (norm - 1) ** 2)
    # create_graph=True: the penalty trains the critic, d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    penalty.backward()
    assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm)
    assert w.grad.abs().sum() > 0


def test_gradient_penalty_vanishes_for_unit_norm_critic():
    w = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64, requires_grad=True)
    real, fake = torch.randn(6, 3, dtype=torch.float64), torch.zeros(6, 3, dtype=torch.float64)
    penalty = gradient_penalty(_linear_critic(w), real, fake)
    penalty.backward()
    assert_close(penalty, torch.tensor(0.0, dtype=torch.float64))
    assert_close(w.grad, torch.zeros(3, dtype=torch.float64))


def test_gradient_penalty_uses_per_sample_norm_over_all_non_batch_dims():
    # f(x) = |x|^2 / 2 has grad x; with real == fake, x_hat == x for every eps.
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    penalty = gradient_penalty(lambda z: 0.5 * (z**2).sum(dim=(1, 2, 3)), x, x.clone())
    expected = mean((math.sqrt((xn**2).sum().item()) - 1) ** 2 for xn in x)
    assert_close(penalty, torch.tensor(expected, dtype=torch.float64))


def test_gradient_penalty_passes_critic_args():
    # f(x, y) = scale[y] * <w, x>: per-sample grad norm |scale[y]| * |w|.
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)  # |w| = 5
    scale = torch.tensor([0.2, 1.0, -2.0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2])
    critic = lambda x, y: scale[y] * (x @ w)  # noqa: E731
    real, fake = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake, labels)
    expected = mean((abs(scale[y].item()) * 5 - 1) ** 2 for y in labels)
    assert_close(penalty, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(64, 3), (64, 1, 2, 2)], ids=["vectors", "images"])
def test_gradient_penalty_interpolates_with_one_eps_per_sample(shape):
    seen = []

    def recording_critic(x):
        seen.append(x)
        return x.flatten(start_dim=1).sum(dim=1)

    gradient_penalty(recording_critic, torch.ones(shape), torch.zeros(shape))
    (mixed,) = seen
    eps = mixed.flatten(start_dim=1)  # real = 1, fake = 0, so x_hat = eps
    assert mixed.requires_grad
    assert ((eps >= 0) & (eps <= 1)).all()
    assert_close(eps, eps[:, :1].expand_as(eps))  # constant within a sample
    assert eps[:, 0].unique().numel() > 1  # different across samples


def test_gradient_penalty_does_not_reach_the_generator():
    # The critic's input gradient depends on x_hat, so an undetached fake would get a gradient.
    generator_weight = torch.tensor(2.0, requires_grad=True)
    w = torch.tensor([1.5, 0.5], requires_grad=True)
    fake = generator_weight * torch.randn(3, 2)
    critic = lambda x: 0.5 * ((x * w) ** 2).sum(dim=1)  # noqa: E731
    gradient_penalty(critic, torch.randn(3, 2), fake).backward()
    assert generator_weight.grad is None
    assert w.grad is not None and w.grad.abs().sum() > 0


# ---- Weight clipping ---------------------------------------------------------


def test_clip_weights_bounds_every_parameter_in_place():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    with torch.no_grad():
        for param in critic.parameters():
            param.mul_(0.05)  # a mix of values inside and outside the bound
    before = [param.detach().clone() for param in critic.parameters()]
    first = next(critic.parameters())
    clip_weights_(critic, 0.01)
    assert next(critic.parameters()) is first  # in place, same Parameter objects
    for old, param in zip(before, critic.parameters()):
        assert param.abs().max() <= 0.01 and param.requires_grad
        assert_close(param.detach(), old.clamp(-0.01, 0.01))
    outside = torch.cat([old.flatten().abs() > 0.01 for old in before])
    assert outside.any() and not outside.all()
    with pytest.raises(ValueError):
        clip_weights_(critic, 0.0)
