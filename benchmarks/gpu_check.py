"""CaffeNet-227 training throughput on a GPU: what the paper's grid would cost, measured.

Run by benchmarks/gpu_check.sh (about 5 minutes on one GPU; every part is timed out of a
10-minute budget and skipped if that is spent). Three questions, each answered in images
per second of network training (an image counts once per network that trains on it):

A. compute, on synthetic tensors already on the GPU (no data pipeline at all): fp32 eager,
   bf16 autocast + channels-last, and the same with torch.compile;
B. the engine on JPEG images (an imagefolder tree written here, ImageNet-sized, resized to
   256 and randomly cropped to 227 and mirrored as in the paper), decoded for every batch by
   loader workers (data-bound): four networks of one training set trained one by one, then
   as a cohort (one stream of batches, the frozen prefix shared, executor cohorts: true);
C. the same with the split decoded once into memory (the data pipeline out of the way).

Prints one line per figure and a last line scripts can read (``summary: key=value ...``);
a part that fails prints its error and reports nan, and the others go on.

    python benchmarks/gpu_check.py                       # on the GPU
    python benchmarks/gpu_check.py --device cpu --tiny   # the same code paths, small, on a CPU
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
T0 = time.monotonic()


def _left(budget_s: float) -> float:
    return budget_s - (time.monotonic() - T0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _guarded(name: str, budget_s: float, need_s: float, fn: Callable[[], Any], default: Any) -> Any:
    """Run one part; on an error (or no time left) print why and return ``default``."""
    if _left(budget_s) < need_s:
        print(f"{name}: skipped, {_left(budget_s):.0f} s of the budget left", flush=True)
        return default
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing part must not hide the others
        print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc(limit=4)
        return default


# ------------------------------------------------------------------ A. compute on tensors


def _model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    from transferbench_plugins.caffenet import CaffeNet

    if args.tiny:
        return CaffeNet(10, (3, args.crop, args.crop), channels=(24, 64, 96, 96, 64), fc_width=256,
                        conv1_kernel=5, conv1_stride=2, conv1_padding=2, init="kaiming").to(device)
    return CaffeNet(1000, (3, 227, 227)).to(device)


def compute_rate(args: argparse.Namespace, device: torch.device, amp: bool, channels_last: bool,
                 compile_: bool) -> float:
    """Training images/s of one CaffeNet on random tensors that sit on the device."""
    torch.manual_seed(0)
    model = _model(args, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    side = args.crop if args.tiny else 227
    x = torch.randn(args.batch, 3, side, side, device=device) * 50
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10 if args.tiny else 1000, (args.batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else torch.autocast(device.type, enabled=False)

    def step() -> None:
        with cast:
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):  # compilation, cudnn's algorithm search, the allocator
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.steps * args.batch / (time.perf_counter() - t0)


# ------------------------------------------------------------------ B, C. the engine on JPEGs


def jpeg_tree(root: Path, args: argparse.Namespace) -> Path:
    """An imagefolder tree: ``classes`` classes of ImageNet-sized JPEGs (smooth random
    scenes, 400x300, about the cost of decoding an ILSVRC-2012 image)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = (64, 48) if args.tiny else (400, 300)
    for split, per in (("train", args.train_per_class), ("val", args.eval_per_class)):
        for c in range(args.classes):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 256, (6, 8, 3))
            for i in range(per):
                small = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
                img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
                noise = rng.integers(-12, 12, (h, w, 3))
                img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
                img.save(folder / f"{i:05d}.jpg", quality=90)
    return root


def _config(args: argparse.Namespace, root: Path, in_memory: bool, device: str) -> dict[str, Any]:
    arch: dict[str, Any] = {"name": "caffenet"}
    if args.tiny:
        arch = {"name": "caffenet_scaled", "width": 0.25, "fc_width": 64}
    return {
        "name": "gpu-check",
        "seed": 0,
        "data": {"name": "imagefolder", "root": str(root), "resize": args.resize},
        "architecture": arch,
        "experiments": [{"name": "random", "split": {"name": "random", "seeds": [0]},
                         "treatments": ["AnB", "AnB+"], "layers": [3, 6]}],
        "train": {"lr": 0.01, "batch_size": args.batch, "steps": args.steps,
                  "augment": {"crop": args.crop, "mirror": True}},
        "eval": {"every": args.steps, "best_k": 1},
        "loader": {"in_memory_max_gb": 4.0 if in_memory else 0.0, "workers": args.workers},
        "performance": {"amp": "off" if device == "cpu" else "bf16", "channels_last": device != "cpu",
                        "batched": "auto"},
        "executor": {"name": "local", "cohorts": True},
        "device": device,
    }


