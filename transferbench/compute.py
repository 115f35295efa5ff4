"""What a plan costs: images processed and compute, before anything is trained."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .components import Components
from .config import Config
from .features import prefix_cost
from .interfaces import Split
from .jobs import Job
from .network import build_meta, input_shape
from .plan import Plan
from .schedule import TrainingLength

__all__ = ["ComputeEstimate", "NetworkWork", "TRAIN_FLOP_FACTOR", "describe", "estimate_compute", "forward_gflop",
           "network_work", "split_gflop"]

#: Training costs about three forward passes per image (forward, two for backward).
TRAIN_FLOP_FACTOR = 3.0


@dataclass
class ComputeEstimate:
    """Compute needed by a plan (an upper bound: frozen layers need no backward pass)."""

    networks: int
    train_images: float  # images processed in training, all networks
    eval_images: float
    forward_gflop: float  # per image, one forward pass
    tflops: float  # assumed effective throughput

    @property
    def total_flop(self) -> float:
        return self.forward_gflop * 1e9 * (TRAIN_FLOP_FACTOR * self.train_images + self.eval_images)

    @property
    def gpu_hours(self) -> float:
        return self.total_flop / (self.tflops * 1e12) / 3600


def forward_gflop(config: Config, components: Components, num_classes: int) -> float:
    """GFLOP of one forward pass of one example, counted on the meta device (no memory)."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = input_shape(config.train.augment, components.data)
    model = build_meta(components.architecture, num_classes, shape)
    model.eval()  # the same FLOPs; BatchNorm in training mode refuses one example at 1x1 (a ResNet at 32 px)
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, *shape))
    return counter.get_total_flops() / 1e9


def _examples_per_class(components: Components, split: Split, classes: int) -> np.ndarray | None:
    try:
        labels = np.asarray(components.data.load(split).with_format("numpy")["label"])
    except Exception:  # noqa: BLE001 - data not at hand: sizes unknown
        return None
    return np.bincount(labels, minlength=classes)


