"""Learning is measured, not assumed: fixed seeds, bounded steps, CPU.

Image models are judged on 16x16 digits by a classifier trained on the real digits
(conftest.digits_classifier): generated digits must be classified confidently and
cover most classes; conditional samples must be read as the class asked for.
2-D models are judged by mode coverage on the ring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from support import DIGITS16, FAST, judge, samples, scalars

from ganrun.train import train

# Every test here trains for hundreds of G updates: all in the slow tier (pytest -m "not slow" skips them).
pytestmark = pytest.mark.slow


def test_gan_on_the_ring_covers_the_modes(make_config, tmp_path):
    """An MLP GAN (experiment=gan_ring: the learning rate and MINE's weight decayed to 0 over
    the run's steps, here cut to 1,500) covers most of the 8 ring modes with mostly
    high-quality samples, and clearly did not at the start. Measured (seed 0, threads=1,
    AMD EPYC): 8/8 modes, 69.6% high quality (1,000 G updates: 8/8, 50.5%)."""
    early = train(make_config(*FAST, "experiment=gan_ring", "steps=30", "seed=0", run_dir=tmp_path / "early"))
    late = train(make_config(*FAST, "experiment=gan_ring", "steps=1500", "seed=0", "trainer.log_every_n_steps=100"))
    print("ring", {k: late[k] for k in ("hp/modes_covered", "hp/high_quality_fraction")})
    assert early["hp/high_quality_fraction"] < 0.2
    assert late["hp/modes_covered"] >= 7, late
    assert late["hp/high_quality_fraction"] >= 0.5, late


def test_wgan_gp_on_the_ring_covers_all_modes(make_config, tmp_path):
    """model=wgan_gp dataset=ring (model_dataset/wgan_gp_ring.yaml: 3 x 128 MLPs, LR decayed
    to 0 over the run), shortened from 15,000 to 600 G updates, covers all 8 modes. The
    recipe's generator EMA (decay 0.999) averages over ~1,000 updates, longer than this
    run, so it is off here; it changes no trained weight. Measured (threads=1): 8/8 modes,
    29.2% / 37.1% high-quality samples (seeds 0 / 1); the full recipe: docs/results.md."""
    small = [*FAST, "model=wgan_gp", "dataset=ring", "seed=0", "trainer.log_every_n_steps=100", "tricks.ema_decay=null"]
    early = train(make_config(*small, "steps=20", run_dir=tmp_path / "early"))
    late = train(make_config(*small, "steps=600"))
    print("wgan_gp ring", {k: late[k] for k in ("hp/modes_covered", "hp/high_quality_fraction")})
    assert early["hp/modes_covered"] <= 2 and early["hp/high_quality_fraction"] < 0.05, early
    assert late["hp/modes_covered"] == 8, late
    assert late["hp/high_quality_fraction"] >= 0.2, late


@pytest.mark.parametrize(
    "model,steps,bounds",
    [
        ("dcgan", 600, (0.75, 8)),
        ("lsgan", 600, (0.75, 8)),
        # measured (seed 0, threads=1): wgan_gp 300 -> confidence 0.70, 10 classes (200: 0.55); wgan 300 -> 0.66, 10 (AMD EPYC)
        ("wgan_gp", 300, (0.6, 7)),
        ("wgan", 300, (0.5, 6)),
    ],
)
def test_image_models_learn_recognisable_digits(make_config, tmp_path, digits_classifier, model, steps, bounds):
    min_confidence, min_classes = bounds
    untrained = train(make_config(*DIGITS16, f"model={model}", "steps=1", run_dir=tmp_path / "untrained"))
    trained = train(make_config(*DIGITS16, f"model={model}", f"steps={steps}", run_dir=tmp_path / "trained"))
    assert trained["g_updates"] == steps and untrained["g_updates"] == 1
    before = judge(digits_classifier, samples(tmp_path / "untrained")["images"])
    after = judge(digits_classifier, samples(tmp_path / "trained")["images"])
    print(
        model,
        {k: v for k, v in before.items() if k != "predicted"},
        {k: v for k, v in after.items() if k != "predicted"},
    )
    assert after["confidence"] >= min_confidence and after["confidence"] > before["confidence"] + 0.1
    assert after["classes"] >= min_classes


@pytest.mark.slow
def test_cgan_draws_the_class_it_is_asked_for(make_config, tmp_path, digits_classifier):
    """The default CGAN recipe on the digits (DCGAN networks with the one-hot label
    concatenated to z and to D's input, 16x16, LR decayed linearly to 0), shortened
    to 800 G updates: the requested digit is read back far above chance (0.1).
    Measured (seed 0, threads=1): per-class accuracy 0.98-1.0."""
    train(make_config(*DIGITS16, "model=cgan", "steps=800"))
    hits = []
    for label in range(10):
        images = samples(tmp_path / "run", n=50, label=label)["images"]
        hits.append(float((judge(digits_classifier, images)["predicted"] == label).mean()))
    print("cgan per-class accuracy", [round(h, 2) for h in hits])
    assert np.mean(hits) >= 0.85, hits
    assert min(hits) >= 0.5, hits


def code_accuracy(run_dir) -> float:
    """ganrun-eval's code_accuracy (the judge's reading of the first categorical code)."""
    from ganrun.commands.evaluate import main as evaluate

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    return evaluate([f"ckpt={ckpt}", "metrics=code_accuracy", "n=1000", "device=cpu"])["code_accuracy"]


def test_infogan_code_follows_the_digit_class(make_config, tmp_path):
    """The default model=infogan recipe on the digits (model_dataset/infogan_digits.yaml:
    Q reads a randomly moved copy of G's output), shortened from 3,000 to 1,000 G updates
    (its LR decay follows steps=): the first categorical code matches the judge's classes
    (best one-to-one matching, 1,000 samples) far above what an untrained G gives.
    Measured (seed 0, threads=1, AMD EPYC): 0.125 untrained, 0.872 trained."""
    settings = [
        *FAST,
        "model=infogan",
        "dataset=digits",
        "seed=0",
        "trainer.log_every_n_steps=100",
        "callbacks.evaluation.every_n_steps=0",
    ]
    train(make_config(*settings, "steps=1", run_dir=tmp_path / "untrained"))
    trained = train(make_config(*settings, "steps=1000"))
    assert trained["g_updates"] == 1000, trained
    before, after = code_accuracy(tmp_path / "untrained"), code_accuracy(tmp_path / "run")
    print("infogan code_accuracy", before, after)
    assert before < 0.4 and after >= 0.7, (before, after)
    categorical = [value for _, value in scalars(tmp_path / "run", "loss/mi_categorical")]
    assert categorical[-1] < 0.1 * math.log(10), categorical  # Q reads the code back almost surely
