"""``ganrun-eval ckpt=PATH [metrics=auto|all|NAME,...] [n=INT] [seed=INT] [ema=true|false] [device=auto|cpu|cuda] [features=auto|judge|inception]``.

Rebuilds the generator and the dataset from the checkpoint alone, computes the
metrics under the dataset's fixed protocol (``eval.num_samples`` of the run's
config unless ``n=`` is given) and prints one JSON object on stdout's last line:
the metrics, ``g_updates``, ``ckpt`` and the ``protocol`` they were measured under.
``features=`` chooses where precision, recall, density and coverage compare samples
(``ganrun.metrics.suite.prdc_space``).
"""

from __future__ import annotations

import json
import time
from typing import Optional, Sequence, Union

import torch
from omegaconf import OmegaConf

from ganrun.commands.arguments import parse_key_values
from ganrun.errors import ConfigError
from ganrun.runtime import threads

USAGE = (
    "ganrun-eval ckpt=PATH [metrics=auto|all|NAME,...] [n=INT] [seed=INT] [ema=true|false] [device=auto|cpu|cuda] "
    "[threads=auto|N] [features=auto|judge|inception]"
)
HELP = f"""
usage: {USAGE}

Evaluate the generator of a ganrun checkpoint under its dataset's fixed protocol;
prints one JSON object on the last line (the metrics, g_updates, ckpt, protocol).

  ckpt=PATH                  a checkpoint, e.g. runs/DATE/TIME/checkpoints/best.ckpt
  metrics=auto|all|NAME,...  auto (default): every offline metric that applies; all: also fid, is, kid;
                             or names: modes_covered, high_quality_fraction, cfid, cis, classes_covered,
                             class_kl, cond_accuracy, code_accuracy, precision, recall, density, coverage,
                             fid, is, kid
  n=INT                      samples (default: the dataset's protocol, eval.num_samples)
  seed=INT                   sampling seed (default 0)
  ema=true|false             the EMA generator when the run had one (default true)
  device=auto|cpu|cuda       where to run (default auto)
  threads=auto|N             CPU threads (default auto: one per free core, as in a run)
  features=auto|judge|inception  where precision, recall, density, coverage compare samples (default auto:
                             the points themselves on 2-D data, the judge's features on labelled images,
                             else Inception's; inception needs its weights)

example: ganrun-eval ckpt=runs/2026-11-23/10-45-57/checkpoints/best.ckpt
"""
KEYS = {"ckpt": str, "metrics": str, "n": int, "seed": int, "ema": str, "device": str, "threads": str, "features": str}


def parse_args(argv: list[str]) -> dict:
    defaults = {
        "metrics": None,
        "n": None,
        "seed": 0,
        "ema": "true",
        "device": "auto",
        "threads": "auto",
        "features": "auto",
    }
    args = parse_key_values(argv, KEYS, defaults, ("ckpt",), USAGE)
    check_options(args["n"], args["device"], args["features"])
    return args


def check_options(n: Optional[int], device: str, features: str) -> None:
    """One-line ConfigError for a sample count, device or feature space ganrun-eval cannot use."""
    from ganrun.metrics import suite

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ConfigError(f"n={n} is not valid; it must be an integer >= 2")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={device} is not valid; choose auto, cpu or cuda")
    if features not in suite.FEATURE_SPACES:
        raise ConfigError(f"features={features} is not valid; choose {', '.join(suite.FEATURE_SPACES)}")


def main(argv: list[str]) -> dict:
    """``ganrun-eval``'s result for its command line (threads set as given, default auto)."""
    args = parse_args(argv)
    threads.use(args["threads"])
    return evaluate_checkpoint(
        args["ckpt"],
        metrics=args["metrics"],
        n=args["n"],
        seed=args["seed"],
        ema=args["ema"] == "true",
        device=args["device"],
        features=args["features"],
    )


def evaluate_checkpoint(
    ckpt,
    metrics: Union[str, Sequence[str], None] = None,
    n: Optional[int] = None,
    seed: int = 0,
    ema: bool = True,
    device: str = "auto",
    features: str = "auto",
) -> dict:
    """The metrics of a checkpoint's generator, as ``ganrun-eval`` prints them (the metrics,
    ``protocol``, ``ckpt``, ``g_updates``, ``eval_time_s``); shared by ``ganrun-eval`` and
    ``ganrun.evaluate``. ``metrics``: auto, all, a comma-separated string or a list of names
    (default: the run's ``eval.metrics``); ``n``: samples (default: the run's ``eval.num_samples``)."""
    from ganrun.commands.sample import load_generator
    from ganrun.config.build import instantiate
    from ganrun.metrics import suite

    check_options(n, device, features)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    generator, info = load_generator(ckpt, use_ema=ema)
    cfg = OmegaConf.create(info["config"])
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    latent, num_classes = info["latent"], info["num_classes"]
    spec = metrics or cfg.get("eval", {}).get("metrics", "auto")
    names = suite.resolve(spec, datamodule, num_classes, latent, features=features)
    if not names:
        raise ConfigError(f"no metric applies to {datamodule.describe()} offline; name one: metrics=fid,is,kid")
    count = n or cfg.get("eval", {}).get("num_samples") or 10_000
    started = time.perf_counter()
    judge_size = cfg.get("eval", {}).get("judge_size", 32)
    result = suite.evaluate(
        generator.to(device),
        latent,
        datamodule,
        names,
        count,
        num_classes,
        seed=seed,
        device=device,
        judge_size=judge_size,
        features=features,
    )
    result["protocol"]["standard"] = n is None
    result["protocol"]["ema"] = info["ema"]  # false for a run without EMA, whatever ema= said
    result.update(
        {"ckpt": str(ckpt), "g_updates": info.get("g_updates"), "eval_time_s": round(time.perf_counter() - started, 2)}
    )
    return result


def run(argv: list[str]) -> None:
    result = main(argv)
    print(json.dumps(result))