def engine_rates(args: argparse.Namespace, root: Path, in_memory: bool, device: str) -> dict[str, float]:
    """Images/s of the four transferred networks of one training set trained one by one and
    as a cohort (same records), and the data pipeline's own rate."""
    from transferbench.config import parse_config
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve
    from transferbench.runner import TrainingRunner
    from transferbench.taskdata import open_task

    config = parse_config(_config(args, root, in_memory, device))
    components = resolve(config)
    plan = build_plan(config, components)
    run_dir = Path(tempfile.mkdtemp(prefix="tb-gpu-")) / "run"
    runner = TrainingRunner(config, components, plan, run_dir)
    for job in plan.jobs.values():
        if job.kind == "base":
            runner(job)  # the sources (and the warm-up: data into memory, workers, kernels)
    members = [plan.jobs[j] for j in max(plan.cohorts.values(), key=len)]
    out: dict[str, float] = {}
    pipeline = open_task(components.data, "train", members[0].classes, config.loader, runner.ctx.memory)
    t0, seen = time.perf_counter(), 0
    for x, _ in pipeline.batches(args.batch, shuffle=True, generator=torch.Generator().manual_seed(0)):
        seen += len(x)
        if seen >= args.steps * args.batch:
            break
    out["pipeline"] = seen / (time.perf_counter() - t0)
    images = len(members) * args.steps * args.batch
    t0 = time.perf_counter()
    solo = [runner(job) for job in members]
    out["solo"] = images / (time.perf_counter() - t0)
    for job in members:
        runner.store.record_path(job.id).unlink(missing_ok=True)
    t0 = time.perf_counter()
    cohort = runner.run_cohort(members)
    out["cohort"] = images / (time.perf_counter() - t0)
    out["failed"] = sum(not r.ok for r in solo + cohort)
    if out["failed"]:
        print("  a network failed: " + next(r.error for r in solo + cohort if not r.ok), flush=True)
        out["cohort"] = out["cohort"] if all(r.ok for r in cohort) else float("nan")
    out["top1_gap"] = max(abs((a.top1 or 0) - (b.top1 or 0)) for a, b in zip(solo, cohort))
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    return out


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a small network and data (a dry run on a CPU)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per network")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=520)
    parser.add_argument("--eval-per-class", type=int, default=10)
    parser.add_argument("--workers", type=int, default=max(1, min(16, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--budget-s", type=float, default=570.0, help="stop starting parts after this")
    args = parser.parse_args()
    args.resize, args.crop = (36, 32) if args.tiny else (256, 227)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run on a machine with a GPU, or --device cpu --tiny for a dry run")
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {os.cpu_count()} CPU cores; batch {args.batch}", flush=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    nan = float("nan")
    budget = args.budget_s

    fp32 = _guarded("fp32_eager", budget, 30, lambda: compute_rate(args, device, False, False, False), nan)
    print(f"fp32_eager: {fp32:,.0f} images/s (synthetic tensors on the device)", flush=True)
    bf16 = _guarded("bf16_channels_last", budget, 30, lambda: compute_rate(args, device, True, True, False), nan)
    print(f"bf16_channels_last: {bf16:,.0f} images/s", flush=True)
    fast = _guarded("bf16_channels_last_compile", budget, 150,
                    lambda: compute_rate(args, device, True, True, device.type == "cuda"), nan)
    print(f"bf16_channels_last_compile: {fast:,.0f} images/s -> {fast / fp32:.2f}x fp32 eager", flush=True)

    root = Path(tempfile.mkdtemp(prefix="tb-gpu-jpeg-"))
    t0 = time.perf_counter()
    _guarded("jpeg_tree", budget, 60, lambda: jpeg_tree(root, args), None)
    print(f"images: {args.classes} classes x {args.train_per_class} JPEGs written in "
          f"{time.perf_counter() - t0:.0f} s; {args.workers} loader workers", flush=True)
    empty = {"pipeline": nan, "solo": nan, "cohort": nan, "failed": nan, "top1_gap": nan}
    data = _guarded("data_bound", budget, 120, lambda: engine_rates(args, root, False, args.device), empty)
    print(f"data_bound: pipeline alone {data['pipeline']:,.0f} images/s; 4 networks one by one "
          f"{data['solo']:,.0f}, as a cohort {data['cohort']:,.0f} images/s -> {data['cohort'] / data['solo']:.2f}x "
          f"(failed {data['failed']}, largest top-1 gap {data['top1_gap']:.3f})", flush=True)
    mem = _guarded("in_memory", budget, 120, lambda: engine_rates(args, root, True, args.device), empty)
    print(f"in_memory: 4 networks one by one {mem['solo']:,.0f}, as a cohort {mem['cohort']:,.0f} images/s "
          f"-> {mem['cohort'] / mem['solo']:.2f}x", flush=True)
    shutil.rmtree(root, ignore_errors=True)

    def f(v: float) -> str:
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"

    print(f"summary: fp32_eager={f(fp32)} bf16_cl={f(bf16)} bf16_cl_compile={f(fast)} "
          f"pipeline={f(data['pipeline'])} data_solo={f(data['solo'])} data_cohort={f(data['cohort'])} "
          f"memory_solo={f(mem['solo'])} memory_cohort={f(mem['cohort'])} "
          f"compile_speedup={fast / fp32:.2f} cohort_speedup_data={data['cohort'] / data['solo']:.2f} "
          f"cohort_speedup_memory={mem['cohort'] / mem['solo']:.2f} seconds={time.monotonic() - T0:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
