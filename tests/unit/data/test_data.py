"""Datasets: real loaders on small files written here, ranges, shapes, resumable batch order."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from ganrun.data.base import BatchStream
from ganrun.data.folder import ImageFolderDataModule
from ganrun.data.images import (
    CIFAR10DataModule,
    DigitsDataModule,
    FakeDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from ganrun.data.toy import GridDataModule, RingDataModule
from ganrun.errors import ConfigError


def write_idx(folder, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def fake_mnist(root, name="MNIST", n=96):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(root / name / "raw", prefix, images, labels)
    return images, labels


def check_images(dm, shape, classes):
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_shape == shape and dm.num_classes == classes
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (dm.batch_size, *shape)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    if classes:
        assert y.dtype == torch.long and 0 <= y.min() and y.max() < classes
    return x, y


def test_digits_scaled_to_minus_one_one_and_resized():
    x, _ = check_images(DigitsDataModule(batch_size=32, image_size=32), (1, 32, 32), 10)
    assert x.min() == -1.0  # background is exactly black


@pytest.mark.parametrize("dm_class,name", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_mnist_family_reads_idx_files(tmp_path, dm_class, name):
    images, labels = fake_mnist(tmp_path, name)
    dm = dm_class(root=str(tmp_path), download=False, batch_size=16, image_size=28)
    check_images(dm, (1, 28, 28), 10)
    assert torch.equal(dm.data[:, 0], torch.from_numpy(images))
    assert torch.equal(dm.labels, torch.from_numpy(labels).long())


def test_mnist_missing_offline_names_expected_files(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path), download=False, batch_size=16)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*train-labels-idx1-ubyte"):
        dm.prepare_data()


def test_cifar10_reads_python_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump(batch, handle)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=25, image_size=32)
    check_images(dm, (3, 32, 32), 10)
    assert len(dm.data) == 100


def test_cifar10_missing_offline_names_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.*data_batch_5"):
        CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=8).prepare_data()


def write_images(folder, n, size=(40, 30), mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")


def test_folder_with_class_subfolders_is_labelled_and_square(tmp_path):
    write_images(tmp_path / "cats", 6)
    write_images(tmp_path / "dogs", 6, mode="L")  # grayscale mixed in: converted to RGB
    dm = ImageFolderDataModule(path=str(tmp_path), batch_size=4, image_size=16)
    x, y = check_images(dm, (3, 16, 16), 2)
    assert dm.classes == ["cats", "dogs"]


def test_folder_flat_is_unlabelled_and_skips_corrupt_files(tmp_path):
    write_images(tmp_path, 5)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    dm = ImageFolderDataModule(path=str(tmp_path), batch_size=5, image_size=8, channels=1)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        dm.setup("fit")
    assert dm.num_classes == 0 and dm.data.shape == (5, 1, 8, 8) and dm.labels is None


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ImageFolderDataModule(path=str(tmp_path / "missing"), batch_size=4)
    with pytest.raises(FileNotFoundError, match="holds no images"):
        ImageFolderDataModule(path=str(tmp_path), batch_size=4)
    write_images(tmp_path, 2)
    (tmp_path / "bad.png").write_bytes(b"junk")
    dm = ImageFolderDataModule(path=str(tmp_path), batch_size=1, on_bad_file="fail")
    with pytest.raises(ConfigError, match="bad.png"):
        dm.setup()


@pytest.mark.parametrize("dm_class,num_modes,std", [(RingDataModule, 8, 0.02), (GridDataModule, 25, 0.05)])
def test_toy_mixtures_match_the_contract(dm_class, num_modes, std):
    dm = dm_class(batch_size=512, batches_per_epoch=4)
    dm.setup("fit")
    assert len(dm.modes) == num_modes and dm.std == std and dm.data_shape == (2,)
    batches = [x for x, y in dm.train_dataloader()]
    assert len(batches) == 4
    x = torch.cat(batches)
    nearest = torch.cdist(x, dm.modes).min(dim=1)
    assert (nearest.values < 5 * std).all()  # P(r > 5 std) = exp(-12.5) for a 2-D Gaussian
    assert len(nearest.indices.unique()) == num_modes
    # residuals have the configured spread
    assert abs((x - dm.modes[nearest.indices]).std().item() - std) < 0.2 * std


def test_ring_and_grid_geometry():
    ring = RingDataModule(batch_size=8)
    assert torch.allclose(ring.modes.norm(dim=1), torch.full((8,), 2.0))
    grid = GridDataModule(batch_size=8)
    assert sorted(set(grid.modes[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


def test_fake_data_is_deterministic():
    a, b = FakeDataModule(batch_size=8, image_size=16, seed=3), FakeDataModule(batch_size=8, image_size=16, seed=3)
    a.setup(), b.setup()
    assert torch.equal(a.data, b.data) and a.data.shape == (1024, 3, 16, 16)


def test_batch_order_resumes_mid_epoch_exactly():
    dm = DigitsDataModule(batch_size=100, image_size=8, seed=7)
    dm.setup()
    per_epoch = len(dm.train_dataloader())
    uninterrupted = [dm.make_batch(i)[0] for i in range(2 * per_epoch)]
    # A stream resumed after 5 batches yields the rest of epoch 0, then epoch 1 in full.
    consumed = 5
    stream = BatchStream(dm.make_batch, per_epoch, start=lambda: consumed)
    rest = [x for x, _ in stream]
    assert len(rest) == per_epoch - 5
    assert all(torch.equal(a, b) for a, b in zip(rest, uninterrupted[5:per_epoch]))
    consumed = per_epoch
    assert all(torch.equal(a, b) for (a, _), b in zip(stream, uninterrupted[per_epoch:]))
    # epochs differ in order
    assert not torch.equal(uninterrupted[0], uninterrupted[per_epoch])


def test_ranks_get_disjoint_shards():
    dm = DigitsDataModule(batch_size=10, image_size=8)
    dm.setup()
    seen = []
    for rank in range(2):
        dm.rank, dm.world_size, dm._permutations = rank, 2, {}
        seen.append(torch.cat([dm.make_batch(i)[0] for i in range(len(dm.data) // 2 // 10)]))
    flat = [x.flatten(1) for x in seen]
    # no example (as a row of pixels) appears on both ranks more than duplicates in the data allow
    shared = (torch.cdist(flat[0], flat[1]) == 0).any(dim=1).float().mean()
    assert shared < 0.05


def test_folder_small_images_upscale_with_a_warning_skip_or_fail(tmp_path):
    write_images(tmp_path, 3, size=(40, 30))
    write_images(tmp_path / "tiny", 2, size=(8, 8))
    with pytest.warns(
        UserWarning, match=r"2 image\(s\) .* smaller than dataset.image_size=16, e.g. .*tiny.* \(8x8\): upscaled"
    ):
        dm = ImageFolderDataModule(path=str(tmp_path / "tiny"), batch_size=1, image_size=16)
        dm.setup()
    assert dm.data.shape == (2, 3, 16, 16)
    flat = tmp_path / "flat"
    write_images(flat, 3, size=(40, 30))
    Image.new("RGB", (8, 8)).save(flat / "small.png")
    with pytest.warns(UserWarning, match="left out"):
        dm = ImageFolderDataModule(path=str(flat), batch_size=1, image_size=16, on_small_image="skip")
        dm.setup()
    assert len(dm.data) == 3
    dm = ImageFolderDataModule(path=str(flat), batch_size=1, image_size=16, on_small_image="fail")
    with pytest.raises(ConfigError, match=r"small.png is 8x8, smaller than dataset.image_size=16"):
        dm.setup()
    with pytest.raises(ConfigError, match="on_small_image=shrink is not valid; choose upscale, skip or fail"):
        ImageFolderDataModule(path=str(flat), batch_size=1, on_small_image="shrink")


def test_folder_grayscale_rgb_mix_is_converted_and_counted(tmp_path):
    mixed, gray = tmp_path / "mixed", tmp_path / "gray"
    write_images(mixed, 2)
    Image.new("RGBA", (40, 30)).save(mixed / "alpha.png")
    for i in range(2):
        Image.new("L", (40, 30), color=40 * i).save(mixed / f"gray{i}.png")
    dm = ImageFolderDataModule(path=str(mixed), batch_size=1, image_size=8, channels=1)
    with pytest.warns(UserWarning, match=r"converted 3 of 5 image\(s\) .* to grayscale \(dataset.channels=1\)"):
        dm.setup()
    assert dm.data.shape == (5, 1, 8, 8)
    write_images(gray, 3, mode="L")
    only_gray = ImageFolderDataModule(path=str(gray), batch_size=1, image_size=8)
    with pytest.warns(UserWarning, match="converted 3 of 3 .* to RGB .*all were: set dataset.channels=1"):
        only_gray.setup()
    assert only_gray.data.shape == (3, 3, 8, 8)


def test_folder_truncated_images_are_counted_or_named(tmp_path):
    write_images(tmp_path, 3)
    whole = (tmp_path / "0.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    dm = ImageFolderDataModule(path=str(tmp_path), batch_size=1, image_size=8)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) .*cut.png"):
        dm.setup()
    assert len(dm.data) == 3
    with pytest.raises(ConfigError, match="cannot read image .*cut.png"):
        ImageFolderDataModule(path=str(tmp_path), batch_size=1, image_size=8, on_bad_file="fail").setup()
    for name in ("0.png", "1.png", "2.png"):
        (tmp_path / name).write_bytes(b"junk")
    with pytest.raises(FileNotFoundError, match=r"none of 4 files could be used \(4 unreadable"):
        ImageFolderDataModule(path=str(tmp_path), batch_size=1, image_size=8).setup()