def estimate_compute(config: Config, components: Components, plan: Plan, tflops: float) -> ComputeEstimate | None:
    """Images and GPU-hours of ``plan``; None when epochs-based and the data isn't at hand."""
    num_classes = len(components.data.classes())
    train_counts = eval_counts = None
    if config.train.epochs is not None:
        train_counts = _examples_per_class(components, "train", num_classes)
        if train_counts is None:
            return None
    eval_counts = _examples_per_class(components, "eval", num_classes)
    train_images = eval_images = 0.0
    networks = [job for job in plan.jobs.values() if job.kind != "estimate"]  # estimators train nothing
    for job in networks:
        examples = None if train_counts is None else int(train_counts[list(job.classes)].sum())
        length = TrainingLength.of(config.train, config.eval, examples)
        trains = job.reading is None or job.reading.trains  # an evaluate-only network: one evaluation
        train_images += length.total * config.train.batch_size if trains else 0
        if eval_counts is not None:
            eval_images += int(eval_counts[list(job.classes)].sum()) * (length.evaluations if trains else 1)
    gflop = forward_gflop(config, components, max(2, num_classes // 2))
    return ComputeEstimate(len(networks), train_images, eval_images, gflop, tflops)


def describe(est: ComputeEstimate | None) -> str:
    """One paragraph for ``transferbench plan``."""
    if est is None:
        return "compute: unknown (the config trains by epochs and the data is not at hand)"
    evals = (f"{est.eval_images:.3g} evaluation images" if est.eval_images
             else "evaluation not counted (no data at hand)")
    return (
        f"compute: {est.train_images:.3g} training images + {evals}; "
        f"{est.forward_gflop:.3g} GFLOP per forward pass; about {est.total_flop / 1e15:.3g} PFLOP in all, "
        f"{est.gpu_hours:,.1f} GPU-hours at an effective {est.tflops:g} TFLOP/s "
        f"({est.gpu_hours / est.networks:,.2f} per network; an upper bound: frozen layers need no backward pass)"
    )


def split_gflop(config: Config, components: Components, num_classes: int, n: int) -> float:
    """GFLOP per example of the deterministic prefix the architecture splits off for a frozen
    layers 1..n (``Architecture.split_at``): what the frozen-prefix cache computes once and a
    cohort's members copied from one source share per batch. 0 when it splits nothing.
    CaffeNet's stops before fc6's dropout, so for n = 7 it is fc6's prefix (fc7 runs in each
    network, with its own dropout mask)."""
    from torch.utils.flop_counter import FlopCounterMode

    if n <= 0:
        return 0.0
    shape = input_shape(config.train.augment, components.data)
    model = build_meta(components.architecture, num_classes, shape)
    split = components.architecture.split_at(model, n)
    if split is None:
        return 0.0
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        split[0](torch.empty(1, *shape))
    return counter.get_total_flops() / 1e9


@dataclass(frozen=True)
class NetworkWork:
    """What one network's training and evaluation process.

    Attributes:
        train_images: images its training steps read (steps x batch).
        eval_images: images its evaluations read.
        flop: its arithmetic alone: a forward pass per image, a backward pass (twice the
            forward) only through the layers above its frozen ones, one forward pass per
            evaluation image; with the frozen-prefix cache, the cached prefix once per example.
        shared_gflop: GFLOP per training image of the deterministic prefix it computes from
            frozen copies of its source (what a cohort computes once per batch for all the
            members copied from one source; 0 when cached or nothing is copied frozen).
    """

    train_images: float
    eval_images: float
    flop: float
    shared_gflop: float


def network_work(config: Config, components: Components, plan: Plan,
                 jobs: Iterable[Job] | None = None) -> dict[str, NetworkWork] | None:
    """Every network's (or ``jobs``') :class:`NetworkWork`; None when the config trains by
    epochs and the data is not at hand."""
    num_classes = len(components.data.classes())
    train_counts = _examples_per_class(components, "train", num_classes)
    eval_counts = _examples_per_class(components, "eval", num_classes)
    if config.train.epochs is not None and train_counts is None:
        return None
    classes = max(2, num_classes // 2)
    full = forward_gflop(config, components, classes) * 1e9
    shape = input_shape(config.train.augment, components.data)
    layers: dict[int, float] = {}
    splits: dict[int, float] = {}

    def frozen_flop(n: int) -> float:  # layers 1..n, however the architecture splits
        if n not in layers:
            layers[n] = prefix_cost(components.architecture, classes, shape, n,
                                    config.estimation.max_features)[0] * 1e9 if n else 0.0
        return layers[n]

    def split_flop(n: int) -> float:
        if n not in splits:
            splits[n] = split_gflop(config, components, classes, n) * 1e9
        return splits[n]

    cached = config.performance.cache_frozen and not config.train.augment.active
    out: dict[str, NetworkWork] = {}
    for job in jobs if jobs is not None else plan.jobs.values():
        if job.kind == "estimate":
            continue
        examples = None if train_counts is None else int(train_counts[list(job.classes)].sum())
        evaluated = 0.0 if eval_counts is None else float(eval_counts[list(job.classes)].sum())
        reading = job.read_protocol(plan.num_layers)
        if not reading.trains:  # evaluate-only: one pass over the evaluation images, nothing trained
            out[job.id] = NetworkWork(0.0, evaluated, evaluated * full, 0.0)
            continue
        length = TrainingLength.of(config.train, config.eval, examples)
        train_images = float(length.total * config.train.batch_size)
        eval_images = evaluated * length.evaluations
        frozen = frozen_flop(reading.frozen_prefix)
        backward = 2 * (full - frozen)
        if cached and reading.frozen_prefix:
            kept = split_flop(reading.frozen_prefix)
            flop = train_images * (full - kept + backward) + (examples or 0) * kept + eval_images * full
            shared = 0.0
        else:
            flop = train_images * (full + backward) + eval_images * full
            shared = split_flop(reading.source_prefix) if job.depends_on is not None else 0.0
        out[job.id] = NetworkWork(train_images, eval_images, flop, shared)
    return out
