"""CaffeNet-227 training on a GPU, and the data path that feeds it: what the paper's grid costs.

Run by benchmarks/gpu_check.sh (at most 8 minutes on one GPU: every part is timed out of the
budget and skipped once it is spent). In images per second (an image counts once per network
that trains on it):

A. compute, on tensors already on the device (no data path): fp32 eager, bf16 autocast +
   channels-last, and the same with torch.compile;
B. the data path: JPEG decoding on all the CPU cores (DataLoader workers: what every batch
   costs without a store), and the uint8 store (``loader.decode_cache``: the split decoded
   once into a memory map, its pages dropped from the page cache, then read in batches and
   cropped and mirrored on the device: ``BatchTransform``);
C. cohorts on the store: k = 1, 4, 8, 16 transferred networks of one training set (one
   stream of batches) in aggregate images/s, and the records of k = 4 beside the same four
   networks trained one by one (identical, or their largest top-1 and loss gaps).

Prints one line per figure and a last line scripts can read (``summary: key=value ...``);
a part that fails prints its error and reports nan, and the others go on. Writes the rates
``transferbench plan --measured FILE`` reads (``--rates``, default gpu_rates.json): the
effective TFLOP/s of the fastest training setting, the decode and the store rates.

    python benchmarks/gpu_check.py                                 # on the GPU
    python benchmarks/gpu_check.py --device cpu --tiny --ks 1,2    # the same code paths, small, on a CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
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


def _config(args: argparse.Namespace, root: Path, cache: Path, device: str) -> dict[str, Any]:
    """The grid of part C: every transferred network of one training set in one cohort, read
    from the uint8 store."""
    arch: dict[str, Any] = {"name": "caffenet"}
    if args.tiny:
        arch = {"name": "caffenet_scaled", "width": 0.25, "fc_width": 64}
    return {
        "name": "gpu-check",
        "seed": 0,
        "data": {"name": "imagefolder", "root": str(root), "resize": args.resize},
        "architecture": arch,
        "experiments": [{"name": "random", "split": {"name": "random", "seeds": [0]},
                         "treatments": ["BnB", "BnB+", "AnB", "AnB+"], "layers": args.layers}],
        "train": {"lr": 0.01, "batch_size": args.batch, "steps": args.steps,
                  "augment": {"crop": args.crop, "mirror": True}},
        "eval": {"every": args.steps, "best_k": 1},
        "loader": {"in_memory_max_gb": 0.0, "decode_cache": True, "cache_dir": str(cache), "workers": args.workers},
        "performance": {"amp": "off" if device == "cpu" else "bf16", "channels_last": device != "cpu",
                        "batched": args.batched},
        "executor": {"name": "local", "cohorts": True},
        "device": device,
    }


def _drop_page_cache(folder: Path) -> None:
    """Ask the kernel to forget the store's pages, so the timed reads come from the disk."""
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def data_rates(args: argparse.Namespace, root: Path, cache: Path, device: torch.device) -> dict[str, float]:
    """JPEG decoding on the CPU cores vs the uint8 store with augmentation on the device."""
    from transferbench.augment import BatchTransform
    from transferbench.config import Augment
    from transferbench.resolve import resolve
    from transferbench.taskdata import MemoryMapTask, RowsTask, decoded_split, labels_of

    config = _parsed(args, root, cache, device.type)
    source = resolve(config).data
    ds = source.load("train")
    labels = torch.as_tensor(labels_of(ds))
    classes = sorted(set(labels.tolist()))
    transform = BatchTransform(Augment(crop=args.crop, mirror=True), None, device,
                               channels_last=device.type == "cuda")
    gen = torch.Generator().manual_seed(0)
    need = args.data_batches * args.batch

    def timed(batches: Any) -> float:
        """Images/s after the first batch (the loader workers' start is not the rate)."""
        seen, t0 = -1, 0.0
        for x, _ in batches:
            transform(x.to(device, non_blocking=True), train=True, generator=gen)
            if seen < 0:
                _sync(device)
                seen, t0 = 0, time.perf_counter()
                continue
            seen += len(x)
            if seen >= need:
                break
        _sync(device)
        return seen / (time.perf_counter() - t0) if seen > 0 else float("nan")

    rows = RowsTask(source, ds, labels, classes, args.workers)
    decode = max(timed(rows.batches(args.batch, shuffle=True, generator=gen)) for _ in range(2))
    t0 = time.perf_counter()
    mmap, stored = decoded_split(source, "train", cache, args.workers)
    build = len(stored) / (time.perf_counter() - t0)
    keep = np.arange(len(stored))
    store = MemoryMapTask(mmap, keep, torch.as_tensor(stored), classes)
    _drop_page_cache(cache)
    cold = timed(store.batches(args.batch, shuffle=True, generator=gen))
    warm = timed(store.batches(args.batch, shuffle=True, generator=gen))
    return {"decode": decode, "build": build, "store_cold": cold, "store_warm": warm,
            "stored_kb": float(np.prod(mmap.shape[1:])) / 1e3}


