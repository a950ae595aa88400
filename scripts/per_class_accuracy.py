"""Per-class ``cond_accuracy`` of a class-conditional checkpoint, read by ganrun-eval's judge.

    python scripts/per_class_accuracy.py RUN/checkpoints/last.ckpt [n=2000] [seed=0]

Same protocol as ``ganrun-eval`` (fixed seed, classes uniform, the dataset's judge);
prints one JSON line: the overall accuracy and the accuracy for each requested class.
"""

from __future__ import annotations

import json
import sys

from omegaconf import OmegaConf


def main(ckpt: str, n: int = 2000, seed: int = 0) -> dict:
    from ganrun.commands.sample import load_generator
    from ganrun.metrics.classifier import load_judge
    from ganrun.metrics.features import to_uint8
    from ganrun.metrics.suite import draw_for_eval
    from ganrun.train import instantiate

    generator, info = load_generator(ckpt)
    cfg = OmegaConf.create(info["config"])
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    samples, labels, _ = draw_for_eval(generator, info["latent"], info["num_classes"], n, seed, "cpu")
    judge = load_judge(datamodule, cfg.get("eval", {}).get("judge_size", 32), device="cpu")
    predicted = judge.features_and_logits(to_uint8(samples))[1].argmax(1)
    per_class = {int(k): round(float((predicted[labels == k] == k).float().mean()), 3) for k in labels.unique()}
    return {"cond_accuracy": round(float((predicted == labels).float().mean()), 4), "per_class": per_class}


if __name__ == "__main__":
    options = dict(arg.split("=", 1) for arg in sys.argv[2:])
    print(json.dumps(main(sys.argv[1], int(options.get("n", 2000)), int(options.get("seed", 0)))))
