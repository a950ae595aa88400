"""InfoGAN (Chen et al. 2016): interpretable latent codes by maximising mutual information.

G's input is noise z plus latent codes c: categorical codes (one-hot, uniform over
their categories) and continuous codes ~ U(-1, 1). An auxiliary network Q, sharing
D's body, predicts c from G(z, c); the variational lower bound

    L_I(G, Q) = E_{c ~ P(c), x ~ G(z, c)}[log Q(c | x)] + H(c)  <=  I(c; G(z, c))

is maximised by G and Q alongside the GAN game. Here that is a loss to minimise,
``mutual_information_loss`` = lambda_categorical * cross-entropy(categorical codes)
+ lambda_continuous * Gaussian NLL(continuous codes) = -(weighted L_I) + constants.

Pieces, in dependency order: the latent space (what G takes), Q's head (what
predicts the codes), the loss terms, the training module, and the code-to-class
matching accuracy used to check that a categorical code found the classes.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ganrun.errors import ConfigError
from ganrun.objectives.terms import Term
from ganrun.training.module import GANModule


# ------------------------------------------------------------------ latent space
class InfoGANLatent:
    """G's input [z (z_dim) | one-hot of each categorical code | continuous codes].

    z ~ N(0, I); each categorical code is uniform over its categories (the paper's
    MNIST digit code: one code of 10); continuous codes ~ U(-1, 1) (two on MNIST:
    rotation and width emerge). Same interface as ``GaussianLatent`` (``dim``,
    ``sample``) plus ``split`` / ``join`` to read or set the codes.
    """

    def __init__(self, *, z_dim: int, categorical: Sequence[int] = (10,), continuous: int = 2) -> None:
        self.z_dim = int(z_dim)
        self.categorical = tuple(int(k) for k in categorical)
        self.continuous = int(continuous)
        if any(k < 2 for k in self.categorical) or self.continuous < 0:
            raise ConfigError(
                f"model.latent: categorical={list(self.categorical)} and continuous={self.continuous} are not valid; "
                "each categorical code needs >= 2 categories and continuous must be >= 0"
            )
        if not self.categorical and not self.continuous:
            raise ConfigError("model.latent has no codes: set categorical (e.g. [10]) or continuous (e.g. 2)")

    @property
    def dim(self) -> int:
        """Size of G's input vector."""
        return self.z_dim + sum(self.categorical) + self.continuous

    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        z = torch.randn(n, self.z_dim, generator=generator, device=device)
        indices = [torch.randint(k, (n,), generator=generator, device=device) for k in self.categorical]
        categories = torch.stack(indices, dim=1) if indices else torch.zeros(n, 0, dtype=torch.long, device=device)
        continuous = torch.rand(n, self.continuous, generator=generator, device=device) * 2 - 1
        return self.join(z, categories, continuous)

    def join(self, z: torch.Tensor, categories: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """(N, z_dim), (N, #categorical) int indices, (N, continuous) values -> (N, dim).

        Code values are free here (traversals go beyond U(-1, 1)'s range)."""
        one_hots = [F.one_hot(categories[:, i].long(), k).to(z.dtype) for i, k in enumerate(self.categorical)]
        return torch.cat([z, *one_hots, continuous.to(z.dtype)], dim=1)

    def with_category(self, latent: torch.Tensor, value: int, code: int = 0) -> torch.Tensor:
        """``latent`` with categorical code ``code`` set to ``value`` for every row
        (``ganrun-sample code=K``); a one-line ConfigError for a value out of range."""
        if not self.categorical:
            raise ConfigError("code=... given but this InfoGAN has no categorical code")
        if not 0 <= value < self.categorical[code]:
            raise ConfigError(
                f"code={value} is not valid; this InfoGAN's first code has values 0..{self.categorical[code] - 1}"
            )
        z, categories, continuous = self.split(latent)
        categories = categories.clone()
        categories[:, code] = value
        return self.join(z, categories, continuous)

    def split(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, dim) -> (z, categorical indices (N, #categorical) int64, continuous values)."""
        z, *one_hots, continuous = latent.split([self.z_dim, *self.categorical, self.continuous], dim=1)
        indices = [one_hot.argmax(dim=1) for one_hot in one_hots]
        categories = torch.stack(indices, dim=1) if indices else latent.new_zeros(len(latent), 0, dtype=torch.long)
        return z, categories, continuous


# ----------------------------------------------------------------------- Q head
class QHead(nn.Module):
    """D's body features (N, feature_dim) -> categorical logits and continuous means.

    The paper's MNIST Q: FC 128 - BN - LeakyReLU(0.2) - FC output, on top of the
    layers it shares with D. Continuous codes get a factorised Gaussian with *fixed
    unit variance* (what the paper's code used for MNIST), so Q outputs means only.
    """

    def __init__(self, feature_dim: int, categorical: Sequence[int], continuous: int, hidden: int = 128) -> None:
        super().__init__()
        self.categorical, self.continuous = tuple(categorical), continuous
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, sum(self.categorical) + continuous),
        )

    def forward(self, features: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """-> ([logits (N, k) for each categorical code], means (N, continuous))."""
        *logits, means = self.net(features).split([*self.categorical, self.continuous], dim=1)
        return logits, means


# ----------------------------------------------------------------- loss terms
def categorical_nll(logits: Sequence[torch.Tensor], categories: torch.Tensor) -> torch.Tensor:
    """Cross-entropy -E[log Q(c_i | x)], summed over the categorical codes, mean over the batch."""
    total = categories.new_zeros((), dtype=torch.float32)
    for i, code_logits in enumerate(logits):
        total = total + F.cross_entropy(code_logits.float(), categories[:, i])
    return total


def gaussian_nll(means: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """-E[log N(c; mu, 1)] = 0.5 (c - mu)^2 + 0.5 log(2 pi), summed over codes, mean over the batch."""
    per_code = 0.5 * (values.float() - means.float()) ** 2 + 0.5 * math.log(2 * math.pi)
    return per_code.sum(dim=1).mean()


# ------------------------------------------------------------ Q's view of G(z, c)
def random_affine(x: torch.Tensor, shift: float = 0.0, rotation: float = 0.0, scale: float = 0.0) -> torch.Tensor:
    """Each image of x (N, C, H, W) moved by its own random affine map, differentiably.

    shift: largest translation as a fraction of the image's half-width (grid units,
    where the image spans [-1, 1]); rotation: largest angle in degrees; scale: largest
    relative zoom (0.1 = 0.9x-1.1x). Draws from torch's global RNG (seeded by seed=).
    Pixels moved in from outside the image take the background value -1 (images are
    in [-1, 1]).
    """
    if not (shift or rotation or scale):
        return x
    n = len(x)
    uniform = lambda: torch.rand(n, device=x.device, dtype=torch.float32) * 2 - 1  # noqa: E731
    angle = uniform() * math.radians(rotation)
    zoom = 1 + uniform() * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos, -sin, uniform() * shift], dim=1),
            torch.stack([sin, cos, uniform() * shift], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with 0; shift the image so the background (-1) pads as -1
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


# ----------------------------------------------------------- the term and module
class MutualInformation(Term):
    """InfoGAN's term of G's loss: the module's ``mutual_information_loss`` (already
    weighted by the lambdas, so the term's weight is 1), applied before any other G-side
    term. Q and D belong to the module, not to the term (their checkpoint keys stay
    ``q_head.*`` and ``discriminator.*``)."""

    name = "mutual_information"
    order = -1

    def __init__(self, module: "InfoGANModule") -> None:
        super().__init__()
        self.__dict__["_module"] = module  # a reference, not a sub-module
        self._stats: dict = {}

    def generator_loss(self, fake: torch.Tensor, noise: torch.Tensor, labels) -> torch.Tensor:
        loss, self._stats = self._module.mutual_information_loss(fake, noise, labels)
        return loss

    def generator_stats(self) -> dict:
        return self._stats


class InfoGANModule(GANModule):
    """The GAN game plus the mutual-information term for G and Q.

    Design:
    - Q = ``discriminator.features`` -> ``QHead``. Q's head trains in **G's optimizer**
      (lr_g, 1e-3 in the paper's MNIST setup): G and Q minimise the same term in
      the same step, and ``training_step`` keeps its two optimizers, so the
      alternating update, its logging and checkpoints are unchanged.
    - D's body gets **no gradient from the MI term**: during the G step D's
      parameters are frozen (``toggle_optimizer``), so the shared body is trained
      by the GAN objective alone and Q reads codes from D's features. (The paper's
      code also added the term to D's loss; many reimplementations do not.)
    - Weights: ``lambda_categorical`` = 1 (the paper's value for discrete codes),
      ``lambda_continuous`` = 0.1 (smaller, as the paper advises, so the continuous
      term stays on the GAN objective's scale; the usual MNIST choice).
    The term enters G's loss as the ``MutualInformation`` term. Q sees G's output without instance noise; with ``q_shift`` / ``q_rotation`` /
    ``q_scale`` set it reads a randomly moved copy (``random_affine``). The move is drawn
    independently of c, so that is still a lower bound on I(c; G(z, c)) (c -> G(z, c) ->
    moved copy is a Markov chain), and it makes codes that live in position, slant or
    size unreadable, so G puts them in what survives the move: on digits, the class. ``loss/g`` stays the GAN G loss;
    ``loss/mutual_information`` is the weighted MI loss, with its unweighted parts
    ``loss/mi_categorical`` and ``loss/mi_continuous``; ``infogan/q_accuracy`` is Q's
    accuracy on the first categorical code of the fakes.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        objective,
        *,
        latent: InfoGANLatent,
        lambda_categorical: float = 1.0,
        lambda_continuous: float = 0.1,
        q_hidden: int = 128,
        q_shift: float = 0.0,
        q_rotation: float = 0.0,
        q_scale: float = 0.0,
        **kwargs,
    ) -> None:
        if not isinstance(latent, InfoGANLatent):
            raise ConfigError(
                f"InfoGANModule needs model.latent._target_=ganrun.training.infogan.InfoGANLatent, got {type(latent).__name__}"
            )
        kwargs["terms"] = [*kwargs.get("terms", ()), MutualInformation(self)]
        super().__init__(generator, discriminator, objective, latent=latent, **kwargs)
        self.lambda_categorical, self.lambda_continuous = lambda_categorical, lambda_continuous
        self.q_head = QHead(discriminator.feature_dim, latent.categorical, latent.continuous, hidden=q_hidden)
        self.q_view = dict(shift=q_shift, rotation=q_rotation, scale=q_scale)

    def generator_side_parameters(self):
        # Q's head trains in G's optimizer (see the class docstring).
        return [*self.generator.parameters(), *self.q_head.parameters()]

    def predict_codes(self, x: torch.Tensor, labels=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Q(c | x): ([categorical logits], continuous means) for images x."""
        return self.q_head(self.discriminator.features(x, labels))

    def mutual_information_loss(self, x: torch.Tensor, noise: torch.Tensor, labels=None):
        """Weighted MI loss for samples x = G(noise); returns (loss, stats)."""
        _, categories, continuous = self.latent.split(noise)
        logits, means = self.predict_codes(random_affine(x, **self.q_view), labels)
        categorical_part = categorical_nll(logits, categories)
        continuous_part = gaussian_nll(means, continuous)
        loss = self.lambda_categorical * categorical_part + self.lambda_continuous * continuous_part
        stats = {
            "loss/mutual_information": loss.detach(),
            "loss/mi_categorical": categorical_part.detach(),
            "loss/mi_continuous": continuous_part.detach(),
        }
        if logits:
            stats["infogan/q_accuracy"] = (logits[0].detach().argmax(dim=1) == categories[:, 0]).float().mean()
        return loss, stats


# ------------------------------------------------------------------- evaluation
def best_match_accuracy(codes, labels, num_codes: Optional[int] = None, num_classes: Optional[int] = None):
    """Accuracy of ``codes`` as predictions of ``labels`` under the best one-to-one
    code -> class assignment (codes are meaningful only up to a permutation).

    Hungarian matching on the contingency table (scipy's linear_sum_assignment).
    Returns (accuracy, {code: class}).
    """
    from scipy.optimize import linear_sum_assignment

    codes, labels = torch.as_tensor(codes).long().flatten(), torch.as_tensor(labels).long().flatten()
    if len(codes) != len(labels) or not len(codes):
        raise ValueError(f"codes and labels must be non-empty and of equal length, got {len(codes)} and {len(labels)}")
    num_codes = num_codes or int(codes.max()) + 1
    num_classes = num_classes or int(labels.max()) + 1
    counts = torch.zeros(num_codes, num_classes, dtype=torch.long)
    counts.index_put_((codes, labels), torch.ones_like(codes), accumulate=True)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
    matched = int(counts[torch.as_tensor(rows), torch.as_tensor(cols)].sum())
    return matched / len(codes), {int(r): int(c) for r, c in zip(rows, cols)}
