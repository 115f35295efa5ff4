"""What a plan costs: images processed and compute, before anything is trained."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .components import Components
from .config import Config
from .interfaces import Split
from .network import build_meta, input_shape
from .plan import Plan
from .schedule import TrainingLength

__all__ = ["ComputeEstimate", "TRAIN_FLOP_FACTOR", "describe", "estimate_compute", "forward_gflop"]

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
