"""Data modules shared by every dataset: data held as tensors, batches by index.

Every ganrun dataset fits in memory (the largest built-in, CIFAR-10 at 64x64, is
600 MB as uint8), so batches are gathered with one tensor index per batch instead
of per-item Python transforms and a collate step.

Batch order is a pure function of (seed, global batch index): batch ``i`` belongs
to epoch ``i // batches_per_epoch`` whose permutation is drawn from a generator
seeded with ``(seed, epoch)``. A resumed run therefore sees exactly the batches an
uninterrupted run would have seen, without relying on dataloader state.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ganrun.errors import ConfigError

Batch = tuple[torch.Tensor, Optional[torch.Tensor]]


class BatchStream:
    """One epoch of batches per ``iter()``, starting at the global batch ``start()``.

    ``start`` is read when iteration begins; it returns how many batches the
    training loop has already consumed (0 on a fresh run), so a resumed run
    continues mid-epoch where it stopped.
    """

    def __init__(
        self,
        make_batch: Callable[[int], Batch],
        batches_per_epoch: int,
        start: Callable[[], int] = lambda: 0,
    ) -> None:
        if batches_per_epoch < 1:
            raise ConfigError("dataset yields no full batch: lower dataset.batch_size")
        self.make_batch = make_batch
        self.batches_per_epoch = batches_per_epoch
        self.start = start

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        first = self.start()
        epoch_end = (first // self.batches_per_epoch + 1) * self.batches_per_epoch
        for index in range(first, epoch_end):
            yield self.make_batch(index)


class GANDataModule(pl.LightningDataModule):
    """Base of every dataset: what a dataset offers is declared here, with defaults that
    each dataset overrides, so the rest of ganrun reads attributes and never probes.

    - ``data_shape``: one example's shape, (C, H, W) for images or (2,) for points;
    - ``is_image``: images in [-1, 1] (False for points in the plane);
    - ``num_classes``: classes of the labels, 0 for unlabelled data;
    - ``labels``: the examples' class labels (N,), None without labels or before ``setup``;
    - ``modes``: the means (M x 2) of a Gaussian mixture (ring, grid), with their standard
      deviation ``std``; None for other data. Mode-coverage metrics apply where they are set.
    """

    data_shape: tuple[int, ...]
    is_image: bool = True
    num_classes: int = 0
    labels: Optional[torch.Tensor] = None
    modes: Optional[torch.Tensor] = None
    std: Optional[float] = None

    @property
    def labelled(self) -> bool:
        """Images with class labels: what the judge classifier is trained on."""
        return bool(self.is_image and self.num_classes and self.labels is not None)

    @property
    def is_mixture(self) -> bool:
        """A Gaussian mixture in the plane (``modes`` set): mode coverage measures it."""
        return self.modes is not None

    def __init__(self, *, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        # Under DDP each rank takes every world_size-th example of the epoch.
        self.rank, self.world_size = 0, 1
        # Set by the trainer: the number of batches already consumed (for resume).
        self.batches_done: Callable[[], int] = lambda: 0
        # Set by ganrun.train from fast.data_on_device: keep in-memory data on the training device.
        self.data_on_device = False

    def _attach_to_ranks(self) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size

    def prepare_shape(self) -> None:
        """Set ``data_shape`` and ``num_classes`` for checking a config before the run
        starts (``ganrun.config.preflight``), after ``prepare_data``. By default the full
        ``setup``; datasets whose shape follows from their config skip loading it."""
        self.setup("fit")

    def describe(self) -> str:
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        return f"{type(self).__name__} {tuple(self.data_shape)}{classes}"

    def real_examples(self, n: int) -> torch.Tensor:
        """The first ``n`` examples in a fixed order (for the real-data grid and metrics)."""
        raise NotImplementedError


class TensorDataModule(GANDataModule):
    """Images (uint8, N x C x H x W) or points (float) held in memory.

    Subclasses implement ``load()`` returning ``(data, labels_or_None)``; images are
    resized once to ``image_size`` and scaled to [-1, 1] per batch.
    """

    def __init__(self, *, image_size: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.data: Optional[torch.Tensor] = None
        self.labels: Optional[torch.Tensor] = None
        self._permutations: dict[int, torch.Tensor] = {}

    def load(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.data is not None:
            return
        data, labels = self.load()
        if data.dtype == torch.uint8 and self.image_size is not None:
            data = resize_uint8(data, self.image_size)
        self.data, self.labels = data, labels
        self.data_shape = tuple(data.shape[1:])

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x.float().div_(127.5).sub_(1.0)
        return x

    def _permutation(self, epoch: int) -> torch.Tensor:
        # Keep only the current epoch's permutation: memory stays O(N). Drawn on the CPU
        # (the same order whatever the device), then moved to where the data lives.
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.data), generator=generator)
            self._permutations = {epoch: perm[self.rank :: self.world_size].to(self.data.device)}
        return self._permutations[epoch]

    def _move_data(self) -> None:
        """fast.data_on_device: the whole dataset to the training device once, batches indexed there."""
        from ganrun.runtime.fast import data_device

        device = None
        if self.data_on_device and self.trainer is not None:
            nbytes = self.data.numel() * self.data.element_size()
            device = data_device(True, self.trainer.strategy.root_device, nbytes)
        device = device or torch.device("cpu")
        self.data = self.data.to(device)
        self.labels = None if self.labels is None else self.labels.to(device)

    def _batches_per_epoch(self) -> int:
        return (len(self.data) // self.world_size) // self.batch_size

    def make_batch(self, index: int) -> Batch:
        per_epoch = self._batches_per_epoch()
        epoch, position = divmod(index, per_epoch)
        rows = self._permutation(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        labels = None if self.labels is None else self.labels[rows]
        return self._scale(self.data[rows]), labels

    def train_dataloader(self) -> BatchStream:
        self._attach_to_ranks()
        self._move_data()
        self._permutations = {}
        return BatchStream(self.make_batch, self._batches_per_epoch(), self.batches_done)

    def real_examples(self, n: int) -> torch.Tensor:
        return self._scale(self.data[:n].to("cpu", copy=True))


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 N x C x H x W batch to size x size (antialiased), in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(4096):
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
