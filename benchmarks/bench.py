"""Measure what transferbench's speed-ups buy, on the machine it runs on, in one run.

    python benchmarks/bench.py                 # all four figures (the grid takes minutes)
    python benchmarks/bench.py --grid-epochs 2 # a shorter grid for the third figure

Prints one line per figure and a last line scripts can read:

    summary: framework_vs_plain=R frozen_cache_speedup=R grid_speedup=R flops_fraction=R

1. framework_vs_plain: base-net training through transferbench's trainer vs a plain
   hand-written PyTorch loop on the same model, data, optimizer and steps (>= 0.95 wanted).
2. frozen_cache_speedup: a frozen job (AnB, n = 5) with the frozen-prefix cache vs without.
3. grid_speedup: the quickstart grid's wall time with every speed-up (cache, 2 workers) vs
   none (no cache, 1 worker).
4. flops_fraction: base training's achieved GFLOP/s over this machine's fp32 matmul rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _setup(overrides: list[str]):
    from transferbench.config import load_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve

    config = load_config(QUICKSTART, overrides)
    components = resolve(config)
    return config, components, build_plan(config, components)


def _job(plan, treatment: str, n: int = 0):
    return next(plan.jobs[c.job_id] for c in plan.cells if c.treatment == treatment and c.n == n)


def framework_vs_plain(steps: int, threads: int, reps: int = 3) -> tuple[float, float, float]:
    """Seconds through train_job vs a plain loop; returns (t_framework, t_plain, gflop_per_s)."""
    from transferbench.augment import BatchTransform
    from transferbench.compute import forward_gflop
    from transferbench.context import TrainContext
    from transferbench.trainer import train_job

    torch.set_num_threads(threads)
    config, components, plan = _setup([
        "train.epochs=null", f"train.steps={steps}", f"eval.every={steps}",
        "train.schedule.kind=constant",
    ])
    job = _job(plan, "baseB")
    ctx = TrainContext(config, components, torch.device("cpu"))
    train_job(job, ctx)  # warm-up: data into memory, kernels chosen

    data = ctx.task("train", job.classes)
    eval_data = ctx.task("eval", job.classes)
    transform = BatchTransform(config.train.augment, components.data.normalization(), torch.device("cpu"))
    t_framework = t_plain = float("inf")
    for _ in range(reps):  # alternate, keep the best of each: shared machines are noisy
        t0 = time.perf_counter()
        train_job(job, ctx)
        t_framework = min(t_framework, time.perf_counter() - t0)
        t0 = time.perf_counter()
        _plain_loop(config, components, job, data, eval_data, transform, steps)
        t_plain = min(t_plain, time.perf_counter() - t0)
    gflop = forward_gflop(config, components, job.num_classes) * 3 * steps * config.train.batch_size
    return t_framework, t_plain, gflop / t_framework  # GFLOP/s


def _plain_loop(config, components, job, data, eval_data, transform, steps: int) -> None:
    """The same model, tensors, optimizer groups and steps, written by hand."""
    from transferbench.trainer import make_optimizer

    arch = components.architecture
    torch.manual_seed(job.seed)
    model = arch.build(job.num_classes, tuple(components.data.input_shape()))
    opt = make_optimizer(config, model, arch.param_multipliers(model), {})
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = data.inputs, data.labels
    bs, step = config.train.batch_size, 0
    model.train()
    while step < steps:
        perm = torch.randperm(len(y_all))
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            x = transform(x_all[idx], train=True)
            loss = loss_fn(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    model.eval()
    with torch.no_grad():
        correct = sum((model(transform(x, train=False)).argmax(1) == y).sum().item()
                      for x, y in eval_data.batches(bs, shuffle=False))
    assert correct >= 0


def frozen_cache_speedup(threads: int, n: int = 5) -> tuple[float, float]:
    """Seconds of one frozen AnB job of the quickstart (its full length) with and without
    the frozen-prefix cache."""
    from transferbench.context import TrainContext
    from transferbench.trainer import train_job

    torch.set_num_threads(threads)
    times = []
    source = None
    for cache in (True, False):
        config, components, plan = _setup([f"performance.cache_frozen={str(cache).lower()}"])
        ctx = TrainContext(config, components, torch.device("cpu"))
        job = _job(plan, "AnB", n)
        if source is None:
            _, base = train_job(plan.jobs[job.depends_on], ctx)
            source = base.state_dict()
            train_job(job, ctx, source)  # warm-up
        best = float("inf")
        for _ in range(3 if cache else 1):
            t0 = time.perf_counter()
            record, _ = train_job(job, ctx, source)
            best = min(best, time.perf_counter() - t0)
        times.append(best)
        assert record["frozen_cache"] is cache
    return times[0], times[1]


def grid_seconds(all_speedups: bool, epochs: float | None) -> float:
    """Wall time of the quickstart grid through the CLI, in a fresh run directory."""
    out = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    sets = ["--set", f"performance.cache_frozen={'true' if all_speedups else 'false'}",
            "--set", f"executor.workers={2 if all_speedups else 1}"]
    if epochs is not None:
        sets += ["--set", f"train.epochs={epochs}"]
    exe = [sys.executable, "-m", "transferbench.cli", "run", str(QUICKSTART), "--out", str(out / "run"), *sets]
    t0 = time.perf_counter()
    subprocess.run(exe, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


def matmul_gflops(threads: int, size: int = 2048, reps: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="steps per timed training")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--grid-epochs", type=float, default=None,
                        help="train the grid for this many epochs instead of the quickstart's")
    parser.add_argument("--skip-grid", action="store_true", help="skip the grid figure (reported as nan)")
    args = parser.parse_args()

    t_fw, t_plain, achieved = framework_vs_plain(args.steps, args.threads)
    ratio = t_plain / t_fw
    print(f"framework_vs_plain: transferbench {t_fw:.2f} s, plain loop {t_plain:.2f} s for "
          f"{args.steps} steps of baseB -> {ratio:.3f} (plain time / framework time)", flush=True)

    t_cache, t_nocache = frozen_cache_speedup(args.threads)
    cache_speedup = t_nocache / t_cache
    print(f"frozen_cache_speedup: AnB n=5 {t_nocache:.2f} s plain, {t_cache:.2f} s with the cache "
          f"-> {cache_speedup:.2f}x", flush=True)

    if args.skip_grid:
        grid = float("nan")
        print("grid_speedup: skipped (--skip-grid)")
    else:
        t_none = grid_seconds(False, args.grid_epochs)
        t_all = grid_seconds(True, args.grid_epochs)
        grid = t_none / t_all
        print(f"grid_speedup: quickstart grid {t_none:.1f} s with no speed-ups, {t_all:.1f} s with "
              f"all (cache + 2 workers) -> {grid:.2f}x", flush=True)

    peak = matmul_gflops(args.threads)
    fraction = achieved / peak
    print(f"flops_fraction: base training {achieved:.1f} GFLOP/s (3 x forward FLOPs x images/s) "
          f"/ fp32 matmul {peak:.1f} GFLOP/s at {args.threads} threads -> {fraction:.3f}")
    print(f"summary: framework_vs_plain={ratio:.3f} frozen_cache_speedup={cache_speedup:.2f} "
          f"grid_speedup={grid:.2f} flops_fraction={fraction:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