def _parsed(args: argparse.Namespace, root: Path, cache: Path, device: str) -> Any:
    from transferbench.config import parse_config

    return parse_config(_config(args, root, cache, device))


def cohort_rates(args: argparse.Namespace, root: Path, cache: Path, device: str) -> dict[str, Any]:
    """Aggregate images/s of k members of one cohort, for every k of ``args.ks``; the records
    of the smallest k > 1 against the same networks trained one by one."""
    from transferbench.plan import build_plan
    from transferbench.resolve import resolve
    from transferbench.runner import TrainingRunner

    config = _parsed(args, root, cache, device)
    components = resolve(config)
    plan = build_plan(config, components)
    run_dir = Path(tempfile.mkdtemp(prefix="tb-gpu-")) / "run"
    runner = TrainingRunner(config, components, plan, run_dir)
    for job in plan.jobs.values():
        if job.kind == "base":
            runner(job)  # the sources (and the warm-up: the store, kernels, compilation)
    cohort = [plan.jobs[j] for j in max(plan.cohorts.values(), key=len)]

    def forget(jobs: Sequence[Any]) -> None:
        for job in jobs:
            runner.store.record_path(job.id).unlink(missing_ok=True)

    out: dict[str, Any] = {"rates": {}, "members": len(cohort)}
    records: dict[int, list] = {}
    for k in args.ks:
        members = cohort[:k]
        if len(members) < k or _left(args.budget_s) < 30:
            print(f"cohort k={k}: skipped ({len(cohort)} members, {_left(args.budget_s):.0f} s left)", flush=True)
            continue
        forget(members)
        t0 = time.perf_counter()
        records[k] = runner.run_cohort(members) if k > 1 else [runner(members[0])]
        _sync(torch.device(device))
        out["rates"][k] = k * args.steps * args.batch / (time.perf_counter() - t0)
        print(f"cohort k={k}: {out['rates'][k]:,.0f} images/s in aggregate", flush=True)
    compared = min((k for k in records if k > 1), default=None)
    if compared is not None and _left(args.budget_s) > 30:
        members = cohort[:compared]
        forget(members)
        solo = [runner(job) for job in members]
        together = records[compared]
        out["compared"] = compared
        out["identical"] = all(a.top1 == b.top1 and a.history == b.history for a, b in zip(solo, together))
        out["top1_gap"] = max(abs((a.top1 or 0) - (b.top1 or 0)) for a, b in zip(solo, together))
        out["loss_gap"] = max(abs(ha.train_loss - hb.train_loss) / max(abs(hb.train_loss), 1e-12)
                              for a, b in zip(together, solo) for ha, hb in zip(a.history or [], b.history or []))
        out["failed"] = sum(not r.ok for r in solo + together)
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    return out


def _forward_gflop(args: argparse.Namespace) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    side = args.crop if args.tiny else 227
    with torch.device("meta"):
        model = _model(args, torch.device("meta"))
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, side, side))
    return counter.get_total_flops() / 1e9


