"""Any folder of images, optionally one subfolder per class."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganrun.data.base import TensorDataModule
from ganrun.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageFolderDataModule(TensorDataModule):
    """Images under ``path`` (searched recursively), center-cropped square and resized.

    If ``path`` holds subfolders, each subfolder is a class (sorted by name), so
    conditional models can use it; loose files at the top level then raise.
    Unreadable files are skipped with a warning (``on_bad_file=skip``) or stop the
    run naming the file (``on_bad_file=fail``).
    """

    def __init__(self, *, path: Optional[str] = None, channels: int = 3, on_bad_file: str = "skip", **kwargs) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ConfigError(f"dataset.channels={channels} is not valid; choose 1 (grayscale) or 3 (RGB)")
        if on_bad_file not in ("skip", "fail"):
            raise ConfigError(f"dataset.on_bad_file={on_bad_file} is not valid; choose skip or fail")
        self.path, self.channels, self.on_bad_file = path, channels, on_bad_file
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
            raise FileNotFoundError(
                f"dataset.path={self.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self.num_classes = len(self.classes)

    def load(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        from PIL import Image

        size = self.image_size or 64
        mode = "L" if self.channels == 1 else "RGB"
        images, labels, bad = [], [], []
        for file, label in self.files:
            try:
                with Image.open(file) as image:
                    image = _center_square(image.convert(mode)).resize((size, size), Image.BICUBIC)
                    array = np.asarray(image, dtype=np.uint8)
            except Exception as error:
                if self.on_bad_file == "fail":
                    raise ConfigError(f"cannot read image {file}: {error}") from None
                bad.append(file)
                continue
            images.append(array.reshape(size, size, self.channels))
            labels.append(label)
        if bad:
            warnings.warn(f"skipped {len(bad)} unreadable image(s) in {self.path}, e.g. {bad[0]}")
        if not images:
            raise FileNotFoundError(f"dataset.path={self.path}: none of {len(self.files)} files could be read")
        data = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        targets = torch.tensor(labels, dtype=torch.long) if self.classes else None
        return data, targets


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _center_square(image):
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))
