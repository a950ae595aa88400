"""Talking to Slurm from the sweep's side: job states, and sbatch's refusals.

submitit asks ``sacct`` for job states, which needs Slurm's accounting database; on a
cluster without one every poll fails and logs "Bypassing sacct error". ``QueueWatcher``
asks ``squeue --states=all`` instead: the controller's own view, which lists a job
while it waits, runs, is requeued, and for ``MinJobAge`` (300 s by default) after it
ends. A job squeue no longer lists is asked of sacct once where accounting works; else
it is taken as ended (its result file, or its absence, tells the rest).
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from typing import Optional

from submitit.slurm.slurm import SlurmInfoWatcher

log = logging.getLogger(__name__)

FIELDS = ("JobID", "State", "NodeList", "Restarts")
SQUEUE_FORMAT = "JobArrayID:|,State:|,NodeList:|,RestartCnt:|"
LEFT_QUEUE = "LEFT_QUEUE"  # squeue no longer lists the job and sacct cannot say more


class QueueWatcher(SlurmInfoWatcher):
    """submitit's job watcher, reading ``squeue``; sacct only for jobs squeue forgot."""

    def __init__(self, delay_s: int = 30) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting: Optional[bool] = None  # whether sacct works here (None: not asked yet)
        self.last_error: Optional[str] = None
        self._failing_since: Optional[float] = None

    def failing_for(self) -> float:
        """Seconds since squeue last answered, when its latest calls failed (else 0)."""
        return 0.0 if self._failing_since is None else time.time() - self._failing_since

    def _make_command(self) -> Optional[list[str]]:
        ids = sorted({job_id.split("_")[0] for job_id in self._registered - self._finished})
        if not ids:
            return None
        return ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", f"--Format={SQUEUE_FORMAT}"]

    def read_info(self, string) -> dict[str, dict[str, str]]:
        if not isinstance(string, str):
            string = string.decode()
        rows = [line.rstrip("|") for line in string.splitlines() if line.strip()]
        return super().read_info("\n".join(["|".join(FIELDS), *rows]))

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            self._output = subprocess.check_output(command, stderr=subprocess.PIPE, timeout=60)
        except (OSError, subprocess.SubprocessError) as error:
            # The controller is busy or restarting: keep what is known, ask again at the next poll.
            stderr = getattr(error, "stderr", None)
            self.last_error = (
                (stderr.decode(errors="replace").strip().splitlines() or [str(error)])[-1] if stderr else str(error)
            )
            self._failing_since = self._failing_since or time.time()
            log.debug("squeue failed (%s); states unchanged", self.last_error)
        else:
            self._failing_since = None
            listed = self.read_info(self._output)
            self._info_dict.update(listed)
            self._ask_accounting([job_id for job_id in self._registered - self._finished if job_id not in listed])
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _ask_accounting(self, job_ids: list[str]) -> None:
        """States of jobs squeue no longer lists: from sacct where accounting works, else LEFT_QUEUE."""
        if not job_ids:
            return
        found: dict[str, dict[str, str]] = {}
        if self.accounting is not False:
            command = ["sacct", "--parsable2", "--format=JobID,State,NodeList"]
            for job_id in sorted({job_id.split("_")[0] for job_id in job_ids}):
                command += ["-j", job_id]
            try:
                found = super().read_info(subprocess.check_output(command, stderr=subprocess.PIPE, timeout=60))
                self.accounting = True
            except (OSError, subprocess.SubprocessError):
                self.accounting = False  # no accounting database: never asked again
        for job_id in job_ids:
            self._info_dict[job_id] = found.get(job_id, {"JobID": job_id, "State": LEFT_QUEUE})


def restarts(info: dict) -> int:
    """How many times Slurm restarted a job (requeues), from a QueueWatcher record."""
    try:
        return int(info.get("Restarts") or 0)
    except ValueError:
        return 0


def sbatch_refusal(error: BaseException) -> Optional[str]:
    """sbatch's own message, in one line, when ``error`` is submitit's report of a refused
    submission; None for any other error."""
    cause = error.__cause__
    if not isinstance(cause, subprocess.CalledProcessError):
        return None
    command = cause.cmd if isinstance(cause.cmd, (list, tuple)) else [cause.cmd]
    if not command or "sbatch" not in str(command[0]):
        return None
    text = cause.stderr if isinstance(cause.stderr, str) and cause.stderr.strip() else str(error)
    messages = [
        re.sub(r"^sbatch:\s*(error:\s*|fatal:\s*)?", "", line.strip()) for line in text.splitlines() if line.strip()
    ]
    return "; ".join(dict.fromkeys(messages)) or f"sbatch exited with status {cause.returncode}"
