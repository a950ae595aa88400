"""The game on the plane, as GAN Lab draws it (Kahng et al. 2019): 2-D data only.

At every sample grid (``callbacks.samples.every_n_steps`` G updates, and at the end)
one picture goes to TensorBoard (Images, tag ``samples/landscape``) and to
``samples/landscape_step_XXXXXXX.png``. On a square of the plane that covers the
data and G's samples:

- background: D's output as a heat map, green where D says "real", purple where it
  says "fake", with thin level lines: D(x) = sigmoid(o(x)) on a fixed [0, 1] scale
  for the logistic losses (minimax, ns), the raw output (critic value, LS or hinge
  output, f-GAN's v) on the frame's own range for the others; the colour bar at
  the bottom gives the values;
- black rings: the real density, a level line of a smoothed histogram of
  ``num_real`` fixed real examples (a ring around each mode of the ring and grid);
- red dots: G's samples from fixed noise (the trained G, not its EMA copy, in eval
  mode: the G whose update the arrows show);
- arrows: at each sample x, -grad_x of G's loss ``objective.g_loss(fake_out=D(x))``,
  i.e. where G's next update pushes that sample (terms such as InfoGAN's or MINE's
  are left out). Lengths are normalised for reading: the 90th percentile of the
  gradient norms draws ``arrow_length`` of the picture's width, larger ones are
  capped there; the caption prints the largest norm, so vanishing gradients
  (a saturated minimax G) show as short arrows and a tiny number.

It runs D on ``resolution``² points of the plane (no_grad) and once, with gradients
for the samples' positions only, on the samples; D and G are put in eval mode for
it and back in the mode they were in. Nothing here draws from torch's global RNG
(the noise has its own ``torch.Generator``) or touches a parameter or its
gradient, so a run trains bit for bit as it does without the picture. Rendering is
numpy and Pillow (core dependencies), no matplotlib. Image data: it does nothing.
Cost: about 30 ms a picture on one CPU thread (D on 64² points, 256 arrows, one PNG).
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont

from ganrun.callbacks.periodic import EveryNSteps
from ganrun.callbacks.samples import fixed_inputs
from ganrun.callbacks.timelapse import log_encoded_image
from ganrun.errors import ConfigError
from ganrun.training.sampling import eval_mode, generate

# Colours (RGB 0-255). D's map runs from purple ("fake") through white to green
# ("real"), softened so that the dots and arrows on top stay readable.
FAKE_SIDE, MIDDLE, REAL_SIDE = (172, 138, 196), (247, 247, 247), (120, 190, 120)
REAL_CONTOUR, SAMPLE_DOTS, ARROWS = (0, 0, 0), (215, 25, 28), (110, 0, 0)
LEVELS = 10  # level lines split D's range into this many bands


class Landscape(EveryNSteps):
    def __init__(
        self,
        dirpath: str,
        every_n_steps: int = 250,
        num_samples: int = 256,
        num_real: int = 2000,
        resolution: int = 64,
        size: int = 512,
        arrow_length: float = 0.06,
        seed: int = 1234,
    ) -> None:
        for name, value, low in (
            ("num_samples", num_samples, 1),
            ("num_real", num_real, 1),
            ("resolution", resolution, 2),
            ("size", size, 128),
        ):
            if not (isinstance(value, int) and value >= low):
                raise ConfigError(f"callbacks.landscape.{name}={value} is not valid; it must be an integer >= {low}")
        if not 0.0 < arrow_length <= 0.5:
            raise ConfigError(f"callbacks.landscape.arrow_length={arrow_length} is not valid; it must be in (0, 0.5]")
        self.dirpath = Path(dirpath)
        super().__init__(every_n_steps)
        self.num_samples, self.num_real, self.seed = num_samples, num_real, seed
        self.resolution, self.size, self.arrow_length = resolution, size, arrow_length
        self.active = False

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        datamodule = trainer.datamodule
        self.active = not datamodule.is_image and tuple(datamodule.data_shape) == (2,) and not module.num_classes
        if not self.active:
            return
        self.noise, _ = fixed_inputs(module, self.num_samples, torch.Generator().manual_seed(self.seed))
        self.real = datamodule.real_examples(self.num_real).float()

    def draw(self, trainer: pl.Trainer, module) -> None:
        if not self.active:
            return
        picture = Image.fromarray(self.picture(module))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=1)  # encoded once, for the file and TensorBoard
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"landscape_step_{module.g_updates:07d}.png").write_bytes(buffer.getvalue())
        log_encoded_image(
            trainer, "samples/landscape", buffer.getvalue(), picture.width, picture.height, module.g_updates
        )

    def picture(self, module) -> np.ndarray:
        """The picture of ``module``'s game now: (H, W, 3) uint8."""
        discriminator, objective = module.discriminator, module.objective
        samples = generate(module.generator, self.noise, None, device=module.device)
        push = generator_push(discriminator, objective, samples.to(module.device)).cpu()
        extent = plane_extent(self.real, samples)
        values = discriminator_map(discriminator, objective, plane_points(extent, self.resolution).to(module.device))
        probabilities = bool(getattr(objective, "d_outputs_are_probabilities", False))
        title = (
            f"G update {module.g_updates}   {'D(x)' if probabilities else 'D output'}: heat map;  "
            f"real: black rings;  G(z): red;  arrows: -grad_x G loss"
        )
        return render(
            values.view(self.resolution, self.resolution).numpy(),
            extent,
            self.real,
            samples,
            push,
            probabilities=probabilities,
            size=self.size,
            arrow_length=self.arrow_length,
            title=title,
        )


