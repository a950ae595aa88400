#!/usr/bin/env python
"""One-shot GPU check (``bash scripts/gpu_check.sh [OUT_DIR]``): everything a GPU session should measure, in one go.

On a CUDA machine, within about 8 minutes:

1. ``scripts/bench_steps.py --device cuda --case dcgan64``: DCGAN 64x64 images/s at batch
   64, 256 and 1024, fp32 vs bf16 vs bf16 + torch.compile (ganrun and the plain loop
   at batch 64; ganrun alone at 256 and 1024).
2. Data-parallel training: ``accelerator=ddp`` over the GPUs (NCCL; two processes
   when there are two GPUs, else one: NCCL refuses two ranks on one GPU), and
   ``accelerator=ddp_cpu`` (two processes, gloo) as the two-process substitute.
3. The default job on the GPU (``ganrun accelerator=gpu``) and ``ganrun-eval`` on its
   ``best.ckpt``: the judge's numbers for the default recipe.

Without a GPU it runs the CPU fallback of each step, small and quick (about a
minute on 2 cores), and says so: the same code path, so CI can run it.

Writes ``OUT_DIR/gpu_check.json`` (every number and each step's status),
``OUT_DIR/gpu_check.md`` (the same as tables) and ``OUT_DIR/gpu_check.log`` (all
output). Run folders go to a temporary directory. Each step has a time limit; a
step that fails or runs out of time is recorded and the check goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def has_cuda() -> bool:
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", code]).returncode == 0


def gpu_count() -> int:
    code = "import torch; print(torch.cuda.device_count())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() or 0)


def ganrun(*args: str) -> list[str]:
    found = shutil.which("ganrun")
    return [found, *args] if found else [sys.executable, "-m", "ganrun", *args]


def ganrun_eval(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ganrun.commands.cli import eval_main; eval_main()", *args]


class Check:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.log = (out / "gpu_check.log").open("w")
        self.steps: list[dict] = []

    def run(self, name: str, command: list[str], limit: float) -> tuple[bool, str]:
        """Run one step (stdout+stderr to the log); (succeeded, its output)."""
        self.log.write(f"\n=== {name}: {' '.join(command)}\n")
        self.log.flush()
        started = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=limit, cwd=ROOT)
            status, output = (
                ("ok" if result.returncode == 0 else f"failed (exit {result.returncode})"),
                result.stdout + result.stderr,
            )
        except subprocess.TimeoutExpired as error:
            status = f"stopped after {limit:.0f} s"
            output = (error.stdout or b"").decode(errors="replace") + (error.stderr or b"").decode(errors="replace")
        seconds = time.perf_counter() - started
        self.log.write(output)
        self.log.write(f"\n--- {name}: {status}, {seconds:.1f} s\n")
        self.log.flush()
        self.steps.append({"step": name, "status": status, "seconds": round(seconds, 1)})
        print(f"gpu_check: {name}: {status} ({seconds:.1f} s)", flush=True)
        return status == "ok", output


def bench_steps(check: Check, work: Path, cuda: bool) -> dict:
    results = {}
    if cuda:
        plans = [
            (64, None),
            (256, "ganrun fp32,ganrun bf16,ganrun fast"),
            (1024, "ganrun fp32,ganrun bf16,ganrun fast"),
        ]
        for batch, only in plans:
            path = work / f"bench_b{batch}.json"
            command = [
                sys.executable,
                "scripts/bench_steps.py",
                "--device",
                "cuda",
                "--case",
                "dcgan64",
                "--batch",
                str(batch),
                "--iters",
                "60",
                "--repeats",
                "1",
                "--json",
                str(path),
            ]
            ok, _ = check.run(f"bench dcgan64 batch {batch}", command + (["--only", only] if only else []), 150)
            if ok:
                results[f"dcgan64_batch{batch}"] = json.loads(path.read_text())["cases"]["dcgan64"]
    else:
        path = work / "bench_cpu.json"
        command = [
            sys.executable,
            "scripts/bench_steps.py",
            "--device",
            "cpu",
            "--case",
            "ring",
            "--iters",
            "20",
            "--warmup",
            "3",
            "--repeats",
            "1",
            "--only",
            "plain,ganrun",
            "--json",
            str(path),
        ]
        ok, _ = check.run("bench ring (CPU fallback)", command, 120)
        if ok:
            results["ring_cpu"] = json.loads(path.read_text())["cases"]["ring"]
    return results


def ddp_steps(check: Check, work: Path, cuda: bool) -> dict:
    quiet = [
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.evaluation.every_n_steps=0",
    ]
    results = {}
    if cuda:
        devices = min(2, gpu_count())
        ok, _ = check.run(
            f"ddp on {devices} GPU(s)",
            ganrun(
                "accelerator=ddp",
                f"trainer.devices={devices}",
                "model=dcgan",
                "steps=100",
                *quiet,
                f"hydra.run.dir={work / 'ddp_gpu'}",
            ),
            150,
        )
        results[f"ddp_gpu_{devices}_processes"] = _result(work / "ddp_gpu", ok)
    steps = "100" if cuda else "5"
    ok, _ = check.run(
        "ddp_cpu, 2 processes (gloo)",
        ganrun(
            "accelerator=ddp_cpu",
            "model=gan",
            "dataset=ring",
            f"steps={steps}",
            *quiet,
            f"hydra.run.dir={work / 'ddp_cpu'}",
        ),
        150,
    )
    results["ddp_cpu_2_processes"] = _result(work / "ddp_cpu", ok)
    return results


def default_job(check: Check, work: Path, cuda: bool) -> dict:
    run_dir = work / "default_job"
    extra = ["accelerator=gpu"] if cuda else ["accelerator=cpu", "steps=20", "callbacks.evaluation.every_n_steps=0"]
    ok, _ = check.run(
        "default job" + ("" if cuda else " (CPU fallback, 20 G updates)"),
        ganrun(*extra, "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"),
        240,
    )
    result = {"train": _result(run_dir, ok)}
    ckpt = run_dir / "checkpoints" / ("best.ckpt" if (run_dir / "checkpoints" / "best.ckpt").is_file() else "last.ckpt")
    if ckpt.is_file():
        args = [f"ckpt={ckpt}"] + (["device=cuda"] if cuda else ["n=200"])
        ok, output = check.run("ganrun-eval on the default job", ganrun_eval(*args), 120)
        lines = [line for line in output.splitlines() if line.startswith("{")]
        if ok and lines:
            result["eval"] = json.loads(lines[-1])
    return result


def _result(run_dir: Path, ok: bool) -> dict:
    path = run_dir / "result.json"
    if not path.is_file():
        return {"status": "no result.json", "ok": ok}
    record = json.loads(path.read_text())
    metrics = record.get("metrics", {})
    return {
        "status": record.get("status"),
        "g_updates": metrics.get("g_updates"),
        "wall_time_s": metrics.get("wall_time_s"),
    }


def markdown(summary: dict) -> str:
    lines = [
        f"# ganrun GPU check ({summary['mode']})",
        "",
        summary["note"],
        "",
        f"Machine: {summary['machine']}",
        "",
        "| step | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in summary["steps"]]
    for name, table in summary["bench"].items():
        lines += ["", f"## bench {name}", "", "| loop | ms/iter | images/s | peak MB |", "|---|---|---|---|"]
        lines += [
            f"| {loop} | {r['ms_per_iter']:.2f} | {r['images_per_s']:.0f} | {r['peak_mb']:.0f} |"
            for loop, r in table.items()
        ]
    lines += ["", "## data parallel", ""] + [f"- {k}: {v}" for k, v in summary["ddp"].items()]
    lines += ["", "## default job", "", f"- training: {summary['default_job'].get('train')}"]
    evaluation = summary["default_job"].get("eval")
    if evaluation:
        keys = [
            k for k in ("cfid", "cis", "classes_covered", "class_kl", "judge_accuracy", "g_updates") if k in evaluation
        ]
        lines.append("- ganrun-eval: " + ", ".join(f"{k} {evaluation[k]}" for k in keys))
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "gpu_check")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cuda = has_cuda()
    started = time.perf_counter()
    check = Check(out)
    machine = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch, os; print(torch.cuda.get_device_name(0) if "
            "torch.cuda.is_available() else f'CPU only, {os.cpu_count()} cores', '| torch', torch.__version__)",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    note = (
        "CUDA GPU found: the full check."
        if cuda
        else "No CUDA GPU here: this is the CPU fallback (small runs of the same steps), not a GPU measurement."
    )
    print(f"gpu_check: {note}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ganrun-gpu-check-") as tmp:
        work = Path(tmp)
        summary = {
            "mode": "cuda" if cuda else "cpu-fallback",
            "note": note,
            "machine": machine,
            "bench": bench_steps(check, work, cuda),
            "ddp": ddp_steps(check, work, cuda),
            "default_job": default_job(check, work, cuda),
        }
    summary["steps"] = check.steps
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    (out / "gpu_check.md").write_text(markdown(summary))
    failed = [s["step"] for s in check.steps if s["status"] != "ok"]
    print(
        f"gpu_check: wrote {out / 'gpu_check.md'} and gpu_check.json in {summary['total_seconds']} s"
        + (f"; steps not ok: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
