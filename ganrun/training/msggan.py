"""MSGGANModule: the GAN update with MSG-GAN's multi-scale inputs (Karnewar & Wang 2019).

The same alternating update as GANModule; only what D sees differs: G's image at
every scale (``generator.multiscale``) for fakes, and for real batches the same
scales made by average pooling (``image_pyramid``), before anything is added to
them. Instance noise is then added at every scale of both with the same std, so D
cannot tell real from fake by the noise level (pooling noise first would divide its
std by 2 per scale on the real side only). Sampling and evaluation use G's
full-resolution output.
"""

from __future__ import annotations

import torch

from ganrun.errors import ConfigError
from ganrun.models.msggan import image_pyramid
from ganrun.training.module import GANModule


class MSGGANModule(GANModule):
    def __init__(self, *args, **kwargs) -> None:
        if any(term.double_backward for term in kwargs.get("terms", ())):
            raise ConfigError(
                "model=msggan does not support gradient penalties (loss=wgan_gp, term=r1): its critic reads "
                "several scales; use loss=ns, hinge, ls or wgan"
            )
        super().__init__(*args, **kwargs)

    def generate_for_discriminator(self, noise: torch.Tensor, labels) -> list[torch.Tensor]:
        return self.generator.multiscale(noise, labels)

    def real_for_discriminator(self, real: torch.Tensor) -> list[torch.Tensor]:
        return image_pyramid(real, self.discriminator.num_scales)