# ------------------------------------------------------------------ D and G's loss on the plane
def generator_push(discriminator, objective, points: torch.Tensor) -> torch.Tensor:
    """-grad_x of G's loss at each point (N, 2): where G's update moves a sample there.

    ``g_loss`` is a batch mean, so the gradient of one sample's own loss term is N
    times its share of the mean's gradient. Only ``points`` gets a gradient
    (``torch.autograd.grad`` leaves D's ``.grad`` alone); D runs in eval mode."""
    x = points.detach().float().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(discriminator):
        loss = objective.g_loss(fake_out=discriminator(x, None).float())
        (grad,) = torch.autograd.grad(loss, x)
    return -grad.detach() * len(x)


@torch.no_grad()
def discriminator_map(discriminator, objective, points: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """D's output at each point (N,) on the CPU: D(x) = sigmoid(o) for logistic losses, else raw."""
    probabilities = bool(getattr(objective, "d_outputs_are_probabilities", False))
    out = []
    with eval_mode(discriminator):
        for start in range(0, len(points), batch_size):
            raw = discriminator(points[start : start + batch_size], None).float()
            out.append((torch.sigmoid(raw) if probabilities else raw).cpu())
    return torch.cat(out)


def plane_extent(real: torch.Tensor, samples: torch.Tensor, margin: float = 0.15, max_zoom_out: float = 10.0):
    """(x0, x1, y0, y1): a square around the real points and the (finite) samples, with a
    margin; never wider than ``max_zoom_out`` times the data's own square (samples far
    beyond it, e.g. of a diverging G, fall outside the picture)."""
    real = real.float()
    samples = samples.float()[torch.isfinite(samples).all(dim=1)]
    points = torch.cat([real, samples])
    lo, hi = points.min(dim=0).values, points.max(dim=0).values
    data_lo, data_hi = real.min(dim=0).values, real.max(dim=0).values
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * (1 + margin)
    data_half = max(float((data_hi - data_lo).max()) / 2 * (1 + margin), 1e-3)
    if half > max_zoom_out * data_half:
        centre, half = (data_lo + data_hi) / 2, max_zoom_out * data_half
    half = max(half, data_half)
    cx, cy = float(centre[0]), float(centre[1])
    return cx - half, cx + half, cy - half, cy + half


def plane_points(extent, resolution: int) -> torch.Tensor:
    """The centres of a resolution x resolution grid of cells over ``extent``, row by row
    from the top (largest y) down, left to right: (resolution², 2)."""
    x0, x1, y0, y1 = extent
    xs = x0 + (torch.arange(resolution) + 0.5) * (x1 - x0) / resolution
    ys = y1 - (torch.arange(resolution) + 0.5) * (y1 - y0) / resolution
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)


