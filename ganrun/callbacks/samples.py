"""Fixed-noise sample grids, to TensorBoard and as PNG files under ``samples/``.

The same noise (and, for conditional models, one row per class) is used at every
step, so the grids show how the generator evolves. 2-D data is drawn as a scatter
plot of generated points (red) over real points (grey).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid

from ganrun.callbacks.periodic import EveryNSteps, publish_image
from ganrun.training import sampling


class SampleGrid(EveryNSteps):
    def __init__(self, dirpath: str, every_n_steps: int = 250, num_samples: int = 64, seed: int = 1234) -> None:
        self.dirpath = Path(dirpath)
        super().__init__(every_n_steps)
        self.num_samples = num_samples
        self.seed = seed
        self._real: Optional[torch.Tensor] = None

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        self.noise, self.labels = fixed_inputs(module, self.num_samples, generator)
        points = 2000 if not trainer.datamodule.is_image else self.num_samples
        self._real = trainer.datamodule.real_examples(points)
        if trainer.is_global_zero and module.g_updates == 0:
            if not trainer.datamodule.is_image:
                self._write(trainer, "samples/real", scatter_image(self._real, None), None)
            else:
                self._write(trainer, "samples/real", self._grid(self._real), None)

    def draw(self, trainer: pl.Trainer, module) -> None:
        samples = generate(module, self.noise, self.labels)
        if not trainer.datamodule.is_image:
            image = scatter_image(self._real, samples)
        else:
            image = self._grid(samples)
        self._write(trainer, "samples/generated", image, f"step_{module.g_updates:07d}.png")

    def _grid(self, images: torch.Tensor) -> torch.Tensor:
        rows = self._rows()
        return make_grid(images.float().cpu(), nrow=math.ceil(len(images) / rows), normalize=True, value_range=(-1, 1))

    def _rows(self) -> int:
        classes = int(self.labels.max()) + 1 if self.labels is not None else 0
        return classes or int(math.sqrt(self.num_samples))

    def _write(self, trainer: pl.Trainer, tag: str, image: torch.Tensor, filename: Optional[str]) -> None:
        publish_image(trainer, tag, image, self.dirpath / (filename or "real.png"))


def fixed_inputs(module, n: int, generator: torch.Generator):
    """G inputs (n, latent dim) and, for conditional models, labels making one row per class."""
    labels = None
    if module.num_classes:
        per_class = max(1, n // module.num_classes)
        labels = torch.arange(module.num_classes).repeat_interleave(per_class)
        n = len(labels)
    return module.latent.sample(n, generator=generator), labels


def generate(module, noise: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """The module's sampling generator (EMA copy when enabled) through ``ganrun.training.sampling.generate``."""
    return sampling.generate(module.sampling_generator, noise, labels, device=module.device)


def scatter_image(real: torch.Tensor, fake: Optional[torch.Tensor], size: int = 384) -> torch.Tensor:
    """Render 2-D points as a 3 x size x size image: real in grey, generated in red."""
    extent = float(real.abs().max()) * 1.4 + 1e-6
    canvas = np.ones((size, size, 3), dtype=np.float32)
    for points, colour in ((real, (0.7, 0.7, 0.7)), (fake, (0.85, 0.1, 0.1))):
        if points is None:
            continue
        xy = points.detach().float().cpu().numpy()
        cols = ((xy[:, 0] / extent + 1) / 2 * (size - 1)).round().astype(int)
        rows = ((1 - (xy[:, 1] / extent + 1) / 2) * (size - 1)).round().astype(int)
        inside = (cols >= 1) & (cols < size - 1) & (rows >= 1) & (rows < size - 1)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                canvas[rows[inside] + dr, cols[inside] + dc] = colour
    return torch.from_numpy(canvas).permute(2, 0, 1)
