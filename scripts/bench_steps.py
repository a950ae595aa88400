#!/usr/bin/env python
"""Time ganrun's training step against a plain PyTorch loop doing the same work.

    python scripts/bench_steps.py [--device cpu|cuda] [--case ring|dcgan64|example64|all] [--iters N]
                                  [--warmup N] [--repeats R] [--threads N] [--batch B] [--only NAMES] [--json PATH]

Both loops run in this process, one after the other (``--repeats`` times,
alternating; the best repeat counts), from the same seed (the config's ``seed``, 0),
on networks built from the same composed config (same G, D, batch, loss, optimizer,
n_critic), with the same number of torch threads (``--threads``, default torch's
choice; ganrun gets it as ``threads=N``, so its thread balancer does not change it
mid-run). One iteration is one G update with its n_critic D steps. Warm-up
iterations are not timed.

- plain: a minimal hand-written loop: data as one tensor indexed by a random
  permutation (images) or points sampled on the device (2-D), fresh noise for the D
  and the G step, G under no_grad in the D step, D frozen in the G step, BCE with
  logits, ``loss.item()`` every ``trainer.log_every_n_steps`` iterations.
- ganrun: the real ``ganrun.train.train(cfg)`` (Lightning Trainer.fit, the module,
  callbacks, the TensorBoard logger); a callback times iterations warmup+1 ..
  warmup+iters between the ends of two batches, so everything between batches is
  included: data, Lightning's loop and hooks, our callbacks' per-batch checks,
  logging every ``trainer.log_every_n_steps`` G updates. Periodic sample grids and
  checkpoints are off (file I/O the plain loop does not do; their callbacks still
  run their per-batch checks, and their end-of-run writes come after the timing).
- example: PyTorch's official DCGAN example (examples/dcgan/main.py), its training
  loop rewritten here with its own networks (case ``example64``): BCELoss on a
  sigmoid D, plain Adam, one fake batch per iteration reused for the G step, D
  not frozen in the G step, real batches from a shuffling DataLoader over the
  in-memory tensor. fp32 only (the example has no autocast; BCELoss refuses it).

Variants: on CPU both loops use ganrun's CPU defaults (fused optimizers,
channels_last for conv nets); further rows: the plain loop with PyTorch's
defaults, and ganrun with ``trainer.precision=bf16-mixed`` (CPU autocast). On CUDA:
plain and ganrun in fp32 with every fast path off, and both with every fast path on
(bf16 autocast, channels_last, torch.compile, fused optimizers, data on the GPU).

Peak memory: CUDA: ``torch.cuda.max_memory_allocated`` over each run; CPU: the
peak resident set size (VmHWM, reset through /proc/self/clear_refs) minus the
resident size when the run started.

Start-up times: ``bench_startup.py``; jobs side by side and sweeps: ``bench_contention.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from benchlib import machine_line, scratch_folder, write_json

from ganrun import config_dir
from ganrun.runtime.fast import FastPaths, build_optimizer, has_convolutions
from ganrun.train import build_networks, instantiate, train

CASES = {
    # The plain loop has no MINE and no LR schedule: the ring recipe's are switched off so both do the same work.
    "ring": ("MLP GAN, ring, batch 256", ["model=gan", "dataset=ring", "tricks.mine_weight=0", "scheduler=null"]),
    "dcgan64": ("DCGAN 64x64, fake, batch 64", ["model=dcgan", "dataset=fake", "dataset.image_size=64"]),
    # The networks of PyTorch's official DCGAN example (ngf = ndf = 64, nz = 100, 64x64 RGB, batch 64).
    "example64": (
        "DCGAN 64x64 as PyTorch's example (ngf = ndf = 64), fake, batch 64",
        [
            "model=dcgan",
            "dataset=fake",
            "dataset.image_size=64",
            "model.generator.width=64",
            "model.discriminator.width=64",
        ],
    ),
}
QUIET = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.samples.every_n_steps=0",  # grids and checkpoints only at the end, after the timing
    "callbacks.last_checkpoint.every_n_steps=0",
]


@dataclass
class Variant:
    name: str
    side: str  # "plain" or "ganrun"
    paths: FastPaths
    bf16: bool = False


@dataclass
class Result:
    seconds_per_iter: float  # wall clock
    cpu_seconds_per_iter: float  # this process's CPU time (less disturbed by other processes)
    images_per_iter: int
    peak_mb: float

    @property
    def iters_per_s(self) -> float:
        return 1.0 / self.seconds_per_iter


def variants(device: torch.device, case: str) -> list[Variant]:
    example = [Variant("PyTorch example", "example", FastPaths())] if case == "example64" else []
    if device.type == "cuda":
        off, on = FastPaths(), FastPaths(data_on_device=True, channels_last=True, compile=True, fused_optimizers=True)
        eager = FastPaths(data_on_device=True, channels_last=True, compile=False, fused_optimizers=True)
        return [
            Variant("plain fp32", "plain", off),
            Variant("ganrun fp32", "ganrun", off),
            *example,
            Variant("ganrun bf16", "ganrun", eager, bf16=True),
            Variant("plain fast", "plain", on, bf16=True),
            Variant("ganrun fast", "ganrun", on, bf16=True),
        ]
    defaults = FastPaths.resolve(None, device)
    return [
        Variant("plain", "plain", defaults),
        Variant("ganrun", "ganrun", defaults),
        *example,
        Variant("plain, torch defaults", "plain", FastPaths()),
        Variant("ganrun, bf16-mixed", "ganrun", defaults, bf16=True),
    ]


# ------------------------------------------------------------------ configs
def compose_config(case: str, device: torch.device, run_dir: Path, extra: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*CASES[case][1], f"accelerator={accelerator}", *QUIET, f"run_dir={run_dir}", *extra]
        )
    GlobalHydra.instance().clear()
    return cfg


def variant_overrides(variant: Variant) -> list[str]:
    paths = variant.paths
    return [
        f"fast.data_on_device={str(paths.data_on_device).lower()}",
        f"fast.channels_last={str(paths.channels_last).lower()}",
        f"fast.compile={str(paths.compile).lower()}",
        f"fast.fused_optimizers={str(paths.fused_optimizers).lower()}",
        f"trainer.precision={'bf16-mixed' if variant.bf16 else '32-true'}",
    ]


# ------------------------------------------------------------------ memory
class PeakMemory:
    """Peak memory of one run: CUDA allocator peak, or peak RSS above the RSS at the start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()
            try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self.start = _status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kb("VmHWM") * 1024
        self.peak_mb = max(0, peak - self.start) / 2**20


