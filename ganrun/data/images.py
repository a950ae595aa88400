"""Image datasets: scikit-learn digits, MNIST, Fashion-MNIST, CIFAR-10, fake images.

Each loads its whole training split as a uint8 tensor once; ``TensorDataModule``
resizes it to ``image_size`` and serves batches scaled to [-1, 1].
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ganrun.data.base import TensorDataModule


class DigitsDataModule(TensorDataModule):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): no download."""

    num_classes = 10

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are 0..16.
        images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0))).to(torch.uint8)
        return images.unsqueeze(1), torch.from_numpy(digits.target).long()


class DownloadedDataModule(TensorDataModule):
    """A torchvision dataset of fixed-size images, resized to ``image_size`` when set:
    its shape is known without reading its files."""

    native_shape: tuple[int, int, int]

    def __init__(self, *, root: str = "data", download: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = str(Path(root).expanduser())
        self.download = download

    def _download(self, fetch: Callable[[], object]) -> Optional[str]:
        """Run ``fetch`` (a torchvision download); None when it worked, else why not in one
        line, with the empty folders it created removed (a failed download leaves nothing)."""
        root = Path(self.root)
        existed = {path for path in [root, *root.rglob("*")] if path.is_dir()}
        try:
            fetch()
            return None
        except Exception as error:  # offline: URLError, socket errors, bad mirrors
            lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
            for path in sorted((p for p in [root, *root.rglob("*")] if p.is_dir()), reverse=True):
                if path not in existed and not any(path.iterdir()):
                    path.rmdir()
            return f"download failed: {lines[0]}" + (f" ... {lines[-1]}" if len(lines) > 1 else "")

    def prepare_shape(self) -> None:
        channels, height, width = self.native_shape
        if self.image_size is not None:
            height = width = self.image_size
        self.data_shape = (channels, height, width)


class MNISTDataModule(DownloadedDataModule):
    """MNIST through torchvision: downloaded into ``root`` when online and absent."""

    num_classes = 10
    torchvision_name = "MNIST"
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    native_shape = (1, 28, 28)

    def prepare_data(self) -> None:
        self._open(download=self.download)

    def _open(self, download: bool):
        import torchvision.datasets as tvd

        dataset_class = getattr(tvd, self.torchvision_name)
        try:
            return dataset_class(self.root, train=True, download=False)
        except RuntimeError:
            if not download:
                raise self._missing(reason="download=false") from None
        failure = self._download(lambda: dataset_class(self.root, train=True, download=True))
        if failure:
            raise self._missing(reason=failure)
        return dataset_class(self.root, train=True, download=False)

    def _missing(self, reason: str) -> FileNotFoundError:
        folder = Path(self.root) / self.torchvision_name / "raw"
        return FileNotFoundError(
            f"{self.torchvision_name} not found in {folder} ({reason}); expected files: "
            f"{', '.join(self.files)} (IDX format, optionally .gz) — set dataset.root=DIR"
        )

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self._open(download=False)
        return dataset.data.unsqueeze(1).to(torch.uint8), dataset.targets.long()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Xiao et al. 2017), same format as MNIST."""

    torchvision_name = "FashionMNIST"


class CIFAR10DataModule(DownloadedDataModule):
    """CIFAR-10 training split (50,000 32x32 RGB images) from the python pickles.

    torchvision downloads the archive when files are absent; the pickles are read
    here directly so that any well-formed copy loads (no checksum requirement).
    """

    num_classes = 10
    folder = "cifar-10-batches-py"
    files = tuple(f"data_batch_{i}" for i in range(1, 6))
    native_shape = (3, 32, 32)

    def _paths(self) -> list[Path]:
        return [Path(self.root) / self.folder / name for name in self.files]

    def prepare_data(self) -> None:
        if all(path.is_file() for path in self._paths()):
            return
        missing = FileNotFoundError(
            f"CIFAR-10 not found in {Path(self.root) / self.folder}; expected files: "
            f"{', '.join(self.files)} (python pickles) — set dataset.root=DIR"
        )
        if not self.download:
            raise missing
        import torchvision.datasets as tvd

        failure = self._download(lambda: tvd.CIFAR10(self.root, train=True, download=True))
        if failure:
            raise FileNotFoundError(f"{missing} ({failure})")

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare_data()
        images, labels = [], []
        for path in self._paths():
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch[b"labels"])
        return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


class FakeDataModule(TensorDataModule):
    """Random images with random labels: a stand-in for benchmarks and smoke tests."""

    def __init__(self, *, size: int = 1024, channels: int = 3, num_classes: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size, self.channels, self.num_classes = size, channels, num_classes

    def load(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        side = self.image_size or 32
        images = torch.randint(0, 256, (self.size, self.channels, side, side), generator=generator, dtype=torch.uint8)
        labels = torch.randint(0, self.num_classes, (self.size,), generator=generator) if self.num_classes else None
        return images, labels
