"""What a plan costs with and without cohorts: the compute, decode and disk-read bounds side by side.

``transferbench plan`` prints it. Three ways of running a plan are compared:

* **decoding every batch, one by one**: every network decodes (and resizes) its own images
  every batch: what a grid costs with no data path of its own;
* **without cohorts** (the honest baseline): every network reads its own batches, from the
  uint8 store when the data allows it (``loader.decode_cache``: image sources, decoded once
  into a memory map, then read at disk speed), else decoding every batch;
* **with cohorts**: the transferred networks of one training set read one stream
  (:mod:`transferbench.cohort`) from the same data path, and those whose frozen layers copy
  one source compute that prefix once per batch.

Each unit (a network alone, or a cohort) takes the longer of its compute time (its FLOPs at
the throughput) and its data time (the images it streams at the decode rate, or at the
store's read rate); a decode-once pass over the data comes first where the store is used.
What binds is said per way: the bound that most of its hours wait on.

The FLOPs are :func:`transferbench.compute.network_work`'s: a backward pass only through
the layers above a network's frozen ones, and a shared prefix only as far as the
architecture's deterministic prefix reaches (``Architecture.split_at``; CaffeNet's stops
before fc6's dropout, so AnB at n = 7 shares fc6's prefix, not fc7).

The rates are assumed (``--tflops``, ``--decode-rate``, ``--read-gbps``), measured here (the
decode rate on the source's own images), or read from a rates file
(``plan --measured FILE``, the format ``benchmarks/gpu_check.py`` writes: :data:`RATES_FORMAT`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .components import Components
from .compute import _examples_per_class, network_work
from .config import Config
from .errors import ConfigError
from .jobs import Job
from .plan import Plan

__all__ = ["CohortCost", "RATES_FORMAT", "Rates", "WayCost", "cohort_cost_json", "decode_rate_note",
           "describe_cohorts", "estimate_cohorts", "measure_decode_rate", "rates_note", "read_rates", "store_allowed",
           "with_read_gbps"]

#: The ``format`` of a rates file (``benchmarks/gpu_check.py --rates FILE`` writes one).
RATES_FORMAT = "transferbench.rates/1"

#: The disk read speed assumed without a measurement: a datacenter NVMe drive reads 2-7 GB/s;
#: a store that fits in the page cache is read far faster.
DEFAULT_READ_GBPS = 2.0


@dataclass(frozen=True)
class Rates:
    """The throughputs a cost is computed at.

    Attributes:
        tflops: effective training arithmetic, TFLOP/s per GPU.
        decode: images/s the CPU cores feeding one GPU decode and resize (None: unknown).
        read: images/s one GPU's data path reads from the uint8 store, with its augmentation
            (None: unknown).
        origin: where they come from, in words.
    """

    tflops: float
    decode: float | None
    read: float | None
    origin: str = "assumed"


@dataclass(frozen=True)
class WayCost:
    """One way of running a plan.

    Attributes:
        name: its label.
        units: networks trained alone plus cohorts (each unit reads its own stream).
        flop: training and evaluation arithmetic.
        images: images streamed through the data path (decoded, or read from the store).
        store: whether the stream is read from the uint8 store (decoded once) or decoded every batch.
        decode_images: images decoded (the stream, or one pass over the data for the store;
            None: the data's size is unknown).
        compute_hours, decode_hours, read_hours: each bound alone (None: its rate is unknown).
        hours: the decode-once pass plus, per unit, the longer of compute and stream (None: unknown).
        binds: ``compute``, ``decode`` or ``disk read``: what most of ``hours`` waits on.
    """

    name: str
    units: int
    flop: float
    images: float
    store: bool
    decode_images: float | None
    compute_hours: float
    decode_hours: float | None
    read_hours: float | None
    hours: float | None
    binds: str | None


@dataclass(frozen=True)
class CohortCost:
    """A plan's cost three ways (see the module's docstring) at ``rates``."""

    networks: int
    decoding: WayCost
    solo: WayCost
    cohorts: WayCost
    rates: Rates
    store_allowed: bool

    @property
    def tflops(self) -> float:
        return self.rates.tflops

    @property
    def decode_rate(self) -> float | None:
        return self.rates.decode


def store_allowed(components: Components) -> bool:
    """Whether the data can be decoded once into the uint8 store (``loader.decode_cache``):
    a source of fixed-size images (3-D examples) that is not a stream."""
    try:
        shape = tuple(components.data.input_shape())
    except Exception:  # noqa: BLE001 - a source that cannot say its shape has no fixed-size store
        return False
    return len(shape) == 3 and not getattr(components.data, "streaming", False)


def _stored_bytes(components: Components) -> float:
    return float(math.prod(components.data.input_shape()))


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


def _way(name: str, units: dict[object, tuple[float, float]], store: bool, data_images: float | None,
         rates: Rates) -> WayCost:
    """``units``: unit -> (images streamed, flop)."""
    flop = sum(f for _, f in units.values())
    images = sum(i for i, _ in units.values())
    per_s = rates.tflops * 1e12
    stream_rate = rates.read if store else rates.decode
    decode_images = data_images if store else images
    decode_hours = decode_images / rates.decode / 3600 if rates.decode and decode_images is not None else None
    read_hours = images / rates.read / 3600 if store and rates.read else (0.0 if not store else None)
    hours = binds = None
    if stream_rate:
        waits = {"compute": 0.0, "stream": 0.0}
        for i, f in units.values():
            compute, stream = f / per_s, i / stream_rate
            waits["compute" if compute >= stream else "stream"] += max(compute, stream)
        once = (decode_hours or 0.0) if store else 0.0  # hours: one pass over the data into the store
        hours = once + sum(waits.values()) / 3600
        stream_name = "disk read" if store else "decode"
        binds = "compute" if waits["compute"] >= waits["stream"] else stream_name
        if store and decode_hours is not None and decode_hours * 3600 > max(waits.values()):
            binds = "decode"
    return WayCost(name, len(units), flop, images, store, decode_images, flop / per_s / 3600,
                   decode_hours, read_hours, hours, binds)


def estimate_cohorts(config: Config, components: Components, plan: Plan, tflops: float | Rates,
                     decode_rate: float | None = None) -> CohortCost | None:
    """The plan's cost three ways; None when the data is needed and not at hand.

    ``tflops``: the throughput, or every rate (:class:`Rates`); a bare throughput is paired
    with ``decode_rate`` and the store's read rate at :data:`DEFAULT_READ_GBPS`.
    """
    allowed = store_allowed(components)
    if isinstance(tflops, Rates):
        rates = tflops
    else:
        read = DEFAULT_READ_GBPS * 1e9 / _stored_bytes(components) if allowed else None
        rates = Rates(tflops, decode_rate, read)
    work = network_work(config, components, plan)
    if work is None:
        return None
    num_classes = len(components.data.classes())
    counts = [_examples_per_class(components, split, num_classes) for split in ("train", "eval")]
    data_images = None if any(c is None for c in counts) else float(sum(int(c.sum()) for c in counts if c is not None))
    solo: dict[object, tuple[float, float]] = {}
    streams: dict[object, tuple[float, float, float]] = {}  # unit -> (train images, eval images, flop)
    groups: dict[tuple[object, str | None], list[tuple[float, float]]] = {}  # (unit, source) -> [(images, gflop)]
    for jid, w in work.items():
        job = plan.jobs[jid]
        solo[jid] = (w.train_images + w.eval_images, w.flop)
        key = _cohort_key(job, plan.num_layers)
        t, e, f = streams.get(key, (0.0, 0.0, 0.0))
        streams[key] = (max(t, w.train_images), max(e, w.eval_images), f + w.flop)
        if w.shared_gflop and key != jid:
            groups.setdefault((key, job.depends_on), []).append((w.train_images, w.shared_gflop))
    for (key, _), members in groups.items():  # the deepest prefix once per batch, not once per member
        if len(members) > 1:
            shared = sum(g for _, g in members) - max(g for _, g in members)
            t, e, f = streams[key]
            streams[key] = (t, e, f - members[0][0] * shared)
    cohort_units = {k: (t + e, f) for k, (t, e, f) in streams.items()}
    return CohortCost(
        len(work),
        _way("decoding every batch, one by one", solo, False, data_images, rates),
        _way("without cohorts", solo, allowed, data_images, rates),
        _way("with cohorts", cohort_units, allowed, data_images, rates),
        rates, allowed,
    )


def cohort_cost_json(cost: CohortCost | None) -> dict[str, Any] | None:
    """``plan --json``'s ``cohorts``: the three ways of running the plan (None when unknown)."""
    if cost is None:
        return None

    def way(unit: WayCost) -> dict[str, Any]:
        data = unit.read_hours if unit.store else unit.decode_hours
        return {"units": unit.units, "images": unit.images, "flop": unit.flop,
                "data_path": "store" if unit.store else "decode", "decoded_images": unit.decode_images,
                "compute_gpu_hours": unit.compute_hours, "decode_hours": unit.decode_hours,
                "read_hours": unit.read_hours, "data_hours": data, "gpu_hours": unit.hours, "binds": unit.binds}

    return {"networks": cost.networks, "tflops": cost.tflops, "decode_rate": cost.rates.decode,
            "read_rate": cost.rates.read, "rates": cost.rates.origin, "store_allowed": cost.store_allowed,
            "decoding": way(cost.decoding), "without": way(cost.solo), "with": way(cost.cohorts),
            "saved": (cost.solo.hours / cost.cohorts.hours
                      if cost.solo.hours and cost.cohorts.hours else None)}


