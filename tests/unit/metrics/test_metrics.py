"""Evaluation: each metric separates real data from noise and from a collapsed
(single-class / single-mode) sample set in the right direction; the judge is
cached; Inception metrics' pipeline and offline error; precision, recall, density
and coverage in each feature space (their formulas: test_prdc.py); best.ckpt; ganrun-eval."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import FAST, in_process, scalars

from ganrun.data.base import GANDataModule
from ganrun.errors import ConfigError
from ganrun.metrics import suite
from ganrun.metrics.classifier import classifier_metrics, load_judge
from ganrun.metrics.toy import mode_coverage


# ------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def digits():
    from ganrun.data.images import DigitsDataModule

    dm = DigitsDataModule(batch_size=64, image_size=16)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def judge(digits):
    return load_judge(digits, 16)


def sample_sets(dm):
    """Real digits, uniform noise, and one class only (all uint8, same count)."""
    generator = torch.Generator().manual_seed(0)
    n = 600
    real = dm.data[torch.randperm(len(dm.data), generator=generator)[:n]]
    noise = torch.randint(0, 256, real.shape, generator=generator, dtype=torch.uint8)
    threes = dm.data[dm.labels == 3]
    collapsed = threes[torch.randint(len(threes), (n,), generator=generator)]
    return {"real": real, "noise": noise, "collapsed": collapsed}


# ----------------------------------------------------------------- judge
def test_judge_is_accurate_on_held_out_digits_and_cached(digits, judge, monkeypatch):
    assert judge.test_accuracy > 0.9
    import ganrun.metrics.classifier as classifier

    monkeypatch.setattr(classifier, "train_judge", lambda *a, **k: pytest.fail("the cached judge was retrained"))
    again = load_judge(digits, 16)
    assert again.test_accuracy == judge.test_accuracy
    x = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
    assert torch.equal(again.logits(x), judge.logits(x))


def test_the_judge_is_trained_with_one_thread_whatever_the_caller_uses(digits, tmp_path, monkeypatch):
    """The judge's weights must not depend on the load or on the run that first needs it
    (a run with threads=2, ganrun-eval beside a busy loop): it trains with one thread,
    and the caller's thread count is restored."""
    import ganrun.metrics.classifier as classifier

    seen = []
    real_train = classifier.train_judge
    monkeypatch.setattr(
        classifier, "train_judge", lambda *a, **k: seen.append(torch.get_num_threads()) or real_train(*a, **k)
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("GANRUN_CACHE", str(tmp_path))
        load_judge(digits, 16, train_steps=2)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_helper_commands_apply_threads(monkeypatch):
    from ganrun.commands import evaluate, sample
    from ganrun.runtime import threads

    class Applied(Exception):
        pass

    def use(setting):
        raise Applied(setting)

    with monkeypatch.context() as patch:
        patch.setattr(threads, "use", use)
        with pytest.raises(Applied, match="^1$"):
            evaluate.main(["ckpt=missing.ckpt", "threads=1"])
        with pytest.raises(Applied, match="^auto$"):
            sample.main(["ckpt=missing.ckpt", "n=1", "out=x.pt"])

    before = torch.get_num_threads()
    try:
        assert threads.use("1") == 1 and torch.get_num_threads() == 1
        assert threads.use("auto") >= 1
    finally:
        torch.set_num_threads(before)
    assert evaluate.parse_args(["ckpt=x", "threads=3"])["threads"] == "3"
    assert evaluate.parse_args(["ckpt=x"])["features"] == "auto"
    assert evaluate.parse_args(["ckpt=x", "features=inception"])["features"] == "inception"
    with pytest.raises(ConfigError, match="features=pixels is not valid; choose auto, judge, inception"):
        evaluate.parse_args(["ckpt=x", "features=pixels"])  # before the checkpoint is read
    assert sample.parse_args(["ckpt=x", "n=1", "out=x.pt"])["threads"] == "auto"
    with pytest.raises(ConfigError, match="threads=0 is not valid; choose auto or a positive integer"):
        evaluate.parse_args(["ckpt=x", "threads=0"])


def test_judge_metrics_separate_real_from_noise_and_from_one_class(digits, judge):
    names = {"cfid", "cis", "classes_covered", "class_kl"}
    result = {name: classifier_metrics(judge, images, names) for name, images in sample_sets(digits).items()}
    real, noise, collapsed = result["real"], result["noise"], result["collapsed"]
    # Fréchet distance: lower is better.
    assert real["cfid"] < collapsed["cfid"] < noise["cfid"] or real["cfid"] < noise["cfid"] < collapsed["cfid"]
    assert real["cfid"] * 5 < min(collapsed["cfid"], noise["cfid"])
    # Inception-Score analogue: near 10 for real balanced digits, near 1 for one class.
    assert real["cis"] > 7 and collapsed["cis"] < 1.5 and noise["cis"] < real["cis"]
    assert real["classes_covered"] == 10 and collapsed["classes_covered"] == 1
    assert real["class_kl"] < 0.05
    assert 1.8 < collapsed["class_kl"] <= math.log(10) + 1e-6  # log 10 if the judge read every sample as a 3


def test_conditional_and_code_accuracy(digits, judge):
    generator = torch.Generator().manual_seed(1)
    rows = torch.randperm(len(digits.data), generator=generator)[:500]
    images, labels = digits.data[rows], digits.labels[rows]
    wrong = torch.randint(10, (500,), generator=generator)
    right = classifier_metrics(judge, images, {"cond_accuracy"}, requested=labels)["cond_accuracy"]
    chance = classifier_metrics(judge, images, {"cond_accuracy"}, requested=wrong)["cond_accuracy"]
    assert right > 0.9 and chance < 0.25
    # InfoGAN: a code that is a relabelling of the class is matched perfectly; a random one is not.
    permuted = (labels * 7 + 3) % 10
    matched = classifier_metrics(judge, images, {"code_accuracy"}, codes=permuted)["code_accuracy"]
    random_codes = classifier_metrics(judge, images, {"code_accuracy"}, codes=wrong)["code_accuracy"]
    assert matched > 0.9 and random_codes < 0.3


PRDC = {"precision", "recall", "density", "coverage"}


def test_prdc_in_the_judge_features_on_constructed_digit_sets(digits, judge):
    """The real digits against themselves, against half the classes, and against one digit
    repeated; as many real as generated images (a seeded subset when fewer are generated)."""
    data, labels, n = digits.data, digits.labels, len(digits.data)
    generator = torch.Generator().manual_seed(0)
    same = classifier_metrics(judge, data[torch.randperm(n, generator=generator)], PRDC)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.2, abs=0.01)  # (k + 1) / k: each real ball holds its centre
    low = data[labels < 5]  # classes 0-4: half the data
    half = classifier_metrics(judge, low[torch.randint(len(low), (n,), generator=generator)], PRDC)
    assert half["recall"] == pytest.approx(0.5, abs=0.07) and half["coverage"] == pytest.approx(0.5, abs=0.07)
    assert half["precision"] > 0.99
    one = classifier_metrics(judge, data[:1].expand(n, -1, -1, -1), PRDC)
    assert one["coverage"] < 0.01 and one["recall"] < 0.01
    noise = classifier_metrics(judge, torch.randint(0, 256, data.shape, generator=generator, dtype=torch.uint8), PRDC)
    assert noise["precision"] < 0.05 and noise["coverage"] < 0.05
    assert set(classifier_metrics(judge, data[:50], {"coverage", "cis"})) == {"coverage", "cis"}  # only what was asked


