"""Bad input to ``ganrun``, all in one table: each case is refused with exit status 2 in one
line naming the bad value (and the valid choices), before anything is written: no run
folder, no data folder from a failed download.

Run in this process (``in_process``: the command's own entry point and output); downloads
fail at once (a dead proxy). A few refusals also run end to end in a new process
(tests/scenarios/test_first_contact.py, tests/unit/commands/test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import OFFLINE, QUIET, assert_one_line_error, in_process

REFUSALS = [
    # values the schema refuses
    (["optimizer.lr=abc"], ["optimizer.lr=abc is not valid", "positive number"]),
    (["steps=-5"], ["steps=-5 is not valid", "positive integer"]),
    (["dataset.batch_size=abc"], ["dataset.batch_size=abc is not valid", "positive integer"]),
    (["n_critic=1.5"], ["n_critic=1.5 is not valid"]),
    (["seed=-1"], ["seed=-1 is not valid", "0 to 4294967295"]),
    (["tricks.ema_decay=1.5"], ["tricks.ema_decay=1.5 is not valid", "(0, 1)"]),
    (["tricks.mine_anneal_steps=-3"], ["tricks.mine_anneal_steps=-3 is not valid"]),
    # a term's own keys are named with their node
    (["term=mine", "terms.mine.weight=abc"], ["terms.mine.weight=abc is not valid"]),
    (["term=ema", "terms.ema.decay=1.5"], ["terms.ema.decay=1.5 is not valid", "(0, 1)"]),
    (
        ["model=gan", "dataset=ring", "steps=null", "scheduler=null"],  # the ring recipe's MINE decay follows steps
        ["terms.mine.anneal_steps=null is not valid", "set steps=N"],
    ),
    (["callbacks.samples.every_n_steps=-1"], ["callbacks.samples.every_n_steps=-1 is not valid"]),
    (["callbacks.divergence.action=maybe"], ["callbacks.divergence.action=maybe is not valid", "stop or warn"]),
    (["model=stylegan9"], ["model=stylegan9 is not a known model option", "choose one of: cgan, dcgan, gan,"]),
    (["loss=foo"], ["loss=foo is not a known loss option", "hinge", "wgan_gp"]),
    (["loss=wgan-gp"], ["loss=wgan-gp is not a known loss option", "did you mean loss=wgan_gp?"]),
    (["stepz=5"], ["stepz is not a config key", "did you mean steps?"]),
    (["model.generator.widht=3"], ["did you mean model.generator.width?"]),
    (["dataset=folder,mnist"], ["Ambiguous value", "--multirun"]),
    (["model=infogan", "model.module.q_shift=abc"], ["model.module.q_shift=abc is not valid", "a number"]),
    (["ckpt_path=last", "steps=1"], ["ckpt_path=last needs hydra.run.dir=DIR"]),
    # per-example gradient penalties on a critic whose output mixes the examples of a batch
    (
        ["model=gan", "dataset=ring", "loss=wgan_gp", "tricks.minibatch_discrimination=true"],
        ["(loss=wgan_gp) cannot be used with tricks.minibatch_discrimination=true", "per-example gradient norm"],
    ),
    (
        ["model=gan", "dataset=ring", "term=r1", "tricks.minibatch_discrimination=true"],
        ["(term=r1) cannot be used with tricks.minibatch_discrimination=true"],
    ),
    # data that is missing or does not fit the model
    (["dataset=folder", "dataset.path=/no/such/dir"], ["dataset.path=/no/such/dir is not a directory"]),
    (["steps=0"], ["steps=0 is not valid"]),
    (["dataset.image_size=30"], ["dataset.image_size=30", "DCGAN"]),
    (["model=cgan", "dataset=ring"], ["class-conditional", "no labels"]),
    (["dataset=folder"], ["dataset=folder needs dataset.path=DIR"]),
    (
        ["dataset=mnist", "dataset.root=empty", "dataset.download=false"],
        ["MNIST not found in empty/MNIST/raw", "download=false", "train-images-idx3-ubyte"],
    ),
    (["experiment=dcgan_mnist"], ["MNIST not found in data/MNIST/raw", "download failed", "train-images-idx3-ubyte"]),
    (["dataset=cifar10", "dataset.root=empty"], ["CIFAR-10 not found in empty/cifar-10-batches-py", "download failed"]),
]


def folders_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_dir()}


@pytest.mark.parametrize("args,fragments", REFUSALS)
def test_bad_input_is_refused_in_one_line_and_writes_nothing(args, fragments, tmp_path):
    (tmp_path / "empty").mkdir()
    before = folders_under(tmp_path)
    result = in_process("train_main", *QUIET, *args, cwd=tmp_path, env={**OFFLINE, "HYDRA_FULL_ERROR": ""})
    assert result.returncode == 2, result.stderr[-2000:]
    assert_one_line_error(result, "ganrun: error:", *fragments)
    assert folders_under(tmp_path) == before  # no runs/DATE/TIME, no data folders from a failed download
