"""Latent traversals for InfoGAN: what each code controls, to TensorBoard and PNG.

- ``traversal/categorical_i``: one row per category of code i; column j keeps the
  same z (and other codes) in every row, so a row shows one category across noise.
- ``traversal/continuous_i``: code i goes from -2 to 2 along each row (beyond the
  training range U(-1, 1), as in the paper's figures); each row keeps one z, with
  the first categorical code set to the row's index (one digit type per row on
  MNIST) and the other continuous codes at 0.

The same z is used at every step, so grids show how the codes' meanings form.
PNGs go to ``samples/traversal_<kind>_<i>_step_<step>.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid

from ganrun.callbacks.periodic import EveryNSteps, publish_image
from ganrun.callbacks.samples import generate
from ganrun.errors import ConfigError


class LatentTraversal(EveryNSteps):
    def __init__(
        self,
        dirpath: str,
        every_n_steps: int = 500,
        num_columns: int = 10,
        num_rows: int = 10,
        max_value: float = 2.0,
        seed: int = 4321,
    ) -> None:
        self.dirpath = Path(dirpath)
        super().__init__(every_n_steps)
        self.num_columns, self.num_rows = num_columns, num_rows
        self.max_value = max_value
        self.seed = seed

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        if not hasattr(module.latent, "join"):
            raise ConfigError(
                "callbacks.traversal (LatentTraversal) needs a latent with codes: use model=infogan "
                f"(this model's latent is {type(module.latent).__name__})"
            )
        # Fixed draws: z, categorical and continuous values to hold constant.
        n = max(self.num_columns, self.num_rows)
        self.fixed = module.latent.split(module.latent.sample(n, generator=torch.Generator().manual_seed(self.seed)))

    def draw(self, trainer: pl.Trainer, module) -> None:
        for index, latents in enumerate(categorical_traversals(module.latent, self.fixed, self.num_columns)):
            self._write(trainer, module, f"categorical_{index}", latents, self.num_columns)
        values = torch.linspace(-self.max_value, self.max_value, self.num_columns)
        for index, latents in enumerate(continuous_traversals(module.latent, self.fixed, self.num_rows, values)):
            self._write(trainer, module, f"continuous_{index}", latents, len(values))

    def _write(self, trainer: pl.Trainer, module, name: str, latents: torch.Tensor, per_row: int) -> None:
        # Conditional InfoGAN variants get class 0 throughout: the codes are what varies.
        labels = torch.zeros(len(latents), dtype=torch.long) if module.num_classes else None
        images = generate(module, latents, labels)
        grid = make_grid(images, nrow=per_row, normalize=True, value_range=(-1, 1))
        publish_image(
            trainer, f"traversal/{name}", grid, self.dirpath / f"traversal_{name}_step_{module.g_updates:07d}.png"
        )


def categorical_traversals(latent, fixed, num_columns: int) -> list[torch.Tensor]:
    """For each categorical code: (k * num_columns, dim) latents, row r = category r."""
    z, categories, continuous = (part[:num_columns] for part in fixed)
    out = []
    for index, k in enumerate(latent.categorical):
        rows = []
        for category in range(k):
            chosen = categories.clone()
            chosen[:, index] = category
            rows.append(latent.join(z, chosen, continuous))
        out.append(torch.cat(rows))
    return out


def continuous_traversals(latent, fixed, num_rows: int, values: torch.Tensor) -> list[torch.Tensor]:
    """For each continuous code: (num_rows * len(values), dim) latents; each row one z, code swept along it."""
    z, categories, _ = (part[:num_rows] for part in fixed)
    if latent.categorical:
        categories = categories.clone()
        categories[:, 0] = torch.arange(num_rows) % latent.categorical[0]
    # Row-major: row r holds z[r] at every value.
    z = z.repeat_interleave(len(values), dim=0)
    categories = categories.repeat_interleave(len(values), dim=0)
    out = []
    for index in range(latent.continuous):
        continuous = torch.zeros(len(z), latent.continuous)
        continuous[:, index] = values.repeat(num_rows)
        out.append(latent.join(z, categories, continuous))
    return out