def test_prdc_in_the_judge_features_pairs_equal_counts(digits, judge, monkeypatch):
    import ganrun.metrics.classifier as classifier

    seen = []
    real_prdc = classifier.prdc
    monkeypatch.setattr(
        classifier,
        "prdc",
        lambda real, fake, **kw: seen.append((real.shape, fake.shape)) or real_prdc(real, fake, **kw),
    )
    classifier_metrics(judge, digits.data[:600], PRDC)  # fewer generated than real: a subset of the real
    classifier_metrics(judge, torch.cat([digits.data, digits.data[:300]]), PRDC)  # more: the first 1,797 generated
    assert seen == [((600, 64), (600, 64)), ((1797, 64), (1797, 64))]
    fewer = classifier.real_features(judge, 600)
    assert torch.equal(fewer, classifier.real_features(judge, 600))  # seeded (and cached)
    assert not torch.equal(fewer, judge.features_and_logits(digits.data[:600])[0])  # random, not the first 600


def test_metrics_leave_the_training_random_stream_alone(digits, judge):
    # Evaluation runs inside training: it must not reseed the noise G and D are trained with.
    state = torch.random.get_rng_state()
    classifier_metrics(judge, sample_sets(digits)["real"][:100], {"cfid", "cis"})
    assert torch.equal(state, torch.random.get_rng_state())


