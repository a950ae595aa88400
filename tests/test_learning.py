"""Learning is measured, not assumed: fixed seeds, bounded steps, CPU."""
from __future__ import annotations

from conftest import FAST
from ganrun.train import train


def test_gan_on_the_ring_covers_the_modes(make_config, tmp_path):
    """An MLP GAN (experiment=gan_ring) covers most of the 8 ring modes with mostly
    high-quality samples after 3,000 G updates, and clearly did not at the start."""
    early = train(make_config(*FAST, "experiment=gan_ring", "steps=30", "seed=0", run_dir=tmp_path / "early"))
    late = train(make_config(*FAST, "experiment=gan_ring", "steps=3000", "seed=0", "trainer.log_every_n_steps=100"))
    assert early["hp/high_quality_fraction"] < 0.2
    assert late["hp/modes_covered"] >= 7, late
    assert late["hp/high_quality_fraction"] >= 0.5, late
