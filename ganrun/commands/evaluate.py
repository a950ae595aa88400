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

import torch
from omegaconf import OmegaConf

from ganrun.runtime import threads
from ganrun.commands.arguments import parse_key_values
from ganrun.errors import ConfigError

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
    from ganrun.metrics import suite

    defaults = {"metrics": None, "n": None, "seed": 0, "ema": "true", "device": "auto", "threads": "auto", "features": "auto"}
    args = parse_key_values(argv, KEYS, defaults, ("ckpt",), USAGE)
    if args["n"] is not None and args["n"] < 2:
        raise ConfigError(f"n={args['n']} is not valid; it must be an integer >= 2")
    if args["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={args['device']} is not valid; choose auto, cpu or cuda")
    if args["features"] not in suite.FEATURE_SPACES:
        raise ConfigError(f"features={args['features']} is not valid; choose {', '.join(suite.FEATURE_SPACES)}")
    return args


def main(argv: list[str]) -> dict:
    from ganrun.metrics import suite
    from ganrun.commands.sample import load_generator
    from ganrun.config.build import instantiate

    args = parse_args(argv)
    threads.use(args["threads"])
    device = args["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    generator, info = load_generator(args["ckpt"], use_ema=args["ema"] == "true")
    cfg = OmegaConf.create(info["config"])
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    latent, num_classes = info["latent"], info["num_classes"]
    spec = args["metrics"] or cfg.get("eval", {}).get("metrics", "auto")
    names = suite.resolve(spec, datamodule, num_classes, latent, features=args["features"])
    if not names:
        raise ConfigError(f"no metric applies to {datamodule.describe()} offline; name one: metrics=fid,is,kid")
    n = args["n"] or cfg.get("eval", {}).get("num_samples") or 10_000
    started = time.perf_counter()
    judge_size = cfg.get("eval", {}).get("judge_size", 32)
    result = suite.evaluate(
        generator.to(device), latent, datamodule, names, n, num_classes, seed=args["seed"], device=device,
        judge_size=judge_size, features=args["features"],
    )
    result["protocol"]["standard"] = args["n"] is None
    result["protocol"]["ema"] = info["ema"]  # false for a run without EMA, whatever ema= said
    result.update({"ckpt": str(args["ckpt"]), "g_updates": info.get("g_updates"), "eval_time_s": round(time.perf_counter() - started, 2)})
    return result


def run(argv: list[str]) -> None:
    result = main(argv)
    print(json.dumps(result))