# ------------------------------------------------------------------- toy
def test_mode_coverage_separates_real_noise_and_collapse():
    from ganrun.data.toy import RingDataModule

    ring = RingDataModule(batch_size=256)
    generator = torch.Generator().manual_seed(0)
    real = ring.modes[torch.randint(8, (2500,), generator=generator)] + 0.02 * torch.randn(2500, 2, generator=generator)
    noise = torch.rand(2500, 2, generator=generator) * 6 - 3
    collapsed = ring.modes[2] + 0.02 * torch.randn(2500, 2, generator=generator)
    r, n, c = (mode_coverage(x, ring.modes, 0.02) for x in (real, noise, collapsed))
    assert r["modes_covered"] == 8 and r["high_quality_fraction"] > 0.97  # 1 - exp(-9/2) = 0.989 within 3 std in 2-D
    assert n["high_quality_fraction"] < 0.05 and n["modes_covered"] < 8
    assert c["modes_covered"] == 1 and c["high_quality_fraction"] > 0.97


# -------------------------------------------------------------- registry
def test_metric_names_are_checked_against_the_run(digits):
    from ganrun.data.toy import RingDataModule
    from ganrun.training.latent import GaussianLatent

    latent = GaussianLatent(z_dim=4)
    prdc = ["precision", "recall", "density", "coverage"]
    judged = ["cfid", "cis", "classes_covered", "class_kl"]
    assert suite.resolve("auto", digits, 0, latent) == judged + prdc
    assert suite.resolve("auto", digits, 10, latent) == judged + ["cond_accuracy"] + prdc
    assert (
        suite.resolve("auto", RingDataModule(batch_size=8), 0, latent)
        == ["modes_covered", "high_quality_fraction"] + prdc
    )
    assert suite.resolve("all", digits, 0, latent) == judged + prdc + ["fid", "is", "kid"]
    with pytest.raises(ConfigError, match="metric 'fdi' does not exist; choose from auto, all, .*fid"):
        suite.resolve("fdi", digits, 0, latent)
    with pytest.raises(ConfigError, match="'modes_covered' does not apply.*ring or grid"):
        suite.resolve(["modes_covered"], digits, 0, latent)
    with pytest.raises(ConfigError, match="'cond_accuracy' does not apply.*class-conditional"):
        suite.resolve("cfid,cond_accuracy", digits, 0, latent)


class Unlabelled(GANDataModule):
    """An image dataset without labels (a folder of images): the base datamodule's declared defaults."""

    data_shape = (3, 32, 32)

    def __init__(self) -> None:
        super().__init__(batch_size=1)

    def describe(self) -> str:
        return "folder 'photos' (3x32x32)"


def test_prdc_feature_spaces_follow_the_data_and_features(digits):
    from ganrun.data.toy import RingDataModule
    from ganrun.training.latent import GaussianLatent

    latent, ring = GaussianLatent(z_dim=4), RingDataModule(batch_size=8)
    judged = ["cfid", "cis", "classes_covered", "class_kl"]
    assert [suite.prdc_space(dm) for dm in (ring, digits, Unlabelled())] == ["plane", "judge", "inception"]
    assert suite.prdc_space(digits, "inception") == "inception" and suite.prdc_space(digits, "judge") == "judge"
    # auto keeps to offline spaces: Inception features need weights, as fid does.
    assert suite.resolve("auto", digits, 0, latent, features="inception") == judged
    assert suite.resolve("precision,coverage", digits, 0, latent, features="inception") == ["precision", "coverage"]
    assert suite.resolve("auto", Unlabelled(), 0, latent) == []
    assert suite.resolve("all", Unlabelled(), 0, latent) == [
        "precision",
        "recall",
        "density",
        "coverage",
        "fid",
        "is",
        "kid",
    ]
    for dm, features, message in [
        (
            Unlabelled(),
            "judge",
            "features=judge needs a labelled image dataset (folder 'photos' (3x32x32) has no labels); use features=inception",
        ),
        (ring, "inception", "features=inception does not apply to"),
        (digits, "plane", "features=plane is not valid; choose auto, judge, inception"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)) as error:
            suite.resolve("auto", dm, 0, latent, features=features)
        assert "\n" not in str(error.value)


