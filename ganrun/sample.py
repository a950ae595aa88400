"""``ganrun-sample ckpt=PATH n=INT out=FILE.pt [label=INT] [code=INT] [grid=FILE.png] [seed=INT]``.

Everything needed to rebuild the generator travels inside the checkpoint (the
composed config, data shape and class count), so no config files are read.
Writes ``{"images": N x C x H x W in [-1, 1]}`` for image data or ``{"x": N x 2}``
for 2-D data, plus ``"labels"`` (N int64) for class-conditional models.
``code=K`` fixes an InfoGAN's first categorical code to K (``"codes"`` in the file).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from ganrun.arguments import parse_key_values
from ganrun.errors import ConfigError

USAGE = "ganrun-sample ckpt=PATH n=INT out=FILE.pt [label=INT] [code=INT] [grid=FILE.png] [seed=INT] [ema=true|false]"
KEYS = {"ckpt": str, "n": int, "out": str, "label": int, "code": int, "grid": str, "seed": int, "ema": str}


def parse_args(argv: list[str]) -> dict:
    defaults = {"seed": 0, "label": None, "code": None, "grid": None, "ema": "true"}
    args = parse_key_values(argv, KEYS, defaults, ("ckpt", "n", "out"), USAGE)
    if args["n"] < 1:
        raise ConfigError(f"n={args['n']} is not valid; it must be a positive integer")
    return args


def load_generator(ckpt_path: str, use_ema: bool = True):
    """Rebuild G from a ganrun checkpoint; returns (generator in eval mode, run info dict).

    A missing, truncated or foreign file is refused with a one-line error
    (``ganrun.checkpoint_io.load_checkpoint``).
    """
    from ganrun.checkpoint_io import load_checkpoint
    from ganrun.train import build_latent, build_networks

    checkpoint = load_checkpoint(ckpt_path)
    info = checkpoint["ganrun"]
    cfg = OmegaConf.create(info["config"])
    generator, _ = build_networks(cfg.model, info["data_shape"], info["num_classes"], info["is_image"])
    state = checkpoint["state_dict"]
    ema_prefix = "generator_ema.module."
    prefix = ema_prefix if use_ema and any(k.startswith(ema_prefix) for k in state) else "generator."
    generator.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    counters = checkpoint.get("ganrun_counters", {})
    info = {**info, "latent": build_latent(cfg.model), "g_updates": counters.get("g_updates")}
    return generator.eval(), info


@torch.no_grad()
def draw(
    generator, info: dict, n: int, seed: int = 0, label: Optional[int] = None, code: Optional[int] = None, batch_size: int = 1024
) -> dict:
    num_classes = info["num_classes"]
    rng = torch.Generator().manual_seed(seed)
    noise = info["latent"].sample(n, generator=rng)
    if code is not None:
        noise = fix_code(info["latent"], noise, code)
    labels = None
    if num_classes:
        if label is not None and not 0 <= label < num_classes:
            raise ConfigError(f"label={label} is not valid; this model has classes 0..{num_classes - 1}")
        labels = torch.full((n,), label) if label is not None else torch.randint(num_classes, (n,), generator=rng)
    elif label is not None:
        raise ConfigError(f"label={label} given but this model is not class-conditional")
    chunks = []
    for start in range(0, n, batch_size):
        y = None if labels is None else labels[start : start + batch_size]
        chunks.append(generator(noise[start : start + batch_size], y).float())
    samples = torch.cat(chunks)
    out = {"images": samples.clamp(-1, 1)} if info["is_image"] else {"x": samples}
    if labels is not None:
        out["labels"] = labels.long()
    if code is not None:
        out["codes"] = torch.full((n,), code, dtype=torch.long)
    return out


def fix_code(latent, noise: torch.Tensor, code: int) -> torch.Tensor:
    """InfoGAN's first categorical code set to ``code``; refused for latents without codes."""
    if not hasattr(latent, "with_category"):
        raise ConfigError(f"code={code} given but this model has no categorical latent code (only model=infogan has one)")
    return latent.with_category(noise, code)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    generator, info = load_generator(args["ckpt"], use_ema=args["ema"] == "true")
    result = draw(generator, info, args["n"], seed=args["seed"], label=args["label"], code=args["code"])
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, out)
    if args["grid"]:
        save_grid(result, args["grid"])
    shape = tuple(next(iter(result.values())).shape)
    print(f"ganrun-sample: wrote {shape[0]} samples {shape[1:]} to {out}")


def save_grid(result: dict, path: str) -> None:
    from torchvision.utils import save_image

    from ganrun.callbacks.samples import scatter_image

    if "images" in result:
        images = result["images"]
        save_image(images, path, nrow=int(math.ceil(math.sqrt(len(images)))), normalize=True, value_range=(-1, 1))
    else:
        save_image(scatter_image(result["x"], result["x"]), path)
