"""Fast paths (``fast.*``, bf16 autocast): each switch is validated, wired, and changes speed, not results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from support import FAST, REPO, scalars

from ganrun.data.images import DigitsDataModule
from ganrun.errors import ConfigError
from ganrun.runtime import fast
from ganrun.train import train
from ganrun.training.module import GANModule

SMALL_DCGAN = [
    "model=dcgan",
    "model.generator.width=8",
    "model.discriminator.width=8",
    "model.z_dim=16",
    "dataset.image_size=16",
    "seed=3",
]
SMALL_GAN = [
    "model=gan",
    "dataset=ring",
    "model.generator.hidden=[32,32]",
    "model.discriminator.hidden=[32,32]",
    "seed=3",
]


def losses(run_dir) -> list[float]:
    return [v for _, v in scalars(run_dir, "loss/d")] + [v for _, v in scalars(run_dir, "loss/g")]


def state(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "override,message",
    [
        ("fast.compile=yes", r"fast.compile=yes is not valid; choose auto, true or false"),
        ("fast.channels_last=1", r"fast.channels_last=1 is not valid; choose auto, true or false"),
        (
            "+fast.cuda_graphs=true",
            r"fast.cuda_graphs is not a fast-path switch; valid switches: data_on_device, "
            r"channels_last, compile, fused_optimizers",
        ),
    ],
)
def test_bad_switch_is_refused_in_one_line_before_anything_is_written(make_config, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(make_config(*FAST, *SMALL_GAN, "steps=1", override))
    assert not (tmp_path / "run").exists()


def test_auto_turns_on_what_pays_off_on_the_device():
    cpu = fast.FastPaths.resolve({"compile": "auto"}, torch.device("cpu"))
    assert cpu == fast.FastPaths(data_on_device=False, channels_last=True, compile=False, fused_optimizers=True)
    cuda = fast.FastPaths.resolve({"compile": "auto"}, torch.device("cuda", 0))
    assert cuda == fast.FastPaths(data_on_device=True, channels_last=True, compile=True, fused_optimizers=True)
    # explicit values win over auto; the shipped default leaves compile off
    assert fast.FastPaths.resolve({"channels_last": False}, torch.device("cuda")).channels_last is False
    assert fast.FastPaths.resolve({"compile": False}, torch.device("cuda")).compile is False


@pytest.mark.parametrize("native_bf16", [True, False])
@pytest.mark.parametrize("by_default", [True, False])
def test_precision_auto_on_a_cpu_follows_capability_and_the_measured_decision(monkeypatch, native_bf16, by_default):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fast, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(fast, "CPU_BF16_BY_DEFAULT", by_default)
    assert fast.resolve_precision("32-true") == "32-true" and fast.resolve_precision("bf16-mixed") == "bf16-mixed"
    assert fast.resolve_precision("auto") == ("bf16-mixed" if native_bf16 and by_default else "32-true")
    assert fast.resolve_precision("auto", convolutional=False) == "32-true"  # MLPs on 2-D data stay float32


def test_cpu_bf16_capability_is_read_from_the_cpu_flags():
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    assert fast.cpu_has_native_bf16() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


# ------------------------------------------------------------------ channels_last
def test_channels_last_gives_the_same_losses_and_is_really_applied(make_config, tmp_path):
    runs = {}
    for value in ("false", "true"):
        runs[value] = tmp_path / value
        train(
            make_config(
                *FAST,
                *SMALL_DCGAN,
                "steps=4",
                f"fast.channels_last={value}",
                "fast.fused_optimizers=false",
                run_dir=runs[value],
            )
        )
    torch.testing.assert_close(losses(runs["true"]), losses(runs["false"]), rtol=1e-4, atol=1e-5)
    a, b = state(runs["false"]), state(runs["true"])
    convs = [name for name, p in b.items() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]
    assert len(convs) >= 3  # G's and D's convolutions (G's EMA too, when on), NHWC in the channels_last run
    assert all(b[c].is_contiguous(memory_format=torch.channels_last) and not b[c].is_contiguous() for c in convs)
    assert all(a[c].is_contiguous() for c in convs)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5, msg=name)


def test_channels_last_leaves_networks_without_convolutions_alone(make_config):
    from ganrun.train import build_module

    cfg = make_config(*FAST, *SMALL_GAN)
    dm = fast_ring_datamodule(cfg)
    module = build_module(cfg, dm)
    fast.apply_to_module(fast.FastPaths(channels_last=True), module, gradient_penalty=False)
    assert module.channels_last is False


def fast_ring_datamodule(cfg):
    from ganrun.train import instantiate

    dm = instantiate(cfg.dataset, seed=0)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------ fused / foreach optimizers
def test_fused_kernels_where_the_optimizer_has_them_foreach_otherwise():
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    adam = fast.build_optimizer(torch.optim.Adam, params, fast_kernels=True, lr=1e-3)
    assert adam.defaults["fused"] is True
    rmsprop = fast.build_optimizer(torch.optim.RMSprop, params, fast_kernels=True, lr=1e-3)
    assert rmsprop.defaults["foreach"] is True
    plain = fast.build_optimizer(torch.optim.Adam, params, fast_kernels=False, lr=1e-3)
    assert not plain.defaults["fused"] and not plain.defaults["foreach"]
    # a key the config sets wins
    chosen = fast.build_optimizer(torch.optim.Adam, params, fast_kernels=True, lr=1e-3, foreach=False)
    assert chosen.defaults["foreach"] is False and not chosen.defaults["fused"]


def test_fused_optimizers_train_like_the_for_loop_ones(make_config, tmp_path):
    for value in ("false", "true"):
        train(make_config(*FAST, *SMALL_GAN, "steps=5", f"fast.fused_optimizers={value}", run_dir=tmp_path / value))
    torch.testing.assert_close(losses(tmp_path / "true"), losses(tmp_path / "false"), rtol=1e-4, atol=1e-6)
    ckpt = torch.load(tmp_path / "true" / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(group["fused"] for opt in ckpt["optimizer_states"] for group in opt["param_groups"])


# ------------------------------------------------------------------ data on device
def test_data_on_device_batches_equal_the_cpu_batches():
    host = DigitsDataModule(batch_size=100, image_size=8, seed=4)
    held = DigitsDataModule(batch_size=100, image_size=8, seed=4)
    for dm in (host, held):
        dm.setup()
    held.data_on_device = True
    held.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), global_rank=0, world_size=1
    )
    per_epoch = len(host.train_dataloader())
    assert len(held.train_dataloader()) == per_epoch
    for index in range(2 * per_epoch):  # two epochs: two permutations
        (a, y_a), (b, y_b) = host.make_batch(index), held.make_batch(index)
        assert torch.equal(a, b) and torch.equal(y_a, y_b)


def test_data_on_device_indexes_where_the_data_lives():
    # No GPU here: the "meta" device stands in for one (shapes and devices, no values).
    dm = DigitsDataModule(batch_size=50, image_size=8, seed=4)
    dm.setup()
    dm.data_on_device = True
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("meta")), global_rank=0, world_size=1
    )
    dm.train_dataloader()
    assert dm.data.device.type == "meta" and dm.labels.device.type == "meta"
    x, y = dm.make_batch(3)
    assert x.device.type == "meta" and x.shape == (50, 1, 8, 8) and x.dtype == torch.float32
    assert y.device.type == "meta" and y.shape == (50,)
    assert fast.data_device(True, torch.device("cpu"), 10) is None
    assert fast.data_device(False, torch.device("meta"), 10) is None


# ------------------------------------------------------------------ compile
def test_compile_switch_compiles_g_and_d_but_not_a_penalised_critic(make_config):
    from ganrun.train import build_module

    cfg = make_config(*FAST, *SMALL_GAN)
    for penalty, d_compiled in ((False, True), (True, False)):
        module = build_module(cfg, fast_ring_datamodule(cfg))
        with pytest.warns(UserWarning, match="D is not compiled") if penalty else nullcontext():
            fast.apply_to_module(fast.FastPaths(compile=True), module, gradient_penalty=penalty)
        assert module.generator._compiled_call_impl is not None
        assert (module.discriminator._compiled_call_impl is not None) == d_compiled
        assert list(module.state_dict()) == list(build_module(cfg, fast_ring_datamodule(cfg)).state_dict())


def nullcontext():
    from contextlib import nullcontext as null

    return null()


def test_compiled_training_matches_eager(make_config, tmp_path, monkeypatch):
    """A real fast.compile=true run through Trainer.fit. Inductor needs over a minute of C++
    compilation on this CPU, so torch.compile runs with its eager backend here: Dynamo still
    captures G and D (train/eval, frozen D), which is what can break; the kernels are eager."""
    original = torch.nn.Module.compile
    compiled = []

    def eager_compile(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return original(self, *args, backend="eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    for value in ("false", "true"):
        train(make_config(*FAST, *SMALL_GAN, "steps=3", f"fast.compile={value}", run_dir=tmp_path / value))
    assert compiled == ["MLPGenerator", "MLPDiscriminator"]
    torch._dynamo.reset()
    assert losses(tmp_path / "true") == losses(tmp_path / "false")


# ------------------------------------------------------------------ bf16 autocast
@pytest.mark.parametrize("loss", ["ns", "wgan_gp"])
def test_bf16_autocasts_the_manual_training_step_and_keeps_losses_float32(make_config, tmp_path, monkeypatch, loss):
    seen = {"d_out": set(), "objective_in": set(), "loss": set()}
    original_update = GANModule._update

    def probe_update(self, loss_tensor, optimizer, parameters, logging):
        seen["loss"].add(loss_tensor.dtype)
        return original_update(self, loss_tensor, optimizer, parameters, logging)

    def on_train_start(self):
        self.discriminator.register_forward_hook(lambda m, i, out: seen["d_out"].add(out.dtype))
        objective, d_loss, g_loss = self.objective, self.objective.d_loss, self.objective.g_loss

        def probe_d_loss(*, real_out, fake_out):
            seen["objective_in"].update({real_out.dtype, fake_out.dtype})
            return d_loss(real_out=real_out, fake_out=fake_out)

        def probe_g_loss(*, fake_out):
            seen["objective_in"].add(fake_out.dtype)
            return g_loss(fake_out=fake_out)

        objective.d_loss, objective.g_loss = probe_d_loss, probe_g_loss

    monkeypatch.setattr(GANModule, "_update", probe_update)
    monkeypatch.setattr(GANModule, "on_train_start", on_train_start)
    overrides = [
        *SMALL_DCGAN,
        f"loss={loss}",
        "model.discriminator.norm=layer",
        "steps=2",
        "trainer.precision=bf16-mixed",
    ]
    metrics = train(make_config(*FAST, *overrides))
    assert seen["d_out"] == {torch.bfloat16}  # Lightning's precision plugin autocasts training_step
    assert seen["objective_in"] == {torch.float32}  # the objective runs on float32 outputs
    assert seen["loss"] == {torch.float32}  # D's loss (with the penalty) and G's are float32
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


# ------------------------------------------------------------------ host syncs
SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__")


def test_no_host_sync_in_the_training_step_except_when_logging(make_config, tmp_path, monkeypatch):
    calls: list[int] = []
    current = {"step": None}
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, __original=original, **kwargs):
            if current["step"] is not None:
                calls.append(current["step"])
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    step = GANModule.training_step

    def watched(self, batch, batch_idx):
        current["step"] = self.g_updates + 1
        try:
            return step(self, batch, batch_idx)
        finally:
            current["step"] = None

    monkeypatch.setattr(GANModule, "training_step", watched)
    train(make_config(*FAST, *SMALL_GAN, "steps=9", "trainer.log_every_n_steps=4", "tricks.grad_clip_norm=1.0"))
    assert calls and set(calls) == {1, 4, 8}  # logged G updates: the first, then every 4th


def test_logging_frequency_does_not_change_training(make_config, tmp_path):
    for every in (1, 3):
        train(
            make_config(
                *FAST, *SMALL_GAN, "steps=6", f"trainer.log_every_n_steps={every}", run_dir=tmp_path / str(every)
            )
        )
    every_step, every_third = (dict(scalars(tmp_path / str(e), "loss/g")) for e in (1, 3))
    assert sorted(every_third) == [1, 3, 6]
    assert all(every_third[s] == every_step[s] for s in every_third)
    a, b = state(tmp_path / "1"), state(tmp_path / "3")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ benchmark script
def test_bench_script_runs_both_loops_and_prints_the_ratio(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_steps.py"),
            "--case",
            "ring",
            "--iters",
            "3",
            "--warmup",
            "2",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"plain", "ganrun", "plain, torch defaults"} <= set(rows), out
    for name in ("plain", "ganrun"):
        cells = [c.strip() for c in rows[name].split("|")[2:-1]]
        ms, per_s, images, peak, cpu_ms = map(float, cells)
        # like with like: each printed value against the rate recomputed from ms, within the
        # rounding of how it is printed (iterations/s: 1 decimal, images/s: whole numbers)
        assert ms > 0
        rate = 1000 / ms
        ms_rounding = 0.005 / ms * 1.01  # ms has 2 decimals: the rate recomputed from it is off by up to this share
        assert per_s == pytest.approx(rate, rel=ms_rounding, abs=0.05 + rate * ms_rounding)
        assert images == pytest.approx(256 * rate, abs=0.5 + 256 * rate * ms_rounding)
    assert "ratio ganrun / plain (time per iteration):" in out


@pytest.mark.slow
def test_startup_script_times_the_first_step_inside_the_whole_run(tmp_path):
    report = tmp_path / "startup.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_startup.py"), "--repeats", "1", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    times = json.loads(report.read_text())["startup"]
    assert 0 < times["first_step_s"] < times["steps1_total_s"]
    assert 0 < times["help_s"] < times["steps1_total_s"]
    assert f"time to first training step of the default job: {times['first_step_s']:.1f} s" in result.stdout
    assert f"`ganrun --help`: {times['help_s']:.2f} s" in result.stdout