class RingSampler(torch.nn.Module):
    """G(z) = one of the ring's first ``num_modes`` modes (chosen by z[:, 2]) + 0.02 z[:, :2]: real data when all 8."""

    def __init__(self, modes: torch.Tensor, num_modes: int = 8) -> None:
        super().__init__()
        self.register_buffer("modes", modes[:num_modes].clone())
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z, labels=None):
        which = (torch.special.ndtr(z[:, 2]) * len(self.modes)).long().clamp(max=len(self.modes) - 1)
        return self.modes[which] + 0.02 * z[:, :2]


def test_prdc_in_the_plane_through_the_suite(monkeypatch):
    import ganrun.metrics.prdc as prdc_module
    from ganrun.data.toy import RingDataModule
    from ganrun.training.latent import GaussianLatent

    ring, latent = RingDataModule(batch_size=8), GaussianLatent(z_dim=3)
    seen = []
    real_prdc = prdc_module.prdc
    monkeypatch.setattr(
        prdc_module,
        "prdc",
        lambda real, fake, **kw: seen.append((real.shape, fake.shape)) or real_prdc(real, fake, **kw),
    )
    names = ["modes_covered", "precision", "recall", "density", "coverage"]
    real = suite.evaluate(RingSampler(ring.modes), latent, ring, names, 2500)
    assert real["modes_covered"] == 8 and real["precision"] > 0.95 and real["recall"] > 0.95
    assert real["density"] == pytest.approx(1.0, abs=0.05) and real["coverage"] == pytest.approx(1 - 0.5**5, abs=0.02)
    assert "in the plane" in real["protocol"]["prdc"] and "k=5" in real["protocol"]["prdc"]
    half = suite.evaluate(RingSampler(ring.modes, num_modes=4), latent, ring, names, 2500)
    assert (
        half["modes_covered"] == 4
        and half["recall"] == pytest.approx(0.5, abs=0.04)
        and half["coverage"] == pytest.approx(0.5, abs=0.04)
    )
    only = suite.evaluate(RingSampler(ring.modes), latent, ring, ["coverage"], 2500)
    assert set(only) == {"coverage", "protocol"} and only["coverage"] == real["coverage"]  # same samples, same number
    assert seen == [((2500, 2), (2500, 2))] * 3  # every sample against as many real points


# ------------------------------------------------------------- Inception
def test_inception_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    import ganrun.metrics.inception as inception

    monkeypatch.delenv("GANRUN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(path, timeout=30.0):
        raise OSError("network unreachable")

    monkeypatch.setattr(inception, "download_weights", offline)
    expected = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(ConfigError) as error:
        inception.inception_network()
    message = str(error.value)
    assert "\n" not in message
    assert (
        f"not found at {expected}" in message
        and inception.WEIGHTS_URL in message
        and "GANRUN_INCEPTION_WEIGHTS" in message
    )


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """Randomly initialised Inception-v3 weights in torch-fidelity's format: the real ones need
    a download, which tests never do. Random features still tell digits from noise."""
    from unittest import mock

    from torchmetrics.image.fid import NoTrainInceptionV3

    torch.manual_seed(0)
    with mock.patch("torch.load", return_value={}), mock.patch.object(NoTrainInceptionV3, "load_state_dict"):
        network = NoTrainInceptionV3(name="x", features_list=["2048"], feature_extractor_weights_path="unused")
    for module in network.modules():  # He init keeps activations alive through ~100 layers
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.mark.slow
def test_inception_metrics_pipeline_separates_real_from_noise(digits, random_inception_weights, monkeypatch):
    from ganrun.metrics.inception import inception_metrics

    monkeypatch.setenv("GANRUN_INCEPTION_WEIGHTS", str(random_inception_weights))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(digits.data), generator=generator)
    reference, held_out = digits.data[order[:40]], digits.data[order[40:70]]
    noise = torch.randint(0, 256, held_out.shape, generator=generator, dtype=torch.uint8)
    names = {"fid", "kid", "is"}
    real = inception_metrics(reference, held_out, names, "test-digits")
    fake = inception_metrics(reference, noise, names, "test-digits")  # reference statistics from the cache
    assert real["fid"] < fake["fid"] and real["kid"] < fake["kid"]
    assert 1.0 <= real["is"] <= 1008 and 1.0 <= fake["is"] <= 1008 and real["kid_std"] >= 0


