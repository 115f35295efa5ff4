"""Batched cohort members (``performance.batched``) vs one member after another, in one run.

    python benchmarks/batched.py            # about 2 minutes on 2 cores

Trains the transferred networks of one training set of the quickstart (random halves, split
seed 0, n = 1, 4, 7: BnB, BnB+, AnB, AnB+) as a cohort, twice per repetition, interleaved:
with the fine-tuned members (BnB+, AnB+: every layer trains, so they can be stacked) as one
``torch.func.vmap`` computation, and with every member run one after another. The frozen
members run one by one either way. Prints one line per way and a last line scripts can read:

    summary: batched_speedup=R
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def cohort_seconds(epochs: float, reps: int) -> dict[str, float]:
    """Best-of-``reps`` seconds of the cohort, batched and one by one (same plan, same bases)."""
    from transferbench.config import load_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve
    from transferbench.runner import TrainingRunner

    overrides = ["experiments=[{name: random, split: {name: random, seeds: [0]}, "
                 "treatments: [BnB, BnB+, AnB, AnB+], layers: [1, 4, 7]}]",
                 "executor.cohorts=true", f"train.epochs={epochs}", "train.schedule.step_every=null",
                 "train.schedule.kind=constant"]
    run_dir = Path(tempfile.mkdtemp(prefix="tb-batched-")) / "run"
    best = {"on": float("inf"), "off": float("inf")}
    bases: list = []
    try:
        for _ in range(reps):
            for way in ("on", "off"):
                config = load_config(REPO / "configs" / "quickstart.yaml", overrides + [f"performance.batched={way}"])
                components = resolve(config)
                plan = build_plan(config, components)
                runner = TrainingRunner(config, components, plan, run_dir)
                if not bases:
                    bases = [runner(job) for job in plan.jobs.values() if job.kind == "base"]
                members = [plan.jobs[j] for j in max(plan.cohorts.values(), key=len)]
                for job in members:
                    runner.store.record_path(job.id).unlink(missing_ok=True)
                t0 = time.perf_counter()
                records = runner.run_cohort(members)
                best[way] = min(best[way], time.perf_counter() - t0)
                assert all(r.ok for r in records), [r.error for r in records if not r.ok]
        best["members"] = len(members)
        best["fine_tuned"] = sum(1 for j in members if j.protocol_spec and j.protocol_spec["name"] == "finetune")
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=3, help="epochs each network trains")
    parser.add_argument("--reps", type=int, default=2, help="repetitions (ways interleaved; best kept)")
    args = parser.parse_args()
    t = cohort_seconds(args.epochs, args.reps)
    print(f"batched: {t['members']} members ({t['fine_tuned']} fine-tuned, stacked) {t['on']:.1f} s "
          f"({torch.get_num_threads()} threads)")
    print(f"one by one: {t['off']:.1f} s")
    print(f"summary: batched_speedup={t['off'] / t['on']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
