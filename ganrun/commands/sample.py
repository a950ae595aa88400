"""``ganrun-sample ckpt=PATH n=INT out=FILE.pt|FILE.png [label=INT] [code=INT] [grid=FILE.png] [seed=INT]``.

Everything needed to rebuild the generator travels inside the checkpoint (the
composed config, data shape and class count), so no config files are read.
``out=FILE.pt`` writes ``{"images": N x C x H x W in [-1, 1]}`` for image data or
``{"x": N x 2}`` for 2-D data, plus ``"labels"`` (N int64) for class-conditional
models; ``out=FILE.png`` writes a PNG grid (a scatter plot for 2-D data) instead.
``code=K`` fixes an InfoGAN's first categorical code to K (``"codes"`` in the file).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from ganrun.commands.arguments import parse_key_values
from ganrun.errors import ConfigError
from ganrun.runtime import threads
from ganrun.training.sampling import generate

USAGE = "ganrun-sample ckpt=PATH n=INT out=FILE.pt|FILE.png [label=INT] [code=INT] [grid=FILE.png] [seed=INT] [ema=true|false] [threads=auto|N]"
HELP = f"""
usage: {USAGE}

Draw n samples from the generator in a ganrun checkpoint (the checkpoint carries its config).

  ckpt=PATH        a checkpoint, e.g. runs/DATE/TIME/checkpoints/last.ckpt or best.ckpt
  n=INT            number of samples
  out=FILE.pt      torch.save'd dict: images (N x C x H x W in [-1, 1]) or x (N x 2), labels if conditional
  out=FILE.png     a PNG grid of the samples instead (a scatter plot for 2-D data)
  grid=FILE.png    also a PNG grid, beside out=FILE.pt
  label=INT        class to draw (class-conditional models only; default: random classes)
  code=INT         InfoGAN only: fix the first categorical code to this value
  seed=INT         noise seed (default 0): same seed, same samples
  ema=true|false   the EMA generator when the run had one (default true)
  threads=auto|N   CPU threads (default auto: one per free core, as in a run)

