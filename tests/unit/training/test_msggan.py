"""MSG-GAN (ganrun.models.msggan, model=msggan): every scale's shape, D fed each scale at
its depth, gradients reaching every scale of G, and learning on digits."""

from __future__ import annotations

import pytest
import torch
from support import FAST

from ganrun.models.msggan import MSGDiscriminator, MSGGenerator, image_pyramid
from ganrun.train import train


@pytest.mark.parametrize("size,channels", [(32, 1), (64, 3)])
def test_generator_emits_every_scale_and_discriminator_reads_them(size, channels):
    torch.manual_seed(0)
    generator = MSGGenerator(z_dim=8, data_shape=(channels, size, size), width=8)
    discriminator = MSGDiscriminator(data_shape=(channels, size, size), width=8)
    z = torch.randn(5, 8)
    scales = generator.multiscale(z)
    expected = [4 * 2**k for k in range(len(scales))]
    assert [tuple(s.shape) for s in scales] == [(5, channels, r, r) for r in expected]
    assert expected[-1] == size
    generator.eval()  # batch norm in eval mode: forward and multiscale see the same statistics
    torch.testing.assert_close(generator(z), generator.multiscale(z)[-1])
    assert discriminator(scales).shape == (5,)


def test_real_batches_are_downsampled_to_the_same_scales():
    torch.manual_seed(0)
    discriminator = MSGDiscriminator(data_shape=(1, 32, 32), width=8).eval()
    images = torch.randn(3, 1, 32, 32)
    pyramid = image_pyramid(images, 4)
    assert [p.shape[-1] for p in pyramid] == [4, 8, 16, 32]
    torch.testing.assert_close(pyramid[0], images.reshape(3, 1, 4, 8, 4, 8).mean(dim=(3, 5)))
    torch.testing.assert_close(discriminator(images), discriminator(pyramid))
    with pytest.raises(ValueError, match="expects 4 scales"):
        discriminator(pyramid[1:])


def test_discriminator_gradients_reach_every_scale_of_the_generator():
    """The point of MSG-GAN: each coarse image (not only the full-resolution one) gets D's gradient."""
    torch.manual_seed(0)
    generator = MSGGenerator(z_dim=8, data_shape=(1, 32, 32), width=8)
    discriminator = MSGDiscriminator(data_shape=(1, 32, 32), width=8)
    discriminator(generator.multiscale(torch.randn(4, 8))).sum().backward()
    for to_image in generator.to_image:
        assert to_image[0].weight.grad is not None and to_image[0].weight.grad.abs().sum() > 0


def test_msggan_refuses_a_gradient_penalty(make_config):
    from ganrun.errors import ConfigError

    cfg = make_config(*FAST, "model=msggan", "loss=wgan_gp", "steps=1", "callbacks=none")
    with pytest.raises(ConfigError, match="model=msggan does not support gradient penalties"):
        train(cfg)


@pytest.mark.slow
def test_msggan_learns_recognisable_digits(make_config, tmp_path, digits_classifier):
    """model=msggan on 16x16 digits (3 scales): after 300 G updates the judge reads the
    samples confidently and sees most classes, and clearly did not after 1 update
    (measured, seed 0: confidence 0.72, 10 classes)."""
    from support import DIGITS16, judge, samples

    untrained = train(make_config(*DIGITS16, "model=msggan", "steps=1", run_dir=tmp_path / "untrained"))
    trained = train(make_config(*DIGITS16, "model=msggan", "steps=300", run_dir=tmp_path / "trained"))
    assert untrained["g_updates"] == 1 and trained["g_updates"] == 300
    before = judge(digits_classifier, samples(tmp_path / "untrained")["images"])
    after = judge(digits_classifier, samples(tmp_path / "trained")["images"])
    print(
        "msggan",
        {k: v for k, v in before.items() if k != "predicted"},
        {k: v for k, v in after.items() if k != "predicted"},
    )
    assert after["confidence"] >= 0.6 and after["confidence"] > before["confidence"] + 0.1
    assert after["classes"] >= 8


class ZeroPyramid(torch.nn.Module):
    """A stand-in G whose every scale is zeros: what D receives is then the instance noise alone."""

    def __init__(self, sizes) -> None:
        super().__init__()
        self.sizes, self.weight = sizes, torch.nn.Parameter(torch.zeros(()))

    def multiscale(self, z, labels=None):
        return [torch.zeros(len(z), 1, s, s) + 0 * self.weight for s in self.sizes]

    def forward(self, z, labels=None):
        return self.multiscale(z, labels)[-1]


def test_instance_noise_has_the_same_std_at_every_scale_of_real_and_fake_inputs():
    """Real images are pooled to their scales before the noise is added, so at every scale
    real and fake inputs carry noise of the same std (noise added at full resolution and then
    pooled would shrink to std / 2^k at the k-th coarser scale, on the real side only)."""
    from ganrun.objectives.losses import NonSaturating
    from ganrun.objectives.tricks import InstanceNoise
    from ganrun.training.latent import GaussianLatent
    from ganrun.training.msggan import MSGGANModule

    torch.manual_seed(0)
    std = 0.5
    discriminator = MSGDiscriminator(data_shape=(1, 32, 32), width=4)
    module = MSGGANModule(
        ZeroPyramid([4, 8, 16, 32]),
        discriminator,
        NonSaturating(),
        latent=GaussianLatent(z_dim=4),
        optimizer_g=torch.optim.SGD,
        optimizer_d=torch.optim.SGD,
        terms=[InstanceNoise(std)],
    )
    seen = []

    def record(network, args):  # the scales D reads (it pools a full-resolution batch itself)
        x = args[0]
        seen.append([s.detach() for s in (image_pyramid(x, 4) if torch.is_tensor(x) else x)])

    discriminator.register_forward_pre_hook(record)
    module._update = lambda loss, optimizer, parameters, logging: None
    module._d_step(torch.zeros(256, 1, 32, 32), None, None, logging=False)
    real_scales, fake_scales = seen
    for real, fake in zip(real_scales, fake_scales):
        assert real.shape == fake.shape
        assert real.std().item() == pytest.approx(std, rel=0.05), (real.shape, real.std().item())
        assert fake.std().item() == pytest.approx(std, rel=0.05), (fake.shape, fake.std().item())