def test_reference_subsets_are_random_with_a_fixed_seed_and_named_in_the_cache_key(monkeypatch, ganrun_cache):
    import ganrun.metrics.inception as inception

    seen = {}
    monkeypatch.setattr(inception, "KID_REFERENCE", 5)
    monkeypatch.setattr(inception, "FID_REFERENCE", 6)
    monkeypatch.setattr(inception, "inception_network", lambda device, resize: seen.setdefault("resize", resize))
    # features of image i: (i, i^2 / 100, ...): the cached reference shows which images were used
    monkeypatch.setattr(
        inception,
        "features",
        lambda network, images, device: (
            torch.stack(
                [images[:, 0, 0, 0].double(), images[:, 0, 0, 0].double() ** 2 / 100, torch.rand(len(images)).double()],
                1,
            ).float(),
            torch.rand(len(images), 10),
        ),
    )
    real = torch.arange(20, dtype=torch.uint8).reshape(20, 1, 1, 1).expand(20, 1, 2, 2).clone()
    inception.inception_metrics(real, real[:8], {"fid", "kid"}, "probe", resize="tf1x")
    assert seen["resize"] == "tf1x"
    subset = inception.reference_subset(20, 5)
    assert subset.tolist() != list(range(5)) and torch.equal(subset, inception.reference_subset(20, 5))  # seeded
    names = sorted(p.name for p in (ganrun_cache / "reference").glob("inception-*-probe-*"))
    assert names == ["inception-fid-probe-n6-seed0-tf1x.pt", "inception-kid-probe-n5-seed0-tf1x.pt"]
    kid_reference = torch.load(ganrun_cache / "reference" / names[1])
    assert kid_reference[:, 0].tolist() == subset.double().tolist()
    assert inception.reference_subset(4, 5).tolist() == [0, 1, 2, 3]  # small sets: all of them


def test_prdc_in_inception_features_uses_the_kid_reference(digits, monkeypatch, ganrun_cache):
    """Pool features stand in for Inception's here (the pixels): generated images identical to the
    KID reference score 1; one image repeated covers nothing; counts are paired; the reference's
    features are extracted once and then read from the cache."""
    import ganrun.metrics.inception as inception

    monkeypatch.setattr(inception, "KID_REFERENCE", 300)
    monkeypatch.setattr(inception, "inception_network", lambda device, resize: None)
    extracted = []
    monkeypatch.setattr(
        inception,
        "features",
        lambda network, images, device: (
            extracted.append(len(images)) or (images.flatten(1).float(), torch.zeros(len(images), 10))
        ),
    )
    seen = []
    real_prdc = inception.prdc
    monkeypatch.setattr(
        inception, "prdc", lambda real, fake, **kw: seen.append((len(real), len(fake))) or real_prdc(real, fake, **kw)
    )
    real = digits.data[:400]
    reference = real[inception.reference_subset(400, 300)]
    noise = torch.randint(0, 256, (200, *real.shape[1:]), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    same = inception.inception_metrics(real, torch.cat([reference, noise]), PRDC, "prdc-probe")  # the first 300 count
    assert same == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(1.2, abs=0.02), "coverage": 1.0}
    one = inception.inception_metrics(real, reference[:1].expand(300, -1, -1, -1), PRDC, "prdc-probe")
    assert one["coverage"] < 0.03 and one["recall"] < 0.01
    inception.inception_metrics(real, reference[:100], {"precision"}, "prdc-probe")  # fewer generated: a real subset
    assert seen == [(300, 300), (300, 300), (100, 100)]
    assert extracted == [500, 300, 300, 100]  # generated sets, and the real reference once (then cached)
    assert (ganrun_cache / "reference" / "inception-kid-prdc-probe-n300-seed0-antialias.pt").is_file()


