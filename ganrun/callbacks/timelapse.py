"""``samples/timelapse.gif``: the run's fixed-noise sample grids as one animated GIF.

At the end of training (also a run stopped early: by ``steps=``, a signal, the
divergence guard, an error) the grids on disk that match ``frames`` (default
``step_*.png``, SampleGrid's files) become the GIF's frames in order of their G
update, each captioned with it (``caption``); a resumed run's GIF therefore also
holds the grids its earlier part wrote. Grids smaller than ``min_size`` pixels
(e.g. of 8x8 images) are enlarged by a whole factor; past ``max_frames`` grids an
even selection is kept (the first and the last always). ``callbacks.landscape_timelapse``
makes ``samples/landscape.gif`` of the 2-D landscape pictures the same way.

The GIF is also logged to TensorBoard (Images tab, tag ``samples/timelapse``):
TensorBoard shows an image summary's encoded bytes as they are, and browsers play
an animated GIF, so the same file plays there (``SummaryWriter.add_video`` writes
such a summary too, but needs moviepy to encode it). Pillow only (a core dependency).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from PIL import Image, ImageDraw
from pytorch_lightning.loggers import TensorBoardLogger

from ganrun.errors import ConfigError

STEP = re.compile(r"(\d+)\.png$")


class Timelapse(pl.Callback):
    def __init__(
        self,
        dirpath: str,
        frames: str = "step_*.png",
        filename: str = "timelapse.gif",
        tag: str = "samples/timelapse",
        frame_ms: int = 250,
        last_frame_ms: int = 1500,
        max_frames: int = 200,
        min_size: int = 256,
        caption: bool = True,
    ) -> None:
        if not (isinstance(max_frames, int) and max_frames >= 2):
            raise ConfigError(f"callbacks.timelapse.max_frames={max_frames} is not valid; it must be an integer >= 2")
        for name, value in (("frame_ms", frame_ms), ("last_frame_ms", last_frame_ms)):
            if not (isinstance(value, int) and value >= 10):
                raise ConfigError(
                    f"callbacks.timelapse.{name}={value} is not valid; it must be a whole number of ms >= 10"
                )
        self.dirpath, self.frames, self.filename, self.tag = Path(dirpath), frames, filename, tag
        self.frame_ms, self.last_frame_ms = frame_ms, last_frame_ms
        self.max_frames, self.min_size, self.caption = max_frames, min_size, caption
        self.written: Optional[Path] = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def on_fit_end(self, trainer: pl.Trainer, module) -> None:
        # After every callback's on_train_end, so the final grid is on disk.
        if trainer.is_global_zero:
            self.write(trainer, module.g_updates)

    def on_exception(self, trainer: pl.Trainer, module, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        try:  # the run's own error is the one to report
            self.write(trainer, module.g_updates)
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"{self.path} not written after the run's error: {error}")

    def write(self, trainer: Optional[pl.Trainer], step: int) -> Optional[Path]:
        """Write the GIF of the grids on disk up to G update ``step`` (none: nothing) and log it
        there. (Grids of later steps are left out: a run resumed from an earlier checkpoint
        and stopped before reaching them did not make them.)"""
        found = [(at, path) for at, path in grids(self.dirpath, self.frames) if at <= step]
        paths = select(found, self.max_frames)
        if not paths:
            return None
        data, (width, height) = encode_gif(paths, self.frame_ms, self.last_frame_ms, self.min_size, self.caption)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, self.path)  # a reader never sees half a GIF
        if trainer is not None:
            log_encoded_image(trainer, self.tag, data, width, height, step)
        self.written = self.path
        return self.path


def grids(dirpath: Path, pattern: str) -> list[tuple[int, Path]]:
    """(G update, path) of the files matching ``pattern`` whose name ends in a step number, in step order."""
    found = []
    for path in dirpath.glob(pattern):
        match = STEP.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def select(frames: list, max_frames: int) -> list:
    """At most ``max_frames`` of ``frames``, evenly spread, the first and the last included."""
    if len(frames) <= max_frames:
        return frames
    last = len(frames) - 1
    return [frames[round(i * last / (max_frames - 1))] for i in range(max_frames)]


def encode_gif(
    frames: list[tuple[int, Path]], frame_ms: int, last_frame_ms: int, min_size: int, caption: bool = True
) -> tuple[bytes, tuple[int, int]]:
    """The frames as an endlessly looping GIF, each captioned with its G update unless
    ``caption`` is false (frames that show it already); (bytes, (width, height))."""
    images = []
    size = None
    for step, path in frames:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        if size is None:  # every frame takes the first one's size (a resumed run's grids match anyway)
            factor = max(1, -(-min_size // max(1, min(image.size))))
            size = (image.width * factor, image.height * factor)
        image = image.resize(size, Image.NEAREST) if image.size != size else image
        image = captioned(image, f"G update {step}") if caption else image
        # Each frame's own 256 colours, without dithering: 4x faster and 3x smaller than
        # Pillow's default on smooth heat maps, and as good on the grids' few colours.
        images.append(image.quantize(method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE))
    durations = [frame_ms] * (len(images) - 1) + [last_frame_ms]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buffer.getvalue(), images[0].size


def captioned(image: Image.Image, text: str) -> Image.Image:
    """``image`` above a white strip with ``text``."""
    out = Image.new("RGB", (image.width, image.height + 16), (255, 255, 255))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((4, image.height + 2), text, fill=(0, 0, 0))
    return out


def log_encoded_image(trainer: pl.Trainer, tag: str, data: bytes, width: int, height: int, step: int) -> None:
    """An encoded image (PNG, or a GIF, which plays) as an image summary of every TensorBoard
    logger: the bytes are stored as they are, not decoded and encoded again."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
    summary = Summary(value=[Summary.Value(tag=tag, image=image)])
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment._get_file_writer().add_summary(summary, step)  # as add_video does with moviepy's GIF
