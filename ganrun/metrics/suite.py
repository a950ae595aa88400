"""Which metrics exist, which apply to a run, and ``evaluate``: draw samples, compute them.

Used by ``ganrun-eval`` and by the in-training ``Evaluation`` callback, so both
follow the same protocol.

| family    | metrics                                                        | needs                         |
|-----------|----------------------------------------------------------------|-------------------------------|
| toy       | modes_covered, high_quality_fraction                           | 2-D mixture (ring, grid)      |
| judge     | cfid, cis, classes_covered, class_kl (+ cond_accuracy, code_accuracy) | labelled images; offline |
| prdc      | precision, recall, density, coverage                           | a feature space: ``prdc_space`` |
| inception | fid, is, kid (+ kid_std)                                       | Inception weights, torch-fidelity |

The ``prdc`` family (``ganrun.metrics.prdc``) measures in the plane on 2-D data, in
the judge's features on labelled images and in Inception's otherwise, or where
``features=`` says so; ``auto`` includes it where that space is offline.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence, Union

import torch

from ganrun.errors import ConfigError
from ganrun.training.sampling import generate

# torchmetrics' InceptionScore keeps every feature vector: that is intended here (n is bounded).
warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")

# name -> (family, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "modes_covered": ("toy", True),
    "high_quality_fraction": ("toy", True),
    "cfid": ("judge", False),
    "cis": ("judge", True),
    "classes_covered": ("judge", True),
    "class_kl": ("judge", False),
    "cond_accuracy": ("judge", True),
    "code_accuracy": ("judge", True),
    "precision": ("prdc", True),
    "recall": ("prdc", True),
    "density": ("prdc", True),  # can exceed 1
    "coverage": ("prdc", True),
    "fid": ("inception", False),
    "is": ("inception", True),
    "kid": ("inception", False),
}
OFFLINE_FAMILIES = ("toy", "judge")
# Where precision, recall, density and coverage compare samples (features=): auto picks
# the plane for 2-D data, the judge on labelled images, Inception on other images.
FEATURE_SPACES = ("auto", "judge", "inception")
OFFLINE_SPACES = ("plane", "judge")


def higher_is_better(name: str) -> bool:
    return METRICS[name][1]


# A count-valued monitor ties often (every evaluation after G first covers all modes);
# ties go to the better value of this metric, so best.ckpt is not the first 8/8 but the sharpest.
TIE_BREAKS: dict[str, str] = {"modes_covered": "high_quality_fraction"}


def labelled(datamodule) -> bool:
    """Images with class labels: what the judge is trained on."""
    return datamodule.labelled


def prdc_space(datamodule, features: str = "auto") -> str:
    """Where precision, recall, density and coverage compare samples: ``plane`` (2-D data:
    the points themselves), ``judge`` (its 64-d features) or ``inception`` (2,048-d pool
    features). ``features=auto``: the judge on labelled images, else Inception."""
    if features not in FEATURE_SPACES:
        raise ConfigError(f"features={features} is not valid; choose {', '.join(FEATURE_SPACES)}")
    if not datamodule.is_image:
        if features != "auto":
            raise ConfigError(
                f"features={features} does not apply to {datamodule.describe()}: its points are compared in the plane; use features=auto"
            )
        return "plane"
    if features == "judge" and not labelled(datamodule):
        raise ConfigError(
            f"features=judge needs a labelled image dataset ({datamodule.describe()} has no labels); use features=inception"
        )
    if features == "auto":
        return "judge" if labelled(datamodule) else "inception"
    return features


def why_not(name: str, datamodule, num_classes: int, latent) -> Optional[str]:
    """Why metric ``name`` does not apply to this run, or None when it does."""
    family = METRICS[name][0]
    if family == "toy" and not datamodule.is_mixture:
        return "it needs a 2-D Gaussian mixture (dataset=ring or grid)"
    if family in ("judge", "inception") and not datamodule.is_image:
        return "it needs image data"
    if family == "judge" and not labelled(datamodule):
        return f"it needs a labelled image dataset ({datamodule.describe()} has no labels)"
    if name == "cond_accuracy" and not num_classes:
        return "it needs a class-conditional model (cgan)"
    if name == "code_accuracy" and not getattr(latent, "categorical", None):
        return "it needs a model with a categorical latent code (infogan)"
    return None


def resolve(
    spec: Union[str, Sequence[str], None], datamodule, num_classes: int, latent, features: str = "auto"
) -> list[str]:
    """``auto``: every offline metric that applies (precision, recall, density, coverage
    when their feature space is offline); ``all``: also the Inception ones; else the named
    metrics, each of which must exist and apply (one-line error otherwise)."""
    if spec is None or spec == "auto" or spec == "all":
        families = OFFLINE_FAMILIES + (("inception",) if spec == "all" else ())
        if spec == "all" or prdc_space(datamodule, features) in OFFLINE_SPACES:
            families += ("prdc",)
        return [
            n
            for n, (family, _) in METRICS.items()
            if family in families and why_not(n, datamodule, num_classes, latent) is None
        ]
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"metric {name!r} does not exist; choose from auto, all, {', '.join(METRICS)}")
        reason = why_not(name, datamodule, num_classes, latent)
        if reason:
            raise ConfigError(f"metric {name!r} does not apply to this run: {reason}")
    return names


def default_monitor(datamodule) -> Optional[str]:
    """The metric that picks best.ckpt and becomes hp/metric when ``monitor: auto``."""
    if datamodule.is_mixture:
        return "modes_covered"
    if labelled(datamodule):
        return "cfid"
    return None


def class_frequencies(datamodule, num_classes: int) -> Optional[torch.Tensor]:
    """The real data's class shares (num_classes,), or None without labels."""
    labels = datamodule.labels
    if not num_classes or labels is None:
        return None
    counts = torch.bincount(labels.cpu().long(), minlength=num_classes).double()
    return counts / counts.sum()


