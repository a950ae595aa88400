"""``hydra/launcher=ganrun_slurm`` (chosen by ``launcher=slurm``): hydra-submitit-launcher's
``SlurmLauncher`` and its config keys, with ganrun's submission, waiting and requeue
(``ganrun.runtime.slurm``). Defined only where the ``slurm`` extra is installed."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

try:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # pip install 'ganrun[slurm]'
    SlurmLauncher = None

if SlurmLauncher is not None:

    @dataclass
    class GanrunSlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.ganrun_launchers.slurm.GanrunSlurmLauncher"

    ConfigStore.instance().store(group="hydra/launcher", name="ganrun_slurm", node=GanrunSlurmConf, provider="ganrun")

    class GanrunSlurmLauncher(SlurmLauncher):
        def launch(self, job_overrides, initial_job_idx):
            from ganrun.runtime.slurm.launcher import launch

            return launch(self, job_overrides, initial_job_idx)

        def __call__(self, *args):
            """In the job (every task): the sweep job, then a requeue if SIGTERM stopped it."""
            from ganrun.runtime.slurm.job import run_task

            return run_task(super().__call__, *args)
