"""Offline metrics judged by a small classifier trained on the real data (no download).

For each labelled image dataset a CNN *judge* is trained once on 90% of the real
training split, checked on the other 10% (its accuracy is recorded and reported
with every result), and cached under ``$GANRUN_CACHE/judges``. Images are seen by
the judge at a fixed size per dataset (``eval.judge_size``: 16 x 16 for the 8 x 8
digits, 32 x 32 otherwise; antialiased resize), whatever the model's size. From it:

- ``cfid``: Fréchet distance between judge features (64-d, penultimate layer) of
  generated and of all real training images (torchmetrics' FID with this
  extractor). Lower is better; 0 for identical distributions.
- ``cis``: Inception-Score analogue, exp E[KL(p(y|x) || p(y))] with the judge's
  class posteriors (torchmetrics' InceptionScore, 10 splits). Higher is better, at
  most the number of classes.
- ``classes_covered``: classes that receive at least 20% of their share of the
  samples under the data's class frequencies (judged class = argmax).
- ``class_kl``: KL(p_gen || p_data) of the judged class histogram from the real
  label histogram. 0 when classes are drawn in the data's proportions; log 10 =
  2.30 for a generator that draws a single class of ten balanced ones. It is
  *mode-seeking* (the reverse KL): it punishes classes the generator over-produces,
  but barely notices classes it drops (dropping one of ten balanced classes and
  spreading its share over the rest costs only log(10/9) = 0.11). Read it with
  ``classes_covered``, which counts the dropped classes.
- ``cond_accuracy`` (class-conditional models): how often the judge reads back
  the class the generator was asked for.
- ``code_accuracy`` (InfoGAN): accuracy of the first categorical code as a
  predictor of the judged class under the best one-to-one code -> class matching.
- ``precision``, ``recall``, ``density``, ``coverage`` (``ganrun.metrics.prdc``) in
  the judge's 64-d features, against as many real images as there are generated
  ones (all of them, or a random subset with seed 0; their features are cached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ganrun.data.base import resize_uint8
from ganrun.metrics import cache
from ganrun.metrics.features import frechet_distance, inception_score, reference_subset
from ganrun.metrics.prdc import NAMES as PRDC_NAMES
from ganrun.metrics.prdc import prdc
from ganrun.metrics.prdc import requested as prdc_requested

JUDGE_VERSION = 1  # bump when the judge's architecture or training changes: invalidates caches


class JudgeNet(nn.Module):
    """Four 3x3 convolutions (the first and third with stride 2), global average pooling, a linear head."""

    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        layers, previous = [], channels
        for out, stride in ((w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 1)):
            layers += [nn.Conv2d(previous, out, 3, stride, 1), nn.ReLU(inplace=True)]
            previous = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(previous, num_classes)
        self.num_features = previous

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def judge_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N x C x H x W -> the judge's float input: size x size, in [-1, 1]."""
    return resize_uint8(images, size).float().div_(127.5).sub_(1.0)


@dataclass
class Judge:
    net: JudgeNet
    test_accuracy: float
    key: str  # identifies the real data it was trained on (cache entries share it)
    class_frequencies: torch.Tensor
    data: torch.Tensor  # the real images (uint8), for reference statistics
    size: int  # input resolution

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> (N x 64 penultimate features, N x classes logits), one pass."""
        features, logits = [], []
        for batch in images.split(500):
            f = self.net.features(judge_input(batch, self.size).to(self.device))
            features.append(f.float().cpu())
            logits.append(self.net.head(f).float().cpu())
        return torch.cat(features), torch.cat(logits)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[1]

    def describe(self) -> str:
        return (
            f"ganrun judge v{JUDGE_VERSION}: {type(self.net).__name__} trained on 90% of the real training split, "
            f"held-out accuracy {self.test_accuracy:.4f}; images resized to {self.size}x{self.size}; "
            f"reference: all {len(self.data)} real training images"
        )


def load_judge(datamodule, size: int = 32, device="cpu", train_steps: Optional[int] = None) -> Judge:
    """The cached judge for this dataset's real data at ``size`` px, trained first if needed."""
    # On the CPU even when training keeps the data on the GPU (fast.data_on_device).
    data, labels, name = datamodule.data.cpu(), datamodule.labels.cpu(), type(datamodule).__name__
    if labels is None or not datamodule.num_classes:
        raise ValueError(f"{datamodule.describe()} has no labels: classifier metrics need a labelled dataset")
    key = f"{name}-{size}px-{cache.fingerprint(data, labels)}"
    path = cache.cache_dir() / "judges" / f"v{JUDGE_VERSION}-{key}.pt"
    stored = cache.load(path)
    with torch.random.fork_rng(devices=[]):  # may run inside training: leave its random stream alone
        torch.manual_seed(0)
        net = JudgeNet(data.shape[1], datamodule.num_classes)
        if stored is None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the same judge whatever the machine's load or the run's threads
            try:
                stored = train_judge(net, data, labels, size, steps=train_steps)
            finally:
                torch.set_num_threads(threads)
            cache.save(stored, path)
    net.load_state_dict(stored["state_dict"])
    frequencies = torch.bincount(labels, minlength=datamodule.num_classes).double()
    return Judge(net.eval().to(device), stored["test_accuracy"], key, frequencies / frequencies.sum(), data, size)


