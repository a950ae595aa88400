"""Resuming a run from its checkpoint alone: ``ganrun ckpt_path=RUN/checkpoints/last.ckpt``.

A checkpoint carries the overrides its run was started with
(``checkpoint["ganrun"]["overrides"]``; for checkpoints written before that, the run's
``.hydra/overrides.yaml``). On a resume they go *before* the command line's, so the
run continues with the config it was trained with, and a key given again on the
command line applies on top (e.g. ``steps=`` to train longer). Whether the result
still fits the checkpoint's networks is checked by ``ganrun.config.preflight`` before Hydra
writes anything; a misfit is refused in one line naming options, e.g.
``ckpt_path=... was trained with model=dcgan loss=ns dataset=digits; model=gan does not fit its networks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Keys that never decide the networks: a command line that only changes these cannot be the misfit.
NOT_NETWORK_KEYS = (
    "ckpt_path",
    "hydra.",
    "run_dir",
    "steps",
    "seed",
    "trainer.",
    "callbacks",
    "logger",
    "accelerator",
    "optimizer.",
    "scheduler",
    "tricks.",
    "eval.",
    "fast.",
    "n_critic",
    "launcher",
)
# Config groups named in "was trained with ...".
NAMED_GROUPS = ("experiment", "model", "loss", "dataset")


@dataclass
class Resume:
    ckpt_path: str  # as given on the command line (or RUN/checkpoints/last.ckpt for ckpt_path=last)
    checkpoint: dict
    stored: Optional[list[str]]  # the run's own overrides; None when unknown (very old checkpoint)
    given: list[str]  # the command line's overrides
    current_config: Optional[dict] = None  # the composed config, set by preflight (fallback message)

    def overrides(self) -> list[str]:
        """The run's overrides, then the command line's; a key given again replaces the stored entry."""
        return merge(self.stored or [], self.given)

    def changed(self) -> list[str]:
        """The command line's overrides that may change the networks (not already stored as given)."""
        stored = set(self.stored or [])
        return [item for item in self.given if item not in stored and not key_of(item).startswith(NOT_NETWORK_KEYS)]

    def refusal(self, problem: str, built: bool = True) -> str:
        """One line: what the checkpoint was trained with and which overrides do not fit it.
        ``built``: the networks were built and differ (else ``problem`` is why they could not be)."""
        trained = self.trained_with()
        changed = " ".join(self.changed())
        if trained and changed:
            if built:
                return f"ckpt_path={self.ckpt_path} was trained with {trained}; {changed} does not fit its networks"
            return f"ckpt_path={self.ckpt_path} was trained with {trained}; {changed} does not fit it: {problem}"
        if not built:
            stored = f" (ckpt_path={self.ckpt_path} was trained with: {' '.join(self.stored)})" if self.stored else ""
            return problem + stored
        from ganrun.records.checkpoints import config_differences

        hint = ", ".join(config_differences(self.checkpoint["ganrun"]["config"], self.current_config or {}))
        hint = f"it was trained with {hint}" if hint else "resume with the overrides it was trained with"
        return f"ckpt_path={self.ckpt_path} does not fit the networks of this config ({problem}); {hint}"

    def trained_with(self) -> str:
        """``model=dcgan loss=ns dataset=digits model.z_dim=4 ...``: the run's options and its model/data keys."""
        if self.stored is None:
            return ""
        from ganrun.config.compose import compose_choices

        try:
            choices = compose_choices(self.stored)
        except Exception:  # options renamed since: the stored entries as they were typed
            choices = {key_of(item): item.partition("=")[2] for item in self.stored if key_of(item) in NAMED_GROUPS}
        named = [f"{group}={choices[group]}" for group in NAMED_GROUPS if choices.get(group)]
        keys = [item for item in self.stored if key_of(item).startswith(("model.", "dataset.", "loss."))]
        return " ".join(named + keys)


def find_resume(overrides: list[str], values: dict[str, str]) -> Optional[Resume]:
    """The resume a single run's command line asks for, with its checkpoint read (one-line
    errors for a missing or bad file); None for a fresh run, including ``ckpt_path=last``
    when ``hydra.run.dir`` has no checkpoint yet."""
    from ganrun.records.checkpoints import load_checkpoint, stored_overrides

    ckpt_path = values.get("ckpt_path")
    if ckpt_path in (None, "", "null"):
        return None
    path = Path(ckpt_path).expanduser()
    if ckpt_path == "last":
        path = Path(values["hydra.run.dir"]).expanduser() / "checkpoints" / "last.ckpt"
        if not path.is_file():
            return None
        ckpt_path = str(path)
    checkpoint = load_checkpoint(path)
    return Resume(ckpt_path, checkpoint, stored_overrides(checkpoint, path), overrides)


def merge(stored: list[str], given: list[str]) -> list[str]:
    """``stored`` without the entries whose key ``given`` sets again (and without its old
    ``ckpt_path``), then ``given``. A stored ``+key=`` (a key added to the config) keeps
    its ``+`` when the command line sets that key again."""
    given_keys = {key_of(item) for item in given}
    added = {key_of(item) for item in stored if item.startswith("+") and not item.startswith("++")}
    kept = [item for item in stored if key_of(item) not in given_keys and key_of(item) != "ckpt_path"]
    return kept + [f"+{item}" if key_of(item) in added and not item.startswith(("+", "~")) else item for item in given]


def key_of(item: str) -> str:
    return item.partition("=")[0].lstrip("+~")
