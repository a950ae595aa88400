"""Training modules (LightningModules) that own the alternating update.

- ``module.GANModule``: Goodfellow et al.'s Algorithm 1 (D steps, then a G step), with
  the terms of ``ganrun.objectives.terms`` and the tricks (EMA, instance noise, clipping);
- ``infogan.InfoGANModule``: plus the mutual-information bound for G and Q;
- ``lapgan.LAPGANModule``: the same update at every level of a Laplacian pyramid;
- ``msggan.MSGGANModule``: the same update on G's image at every scale (MSG-GAN).
"""
