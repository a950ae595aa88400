"""What a run measures at its end, under one protocol, once.

Every line that reports the end of a run reads one measurement of its last G update:
the ``Evaluation`` callback's final evaluation (``callbacks.evaluation``:
``num_samples`` samples of the sampling generator, EMA copy included, drawn by
``suite.draw_for_eval`` from seed ``seed``; 2,000 from seed 0 by default). The collapse
alarm's end-of-run mode count, ``hp/modes_covered`` / ``hp/high_quality_fraction`` and the
summary's ``modes_covered`` on 2-D mixtures are that evaluation's numbers, never a
second draw. Where the evaluation does not run at the end (``every_n_steps=0``, a run
shorter than ``final_min_steps``, ``callbacks=none``), the mode count is measured the
same way (``EVALUATION_SAMPLES`` samples from ``EVALUATION_SEED``) by whoever needs it
first, and shared the same way.

A run stopped by a signal (SIGTERM, Ctrl-C) is not measured at its end: it stops
quickly, and ``ganrun-eval ckpt=...`` evaluates its checkpoint later.

Callbacks that measure implement ``Measures``: ``measured_at(g_updates)`` shares what
they measured at a G update, ``measure_at_end`` measures the end when their protocol
does (the Evaluation callback's final evaluation, at most once per G update).
"""

from __future__ import annotations

from typing import Iterable, Optional

from omegaconf import DictConfig

LOSS_METRICS = ("hp/loss_d", "hp/loss_g")
MIXTURE_METRICS = ("hp/modes_covered", "hp/high_quality_fraction")
# Every hp/* a run may report (final_metrics and Evaluation.summary).
HP_METRICS = ("hp/metric", *LOSS_METRICS, *MIXTURE_METRICS)
COVERAGE_METRICS = ("modes_covered", "high_quality_fraction")

# The in-training evaluation's protocol (callbacks.evaluation: num_samples, seed, final_min_steps).
EVALUATION_SAMPLES = 2000
EVALUATION_SEED = 0
EVALUATION_MIN_G_UPDATES = 100


class Measures:
    """A callback whose measurements of the sampling generator others reuse."""

    def measured_at(self, g_updates: int) -> Optional[dict[str, float]]:
        """The metrics it measured at G update ``g_updates``; None when it measured nothing there."""
        return None

    def measure_at_end(self, trainer, module) -> Optional[dict[str, float]]:
        """The metrics of the run's last G update, measured now if its protocol measures this
        run's end and it has not yet (every rank calls it: measuring may be collective)."""
        return self.measured_at(module.g_updates)


def stopped_by_signal(callbacks: Iterable) -> bool:
    """A SIGTERM or first Ctrl-C stopped the run (``LastCheckpoint.received_signal``)."""
    return any(getattr(callback, "received_signal", None) for callback in callbacks)


def shared_measurement(callbacks: Iterable, g_updates: int, metric: str) -> Optional[dict[str, float]]:
    """What a callback already measured at G update ``g_updates`` including ``metric``, or None."""
    for callback in callbacks:
        if isinstance(callback, Measures):
            values = callback.measured_at(g_updates)
            if values and metric in values:
                return values
    return None


def measure_coverage(module, datamodule) -> dict[str, float]:
    """``modes_covered`` and ``high_quality_fraction`` of the sampling generator under the
    evaluation's protocol: the numbers the Evaluation callback reports for this G update."""
    from ganrun.metrics import suite

    result = suite.evaluate(
        module.sampling_generator,
        module.latent,
        datamodule,
        list(COVERAGE_METRICS),
        EVALUATION_SAMPLES,
        module.num_classes,
        seed=EVALUATION_SEED,
        device=module.device,
    )
    return {name: float(result[name]) for name in COVERAGE_METRICS}


def coverage_at_end(trainer, module) -> Optional[dict[str, float]]:
    """Mode coverage of the run's last G update, measured once: the Evaluation callback's
    final evaluation where it makes one (asked now, so it evaluates once), else measured
    here under the same protocol. None on data without modes. Every rank calls it."""
    datamodule = trainer.datamodule
    if not datamodule.is_mixture:
        return None
    for callback in trainer.callbacks:
        if isinstance(callback, Measures):
            values = callback.measure_at_end(trainer, module)
            if values and COVERAGE_METRICS[0] in values:
                return {name: float(values[name]) for name in COVERAGE_METRICS if name in values}
    return measure_coverage(module, datamodule)


def final_metrics(module, datamodule, callbacks: Iterable = ()) -> dict[str, float]:
    """End-of-run numbers for the HPARAMS tab and for sweepers (``hp/*``).

    Losses always. 2-D mixtures: the end-of-run mode coverage (``hp/modes_covered``, which
    is also ``hp/metric`` unless the Evaluation callback reports its best), reused from the
    callback that measured it; none for a run stopped by a signal."""
    callbacks = list(callbacks)
    metrics = {}
    if "loss/d" in module.last_metrics:
        metrics["hp/loss_d"] = module.last_metrics["loss/d"]
        metrics["hp/loss_g"] = module.last_metrics["loss/g"]
    if not datamodule.is_mixture or stopped_by_signal(callbacks):
        return metrics
    coverage = shared_measurement(callbacks, module.g_updates, COVERAGE_METRICS[0]) or measure_coverage(
        module, datamodule
    )
    metrics["hp/modes_covered"] = float(coverage["modes_covered"])
    metrics["hp/high_quality_fraction"] = float(coverage["high_quality_fraction"])
    metrics["hp/metric"] = metrics["hp/modes_covered"]
    return metrics


# --------------------------------------------------------- what a run will report
def planned_steps(cfg: DictConfig, datamodule) -> int:
    """G updates this run is set to make: ``steps``, else max_epochs × batches per epoch / n_critic."""
    if cfg.steps is not None:
        return int(cfg.steps)
    batches = len(datamodule.train_dataloader())
    return int(cfg.trainer.max_epochs * batches) // max(1, int(cfg.n_critic))


def monitored_metric(cfg: DictConfig, datamodule) -> Optional[str]:
    """What ``hp/metric`` will be: ``eval.monitor`` (auto resolved), or None when no run evaluates it."""
    from ganrun.metrics import suite

    monitor = cfg.eval.get("monitor", "auto")
    return suite.default_monitor(datamodule) if monitor == "auto" else monitor


def applicable_metrics(cfg: DictConfig, datamodule) -> list[str]:
    """The hp/* columns this run will fill: losses always; modes covered on 2-D mixtures;
    hp/metric when something computes it (2-D mixtures, or an evaluation at the end)."""
    names = list(LOSS_METRICS)
    if datamodule.is_mixture:
        names += MIXTURE_METRICS
    evaluation = (cfg.get("callbacks") or {}).get("evaluation") or {}
    evaluated = (
        "_target_" in evaluation
        and evaluates_at_end(evaluation, planned_steps(cfg, datamodule))
        and monitored_metric(cfg, datamodule) is not None
    )
    return (["hp/metric"] if datamodule.is_mixture or evaluated else []) + names


def evaluates_at_end(evaluation, step: int) -> bool:
    """Whether a run ending at G update ``step`` gets a final evaluation under
    ``callbacks.evaluation`` (``every_n_steps`` > 0, and at least ``final_min_steps`` G
    updates or one period); ``Evaluation.evaluates_at_end`` asks the same."""
    every = evaluation.get("every_n_steps") or 0
    return bool(every) and step >= min(every, evaluation.get("final_min_steps", EVALUATION_MIN_G_UPDATES))
