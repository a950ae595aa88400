"""Any folder of images, optionally one subfolder per class."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganrun.data.base import TensorDataModule
from ganrun.errors import ConfigError

DEFAULT_SIZE = 64  # pixels, when dataset.image_size is null
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageFolderDataModule(TensorDataModule):
    """Images under ``path`` (searched recursively), center-cropped square and resized.

    If ``path`` holds subfolders, each subfolder is a class (sorted by name), so
    conditional models can use it; loose files at the top level then raise.
    Unreadable files are skipped with a warning (``on_bad_file=skip``) or stop the
    run naming the file (``on_bad_file=fail``). Images smaller than ``image_size``
    are upscaled with a warning (``on_small_image=upscale``), left out
    (``skip``) or stop the run naming the file (``fail``). Grayscale and colour
    images may be mixed: each is converted to ``channels`` (counted in a warning).
    """

    def __init__(
        self,
        *,
        path: Optional[str] = None,
        channels: int = 3,
        on_bad_file: str = "skip",
        on_small_image: str = "upscale",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ConfigError(f"dataset.channels={channels} is not valid; choose 1 (grayscale) or 3 (RGB)")
        if on_bad_file not in ("skip", "fail"):
            raise ConfigError(f"dataset.on_bad_file={on_bad_file} is not valid; choose skip or fail")
        if on_small_image not in ("upscale", "skip", "fail"):
            raise ConfigError(f"dataset.on_small_image={on_small_image} is not valid; choose upscale, skip or fail")
        self.path, self.channels, self.on_bad_file, self.on_small_image = path, channels, on_bad_file, on_small_image
        self.classes: list[str] = []
        self._scan()

    def _scan(self) -> None:
        if not self.path:
            raise ConfigError("dataset=folder needs dataset.path=DIR (a folder of images)")
        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"dataset.path={self.path} is not a directory")
        subfolders = sorted(p for p in root.iterdir() if p.is_dir() and _images_in(p))
        if subfolders:
            self.classes = [p.name for p in subfolders]
            self.files = [(f, label) for label, folder in enumerate(subfolders) for f in _images_in(folder)]
        else:
            self.files = [(f, None) for f in _images_in(root)]
        if not self.files:
            raise FileNotFoundError(f"dataset.path={self.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.num_classes = len(self.classes)

    def prepare_shape(self) -> None:
        # Every image is cropped square and resized: no need to decode them all to know the shape.
        size = self.image_size or DEFAULT_SIZE
        self.data_shape = (self.channels, size, size)

    def load(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        from PIL import Image

        size = self.image_size or DEFAULT_SIZE
        mode = "L" if self.channels == 1 else "RGB"
        images, labels, bad, small, converted = [], [], [], [], 0
        for file, label in self.files:
            try:
                with Image.open(file) as image:
                    if min(image.size) < size:
                        small.append((file, image.size))
                        if self.on_small_image == "fail":
                            raise ConfigError(
                                f"image {file} is {image.size[0]}x{image.size[1]}, smaller than dataset.image_size={size}; "
                                "lower dataset.image_size or set dataset.on_small_image=upscale or skip"
                            )
                        if self.on_small_image == "skip":
                            continue
                    converted += _channels(image.mode) != self.channels
                    image = _center_square(image.convert(mode)).resize((size, size), Image.BICUBIC)
                    array = np.asarray(image, dtype=np.uint8)
            except ConfigError:
                raise
            except Exception as error:
                if self.on_bad_file == "fail":
                    raise ConfigError(f"cannot read image {file}: {error}") from None
                bad.append(file)
                continue
            images.append(array.reshape(size, size, self.channels))
            labels.append(label)
        self._report(bad, small, converted, len(images), size)
        if not images:
            raise FileNotFoundError(
                f"dataset.path={self.path}: none of {len(self.files)} files could be used "
                f"({len(bad)} unreadable, {len(small)} smaller than {size}x{size})"
            )
        data = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        targets = torch.tensor(labels, dtype=torch.long) if self.classes else None
        return data, targets

    def _report(self, bad: list, small: list, converted: int, kept: int, size: int) -> None:
        """One warning per kind of problem, with a count and an example file."""
        if bad:
            warnings.warn(
                f"skipped {len(bad)} unreadable image(s) in {self.path}, e.g. {bad[0]} (dataset.on_bad_file=fail stops instead)"
            )
        if small:
            (file, (width, height)), done = (
                small[0],
                "left out" if self.on_small_image == "skip" else "upscaled (blurry)",
            )
            warnings.warn(
                f"{len(small)} image(s) in {self.path} are smaller than dataset.image_size={size}, e.g. {file} "
                f"({width}x{height}): {done}; lower dataset.image_size or set dataset.on_small_image=skip or fail"
            )
        if converted:
            target = "grayscale" if self.channels == 1 else "RGB"
            hint = (
                "; all were: set dataset.channels=1 for grayscale data"
                if self.channels == 3 and converted == kept
                else ""
            )
            warnings.warn(
                f"converted {converted} of {kept} image(s) in {self.path} to {target} (dataset.channels={self.channels}){hint}"
            )


def _channels(pil_mode: str) -> int:
    """Channels of a PIL mode once its alpha or palette is dropped: 1 (L, 1, I, F) or 3."""
    return 1 if pil_mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _center_square(image):
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))