def _hours(h: float | None) -> str:
    if h is None:
        return "unknown"
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"


def _line(name: str, cost: CohortCost, way: WayCost, what: str) -> str:
    if way.store:
        once = "not counted" if way.decode_images is None else f"{_hours(way.decode_hours)} h"
        data = f"decode once {once}, disk read {_hours(way.read_hours)} h"
        path = "the uint8 store"
    else:
        data, path = f"decode {_hours(way.decode_hours)} h", "decoding every batch"
    return (f"  {name:<34} {way.units} {what}, {way.images:.3g} images from {path}: compute "
            f"{_hours(way.compute_hours)} h at {cost.tflops:g} TFLOP/s, {data} -> {_hours(way.hours)} GPU-hours"
            + (f" ({way.binds}-bound)" if way.binds else ""))


def describe_cohorts(cost: CohortCost | None, lines: Iterable[str] = ()) -> str:
    """The lines ``transferbench plan`` prints (``lines``: notes on the rates)."""
    if cost is None:
        return "with and without cohorts: unknown (the config trains by epochs and the data is not at hand)"
    out = ["with and without cohorts (the transferred networks of one training set reading one stream "
           "of batches, executor cohorts: true):",
           _line("decoding every batch, one by one:", cost, cost.decoding, "networks"),
           _line("without cohorts (best data path):", cost, cost.solo, "networks"),
           _line("with cohorts:", cost, cost.cohorts, "units")]
    if cost.solo.hours and cost.cohorts.hours:
        out.append(f"  cohorts save {cost.solo.hours / cost.cohorts.hours:.2f}x against the best way without "
                   f"them ({cost.decoding.hours / cost.cohorts.hours:.2f}x against decoding every batch)"
                   if cost.decoding.hours else
                   f"  cohorts save {cost.solo.hours / cost.cohorts.hours:.2f}x against the best way without them")
    if not cost.store_allowed:
        out.append("  (the data is not fixed-size images: no uint8 store, every way decodes every batch)")
    elif cost.solo.decode_images is None:
        out.append("  (the store's decode-once pass is not counted: the data's size is unknown here)")
    return "\n".join([*out, *lines])