def test_inception_resize_mode_is_passed_to_torchmetrics(monkeypatch, tmp_path):
    import torchmetrics.image.fid as tm_fid

    import ganrun.metrics.inception as inception

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")
    monkeypatch.setenv("GANRUN_INCEPTION_WEIGHTS", str(weights))
    made = []
    monkeypatch.setattr(tm_fid, "NoTrainInceptionV3", lambda **kwargs: made.append(kwargs) or torch.nn.Identity())
    inception.inception_network(resize="antialias")
    inception.inception_network(resize="tf1x")
    assert [kwargs["antialias"] for kwargs in made] == [True, False]
    with pytest.raises(ConfigError, match="resize mode 'nearest' is not valid; choose antialias or tf1x"):
        inception.inception_network(resize="nearest")
    assert "resize mode 'antialias'" in inception.PROTOCOL


def test_conditional_evaluation_draws_labels_from_the_class_frequencies():
    from ganrun.training.latent import GaussianLatent

    class Echo(torch.nn.Module):  # returns its labels as "samples"
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, z, labels):
            return labels.float()[:, None]

    frequencies = torch.tensor([0.7, 0.3, 0.0])
    _, labels, _ = suite.draw_for_eval(Echo(), GaussianLatent(z_dim=2), 3, 4000, 0, "cpu", frequencies)
    share = torch.bincount(labels, minlength=3) / 4000.0
    assert abs(share[0] - 0.7) < 0.03 and share[2] == 0
    dm = type("D", (), {"labels": torch.tensor([0, 0, 0, 1])})()
    assert suite.class_frequencies(dm, 3).tolist() == [0.75, 0.25, 0.0]


# --------------------------------------------------- during training, best.ckpt
def test_training_evaluates_every_n_steps_and_keeps_the_best_checkpoint(make_config, tmp_path):
    from ganrun.train import train

    cfg = make_config(
        *FAST,
        "model=gan",
        "dataset=ring",
        "steps=60",
        "callbacks.evaluation.every_n_steps=15",
        "callbacks.evaluation.num_samples=500",
        "callbacks.samples.every_n_steps=0",
    )
    metrics = train(cfg)
    logged = scalars(cfg.run_dir, "eval/modes_covered")
    assert [step for step, _ in logged] == [15, 30, 45, 60]
    values = [value for _, value in logged]
    quality = [value for _, value in scalars(cfg.run_dir, "eval/high_quality_fraction")]
    ranked = list(zip(values, quality))
    # the most modes; among equal counts the highest high-quality fraction; the first of full ties
    best_step = logged[ranked.index(max(ranked))][0]
    assert metrics["hp/metric"] == max(values) == metrics["best/modes_covered"]
    assert metrics["best/step"] == best_step
    best = torch.load(f"{cfg.run_dir}/checkpoints/best.ckpt", weights_only=False)
    assert best["ganrun_counters"]["g_updates"] == best_step
    # The HPARAMS tab gets the chosen metric.
    assert scalars(cfg.run_dir, "hp/metric")[-1][1] == max(values)
    # auto includes precision, recall, density and coverage (in the plane on the ring).
    for name in ("precision", "recall", "density", "coverage"):
        assert [step for step, _ in scalars(cfg.run_dir, f"eval/{name}")] == [15, 30, 45, 60], name
        assert metrics[f"eval/{name}"] == pytest.approx(scalars(cfg.run_dir, f"eval/{name}")[-1][1], rel=1e-6)


def test_lower_is_better_metrics_keep_the_lowest(tmp_path):
    from ganrun.callbacks.evaluation import Evaluation

    callback = Evaluation(dirpath=str(tmp_path))
    callback.monitor = "cfid"
    assert callback.improved(30.0)
    callback.best = 30.0
    assert callback.improved(29.0) and not callback.improved(31.0) and not callback.improved(math.nan)
    callback.monitor = "cis"
    assert callback.improved(31.0) and not callback.improved(29.0)


