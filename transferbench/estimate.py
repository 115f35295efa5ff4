"""What a plan costs: images processed and compute, before anything is trained."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .data import BatchTransform
from .plan import Plan
from .resolve import Components

#: Training costs about three forward passes per image (forward, two for backward).
TRAIN_FLOP_FACTOR = 3.0


@dataclass
class Estimate:
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

    transform = BatchTransform(config.train.augment, None, torch.device("cpu"))
    shape = transform.output_shape(tuple(components.data.input_shape()))
    with torch.device("meta"):
        model = components.architecture.build(num_classes, shape)
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, *shape))
    return counter.get_total_flops() / 1e9


def _examples_per_class(components: Components, split: str, classes: int) -> np.ndarray | None:
    try:
        labels = np.asarray(components.data.load(split).with_format("numpy")["label"])
    except Exception:  # noqa: BLE001 - data not at hand: sizes unknown
        return None
    return np.bincount(labels, minlength=classes)


def estimate(config: Config, components: Components, plan: Plan, tflops: float) -> Estimate | None:
    """Images and GPU-hours of ``plan``; None when epochs-based and the data isn't at hand."""
    num_classes = len(components.data.classes())
    counts = {s: None for s in ("train", "eval")}
    train_images = eval_images = 0.0
    batch = config.train.batch_size
    for job in plan.jobs.values():
        if config.train.steps is not None:
            steps = config.train.steps
            n_train = None
        else:
            if counts["train"] is None:
                counts["train"] = _examples_per_class(components, "train", num_classes)
                if counts["train"] is None:
                    return None
            n_train = int(counts["train"][list(job.classes)].sum())
            steps = max(1, round(config.train.epochs * math.ceil(n_train / batch)))
        train_images += steps * batch
        if counts["eval"] is None:
            counts["eval"] = _examples_per_class(components, "eval", num_classes)
        if counts["eval"] is not None:
            per_eval = int(counts["eval"][list(job.classes)].sum())
            every = _eval_every(config, steps, n_train)
            eval_images += per_eval * max(1, steps // every)
    gflop = forward_gflop(config, components, max(2, num_classes // 2))
    return Estimate(len(plan.jobs), train_images, eval_images, gflop, tflops)


def _eval_every(config: Config, steps: int, n_train: int | None) -> int:
    if config.eval.every is None:
        if config.train.epochs is not None and n_train:
            return max(1, math.ceil(n_train / config.train.batch_size))
        return max(1, steps // 20)
    if config.train.epochs is not None and n_train:
        return max(1, round(config.eval.every * math.ceil(n_train / config.train.batch_size)))
    return max(1, round(config.eval.every))


def describe(est: Estimate | None) -> str:
    """One paragraph for ``transferbench plan``."""
    if est is None:
        return "compute: unknown (the config trains by epochs and the data is not at hand)"
    evals = f"{est.eval_images:.3g} evaluation images" if est.eval_images else "evaluation not counted (no data at hand)"
    return (
        f"compute: {est.train_images:.3g} training images + {evals}; "
        f"{est.forward_gflop:.3g} GFLOP per forward pass; about {est.total_flop / 1e15:.3g} PFLOP in all, "
        f"{est.gpu_hours:,.1f} GPU-hours at an effective {est.tflops:g} TFLOP/s "
        f"({est.gpu_hours / est.networks:,.2f} per network; an upper bound: frozen layers need no backward pass)"
    )
