"""Datasets as LightningDataModules; configs/dataset/*.yaml name them by ``_target_``."""

from ganrun.data.base import BatchStream, GANDataModule, TensorDataModule

__all__ = ["BatchStream", "GANDataModule", "TensorDataModule"]
