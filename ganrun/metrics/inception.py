"""FID, IS and KID with the standard Inception-v3 weights (torchmetrics + torch-fidelity),
and precision, recall, density and coverage in its pool features (``ganrun.metrics.prdc``).

Protocol: ``PROTOCOL`` below (recorded in every ganrun-eval result).

The weights (~100 MB) are downloaded once into torch's hub cache when online;
offline, put the file there by hand (the error says where) or point
``GANRUN_INCEPTION_WEIGHTS`` at a copy.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from ganrun.errors import ConfigError
from ganrun.metrics import cache
from ganrun.metrics.features import Precomputed, frechet_distance, inception_score, reference_subset
from ganrun.metrics.prdc import NAMES as PRDC_NAMES
from ganrun.metrics.prdc import prdc
from ganrun.metrics.prdc import requested as prdc_requested

WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
# Real images the reference statistics are computed from: a random subset drawn with a
# fixed seed when the training split is larger (never the first N in storage order,
# which in a class-sorted folder would be the first classes only).
FID_REFERENCE = 50_000
KID_REFERENCE = 10_000
REFERENCE_SEED = 0
# How images reach 299 x 299, passed to torchmetrics explicitly (its default may change):
# "antialias" (torch's antialiased bilinear) or "tf1x" (torch-fidelity's copy of the
# TF 1.x bilinear resize of the original FID code). Part of every cache key.
RESIZE_MODES = ("antialias", "tf1x")
RESIZE = "antialias"
PROTOCOL = (
    "Protocol: generated images quantised to uint8 like the real ones, grayscale repeated to 3 channels, "
    f"resized to 299 x 299 with resize mode '{RESIZE}' (torch's antialiased bilinear), Inception-v3 with the "
    "TF-2015 weights converted by torch-fidelity. FID and KID use the 2048-d pool features, IS the 1008 "
    "unbiased logits (10 splits); KID: 100 subsets of min(1000, n) samples, cubic polynomial kernel. The real "
    f"side: FID statistics of up to {FID_REFERENCE:,} and KID features of up to {KID_REFERENCE:,} training "
    f"images, each a random subset drawn with seed {REFERENCE_SEED} when the split is larger, computed once "
    "and cached under $GANRUN_CACHE/reference (the key records subset size, seed and resize mode)."
)


def weights_path() -> Path:
    """Where the Inception weights are looked for (and downloaded to)."""
    override = os.environ.get("GANRUN_INCEPTION_WEIGHTS")
    if override:
        return Path(override).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_URL.rsplit("/", 1)[-1]


def download_weights(path: Path, timeout: float = 30.0) -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(path), progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def inception_network(device="cpu", resize: str = RESIZE):
    """torch-fidelity's Inception-v3 returning (pool 2048-d, unbiased logits), resizing
    its inputs to 299 x 299 with ``resize`` (one of ``RESIZE_MODES``)."""
    if resize not in RESIZE_MODES:
        raise ConfigError(f"Inception resize mode {resize!r} is not valid; choose {' or '.join(RESIZE_MODES)}")
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:
        raise ConfigError(
            "Inception metrics (fid, is, kid) need torch-fidelity: pip install 'ganrun[inception]'"
        ) from None
    path = weights_path()
    if not path.is_file():
        try:
            download_weights(path)
        except Exception as error:
            raise ConfigError(
                f"Inception weights not found at {path} and the download failed ({type(error).__name__}); "
                f"offline, copy {WEIGHTS_URL.rsplit('/', 1)[-1]} (from {WEIGHTS_URL}) to {path} "
                "or set GANRUN_INCEPTION_WEIGHTS=FILE"
            ) from None
    network = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048", "logits_unbiased"],
        feature_extractor_weights_path=str(path),
        antialias=resize == "antialias",
    )
    return network.to(device)


def rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def features(network, images: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of uint8 images: (N x 2048 pool features, N x 1008 unbiased logits)."""
    pools, logits = [], []
    for batch in images.split(200):
        pool, logit = network._torch_fidelity_forward(rgb(batch).to(device))
        pools.append(pool.reshape(len(batch), -1).float().cpu())
        logits.append(logit.float().cpu())
    return torch.cat(pools), torch.cat(logits)


def inception_metrics(
    real: torch.Tensor, fake: torch.Tensor, names: set[str], key: str, device="cpu", resize: str = RESIZE
) -> dict[str, float]:
    """``fid``, ``is``, ``kid`` (with ``kid_std``) and ``precision``, ``recall``, ``density``,
    ``coverage`` of uint8 ``fake`` against uint8 ``real``. The last four compare the pool
    features of the KID reference (cut to a seeded random subset as large as ``fake``
    when that is smaller) with as many of ``fake``'s.

    torchmetrics computes each from features extracted once per image set; the real
    side's are cached under a key naming the data (``key``), the random reference
    subset (size, seed) and the resize mode."""
    from torchmetrics.image.kid import KernelInceptionDistance

    network = inception_network(device, resize)
    fake_pool, fake_logits = features(network, fake, device)
    real_pool: dict[int, torch.Tensor] = {}  # extracted at most once per subset, only if a cache misses

    def reference(size: int) -> torch.Tensor:
        if size not in real_pool:
            real_pool[size] = features(network, real[reference_subset(len(real), size, REFERENCE_SEED)], device)[0]
        return real_pool[size]

    def cache_path(metric: str, size: int) -> Path:
        subset = f"n{min(size, len(real))}-seed{REFERENCE_SEED}"
        return cache.cache_dir() / "reference" / f"inception-{metric}-{key}-{subset}-{resize}.pt"

    def kid_reference_features() -> torch.Tensor:  # pool features of up to KID_REFERENCE real images, cached
        path = cache_path("kid", KID_REFERENCE)
        stored = cache.load(path)
        if stored is None:
            stored = reference(KID_REFERENCE).clone()
            cache.save(stored, path)
        return stored

    out: dict[str, float] = {}
    kid_reference = kid_reference_features() if names & {"kid", *PRDC_NAMES} else None
    if "fid" in names:
        out["fid"] = frechet_distance(fake_pool, lambda: reference(FID_REFERENCE), cache_path("fid", FID_REFERENCE))
    if "kid" in names:
        subset = min(1000, len(fake_pool), len(kid_reference))
        metric = KernelInceptionDistance(feature=Precomputed(2048), subset_size=subset, reset_real_features=False)
        metric.real_features = [kid_reference]
        metric.update(fake_pool, real=False)
        with torch.random.fork_rng(devices=[]):  # subsets are drawn at random
            torch.manual_seed(0)
            mean, std = metric.compute()
        out["kid"], out["kid_std"] = float(mean), float(std)
    if "is" in names:
        out["is"] = inception_score(fake_logits)
    if names & set(PRDC_NAMES):
        pool = kid_reference[reference_subset(len(kid_reference), len(fake_pool), REFERENCE_SEED)]
        out.update(prdc_requested(prdc(pool, fake_pool[: len(pool)], device=device), names))
    return out
