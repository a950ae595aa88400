"""MSG-GAN (Karnewar & Wang 2019): multi-scale gradients from D to every layer of G.

G is a DCGAN-style pyramid (base x base, doubling to the image size) with a 1x1
"to image" convolution at every scale, so it emits one image per scale. D mirrors
it and receives each scale at its matching depth: at every coarser resolution the
image of that scale is concatenated to D's feature map (the paper's "simple cat"
combine function). Gradients from D thus reach G's intermediate layers directly.

Interface on top of the common one (ganrun/models/common.py):
- ``MSGGenerator(z) -> (N, C, S, S)``: the full-resolution image (sample grids,
  evaluation, ganrun-sample); ``MSGGenerator.multiscale(z)`` -> every scale, coarse
  to fine, which ``MSGGANModule`` feeds to D in training.
- ``MSGDiscriminator(x)`` accepts that list, or a full-resolution batch, which it
  downsamples to the same scales by 2x2 average pooling (how real images enter).
Sizes: ``image_size`` = base * 2^k as for DCGAN (8, 16, 28, 32, 64, 128).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from ganrun.models.common import check_norm, init_dcgan_weights, norm_2d, one_hot
from ganrun.models.dcgan import pyramid
from ganrun.models.minibatch import MinibatchDiscrimination

Scales = Union[torch.Tensor, Sequence[torch.Tensor]]


def image_pyramid(images: torch.Tensor, num_scales: int) -> list[torch.Tensor]:
    """(N, C, S, S) -> [S / 2^(num_scales-1), ..., S / 2, S] by repeated 2x2 average pooling."""
    scales = [images]
    for _ in range(num_scales - 1):
        scales.append(F.avg_pool2d(scales[-1], 2))
    return scales[::-1]


class MSGGenerator(nn.Module):
    """z (N, z_dim) [+ one-hot label] -> an image at every scale of the pyramid."""

    def __init__(
        self,
        *,
        z_dim: int,
        data_shape: Sequence[int],
        num_classes: int = 0,
        bounded_output: bool = True,
        width: int = 32,
    ) -> None:
        super().__init__()
        base, doublings = pyramid(data_shape)
        self.num_classes, self.num_scales = num_classes, doublings + 1
        widths = [width * 2 ** max(doublings - 1 - k, 0) for k in range(doublings + 1)]  # coarse -> fine
        blocks = [self._block(nn.ConvTranspose2d(z_dim + num_classes, widths[0], base, 1, 0, bias=False), widths[0])]
        for k in range(1, doublings + 1):
            blocks.append(self._block(nn.ConvTranspose2d(widths[k - 1], widths[k], 4, 2, 1, bias=False), widths[k]))
        self.blocks = nn.ModuleList(blocks)
        output = nn.Tanh() if bounded_output else nn.Identity()
        self.to_image = nn.ModuleList(nn.Sequential(nn.Conv2d(w, data_shape[0], 1), output) for w in widths)
        self.apply(init_dcgan_weights)

    @staticmethod
    def _block(convolution: nn.Module, channels: int) -> nn.Module:
        return nn.Sequential(convolution, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def _features(self, z: torch.Tensor, labels: Optional[torch.Tensor]):
        condition = one_hot(labels, self.num_classes, z)
        h = (torch.cat([z, condition], dim=1) if condition is not None else z)[:, :, None, None]
        for block in self.blocks:
            h = block(h)
            yield h

    def multiscale(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Images at every scale, coarse to fine: [(N, C, base, base), ..., (N, C, S, S)]."""
        return [to_image(h) for to_image, h in zip(self.to_image, self._features(z, labels))]

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        *_, h = self._features(z, labels)
        return self.to_image[-1](h)


class MSGDiscriminator(nn.Module):
    """Scales coarse to fine (or a full-resolution batch) -> (N,) raw outputs."""

    def __init__(
        self,
        *,
        data_shape: Sequence[int],
        num_classes: int = 0,
        width: int = 32,
        norm: str = "batch",
        minibatch_discrimination: bool = False,
    ) -> None:
        super().__init__()
        check_norm(norm)
        base, doublings = pyramid(data_shape)
        channels = data_shape[0]
        self.num_classes, self.num_scales = num_classes, doublings + 1
        widths = [width * 2 ** (doublings - k) for k in range(doublings + 1)]  # coarse -> fine
        self.from_image = nn.Sequential(
            nn.Conv2d(channels + num_classes, widths[-1], 1), nn.LeakyReLU(0.2, inplace=True)
        )
        # Down block k: scale k+1 (features, plus that scale's image below full size) -> scale k.
        self.down = nn.ModuleList()
        for k in reversed(range(doublings)):
            extra = channels if k + 1 < doublings else 0
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(widths[k + 1] + extra, widths[k], 4, 2, 1, bias=norm == "none"),
                    norm_2d(norm, widths[k]),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
        last = widths[0] + channels
        self.feature_dim = last * base * base
        if minibatch_discrimination:
            minibatch = MinibatchDiscrimination(self.feature_dim)
            self.head = nn.Sequential(minibatch, nn.Linear(minibatch.out_features, 1), nn.Flatten(0))
        else:
            self.head = nn.Sequential(nn.Unflatten(1, (last, base, base)), nn.Conv2d(last, 1, base), nn.Flatten(0))
        self.apply(init_dcgan_weights)

    def features(self, x: Scales, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        scales = image_pyramid(x, self.num_scales) if torch.is_tensor(x) else list(x)
        if len(scales) != self.num_scales:
            raise ValueError(f"MSGDiscriminator expects {self.num_scales} scales, got {len(scales)}")
        full = scales[-1]
        condition = one_hot(labels, self.num_classes, full)
        if condition is not None:
            full = torch.cat([full, condition[:, :, None, None].expand(-1, -1, *full.shape[-2:])], dim=1)
        h = self.from_image(full)
        for block, image in zip(self.down, reversed(scales[:-1])):
            h = torch.cat([block(h), image], dim=1)  # the "simple cat" combine
        return h.flatten(1)

    def forward(self, x: Scales, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.features(x, labels))