# ------------------------------------------------------------------ rendering (numpy + Pillow)
def render(
    values: np.ndarray,
    extent,
    real: torch.Tensor,
    samples: torch.Tensor,
    push: torch.Tensor,
    *,
    probabilities: bool,
    size: int = 512,
    arrow_length: float = 0.06,
    title: str = "",
) -> np.ndarray:
    """The picture: a title line, the plane (size x size) and a colour bar; (H, W, 3) uint8."""
    low, high = (0.0, 1.0) if probabilities else value_range(values)
    scaled = np.nan_to_num((values - low) / max(high - low, 1e-12), nan=0.5).clip(0.0, 1.0).astype(np.float32)
    # enlarged bilinearly, then 8-bit levels and one table look-up per pixel (cheap at 512²)
    enlarged = np.asarray(Image.fromarray(scaled).resize((size, size), Image.BILINEAR))
    canvas = Image.fromarray(heat_map((enlarged * 255 + 0.5).astype(np.uint8)))
    draw = ImageDraw.Draw(canvas)
    to_pixels = pixel_mapping(extent, size)
    shown = torch.isfinite(samples).all(dim=1) & torch.isfinite(push).all(dim=1)
    samples, push = samples[shown], push[shown]
    norms = push.norm(dim=1)
    reference = float(torch.quantile(norms, 0.9)) if len(norms) else 0.0
    starts = to_pixels(samples)
    if reference > 0:  # arrows first, the samples' dots over their tails
        direction = push / norms.clamp_min(1e-30).unsqueeze(1)
        lengths = (norms / reference).clamp(max=1.0) * arrow_length * size
        for (x, y), (dx, dy), length in zip(starts, direction.tolist(), lengths.tolist()):
            if length >= 1.0:
                arrow(draw, (x, y), (x + dx * length, y - dy * length))  # pixel rows grow downwards
    for x, y in starts:
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=SAMPLE_DOTS)
    pixels = np.array(canvas)
    pixels[density_contour(real, extent, size)] = REAL_CONTOUR  # on top: the data stays visible under the samples
    largest = float(norms.max()) if len(norms) else 0.0
    footer = (
        f"x, y in [{extent[0]:.2g}, {extent[1]:.2g}] x [{extent[2]:.2g}, {extent[3]:.2g}];  "
        f"largest |grad| {largest:.2g}"
    )
    return np.asarray(frame(Image.fromarray(pixels), title, footer, low, high, probabilities))


def value_range(values: np.ndarray) -> tuple[float, float]:
    """The frame's own scale for raw outputs: their finite min and max."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low - 0.5, high + 0.5) if high - low < 1e-6 else (low, high)


def colourise(scaled: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> RGB uint8: purple (0) through white (0.5) to green (1)."""
    t = scaled[..., None]
    fake, middle, real = (np.array(c, dtype=np.float32) for c in (FAKE_SIDE, MIDDLE, REAL_SIDE))
    rgb = np.where(t < 0.5, fake + (middle - fake) * (t * 2), middle + (real - middle) * (t * 2 - 1))
    return rgb.round().astype(np.uint8)


COLOURS = colourise(np.linspace(0.0, 1.0, 256, dtype=np.float32))  # (256, 3): the 8-bit level -> colour table


def heat_map(levels: np.ndarray) -> np.ndarray:
    """8-bit levels (H, W) -> RGB (H, W, 3), darkened where a level line (one of LEVELS - 1
    evenly spaced values) passes."""
    rgb = COLOURS[levels]
    band = levels.astype(np.int32) * LEVELS // 256
    edge = np.zeros(band.shape, dtype=bool)
    edge[:, 1:] |= band[:, 1:] != band[:, :-1]
    edge[1:, :] |= band[1:, :] != band[:-1, :]
    rgb[edge] = (rgb[edge] * 0.8).astype(np.uint8)
    return rgb


