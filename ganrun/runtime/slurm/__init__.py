"""``launcher=slurm``: sweeps and multi-node runs as Slurm jobs, through submitit.

- ``request``: what a job asks Slurm for (GPUs only for GPU runs, CPUs and memory
  per process) and the checks that refuse a request in one line before submitting.
- ``queue``: job states from ``squeue`` (no accounting database needed) and sbatch's
  refusals as one line.
- ``launcher``: the sweep side: submit, wait, print one line per job as it ends.
- ``job``: the job side: where each rank runs, and the hand-over to submitit's
  checkpoint-and-requeue after a run stopped on SIGTERM with its checkpoint saved.

The Hydra plugin itself (``hydra_plugins/ganrun_launchers/slurm.py``) only wires these
into hydra-submitit-launcher's ``SlurmLauncher``. Nothing here imports torch.
"""