# ------------------------------------------------------------------ main


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a small network and data (a dry run on a CPU)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per network")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=520)
    parser.add_argument("--eval-per-class", type=int, default=10)
    parser.add_argument("--data-batches", type=int, default=16, help="batches timed per data path (after a first)")
    parser.add_argument("--ks", default="1,4,8,16", help="cohort sizes timed in part C")
    parser.add_argument("--layers", default="1,2,3,4,5,6,7", help="the n of part C's transferred networks")
    parser.add_argument("--batched", default="off", choices=["off", "on", "auto"],
                        help="performance.batched of part C (off: records identical to one by one)")
    parser.add_argument("--workers", type=int, default=max(1, min(16, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting parts after this")
    parser.add_argument("--rates", default="gpu_rates.json", help="where to write the measured rates")
    args = parser.parse_args(argv)
    args.ks = [int(k) for k in str(args.ks).split(",") if k.strip()]
    args.layers = [int(n) for n in str(args.layers).split(",") if n.strip()]
    args.resize, args.crop = (36, 32) if args.tiny else (256, 227)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    global T0
    T0 = time.monotonic()
    args = _arguments(argv)
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

    fp32 = _guarded("fp32_eager", budget, 20, lambda: compute_rate(args, device, False, False, False), nan)
    print(f"fp32_eager: {fp32:,.0f} images/s (tensors on the device)", flush=True)
    bf16 = _guarded("bf16_channels_last", budget, 20, lambda: compute_rate(args, device, True, True, False), nan)
    print(f"bf16_channels_last: {bf16:,.0f} images/s", flush=True)
    fast = _guarded("bf16_channels_last_compile", budget, 120,
                    lambda: compute_rate(args, device, True, True, device.type == "cuda"), nan)
    print(f"bf16_channels_last_compile: {fast:,.0f} images/s -> {fast / fp32:.2f}x fp32 eager", flush=True)

    work = Path(tempfile.mkdtemp(prefix="tb-gpu-check-"))
    root, cache = work / "images", work / "store"
    t0 = time.perf_counter()
    _guarded("jpeg_tree", budget, 60, lambda: jpeg_tree(root, args), None)
    print(f"images: {args.classes} classes x {args.train_per_class} JPEGs written in "
          f"{time.perf_counter() - t0:.0f} s; {args.workers} loader workers", flush=True)
    empty = {"decode": nan, "build": nan, "store_cold": nan, "store_warm": nan, "stored_kb": nan}
    data = _guarded("data_path", budget, 60, lambda: data_rates(args, root, cache, device), empty)
    print(f"data_path: JPEG decoding on {args.workers} workers {data['decode']:,.0f} images/s; the uint8 store "
          f"({data['stored_kb']:.0f} kB an image, built at {data['build']:,.0f} images/s) with crops and mirroring "
          f"on the device {data['store_cold']:,.0f} images/s from the disk, {data['store_warm']:,.0f} from the "
          f"page cache -> {data['store_cold'] / data['decode']:.1f}x decoding", flush=True)
    c = _guarded("cohorts", budget, 60, lambda: cohort_rates(args, root, cache, args.device), {"rates": {}})
    shutil.rmtree(work, ignore_errors=True)

    def f(v: Any) -> str:
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"

    best = max((v for v in (fp32, bf16, fast) if not math.isnan(v)), default=nan)
    gflop = _forward_gflop(args)
    tflops = best * 3 * gflop / 1e3
    agreement = ("identical" if c.get("identical") else
                 f"top1_gap={c.get('top1_gap', nan):.3g} loss_gap={c.get('loss_gap', nan):.2g}") \
        if "compared" in c else "not compared"
    print(f"cohorts: {c.get('members', 0)} members in the cohort; k={c.get('compared', '-')} against one by one: "
          f"{agreement}", flush=True)
    rates = {"format": "transferbench.rates/1", "device": name, "torch": torch.__version__,
             "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "tiny": args.tiny,
             "network_forward_gflop": gflop, "train_tflops": tflops,
             "train_images_per_s": {"fp32_eager": fp32, "bf16_channels_last": bf16, "bf16_cl_compile": fast},
             "decode_images_per_s": data["decode"], "store_images_per_s": data["store_cold"],
             "store_warm_images_per_s": data["store_warm"], "stored_kb_per_image": data["stored_kb"],
             "cohort_images_per_s": {str(k): v for k, v in c["rates"].items()},
             "cohort_agreement": {k: c[k] for k in ("compared", "identical", "top1_gap", "loss_gap") if k in c}}
    Path(args.rates).write_text(json.dumps(rates, indent=1, default=lambda v: None if v != v else v) + "\n")
    cohorts = " ".join(f"cohort_k{k}={f(v)}" for k, v in c["rates"].items())
    print(f"summary: fp32_eager={f(fp32)} bf16_cl={f(bf16)} bf16_cl_compile={f(fast)} train_tflops={tflops:.1f} "
          f"decode={f(data['decode'])} store={f(data['store_cold'])} store_warm={f(data['store_warm'])} "
          f"{cohorts} cohort_agreement={'identical' if c.get('identical') else agreement.replace(' ', ',')} "
          f"rates={args.rates} seconds={time.monotonic() - T0:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
