"""Break one line of a training mechanism at a time, run the fast tests that guard it, and
print which tests catch the break; each file is restored after its run.

    OMP_NUM_THREADS=1 python scripts/check_mutations.py [NAME ...]

Run from the repository root with a clean working tree. Every mutation should be caught
by at least one test; a mutation whose line no longer exists is reported, not skipped.
"""

from __future__ import annotations

import re
import subprocess
import sys

GAN = "ganrun/training/module.py"
TRICKS = "ganrun/objectives/tricks.py"
TESTS = [
    "tests/unit/objectives/test_tricks.py",
    "tests/unit/objectives/test_terms.py",
    "tests/unit/objectives/test_mine.py",
    "tests/unit/training/test_msggan.py",
    "tests/unit/training/test_infogan.py",
    "tests/unit/models/test_minibatch.py",
    "tests/unit/runtime/test_threads.py",
    "tests/unit/training/test_lapgan.py",
]

# name -> (file, the line(s) as shipped, the broken version)
MUTATIONS = {
    "EMA never updated": (TRICKS, "        module.generator_ema.update(module.generator)\n", "        pass\n"),
    "EMA without bias correction": (
        "ganrun/training/ema.py",
        "        return (1.0 - self.decay) / (1.0 - self.decay**k)\n",
        "        return 1.0 if k == 1 else 1.0 - self.decay\n",
    ),
    "EMA batch norm not recomputed": (
        "ganrun/training/ema.py",
        "            self.module(*sample_inputs(batch_size))\n",
        "            pass\n",
    ),
    "DDP sum instead of average": ("ganrun/runtime/distributed.py", "        flat.div_(world_size)\n", ""),
    "weight clipping removed": (
        "ganrun/objectives/terms.py",
        "        clip_weights_(discriminator, self.clip)\n",
        "        pass\n",
    ),
    "label smoothing ignored": (TRICKS, "        objective.real_target = 1.0 - self.smoothing\n", ""),
    "grad_clip_norm ignored": (
        TRICKS,
        "        return torch.nn.utils.clip_grad_norm_(parameters, self.max_norm)\n",
        "        return None\n",
    ),
    "grad_clip_norm clips MINE's T": (GAN, "logging, clip=False)\n", "logging)\n"),
    "instance noise ignored": (
        "ganrun/objectives/terms.py",
        "            x = term.discriminator_input(x, g_updates)\n",
        "            pass\n",
    ),
    "MSG-GAN real noise before pooling": (
        "ganrun/training/msggan.py",
        "        return image_pyramid(real, self.discriminator.num_scales)\n",
        "        return real\n",
    ),
    "LAPGAN's critic sees the fake level as the real one": (
        "ganrun/training/lapgan.py",
        "            CriticView(self.discriminator.levels[k], level_input(condition, real_target), level_input(condition, fake))\n",
        "            CriticView(self.discriminator.levels[k], level_input(condition, fake), level_input(condition, fake))\n",
    ),
    "GP dropped from D's loss": (
        GAN,
        "        loss = self.terms.weighted(loss, sum_values(penalties), stats, self.g_updates)\n",
        "",
    ),
    "GP one-sided": (
        "ganrun/objectives/terms.py",
        "    return ((grad_norm - 1.0) ** 2).mean()\n",
        "    return (torch.relu(grad_norm - 1.0) ** 2).mean()\n",
    ),
    "R1 on fakes": (
        "ganrun/objectives/terms.py",
        "        real = real_in.detach().requires_grad_(True)\n",
        "        real = fake_in.detach().requires_grad_(True)\n",
    ),
    "minibatch layer allowed under a penalty": (
        "ganrun/models/minibatch.py",
        "    mixes_examples = True\n",
        "    mixes_examples = False\n",
    ),
    "MINE without the moving-average correction": (
        "ganrun/objectives/mine.py",
        "        self.dv.update(marginal)\n        return self.dv(joint, marginal)\n",
        "        self.dv.update(marginal)\n        estimate = joint.mean() - log_mean_exp(marginal)\n"
        "        return -estimate, estimate.detach()\n",
    ),
    "MINE term's sign flipped": (
        "ganrun/objectives/mine.py",
        "        return self.estimator.bound(self.code(noise)",
        "        return -self.estimator.bound(self.code(noise)",
    ),
    "MINE marginals from a permutation": (
        "ganrun/objectives/mine.py",
        "        return self.code(self.latent.sample(len(noise), device=noise.device).to(noise.dtype))\n",
        "        return self.code(noise)[torch.randperm(len(noise))]\n",
    ),
    "MINE average of rank 0's batch only": (
        "ganrun/objectives/mine.py",
        "        batch = log_mean_across_ranks(log_mean_exp(marginal_scores.detach().float()))\n",
        "        batch = log_mean_exp(marginal_scores.detach().float())\n",
    ),
    "terms computed at weight 0": (
        "ganrun/objectives/terms.py",
        "        return self.weight_at(g_updates) != 0.0\n",
        "        return True\n",
    ),
    "InfoGAN's G gets no MI gradient": (
        "ganrun/training/infogan.py",
        "        loss, self._stats = self._module.mutual_information_loss(fake, noise, labels)\n",
        "        loss, self._stats = self._module.mutual_information_loss(fake.detach(), noise, labels)\n",
    ),
    "threads jump to the target": ("ganrun/runtime/threads.py", "        return count - 1\n", "        return share\n"),
}


def main(names: list[str]) -> int:
    missed = 0
    for name in names:
        path, old, new = MUTATIONS[name]
        text = open(path).read()
        if text.count(old) != 1:
            print(f"{name}: its line is not in {path} ({text.count(old)} matches): update this script")
            missed += 1
            continue
        open(path, "w").write(text.replace(old, new))
        try:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-n",
                    "0",
                    "-m",
                    "not slow",
                    "-p",
                    "no:cacheprovider",
                    "-x",
                    *TESTS,
                ],
                capture_output=True,
                text=True,
            ).stdout
        finally:
            open(path, "w").write(text)
        failed = re.findall(r"^FAILED (\S+)", out, re.M)
        summary = out.strip().splitlines()[-1] if out.strip() else "no output"
        print(f"{name}: {summary}")
        for test in failed:
            print("    caught by", test)
        missed += not failed
        sys.stdout.flush()
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(MUTATIONS)))