def test_equal_mode_counts_go_to_the_sharper_checkpoint(tmp_path):
    """modes_covered ties (8/8 at every evaluation once G covers the ring): best.ckpt follows
    high_quality_fraction among equal counts, never a lower count."""
    from ganrun.callbacks.evaluation import Evaluation

    callback = Evaluation(dirpath=str(tmp_path))
    callback.monitor, callback.metrics = "modes_covered", ["modes_covered", "high_quality_fraction"]
    assert callback.tie_break == "high_quality_fraction"
    callback.best, callback.best_tie = 8.0, 0.61
    assert callback.improved(8.0, 0.94) and not callback.improved(8.0, 0.5) and not callback.improved(8.0, 0.61)
    assert not callback.improved(7.0, 0.99) and callback.improved(9.0, 0.1)
    callback.metrics = ["modes_covered"]  # no tie-break metric evaluated: ties keep the first
    assert callback.tie_break is None


def test_tiny_runs_are_not_evaluated(make_config):
    from ganrun.train import train

    cfg = make_config(*FAST, "model=gan", "dataset=ring", "steps=10", "callbacks.evaluation.every_n_steps=20")
    metrics = train(cfg)
    assert not any(k.startswith(("eval/", "best/")) for k in metrics)
    assert not (Path(cfg.run_dir) / "checkpoints" / "best.ckpt").exists()


def test_bad_monitor_is_refused_before_training(make_config):
    from ganrun.train import train

    cfg = make_config(*FAST, "model=gan", "dataset=ring", "steps=5", "eval.monitor=cfid")
    with pytest.raises(ConfigError, match="'cfid' does not apply|eval.monitor=cfid"):
        train(cfg)


# ------------------------------------------------------------ ganrun-eval
def ganrun_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from ganrun.commands.cli import eval_main; eval_main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ganrun",
            *FAST,
            "model=cgan",
            "dataset=digits",
            "dataset.image_size=16",
            "model.image_size=16",
            "steps=30",
            f"hydra.run.dir={run_dir}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_eval_command_prints_json_with_metrics_and_protocol(trained_digits):
    result = ganrun_eval(f"ckpt={trained_digits}", "n=300")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "cfid",
        "cis",
        "classes_covered",
        "class_kl",
        "cond_accuracy",
        "judge_accuracy",
        "precision",
        "recall",
        "density",
        "coverage",
    ):
        assert isinstance(out[key], float), key
    assert "the judge's 64-d features" in out["protocol"]["prdc"]
    assert out["g_updates"] == 30 and out["protocol"]["num_samples"] == 300
    assert out["protocol"]["standard"] is False and "held-out accuracy" in out["protocol"]["judge"]
    # The same seed gives the same numbers.
    again = json.loads(ganrun_eval(f"ckpt={trained_digits}", "n=300", "metrics=cfid").stdout.strip().splitlines()[-1])
    assert (
        again["cfid"] == out["cfid"] and set(again) - {"cfid"} >= {"protocol", "judge_accuracy"} and "cis" not in again
    )


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["metrics=modes_covered"], ["'modes_covered' does not apply", "ring or grid"]),
        (["metrics=fdi"], ["'fdi' does not exist", "cfid"]),
        (["n=1"], ["n=1 is not valid"]),
        (["features=pixels"], ["features=pixels is not valid", "auto, judge, inception"]),
        (["devcie=cpu"], ["unknown argument 'devcie=cpu'", "usage: ganrun-eval"]),
    ],
)
def test_eval_command_bad_input_is_one_line(trained_digits, args, fragments, tmp_path):
    result = in_process("eval_main", f"ckpt={trained_digits}", *args, cwd=tmp_path)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode != 0 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_eval_command_on_missing_and_foreign_checkpoints(tmp_path):
    missing = ganrun_eval(f"ckpt={tmp_path / 'nope.ckpt'}")
    assert missing.returncode != 0 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    result = ganrun_eval(f"ckpt={foreign}")
    assert result.returncode != 0 and "not written by ganrun" in result.stderr
