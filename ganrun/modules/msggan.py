"""MSGGANModule: the GAN update with MSG-GAN's multi-scale fakes (Karnewar & Wang 2019).

The same alternating update as GANModule; only what D sees differs: G's image at
every scale (``generator.multiscale``) for fakes, and real batches, which the
multi-scale discriminator downsamples to the same scales itself. Instance noise
is added at every scale. Sampling and evaluation use G's full-resolution output.
"""
from __future__ import annotations

import torch

from ganrun.errors import ConfigError
from ganrun.modules.gan import GANModule


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

    def _instance_noise(self, x):
        if torch.is_tensor(x):
            return super()._instance_noise(x)
        return [super(MSGGANModule, self)._instance_noise(scale) for scale in x]