example: ganrun-sample ckpt=runs/2026-11-23/10-45-57/checkpoints/last.ckpt n=64 out=samples.png
"""
TENSOR_SUFFIXES = (".pt", ".pth")
IMAGE_SUFFIXES = (".png",)
KEYS = {
    "ckpt": str,
    "n": int,
    "out": str,
    "label": int,
    "code": int,
    "grid": str,
    "seed": int,
    "ema": str,
    "threads": str,
}


def parse_args(argv: list[str]) -> dict:
    defaults = {"seed": 0, "label": None, "code": None, "grid": None, "ema": "true", "threads": "auto"}
    args = parse_key_values(argv, KEYS, defaults, ("ckpt", "n", "out"), USAGE)
    if args["n"] < 1:
        raise ConfigError(f"n={args['n']} is not valid; it must be a positive integer")
    for key in ("out", "grid"):
        allowed = IMAGE_SUFFIXES if key == "grid" else TENSOR_SUFFIXES + IMAGE_SUFFIXES
        if args[key] is not None and Path(args[key]).suffix.lower() not in allowed:
            raise ConfigError(f"{key}={args[key]} is not valid; use {' or '.join(f'FILE{s}' for s in allowed)}")
    return args


def load_generator(ckpt_path: str, use_ema: bool = True):
    """Rebuild G from a ganrun checkpoint; returns (generator in eval mode, run info dict;
    ``info["ema"]``: whether the EMA weights were loaded, False for a run without EMA).

    A missing, truncated or foreign file is refused with a one-line error
    (``ganrun.records.checkpoints.load_checkpoint``).
    """
    from ganrun.config.build import build_latent, build_networks
    from ganrun.records.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(ckpt_path)
    info = checkpoint["ganrun"]
    cfg = OmegaConf.create(info["config"])
    generator, _ = build_networks(cfg.model, info["data_shape"], info["num_classes"], info["is_image"])
    state = checkpoint["state_dict"]
    ema_prefix = "generator_ema.module."
    prefix = ema_prefix if use_ema and any(k.startswith(ema_prefix) for k in state) else "generator."
    generator.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    counters = checkpoint.get("ganrun_counters", {})
    info = {
        **info,
        "latent": build_latent(cfg.model),
        "g_updates": counters.get("g_updates"),
        "ema": prefix == ema_prefix,
    }
    return generator.eval(), info


def draw(
    generator, info: dict, n: int, seed: int = 0, label=None, code: Optional[int] = None, batch_size: int = 1024
) -> dict:
    """``n`` samples of ``generator`` (from ``load_generator``) from noise seeded by ``seed``.
    ``label``: one class for all samples (int), one class per sample (a sequence or tensor of
    ``n`` ints), or None (uniform over the classes of a class-conditional model)."""
    num_classes = info["num_classes"]
    rng = torch.Generator().manual_seed(seed)
    noise = info["latent"].sample(n, generator=rng)
    if code is not None:
        noise = fix_code(info["latent"], noise, code)
    labels = None
    if num_classes:
        labels = (
            class_labels(label, n, num_classes)
            if label is not None
            else torch.randint(num_classes, (n,), generator=rng)
        )
    elif label is not None:
        raise ConfigError(f"{label_name(label)} given but this model is not class-conditional")
    samples = generate(generator, noise, labels, batch_size=batch_size)
    out = {"images": samples.clamp(-1, 1)} if info["is_image"] else {"x": samples}
    if labels is not None:
        out["labels"] = labels.long()
    if code is not None:
        out["codes"] = torch.full((n,), code, dtype=torch.long)
    return out


def class_labels(label, n: int, num_classes: int) -> torch.Tensor:
    """``label`` as ``n`` class indices (N int64), checked against the model's classes."""
    labels = torch.as_tensor(label).long()
    if labels.dim() == 0:
        labels = labels.expand(n).clone()
    elif labels.shape != (n,):
        raise ConfigError(
            f"labels of shape {tuple(labels.shape)} given for {n} samples; give one class per sample or a single int"
        )
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if len(outside):
        given = f"label={label}" if isinstance(label, numbers.Integral) else f"labels: {int(outside[0])}"
        raise ConfigError(f"{given} is not valid; this model has classes 0..{num_classes - 1}")
    return labels


def label_name(label) -> str:
    """How a label argument is named in an error: ``label=3``, or ``labels`` for one per sample."""
    return f"label={label}" if isinstance(label, numbers.Integral) else "labels"


def fix_code(latent, noise: torch.Tensor, code: int) -> torch.Tensor:
    """InfoGAN's first categorical code set to ``code``; refused for latents without codes."""
    if not hasattr(latent, "with_category"):
        raise ConfigError(
            f"code={code} given but this model has no categorical latent code (only model=infogan has one)"
        )
    return latent.with_category(noise, code)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    threads.use(args["threads"])
    generator, info = load_generator(args["ckpt"], use_ema=args["ema"] == "true")
    result = draw(generator, info, args["n"], seed=args["seed"], label=args["label"], code=args["code"])
    written = []
    for key in ("out", "grid"):
        if args[key] is None:
            continue
        path = Path(args[key])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            save_grid(result, path)
            written.append(f"a grid to {path}")
        else:
            torch.save(result, path)
            written.append(f"the tensors to {path}")
    shape = tuple(next(iter(result.values())).shape)
    print(f"ganrun-sample: drew {shape[0]} samples of shape {shape[1:]}; wrote {' and '.join(written)}")


def save_grid(result: dict, path) -> None:
    from torchvision.utils import save_image

    from ganrun.callbacks.samples import scatter_image

    if "images" in result:
        images = result["images"]
        save_image(images, path, nrow=int(math.ceil(math.sqrt(len(images)))), normalize=True, value_range=(-1, 1))
    else:
        save_image(scatter_image(result["x"], result["x"]), path)