def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource  # no /proc: the lifetime peak, in kB on Linux

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ plain loop
def run_plain(cfg, variant: Variant, device: torch.device, warmup: int, iters: int) -> Result:
    """The hand-written loop (see the module docstring)."""
    assert cfg.loss.objective._target_.endswith("NonSaturating"), "the plain loop implements the ns loss"
    memory = PeakMemory(device).__enter__()  # like ganrun's side: networks, optimizers and data included
    generator, discriminator, opt_g, opt_d, next_batch = _plain_setup(cfg, variant.paths, device)
    batch, z_dim, n_critic = cfg.dataset.batch_size, cfg.model.z_dim, cfg.n_critic
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.bf16)
    log_every, logged = cfg.trainer.log_every_n_steps, []

    def iteration(index: int) -> None:
        for _ in range(n_critic):
            real = next_batch()
            with autocast:
                with torch.no_grad():
                    fake = generator(torch.randn(batch, z_dim, device=device))
                loss_d = F.binary_cross_entropy_with_logits(
                    discriminator(real).float(), ones
                ) + F.binary_cross_entropy_with_logits(discriminator(fake).float(), zeros)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        discriminator.requires_grad_(False)
        with autocast:
            fake = generator(torch.randn(batch, z_dim, device=device))
            loss_g = F.binary_cross_entropy_with_logits(discriminator(fake).float(), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        if (index + 1) % log_every == 0:
            logged.append((loss_d.item(), loss_g.item()))

    return timed_loop(iteration, warmup, iters, device, memory, logged, batch * n_critic)


def timed_loop(
    iteration, warmup: int, iters: int, device: torch.device, memory: "PeakMemory", logged: list, images_per_iter: int
) -> Result:
    """Run ``iteration(index)`` warmup times untimed, then iters times timed (wall and CPU clock);
    ``logged`` (the losses the loop fetched) must all be finite."""
    for index in range(warmup):
        iteration(index)
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    for index in range(warmup, warmup + iters):
        iteration(index)
    synchronize(device)
    elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
    memory.__exit__()
    assert all(math.isfinite(v) for pair in logged for v in pair)
    return Result(elapsed / iters, cpu_elapsed / iters, images_per_iter, memory.peak_mb)


def _plain_setup(cfg, paths: FastPaths, device: torch.device):
    """G, D (as ganrun builds them from the same config and seed), their optimizers, and a batch source."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.setup("fit")
    generator, discriminator = build_networks(cfg.model, datamodule.data_shape, 0, datamodule.is_image)
    generator.to(device)
    discriminator.to(device)
    memory_format = torch.contiguous_format
    if paths.channels_last and has_convolutions(generator, discriminator):
        memory_format = torch.channels_last
        generator.to(memory_format=memory_format)
        discriminator.to(memory_format=memory_format)
    if paths.compile:
        generator.compile()
        discriminator.compile()
    optimizer_class = getattr(torch.optim, cfg.optimizer._target_.rsplit(".", 1)[-1])
    kwargs = {k: v for k, v in cfg.optimizer.items() if v is not None and k not in ("_target_", "lr", "lr_g", "lr_d")}
    opt_g, opt_d = (
        build_optimizer(optimizer_class, network.parameters(), fast_kernels=paths.fused_optimizers, lr=lr, **kwargs)
        for network, lr in (
            (generator, cfg.optimizer.lr_g or cfg.optimizer.lr),
            (discriminator, cfg.optimizer.lr_d or cfg.optimizer.lr),
        )
    )
    batch = cfg.dataset.batch_size
    next_batch = _plain_batches(datamodule, device, paths.data_on_device, batch, memory_format)
    return generator, discriminator, opt_g, opt_d, next_batch


def _plain_batches(datamodule, device, data_on_device: bool, batch: int, memory_format):
    """A function returning the next real batch on ``device``."""
    if not datamodule.is_image:  # 2-D mixture: sample each batch on the device
        modes = datamodule.modes.to(device)

        def sample() -> torch.Tensor:
            which = torch.randint(len(modes), (batch,), device=device)
            return modes[which] + datamodule.std * torch.randn(batch, 2, device=device)

        return sample
    data = datamodule.data.float().div_(127.5).sub_(1.0)  # scaled once, held in memory
    data = data.to(device if data_on_device else "cpu")
    per_epoch = len(data) // batch
    state = {"perm": None, "position": per_epoch}

    def next_batch() -> torch.Tensor:
        if state["position"] == per_epoch:
            state["perm"], state["position"] = torch.randperm(len(data), device=data.device), 0
        rows = state["perm"][state["position"] * batch : (state["position"] + 1) * batch]
        state["position"] += 1
        return data[rows].to(device, non_blocking=True).contiguous(memory_format=memory_format)

    return next_batch


# ------------------------------------------------------------------ PyTorch's example
def example_networks(
    nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The official example's G and D for 64x64 images (its weights_init included)."""
    from torch import nn

    def up(c_in: int, c_out: int, first: bool = False) -> list:
        return [
            nn.ConvTranspose2d(c_in, c_out, 4, 1 if first else 2, 0 if first else 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(True),
        ]

    def down(c_in: int, c_out: int, norm: bool = True) -> list:
        return [
            nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
            *([nn.BatchNorm2d(c_out)] if norm else []),
            nn.LeakyReLU(0.2, inplace=True),
        ]

    generator = nn.Sequential(
        *up(nz, ngf * 8, first=True),
        *up(ngf * 8, ngf * 4),
        *up(ngf * 4, ngf * 2),
        *up(ngf * 2, ngf),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    discriminator = nn.Sequential(
        *down(nc, ndf, norm=False),
        *down(ndf, ndf * 2),
        *down(ndf * 2, ndf * 4),
        *down(ndf * 4, ndf * 8),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )

    def init(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    generator.apply(init)
    discriminator.apply(init)
    return generator, discriminator


def run_example(cfg, device: torch.device, warmup: int, iters: int) -> Result:
    """The example's loop: D on a real then a fake batch (BCELoss), then G on the same fakes."""
    torch.manual_seed(cfg.seed)
    memory = PeakMemory(device).__enter__()
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.setup("fit")
    data = datamodule.data.float().div_(127.5).sub_(1.0)
    batch, nz = cfg.dataset.batch_size, 100
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data), batch_size=batch, shuffle=True, drop_last=True
    )
    generator, discriminator = (network.to(device) for network in example_networks(nz=nz, nc=data.shape[1]))
    criterion = torch.nn.BCELoss()
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    log_every, logged = cfg.trainer.log_every_n_steps, []

    def batches():
        while True:
            yield from loader

    stream = batches()

    def iteration(index: int) -> None:
        (real,) = next(stream)
        real = real.to(device)
        discriminator.zero_grad()
        label = torch.full((batch,), 1.0, device=device)
        err_real = criterion(discriminator(real).view(-1), label)
        err_real.backward()
        fake = generator(torch.randn(batch, nz, 1, 1, device=device))
        label.fill_(0.0)
        err_fake = criterion(discriminator(fake.detach()).view(-1), label)
        err_fake.backward()
        opt_d.step()
        generator.zero_grad()
        label.fill_(1.0)
        err_g = criterion(discriminator(fake).view(-1), label)
        err_g.backward()
        opt_g.step()
        if (index + 1) % log_every == 0:
            logged.append(((err_real + err_fake).item(), err_g.item()))

    return timed_loop(iteration, warmup, iters, device, memory, logged, batch)


# ------------------------------------------------------------------ ganrun
class StepTimer(pl.Callback):
    """Times G updates warmup+1 .. warmup+iters of a ganrun run (end of batch to end of batch)."""

    last: Optional["StepTimer"] = None

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device = warmup, torch.device(device)
        self.started: Optional[float] = None
        self.elapsed = self.cpu_elapsed = 0.0
        StepTimer.last = self

    def on_train_start(self, trainer, module) -> None:
        if self.warmup == 0:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.batches_done % module.n_critic:
            return  # mid-iteration (a D step without its G step yet)
        if module.g_updates == self.warmup:
            synchronize(self.device)
            self.started, self.cpu_started = time.perf_counter(), time.process_time()
        elif module.g_updates == module.max_g_updates and self.started is not None:
            synchronize(self.device)
            self.elapsed = time.perf_counter() - self.started
            self.cpu_elapsed = time.process_time() - self.cpu_started


def run_ganrun(
    case: str, variant: Variant, device: torch.device, warmup: int, iters: int, run_dir: Path, extra: list[str] = ()
) -> Result:
    timer = f"+callbacks.bench_timer={{_target_:{__name__}.StepTimer,warmup:{warmup},device:{device}}}"
    cfg = compose_config(case, device, run_dir, [*variant_overrides(variant), f"steps={warmup + iters}", timer, *extra])
    torch._dynamo.reset()
    output = io.StringIO()
    with PeakMemory(device) as memory, contextlib.redirect_stdout(output):
        metrics = train(cfg)
    assert metrics["g_updates"] == warmup + iters and StepTimer.last.elapsed > 0
    timer = StepTimer.last
    return Result(
        timer.elapsed / iters, timer.cpu_elapsed / iters, cfg.dataset.batch_size * cfg.n_critic, memory.peak_mb
    )


# ------------------------------------------------------------------ main
def benchmark(
    case: str,
    device: torch.device,
    warmup: int,
    iters: int,
    repeats: int,
    workdir: Path,
    extra: list[str] = (),
    only: Optional[list[str]] = None,
) -> dict[str, Result]:
    best: dict[str, Result] = {}
    chosen = [v for v in variants(device, case) if only is None or v.name in only]
    for repeat in range(repeats):
        for number, variant in enumerate(chosen):
            if variant.side == "plain":
                cfg = compose_config(case, device, workdir / "plain", list(extra))
                torch._dynamo.reset()
                result = run_plain(cfg, variant, device, warmup, iters)
            elif variant.side == "example":
                result = run_example(
                    compose_config(case, device, workdir / "example", list(extra)), device, warmup, iters
                )
            else:
                result = run_ganrun(
                    case, variant, device, warmup, iters, workdir / f"{case}-{repeat}-{number}", list(extra)
                )
            previous = best.get(variant.name)
            if previous is not None:  # the fastest repeat, each measure on its own; the highest memory peak
                result = Result(
                    min(result.seconds_per_iter, previous.seconds_per_iter),
                    min(result.cpu_seconds_per_iter, previous.cpu_seconds_per_iter),
                    result.images_per_iter,
                    max(result.peak_mb, previous.peak_mb),
                )
            best[variant.name] = result
    return best


def print_table(case: str, device: torch.device, results: dict[str, Result]) -> None:
    print(f"\n{CASES[case][0]} on {device.type}")
    print(f"| {'loop':<22} | {'ms/iter':>8} | {'iter/s':>8} | {'images/s':>9} | {'peak MB':>8} | {'CPU ms/iter':>11} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 13}|")
    for name, r in results.items():
        print(
            f"| {name:<22} | {r.seconds_per_iter * 1e3:8.2f} | {r.iters_per_s:8.1f} | "
            f"{r.iters_per_s * r.images_per_iter:9.0f} | {r.peak_mb:8.1f} | {r.cpu_seconds_per_iter * 1e3:11.2f} |"
        )
    if device.type == "cuda":
        pairs = [("ganrun fp32", "plain fp32"), ("ganrun fast", "plain fast")]
    else:
        pairs = [("ganrun", "plain")]
    if "PyTorch example" in results:
        pairs.append(("ganrun fp32" if device.type == "cuda" else "ganrun", "PyTorch example"))
    for mine, theirs in pairs:
        if mine not in results or theirs not in results:
            continue
        ratio = results[mine].seconds_per_iter / results[theirs].seconds_per_iter
        cpu_ratio = results[mine].cpu_seconds_per_iter / results[theirs].cpu_seconds_per_iter
        print(f"ratio {mine} / {theirs} (time per iteration): {ratio:.3f} (CPU time: {cpu_ratio:.3f})")
    if device.type == "cuda" and "ganrun fast" in results and "plain fp32" in results:
        speedup = results["ganrun fast"].iters_per_s / results["plain fp32"].iters_per_s
        print(f"speed-up ganrun fast / plain fp32 (images/s): {speedup:.2f}x")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--case", choices=[*CASES, "all"], default="all", help="all: ring, dcgan64 and example64")
    parser.add_argument(
        "--iters", type=int, default=None, help="timed iterations (default: ring 500, dcgan64 20 on CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed iterations first (default: iters // 5, at least 3)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each loop, alternating; the fastest counts")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads of every loop (default: torch's choice)"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="dataset.batch_size of the image cases (dcgan64, example64)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--only", default=None, help="comma-separated loop names to run (e.g. 'ganrun fp32,ganrun fast')"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available")
    print(machine_line(str(device)))
    extra = [f"threads={torch.get_num_threads()}"]
    if args.batch:
        extra += [f"dataset.batch_size={args.batch}", f"dataset.size={max(1024, 4 * args.batch)}"]
    only = [name.strip() for name in args.only.split(",")] if args.only else None
    report: dict = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch, "cases": {}}
    with scratch_folder() as workdir:
        for case in list(CASES) if args.case == "all" else [args.case]:
            iters = args.iters or (500 if case == "ring" else (20 if device.type == "cpu" else 300))
            warmup = args.warmup if args.warmup is not None else max(3, iters // 5)
            results = benchmark(case, device, warmup, iters, args.repeats, workdir, extra, only)
            print_table(case, device, results)
            report["cases"][case] = {
                name: {
                    "ms_per_iter": r.seconds_per_iter * 1e3,
                    "images_per_s": r.iters_per_s * r.images_per_iter,
                    "peak_mb": r.peak_mb,
                }
                for name, r in results.items()
            }
    write_json(args.json, report)


if __name__ == "__main__":
    main()