def draw_for_eval(
    generator,
    latent,
    num_classes: int,
    n: int,
    seed: int,
    device,
    frequencies: Optional[torch.Tensor] = None,
    batch_size: int = 500,
):
    """n samples from a fixed seed. Conditional models get labels drawn from the data's
    class ``frequencies`` (uniform when None), so class-histogram metrics compare like with like.

    Returns (samples as uint8 images or float points, requested labels or None,
    first categorical code or None)."""
    rng = torch.Generator().manual_seed(seed)
    noise = latent.sample(n, generator=rng)
    labels = None
    if num_classes:
        weights = frequencies if frequencies is not None else torch.ones(num_classes)
        labels = torch.multinomial(weights.double(), n, replacement=True, generator=rng)
    samples = generate(generator, noise, labels, device=device, batch_size=batch_size)
    codes = None
    if getattr(latent, "categorical", None):
        codes = latent.split(noise)[1][:, 0]
    return samples, labels, codes


def evaluate(
    generator,
    latent,
    datamodule,
    metrics: Sequence[str],
    num_samples: int,
    num_classes: int = 0,
    seed: int = 0,
    device: Any = "cpu",
    judge_size: int = 32,
    features: str = "auto",
) -> dict[str, Any]:
    """Metrics ``metrics`` (already resolved) of ``generator`` (in eval mode) against ``datamodule``'s data;
    precision, recall, density and coverage in the space ``prdc_space(datamodule, features)`` names.

    Returns {metric: value, ..., "protocol": {...}} where the protocol records
    what the numbers mean (sample count, seed, reference, feature extractors)."""
    from ganrun.metrics.prdc import NAMES as PRDC_NAMES
    from ganrun.metrics.prdc import describe, prdc, requested

    names = set(metrics)
    families = {METRICS[n][0] for n in names}
    space = prdc_space(datamodule, features) if "prdc" in families else None
    families |= {space} - {None, "plane"}  # the judge or Inception computes them from its features
    frequencies = class_frequencies(datamodule, num_classes)
    samples, labels, codes = draw_for_eval(generator, latent, num_classes, num_samples, seed, device, frequencies)
    out: dict[str, Any] = {}
    sampling = "fixed seed; conditional models get labels drawn from the data's class frequencies"
    protocol: dict[str, Any] = {"num_samples": num_samples, "seed": seed, "sampling": sampling}
    if "toy" in families:
        from ganrun.metrics.toy import mode_coverage

        coverage = mode_coverage(samples, datamodule.modes, datamodule.std)
        out.update({k: coverage[k] for k in ("modes_covered", "high_quality_fraction") if k in names})
        protocol["toy"] = (
            f"{int(coverage['num_modes'])} modes, std {datamodule.std}: high quality within 3 std of the nearest mode; "
            "a mode is covered by >= 20 high-quality samples per 2,500"
        )
    if space == "plane":
        out.update(requested(prdc(datamodule.real_examples(len(samples)), samples, device=device), names))
    if space is not None:
        protocol["prdc"] = describe(space)
    images = None
    if families & {"judge", "inception"}:
        from ganrun.metrics.features import to_uint8

        images = to_uint8(samples)
    if "judge" in families:
        from ganrun.metrics.classifier import classifier_metrics, load_judge

        judge = load_judge(datamodule, judge_size, device=device)
        judged = names if space == "judge" else names - set(PRDC_NAMES)
        out.update(classifier_metrics(judge, images, judged, requested=labels, codes=codes))
        protocol["judge"] = judge.describe()
        out["judge_accuracy"] = judge.test_accuracy
    if "inception" in families:
        from ganrun.metrics import cache
        from ganrun.metrics.inception import PROTOCOL, RESIZE, inception_metrics

        real = datamodule.data.cpu()
        key = f"{type(datamodule).__name__}-{cache.fingerprint(real)}"
        measured = names if space == "inception" else names - set(PRDC_NAMES)
        out.update(inception_metrics(real, images, measured, key, device=device, resize=RESIZE))
        protocol["inception"] = PROTOCOL
        protocol["inception_resize"] = RESIZE
    return {**{k: out[k] for k in sorted(out)}, "protocol": protocol}
