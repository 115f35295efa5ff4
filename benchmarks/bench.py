"""Measure what transferbench's speed-ups buy, on the machine it runs on, in one run.

    python benchmarks/bench.py                 # every figure (about 15 minutes on 2 cores)
    python benchmarks/bench.py --grid-epochs 2 # a shorter grid for the third figure

Prints one line per figure and a last line scripts can read:

    summary: framework_vs_plain=R frozen_cache_speedup=R grid_speedup=R flops_fraction=R
             cohort_speedup=R decode_per_net_step=R store_vs_decode=R

1. framework_vs_plain: base-net training through transferbench's trainer vs a plain
   hand-written PyTorch loop on the same model, data, optimizer and steps (>= 0.95 wanted).
2. frozen_cache_speedup: a frozen job (AnB, n = 5) with the frozen-prefix cache vs without.
3. grid_speedup: a quickstart-shaped grid (benchmarks/cohort-grid.yaml: 2 split seeds, bases
   and BnB, BnB+, AnB, AnB+ at 4 values of n) on JPEG images, with every speed-up (the images
   decoded once into the uint8 store, timed; cache; cohorts; 2 workers) vs none (JPEGs decoded
   for every batch, 1 worker, no cache, no cohorts).
   ``--grid-in-memory`` measures it once more with the images decoded once into memory.
4. flops_fraction: base training's achieved GFLOP/s over this machine's fp32 matmul rate.
5. cohort_speedup: the 16 transferred networks of one training set of that grid trained as
   a cohort (one stream of batches) vs one by one with the same data order (same records).
6. decode_per_net_step: images the cohort decoded per network and training step (the batch
   size, plus evaluation, for a network alone).
7. store_vs_decode: images/s on one core of the CPU's side of the data path: 256x256 JPEGs
   decoded every batch vs read from the uint8 store (decoded once), both cropped to 227 and
   mirrored (>= 10 wanted).

Pairs of ways are measured interleaved, best of N: a shared machine is noisy.
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

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
GRID = REPO / "benchmarks" / "cohort-grid.yaml"


def _setup(overrides: list[str], path: Path = QUICKSTART):
    from transferbench.config import load_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve

    config = load_config(path, overrides)
    components = resolve(config)
    return config, components, build_plan(config, components)


def _job(plan, treatment: str, n: int = 0):
    return next(plan.jobs[c.job_id] for c in plan.cells if c.treatment == treatment and c.n == n)


def framework_vs_plain(steps: int, threads: int, reps: int = 3) -> tuple[float, float, float]:
    """Seconds through train_job vs a plain loop; returns (t_framework, t_plain, gflop_per_s)."""
    from transferbench.augment import BatchTransform
    from transferbench.compute import forward_gflop
    from transferbench.context import TrainContext
    from transferbench.taskdata import open_task
    from transferbench.trainer import train_job

    torch.set_num_threads(threads)
    config, components, plan = _setup([
        "train.epochs=null", f"train.steps={steps}", f"eval.every={steps}",
        "train.schedule.kind=constant",
    ])
    job = _job(plan, "baseB")
    ctx = TrainContext(config, components, torch.device("cpu"))
    train_job(job, ctx)  # warm-up: data into memory, kernels chosen

    data = open_task(components.data, "train", job.classes, config.loader, ctx.memory)
    eval_data = open_task(components.data, "eval", job.classes, config.loader, ctx.memory)
    channels_last = config.performance.channels_last  # the same memory layout both ways
    transform = BatchTransform(config.train.augment, components.data.normalization(), torch.device("cpu"),
                               channels_last=channels_last)
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
    if config.performance.channels_last:
        model = model.to(memory_format=torch.channels_last)
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
        config, components, plan = _setup([f"performance.cache_frozen={str(cache).lower()}",
                                           f"experiments.0.layers=[{n}]"])
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
        assert record.frozen_cache is cache
    return times[0], times[1]


def jpeg_tree(root: Path, side: int = 256) -> Path:
    """The grid's images: 20 synthetic classes (36x36, 40 training and 10 held-out images
    each) written as side x side JPEGs into an imagefolder tree (train/ and val/)."""
    from PIL import Image

    from transferbench_plugins.synthetic import SyntheticParams, render_split

    params = SyntheticParams(num_classes=20, image_size=36, train_per_class=40, eval_per_class=10)
    for split, folder in (("train", "train"), ("eval", "val")):
        images, labels = render_split(params, split)
        for i, (image, label) in enumerate(zip(images, labels)):
            out = root / folder / f"c{int(label):02d}"
            out.mkdir(parents=True, exist_ok=True)
            big = Image.fromarray(image.transpose(1, 2, 0)).resize((side, side), Image.Resampling.BILINEAR)
            big.save(out / f"{i:05d}.jpg", quality=90)
    return root


def grid_seconds(root: Path, all_speedups: bool, epochs: float | None, in_memory: bool = False,
                 threads: int | None = None) -> float:
    """Wall time of the JPEG grid through the CLI, in a fresh run directory."""
    out = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    on = "true" if all_speedups else "false"
    sets = ["--set", f"data.root={root}", "--set", f"performance.cache_frozen={on}",
            "--set", f"executor.workers={2 if all_speedups else 1}", "--set", f"executor.cohorts={on}"]
    if threads is not None:  # the driver's (naive) and each worker's torch threads
        sets += ["--set", f"threads={threads}", "--set", f"executor.threads_per_worker={threads}"]
    if all_speedups:  # decoded once into a fresh uint8 store (its building is timed), read by every network
        sets += ["--set", "loader.decode_cache=true", "--set", f"loader.cache_dir={out / 'store'}"]
    if in_memory:
        sets += ["--set", "loader.in_memory_max_gb=4"]
    if epochs is not None:
        sets += ["--set", f"train.epochs={epochs}"]
    exe = [sys.executable, "-m", "transferbench.cli", "run", str(GRID), "--out", str(out / "run"), *sets]
    t0 = time.perf_counter()
    subprocess.run(exe, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


def grid_speedup(root: Path, epochs: float | None, reps: int, in_memory: bool = False,
                 threads: int | None = None) -> tuple[float, float]:
    """Best-of-``reps`` wall times of the grid with no speed-up and with all, interleaved."""
    t_none = t_all = float("inf")
    for _ in range(reps):
        t_none = min(t_none, grid_seconds(root, False, epochs, in_memory, threads))
        t_all = min(t_all, grid_seconds(root, True, epochs, in_memory, threads))
    return t_none, t_all


def cohort_speedup(root: Path, threads: int, reps: int) -> dict[str, float]:
    """The transferred networks of one training set trained one by one and as a cohort
    (best of ``reps``, interleaved), with the images each way decoded."""
    from transferbench.runner import TrainingRunner

    torch.set_num_threads(threads)
    config, components, plan = _setup([f"data.root={root}", "experiments.0.split.seeds=[0]",
                                       "executor.cohorts=true"], GRID)
    run_dir = Path(tempfile.mkdtemp(prefix="tb-cohort-")) / "run"
    runner = TrainingRunner(config, components, plan, run_dir)
    for job in plan.jobs.values():  # the two base networks (and a warm-up)
        if job.kind == "base":
            runner(job)
    members = [plan.jobs[j] for j in max(plan.cohorts.values(), key=len)]
    decoded = [0]
    to_tensor = components.data.to_tensor

    def counting(value):
        decoded[0] += 1
        return to_tensor(value)

    components.data.to_tensor = counting  # loader.workers is 0: decoding happens here

    def forget() -> None:
        for job in members:
            runner.store.record_path(job.id).unlink(missing_ok=True)

    times = {"solo": float("inf"), "cohort": float("inf")}
    records: dict[str, list] = {}
    for _ in range(reps):
        for way in ("solo", "cohort"):
            forget()
            decoded[0] = 0
            t0 = time.perf_counter()
            got = [runner(job) for job in members] if way == "solo" else runner.run_cohort(members)
            times[way] = min(times[way], time.perf_counter() - t0)
            records[way], times[f"decoded_{way}"] = got, decoded[0]
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    steps = records["cohort"][0].steps
    same = all(a.top1 == b.top1 and a.history == b.history for a, b in zip(records["solo"], records["cohort"]))
    return {**times, "members": len(members), "steps": steps, "same": same,
            "per_net_step_solo": times["decoded_solo"] / (len(members) * steps),
            "per_net_step_cohort": times["decoded_cohort"] / (len(members) * steps)}


def store_vs_decode(root: Path, batch: int = 64, batches: int = 6, reps: int = 3) -> dict[str, float]:
    """Images/s on one core (one torch thread) of the CPU's side of the paper's data path,
    both ways: the JPEGs as the paper stores them (256x256) decoded for every batch, or read
    from the uint8 store (``loader.decode_cache``: decoded once, not timed), each then randomly
    cropped to 227 and mirrored in uint8 batches (``BatchTransform.place``; training does the
    same on the device, where the batch is then scaled and normalised for the network). Best
    of ``reps``, interleaved."""
    from transferbench.augment import BatchTransform
    from transferbench.config import Augment
    from transferbench.taskdata import MemoryMapTask, decoded_split, labels_of

    torch.set_num_threads(1)
    config, components, _ = _setup([f"data.root={root}", "data.resize=256"], GRID)
    source = components.data
    ds = source.load("train")
    labels = torch.as_tensor(labels_of(ds))
    classes = sorted(set(labels.tolist()))
    transform = BatchTransform(Augment(crop=227, mirror=True), source.normalization(), torch.device("cpu"))
    cache = Path(tempfile.mkdtemp(prefix="tb-store-"))
    mmap, stored = decoded_split(source, "train", cache)
    store = MemoryMapTask(mmap, np.arange(len(stored)), torch.as_tensor(stored), classes)
    need = batch * batches

    def decoding() -> float:
        gen = torch.Generator().manual_seed(0)
        order = torch.randperm(len(ds), generator=gen)[:need].tolist()
        t0 = time.perf_counter()
        for i in range(0, need, batch):
            x = torch.stack([source.to_tensor(ds[j]["input"]) for j in order[i:i + batch]])
            transform.place(x, train=True, generator=gen)
        return need / (time.perf_counter() - t0)

    def reading() -> float:
        gen = torch.Generator().manual_seed(0)
        seen, t0 = 0, time.perf_counter()
        for x, _ in store.batches(batch, shuffle=True, generator=gen):
            transform.place(x, train=True, generator=gen)
            seen += len(x)
            if seen >= need:
                break
        return seen / (time.perf_counter() - t0)

    best = {"decode": 0.0, "store": 0.0}
    for _ in range(reps):
        best["decode"] = max(best["decode"], decoding())
        best["store"] = max(best["store"], reading())
    shutil.rmtree(cache, ignore_errors=True)
    return {**best, "stored_kb": float(np.prod(mmap.shape[1:])) / 1e3}


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
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of every timed process (default: all cores in one process, "
                             "the grid's workers cores / workers each)")
    parser.add_argument("--grid-epochs", type=float, default=None,
                        help="train the grid for this many epochs instead of its config's")
    parser.add_argument("--grid-reps", type=int, default=2, help="times each way of running the grid is timed")
    parser.add_argument("--cohort-reps", type=int, default=2, help="times each way of training the cohort is timed")
    parser.add_argument("--skip-grid", action="store_true", help="skip the grid figure (reported as nan)")
    parser.add_argument("--grid-in-memory", action="store_true",
                        help="also time the grid with its images decoded once into memory")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1

    t_fw, t_plain, achieved = framework_vs_plain(args.steps, threads)
    ratio = t_plain / t_fw
    print(f"framework_vs_plain: transferbench {t_fw:.2f} s, plain loop {t_plain:.2f} s for "
          f"{args.steps} steps of baseB -> {ratio:.3f} (plain time / framework time)", flush=True)

    t_cache, t_nocache = frozen_cache_speedup(threads)
    cache_speedup = t_nocache / t_cache
    print(f"frozen_cache_speedup: AnB n=5 {t_nocache:.2f} s plain, {t_cache:.2f} s with the cache "
          f"-> {cache_speedup:.2f}x", flush=True)

    root = jpeg_tree(Path(tempfile.mkdtemp(prefix="tb-jpeg-")) / "images")
    c = cohort_speedup(root, threads, args.cohort_reps)
    cohort = c["solo"] / c["cohort"]
    print(f"cohort_speedup: {c['members']} networks of one training set ({c['steps']} steps each, JPEG "
          f"images decoded every batch) {c['solo']:.1f} s one by one, {c['cohort']:.1f} s as a cohort -> "
          f"{cohort:.2f}x; records identical: {'yes' if c['same'] else 'NO'}", flush=True)
    print(f"decode_per_net_step: {c['per_net_step_cohort']:.2f} images decoded per network and step in the "
          f"cohort, {c['per_net_step_solo']:.2f} one by one (batch 32, plus evaluation)", flush=True)

    sv = store_vs_decode(root)
    store_ratio = sv["store"] / sv["decode"]
    print(f"store_vs_decode: one core, 256x256 JPEGs decoded {sv['decode']:,.0f} images/s, the uint8 store "
          f"({sv['stored_kb']:.0f} kB an image) read {sv['store']:,.0f} images/s, both cropped to 227 and mirrored "
          f"-> {store_ratio:.1f}x", flush=True)
    torch.set_num_threads(threads)

    grid = float("nan")
    if args.skip_grid:
        print("grid_speedup: skipped (--skip-grid)")
    else:
        t_none, t_all = grid_speedup(root, args.grid_epochs, args.grid_reps, threads=args.threads)
        grid = t_none / t_all
        print(f"grid_speedup: the JPEG grid (36 networks) {t_none:.1f} s with no speed-ups, {t_all:.1f} s with "
              f"all (decode once into the uint8 store + cache + cohorts + 2 workers) -> {grid:.2f}x", flush=True)
    extra = ""
    if args.grid_in_memory:
        t_none, t_all = grid_speedup(root, args.grid_epochs, args.grid_reps, True, args.threads)
        extra = f" grid_speedup_in_memory={t_none / t_all:.2f}"
        print(f"grid_speedup_in_memory: the same grid with its images decoded once into memory {t_none:.1f} s "
              f"with no speed-ups, {t_all:.1f} s with all -> {t_none / t_all:.2f}x", flush=True)
    shutil.rmtree(root.parent, ignore_errors=True)

    peak = matmul_gflops(threads)
    fraction = achieved / peak
    print(f"flops_fraction: base training {achieved:.1f} GFLOP/s (3 x forward FLOPs x images/s) "
          f"/ fp32 matmul {peak:.1f} GFLOP/s at {threads} threads -> {fraction:.3f}")
    print(f"summary: framework_vs_plain={ratio:.3f} frozen_cache_speedup={cache_speedup:.2f} "
          f"grid_speedup={grid:.2f} flops_fraction={fraction:.3f} cohort_speedup={cohort:.2f} "
          f"decode_per_net_step={c['per_net_step_cohort']:.2f} store_vs_decode={store_ratio:.1f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
