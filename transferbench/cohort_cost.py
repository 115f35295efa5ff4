"""What a plan costs with and without cohorts: the compute bound beside the data-pipeline bound.

``transferbench plan`` prints it. Without cohorts every network reads (decodes, augments) its
own batches and computes its own frozen layers; with cohorts the transferred networks of one
training set read one stream (:mod:`transferbench.cohort`), and those whose frozen layers
copy one source compute that prefix once per batch. Each unit (a network alone, or a cohort)
takes the longer of its compute time at the assumed throughput and its data time at the
decode rate (measured here on the source's own images, or given with ``--decode-rate``).

The FLOPs are counted per image: a network trains with one forward pass and a backward pass
(twice the forward) through the layers above its frozen ones; evaluation is one forward
pass. With the frozen-prefix cache on (no augmentation) a frozen network's prefix costs one
pass over its data, with or without cohorts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .components import Components
from .compute import _examples_per_class, forward_gflop
from .config import Config
from .features import prefix_cost
from .jobs import Job
from .network import input_shape
from .plan import Plan
from .schedule import TrainingLength

__all__ = ["CohortCost", "UnitCost", "cohort_cost_json", "decode_rate_note", "describe_cohorts", "estimate_cohorts",
           "measure_decode_rate"]


@dataclass(frozen=True)
class UnitCost:
    """What the units of a way of running a plan cost.

    Attributes:
        units: networks trained alone plus cohorts (each unit reads its own stream).
        flop: training and evaluation arithmetic.
        images: images decoded (read and augmented) by the data pipeline.
        hours: the sum over units of the longer of compute and data time (None: no rate).
    """

    units: int
    flop: float
    images: float
    hours: float | None


@dataclass(frozen=True)
class CohortCost:
    """A plan's cost without and with cohorts, at ``tflops`` and ``decode_rate`` images/s."""

    networks: int
    solo: UnitCost
    cohorts: UnitCost
    tflops: float
    decode_rate: float | None

    def compute_hours(self, flop: float) -> float:
        return flop / (self.tflops * 1e12) / 3600