def read_rates(path: str | Path, config: Config, components: Components) -> Rates:
    """The rates of a rates file (``plan --measured FILE``): the effective training TFLOP/s
    measured (the fastest setting's images/s x 3 forward passes of the measured network), the
    decode rate of the machine's CPU cores and the store's read rate with augmentation.
    ``config`` and ``components`` are the plan's (the file's rates apply to its network as
    FLOPs, an approximation for a network other than the measured one).

    Raises:
        ConfigError: the file is missing, not JSON, of another format, or lacks a rate.
    """
    where = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([("--measured", f"cannot read {where}: {exc}")]) from None
    if not isinstance(doc, dict) or doc.get("format") != RATES_FORMAT:
        raise ConfigError([("--measured", f"{where} is not a rates file (format {RATES_FORMAT!r}, "
                            "written by benchmarks/gpu_check.py)")])
    try:
        tflops = float(doc["train_tflops"])
        decode = float(doc["decode_images_per_s"])
        read = float(doc["store_images_per_s"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError([("--measured", f"{where}: a rate is missing or not a number ({exc})")]) from None
    if not all(math.isfinite(v) and v > 0 for v in (tflops, decode, read)):
        raise ConfigError([("--measured", f"{where}: rates must be positive numbers")])
    return Rates(tflops, decode, read if store_allowed(components) else None,
                 f"measured: {where} ({doc.get('device', 'device not named')})")


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


def rates_note(rates: Rates, components: Components, read_gbps: float) -> str:
    """The line that says where the store's read rate comes from."""
    if rates.read is None:
        return "  store read rate: none (no uint8 store for this data)"
    if rates.origin.startswith("measured"):
        return f"  rates {rates.origin}: {rates.tflops:g} TFLOP/s, decode {rates.decode:,.0f} images/s, " \
               f"store {rates.read:,.0f} images/s"
    return (f"  store read rate {rates.read:,.0f} images/s: {read_gbps:g} GB/s (assumed; --read-gbps) over "
            f"{_stored_bytes(components) / 1e3:,.0f} kB per stored image")


def with_read_gbps(rates: Rates, components: Components, read_gbps: float) -> Rates:
    """``rates`` with the store read at ``read_gbps`` GB/s (for data that allows a store)."""
    if not store_allowed(components):
        return replace(rates, read=None)
    return replace(rates, read=read_gbps * 1e9 / _stored_bytes(components))
