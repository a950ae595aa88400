"""LAPGAN pyramid grids: how each level of a fixed-noise sample is built.

Every ``every_n_steps`` G updates (and at the end of training) the sampling
generator draws the same samples coarse to fine; for each level k the callback
writes one image, to TensorBoard as ``pyramid/level_{k}`` and as
``samples/pyramid_level{k}_step_{step}.png``:

    level 0:   the base_size x base_size samples
    level k:   [upsampled coarser sample | residual G_k added | resulting image]

Every panel is enlarged (nearest neighbour) to the data size so the levels
compare side by side. Residuals are shown on their own symmetric scale
(grey = 0, black/white = the batch's largest magnitude).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from ganrun.callbacks.periodic import EveryNSteps, publish_image
from ganrun.callbacks.samples import fixed_inputs
from ganrun.errors import ConfigError
from ganrun.training.sampling import eval_mode


class PyramidGrid(EveryNSteps):
    def __init__(self, dirpath: str, every_n_steps: int = 500, num_samples: int = 16, seed: int = 1234) -> None:
        self.dirpath = Path(dirpath)
        super().__init__(every_n_steps)
        self.num_samples = num_samples
        self.seed = seed

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        if not hasattr(module.sampling_generator, "stages"):
            raise ConfigError(
                f"callbacks.pyramid needs a LAPGAN generator (model=lapgan), got {type(module.sampling_generator).__name__}"
            )
        self.noise, self.labels = fixed_inputs(module, self.num_samples, torch.Generator().manual_seed(self.seed))

    def draw(self, trainer: pl.Trainer, module) -> None:
        stages = sample_stages(module, self.noise, self.labels)
        size = stages[-1].image.shape[-1]
        for k, stage in enumerate(stages):
            panels = (
                [stage.image] if stage.condition is None else [stage.condition, _signed(stage.residual), stage.image]
            )
            grids = [self._grid(_enlarge(panel, size)) for panel in panels]
            self._write(trainer, k, _side_by_side(grids))

    def _grid(self, images: torch.Tensor) -> torch.Tensor:
        return make_grid(images, nrow=math.ceil(math.sqrt(len(images))), normalize=True, value_range=(-1, 1))

    def _write(self, trainer: pl.Trainer, level: int, image: torch.Tensor) -> None:
        step = trainer.lightning_module.g_updates
        publish_image(
            trainer, f"pyramid/level_{level}", image, self.dirpath / f"pyramid_level{level}_step_{step:07d}.png"
        )


@torch.no_grad()
def sample_stages(module, noise: torch.Tensor, labels):
    """The sampling generator's per-level stages (eval mode), as float CPU tensors."""
    y = None if labels is None else labels.to(module.device)
    with eval_mode(module.sampling_generator) as network:
        stages = network.stages(noise.to(module.device), y)
    return [type(s)(*(None if t is None else t.float().cpu() for t in s)) for s in stages]


def _signed(residual: torch.Tensor) -> torch.Tensor:
    """Residuals scaled into [-1, 1] by their largest magnitude (0 stays 0)."""
    return residual / residual.abs().max().clamp(min=1e-8)


def _enlarge(images: torch.Tensor, size: int) -> torch.Tensor:
    return images if images.shape[-1] == size else F.interpolate(images, size=(size, size), mode="nearest")


def _side_by_side(grids: list[torch.Tensor], gap: int = 4) -> torch.Tensor:
    """Concatenate (3, H, W) grids horizontally with a white gap between them."""
    spacer = torch.ones(grids[0].shape[0], grids[0].shape[1], gap)
    pieces = [grids[0]]
    for grid in grids[1:]:
        pieces += [spacer, grid]
    return torch.cat(pieces, dim=2)