def measure_decode_rate(components: Components, seconds: float = 2.0) -> tuple[float, int] | None:
    """Images per second one process turns into tensors (``DataSource.to_tensor``: decoding,
    resizing) on this machine, and the machine's cores; None when the data is not at hand."""
    try:
        ds = components.data.load("train")
        rows = [ds[int(i)]["input"] for i in range(0, len(ds), max(1, len(ds) // 64))][:64]
    except Exception:  # noqa: BLE001 - no data here: the rate must be given
        return None
    if not rows:
        return None
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        components.data.to_tensor(rows[done % len(rows)])
        done += 1
    return done / (time.perf_counter() - t0), os.cpu_count() or 1


def _cohort_key(job: Job, num_layers: int) -> object:
    """The unit a job trains in with cohorts: its cohort (the plan's, or the one it would have),
    or itself for a network that trains alone (a base network, or one whose reading keeps it
    out of cohorts, as the planner keeps it out)."""
    if job.kind != "transfer" or not job.read_protocol(num_layers).joins_cohort:
        return job.id
    return job.cohort or ("cohort", job.classes)


def _shared_prefix(job: Job, num_layers: int) -> int:
    """k when the job's layers 1..k are frozen copies of its source network (a prefix the
    cohort members of one source share, as :mod:`transferbench.cohort` groups them), else 0."""
    return job.read_protocol(num_layers).source_prefix if job.depends_on is not None else 0


def _frozen(job: Job, num_layers: int) -> int:
    """Layers 1..k that do not train (no backward pass through them)."""
    return job.read_protocol(num_layers).frozen_prefix


# long: one pass over the jobs that adds up both ways of running them side by side
def estimate_cohorts(config: Config, components: Components, plan: Plan, tflops: float,
                     decode_rate: float | None = None) -> CohortCost | None:
    """The plan's cost without and with cohorts; None when the data is needed and not at hand."""
    num_classes = len(components.data.classes())
    train_counts = _examples_per_class(components, "train", num_classes)
    eval_counts = _examples_per_class(components, "eval", num_classes)
    if config.train.epochs is not None and train_counts is None:
        return None
    classes = max(2, num_classes // 2)
    full = forward_gflop(config, components, classes) * 1e9
    shape = input_shape(config.train.augment, components.data)
    max_features = config.estimation.max_features
    prefix: dict[int, float] = {}

    def p(n: int) -> float:
        if n not in prefix:
            prefix[n] = prefix_cost(components.architecture, classes, shape, n, max_features)[0] * 1e9 if n else 0.0
        return prefix[n]

    cached = config.performance.cache_frozen and not config.train.augment.active
    networks = [j for j in plan.jobs.values() if j.kind != "estimate"]
    solo_flop = cohort_flop = 0.0
    streams: dict[object, tuple[float, float, float]] = {}  # unit -> (train images, eval images, flop)
    groups: dict[tuple, list[tuple[float, int]]] = {}  # (unit, source) -> [(train images, n)]
    solo_images = 0.0
    solo_hours = 0.0
    for job in networks:
        examples = None if train_counts is None else int(train_counts[list(job.classes)].sum())
        length = TrainingLength.of(config.train, config.eval, examples)
        evaluated = 0 if eval_counts is None else int(eval_counts[list(job.classes)].sum())
        if job.reading is not None and not job.reading.trains:  # evaluate-only: one pass, nothing trained
            solo_flop += evaluated * full
            solo_images += evaluated
            solo_hours += max(evaluated * full / (tflops * 1e12), evaluated / decode_rate if decode_rate else 0)
            streams[job.id] = (0.0, float(evaluated), evaluated * full)
            continue
        train_images = length.total * config.train.batch_size
        eval_images = evaluated * length.evaluations
        frozen = p(_frozen(job, plan.num_layers))
        if cached and frozen:
            flop = train_images * 3 * (full - frozen) + (examples or 0) * frozen + eval_images * full
        else:
            flop = train_images * (full + 2 * (full - frozen)) + eval_images * full
        solo_flop += flop
        solo_images += train_images + eval_images
        solo_hours += max(flop / (tflops * 1e12), (train_images + eval_images) / decode_rate if decode_rate else 0)
        key = _cohort_key(job, plan.num_layers)
        images = streams.get(key, (0.0, 0.0, 0.0))
        streams[key] = (max(images[0], train_images), max(images[1], eval_images), images[2] + flop)
        k = _shared_prefix(job, plan.num_layers)
        if not cached and k:
            groups.setdefault((key, job.depends_on), []).append((train_images, k))
    saved = 0.0
    for (key, _), members in groups.items():  # the deepest prefix once per batch, not one per member
        if len(members) > 1:
            shared_images = members[0][0]
            shared = sum(p(n) for _, n in members) - p(max(n for _, n in members))
            saved += shared_images * shared
            t, e, f = streams[key]
            streams[key] = (t, e, f - train_images * shared)
    cohort_flop = solo_flop - saved
    cohort_images = sum(t + e for t, e, _ in streams.values())
    cohort_hours = sum(max(f / (tflops * 1e12), (t + e) / decode_rate if decode_rate else 0)
                       for t, e, f in streams.values())
    return CohortCost(
        len(networks),
        UnitCost(len(networks), solo_flop, solo_images, solo_hours / 3600 if decode_rate else None),
        UnitCost(len(streams), cohort_flop, cohort_images, cohort_hours / 3600 if decode_rate else None),
        tflops, decode_rate,
    )


def cohort_cost_json(cost: CohortCost | None) -> dict[str, Any] | None:
    """``plan --json``'s ``cohorts``: both ways of running the plan (None when unknown)."""
    if cost is None:
        return None

    def way(unit: UnitCost) -> dict[str, Any]:
        return {"units": unit.units, "images": unit.images, "flop": unit.flop,
                "compute_gpu_hours": cost.compute_hours(unit.flop),
                "data_hours": unit.images / cost.decode_rate / 3600 if cost.decode_rate else None,
                "gpu_hours": unit.hours}

    return {"networks": cost.networks, "tflops": cost.tflops, "decode_rate": cost.decode_rate,
            "without": way(cost.solo), "with": way(cost.cohorts)}


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"


def _line(name: str, cost: CohortCost, unit: UnitCost, what: str) -> str:
    compute = cost.compute_hours(unit.flop)
    data = unit.images / cost.decode_rate / 3600 if cost.decode_rate else None
    text = (f"  {name} {unit.units} {what}: {unit.images:.3g} images through the data pipeline; "
            f"compute {_hours(compute)} GPU-hours at {cost.tflops:g} TFLOP/s")
    if data is None or unit.hours is None:
        return text + "; data pipeline: unknown"
    bound = "data-bound" if data > compute else "compute-bound"
    return text + f", data pipeline {_hours(data)} hours -> {_hours(unit.hours)} GPU-hours ({bound})"


def describe_cohorts(cost: CohortCost | None, lines: Iterable[str] = ()) -> str:
    """The lines ``transferbench plan`` prints (``lines``: notes on the decode rate)."""
    if cost is None:
        return "with and without cohorts: unknown (the config trains by epochs and the data is not at hand)"
    out = ["with and without cohorts (the transferred networks of one training set reading one stream "
           "of batches, executor cohorts: true):",
           _line("without cohorts:", cost, cost.solo, "networks, each reading its own batches"),
           _line("with cohorts:   ", cost, cost.cohorts, "units (cohorts and networks alone)"),
           *lines]
    return "\n".join(out)


def decode_rate_note(components: Components, given: float | None) -> tuple[float | None, str]:
    """The decode rate to use (given, or measured here) and a line that says where it is from."""
    if given is not None:
        return given, f"  decode rate {given:,.0f} images/s (given)"
    measured = measure_decode_rate(components)
    if measured is None:
        return None, ("  decode rate: unknown, the data is not at hand: give the machine's with --decode-rate "
                      "IMAGES_PER_S (JPEG decoding and resizing runs at a few hundred ImageNet images/s per core)")
    per_process, cores = measured
    return per_process * cores, (f"  decode rate {per_process * cores:,.0f} images/s, measured here: "
                                 f"{per_process:,.0f}/s in one process x {cores} cores (--decode-rate sets "
                                 "the rate of the machine that trains)")