def train_judge(
    net: JudgeNet,
    data: torch.Tensor,
    labels: torch.Tensor,
    size: int,
    steps: Optional[int] = None,
    batch_size: int = 128,
) -> dict:
    """Adam on 90% of the data (fixed permutation, seed 0); accuracy on the other 10%."""
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=generator)
    held_out = max(1, len(data) // 10)
    test, train = order[:held_out], order[held_out:]
    # About 40 epochs on small data (600 steps), at most 2,000 steps on large data.
    steps = steps or int(min(2000, max(600, math.ceil(15 * len(train) / batch_size))))
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    net.train()
    for step in range(steps):
        rows = train[torch.randint(len(train), (batch_size,), generator=generator)]
        loss = F.cross_entropy(net(judge_input(data[rows], size)), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(judge_input(data[rows], size)).argmax(1) for rows in test.split(1000)])
    accuracy = float((predicted == labels[test]).float().mean())
    return {"state_dict": net.state_dict(), "test_accuracy": accuracy, "train_steps": steps}


def real_features(judge: Judge, n: int) -> torch.Tensor:
    """The judge's features (n x 64) of n real images: all of them, or a random subset (seed 0); cached."""
    path = cache.cache_dir() / "reference" / f"judge-v{JUDGE_VERSION}-{judge.key}-features-n{n}-seed0.pt"
    features = cache.load(path)
    if not isinstance(features, torch.Tensor) or features.shape != (n, judge.net.num_features):
        features = judge.features_and_logits(judge.data[reference_subset(len(judge.data), n, seed=0)])[0]
        cache.save(features, path)
    return features


def classifier_metrics(
    judge: Judge,
    fake: torch.Tensor,
    names: set[str],
    requested: Optional[torch.Tensor] = None,
    codes: Optional[torch.Tensor] = None,
) -> dict[str, float]:
    """The judge's metrics in ``names`` for generated uint8 images ``fake``.

    ``requested``: the class each image was generated for (conditional models);
    ``codes``: each image's categorical code (InfoGAN).
    """
    out: dict[str, float] = {}
    features, logits = judge.features_and_logits(fake)
    predicted = logits.argmax(1)
    if "cfid" in names:
        path = cache.cache_dir() / "reference" / f"judge-v{JUDGE_VERSION}-{judge.key}.pt"
        out["cfid"] = frechet_distance(features, lambda: judge.features_and_logits(judge.data)[0], path)
    if "cis" in names:
        out["cis"] = inception_score(logits)
    if names & set(PRDC_NAMES):
        real = real_features(judge, min(len(judge.data), len(features)))
        out.update(prdc_requested(prdc(real, features[: len(real)], device=judge.device), names))
    counts = torch.bincount(predicted, minlength=len(judge.class_frequencies)).double()
    share = counts / counts.sum()
    if "classes_covered" in names:
        out["classes_covered"] = float((counts >= 0.2 * len(fake) * judge.class_frequencies).sum())
    if "class_kl" in names:
        present = share > 0
        out["class_kl"] = float((share[present] * (share[present] / judge.class_frequencies[present]).log()).sum())
    if "cond_accuracy" in names and requested is not None:
        out["cond_accuracy"] = float((predicted == requested.cpu()).float().mean())
    if "code_accuracy" in names and codes is not None:
        from ganrun.training.infogan import best_match_accuracy

        out["code_accuracy"] = best_match_accuracy(codes.cpu(), predicted, num_classes=len(judge.class_frequencies))[0]
    return out