def density_contour(real: torch.Tensor, extent, size: int, level: float = 0.1, bins: int = 128) -> np.ndarray:
    """(size, size) bool: a 2-pixel line where a smoothed histogram of the real points
    crosses ``level`` times its maximum (a ring around each mode of the ring and grid
    mixtures, the outline of the support for a broad density)."""
    x0, x1, y0, y1 = extent
    xy = real.detach().float().cpu().numpy()
    # rows from the top (largest y) down, columns left to right, like the picture
    counts, _, _ = np.histogram2d(y1 + y0 - xy[:, 1], xy[:, 0], bins=bins, range=[[y0, y1], [x0, x1]])
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    smooth = np.apply_along_axis(np.convolve, 0, counts, kernel, mode="same")
    smooth = np.apply_along_axis(np.convolve, 1, smooth, kernel, mode="same").astype(np.float32)
    if smooth.max() <= 0:
        return np.zeros((size, size), dtype=bool)
    inside = np.asarray(Image.fromarray(smooth / smooth.max()).resize((size, size), Image.BILINEAR)) >= level
    edge = np.zeros_like(inside)
    edge[:, 1:] |= inside[:, 1:] != inside[:, :-1]
    edge[1:, :] |= inside[1:, :] != inside[:-1, :]
    edge[:, :-1] |= edge[:, 1:].copy()  # two pixels wide
    edge[:-1, :] |= edge[1:, :].copy()
    return edge


def pixel_mapping(extent, size: int):
    """points (N, 2) in plane coordinates -> list of (column, row) pixel positions."""
    x0, x1, y0, y1 = extent

    def to_pixels(points: torch.Tensor) -> list[tuple[float, float]]:
        xy = points.detach().float().cpu()
        cols = (xy[:, 0] - x0) / (x1 - x0) * size
        rows = (y1 - xy[:, 1]) / (y1 - y0) * size
        # far outside the picture: clamped (Pillow clips what is drawn off the canvas)
        return list(zip(cols.clamp(-size, 2 * size).tolist(), rows.clamp(-size, 2 * size).tolist()))

    return to_pixels


def arrow(draw: ImageDraw.ImageDraw, start, end, head: float = 5.0) -> None:
    """A line from ``start`` to ``end`` with a filled head at ``end`` (pixel coordinates)."""
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    head = min(head, length)
    base_x, base_y = x1 - ux * head, y1 - uy * head
    draw.line([(x0, y0), (base_x, base_y)], fill=ARROWS, width=1)
    draw.polygon(
        [
            (x1, y1),
            (base_x - uy * head * 0.5, base_y + ux * head * 0.5),
            (base_x + uy * head * 0.5, base_y - ux * head * 0.5),
        ],
        fill=ARROWS,
    )


def frame(plane: Image.Image, title: str, footer: str, low: float, high: float, probabilities: bool) -> Image.Image:
    """The plane between a title line and a colour bar with its end values and ``footer``."""
    size = plane.width
    font = _font()
    out = Image.new("RGB", (size, size + 58), (255, 255, 255))
    out.paste(plane, (0, 20))
    draw = ImageDraw.Draw(out)
    draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    bar_width, top = size // 3, size + 26
    bar = colourise(np.tile(np.linspace(0.0, 1.0, bar_width, dtype=np.float32), (10, 1)))
    out.paste(Image.fromarray(bar), (40, top))
    draw.rectangle([39, top - 1, 40 + bar_width, top + 10], outline=(120, 120, 120))
    name = "D(x)" if probabilities else "D"
    draw.text((4, top - 1), f"{low:.3g}", fill=(0, 0, 0), font=font)
    draw.text((46 + bar_width, top - 1), f"{high:.3g}  {name}: fake <-> real", fill=(0, 0, 0), font=font)
    draw.text((4, top + 15), footer, fill=(0, 0, 0), font=font)
    return out


@functools.lru_cache(maxsize=None)
def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()
