"""Issue 13's mutations: apply each single-line break of a trick or constraint, run the
direct tests (tests/test_tricks.py, tests/test_terms.py), print which tests catch it, revert.

    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/check_mutations.py [NAME ...]

Run from the repository root with a clean working tree (each file is restored after its run).
"""
from __future__ import annotations

import re
import subprocess
import sys

# name -> (file, the line(s) as shipped, the broken version)
MUTATIONS = {
    "EMA never updated": ("ganrun/modules/gan.py", "            self.generator_ema.update_parameters(self.generator)\n", "            pass\n"),
    "DDP sum instead of average": ("ganrun/distributed.py", "        flat.div_(world_size)\n", ""),
    "weight clipping removed": ("ganrun/terms.py", "        clip_weights_(discriminator, self.clip)\n", "        pass\n"),
    "label smoothing ignored": ("ganrun/build.py", "        objective.real_target = 1.0 - smoothing\n", ""),
    "grad_clip_norm ignored": ("ganrun/modules/gan.py", "        if self.grad_clip_norm is not None:\n            return torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip_norm)\n", ""),
    "instance noise ignored": ("ganrun/modules/gan.py", "        if not self.instance_noise_std:\n            return x\n", "        return x\n"),
    "GP dropped in LAPGAN": ("ganrun/modules/lapgan.py", "            penalties.append(self.terms.critic_penalties(critic, real_in, fake_in, labels))\n", ""),
    "GP dropped in the main D loss": ("ganrun/modules/gan.py", "        loss = self.terms.weighted(loss, self.terms.critic_penalties(self.discriminator, real_in, fake_in, labels), stats)\n", ""),
}


def main(names: list[str]) -> None:
    for name in names:
        path, old, new = MUTATIONS[name]
        text = open(path).read()
        assert text.count(old) == 1, (name, text.count(old))
        open(path, "w").write(text.replace(old, new))
        try:
            out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_tricks.py", "tests/test_terms.py"],
                                 capture_output=True, text=True).stdout
        finally:
            open(path, "w").write(text)
        failed = re.findall(r"^FAILED (\S+)", out, re.M)
        summary = out.strip().splitlines()[-1]
        print(f"{name}: {summary}")
        for f in failed:
            print("    caught by", f.split(" ")[0])
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:] or list(MUTATIONS))
