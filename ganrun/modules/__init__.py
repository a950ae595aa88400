"""Training modules (LightningModules) that own the alternating update.

- ``gan.GANModule``: Goodfellow et al.'s Algorithm 1 (D steps, then a G step), with
  the terms of ``ganrun.terms`` and the tricks (EMA, instance noise, clipping);
- ``infogan.InfoGANModule``: plus the mutual-information bound for G and Q;
- ``lapgan.LAPGANModule``: the same update at every level of a Laplacian pyramid.

The old paths ``ganrun.module``, ``ganrun.infogan`` and ``ganrun.lapgan`` still import
(configs saved in older checkpoints name them).
"""
