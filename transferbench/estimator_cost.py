"""What a plan's estimators cost beside the retraining they stand in for, before anything runs.

``transferbench plan`` prints it for a config with ``estimators:``; on the paper's config
(configs/yosinski.yaml) it is the projection of docs/estimators.md. Both sides are counted
in floating-point operations at the same assumed throughput: the transferred networks as
:func:`~transferbench.compute.network_work` counts them (a backward pass only through the
layers that learn); the estimators as one forward
pass through layers 1..n per example and feature set (each network, layer and task once,
as the run's feature cache does) plus each estimator's own :meth:`Estimator.cost_flops`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .components import Components
from .compute import _examples_per_class, network_work
from .config import Config
from .features import prefix_cost
from .interfaces import Split
from .network import input_shape
from .plan import Plan

__all__ = ["EstimatorCost", "describe_estimators", "estimate_estimators"]


@dataclass(frozen=True)
class EstimatorCost:
    """FLOPs of a plan's estimator jobs and of the transferred networks they stand in for.

    Attributes:
        jobs: estimator jobs.
        feature_flop: forward passes that compute the layer-n features.
        estimator_flop: the estimators' own arithmetic (0 for one that does not say).
        unknown: estimators whose :meth:`~transferbench.Estimator.cost_flops` is None.
        transfer_networks: transferred networks of the plan (frozen and fine-tuned).
        retraining_flop: their training and evaluation (None when unknown).
        tflops: the throughput both are converted at.
    """

    jobs: int
    feature_flop: float
    estimator_flop: float
    unknown: tuple[str, ...]
    transfer_networks: int
    retraining_flop: float | None
    tflops: float

    @property
    def total_flop(self) -> float:
        return self.feature_flop + self.estimator_flop

    def gpu_hours(self, flop: float) -> float:
        return flop / (self.tflops * 1e12) / 3600


def _counts(components: Components, split: Split, num_classes: int) -> np.ndarray | None:
    return _examples_per_class(components, split, num_classes)


def estimate_estimators(config: Config, components: Components, plan: Plan, tflops: float) -> EstimatorCost | None:
    """The estimators' FLOPs and the transferred networks' FLOPs; None without estimator jobs.

    Where the data is not at hand, every task is assumed to have at least
    ``estimation.max_train`` and ``max_eval`` examples (an upper bound).
    """
    jobs = [j for j in plan.jobs.values() if j.kind == "estimate"]
    if not jobs:
        return None
    settings, arch = config.estimation, components.architecture
    num_classes = len(components.data.classes())
    counts = {split: _counts(components, split, num_classes) for split in ("train", "eval")}
    shape = input_shape(config.train.augment, components.data)

    def examples(split: str, classes: tuple[int, ...], limit: int) -> int:
        c = counts[split]
        return limit if c is None else min(limit, int(c[list(classes)].sum()))

    costs: dict[tuple[int, int], tuple[float, int]] = {}
    features: set[tuple[str, int, tuple[int, ...]]] = set()
    feature_flop = estimator_flop = 0.0
    unknown: dict[str, None] = {}
    for job in jobs:
        n_train = examples("train", job.classes, settings.max_train)
        n_eval = examples("eval", job.classes, settings.max_eval)
        source_classes = plan.jobs[job.depends_on].num_classes if job.depends_on in plan.jobs else job.num_classes
        key = (source_classes, job.n)
        if key not in costs:
            costs[key] = prefix_cost(arch, source_classes, shape, job.n, settings.max_features)
        gflop, dim = costs[key]
        for net in (job.depends_on, *job.after):
            if (str(net), job.n, job.classes) not in features:
                features.add((str(net), job.n, job.classes))
                feature_flop += gflop * 1e9 * (n_train + n_eval)
        flop = job.estimator.cost_flops(n_train, n_eval, dim, job.num_classes) if job.estimator else None
        if flop is None:
            unknown[str(job.estimator_spec["name"] if job.estimator_spec else "?")] = None
        estimator_flop += flop or 0.0
    transfers = [j for j in plan.jobs.values() if j.kind == "transfer"]
    # the retraining as it runs: no backward pass through frozen layers (not an upper bound)
    work = network_work(config, components, plan, transfers) if transfers else None
    return EstimatorCost(len(jobs), feature_flop, estimator_flop, tuple(unknown), len(transfers),
                         sum(w.flop for w in work.values()) if work is not None else None, tflops)


def _hours(value: float) -> str:
    return f"{value:,.1f}" if value >= 1 else f"{value:.3g}"


def describe_estimators(cost: EstimatorCost | None) -> str:
    """One paragraph for ``transferbench plan``."""
    if cost is None:
        return ""
    text = (f"estimators: {cost.jobs} jobs, about {cost.total_flop / 1e12:.3g} TFLOP "
            f"({cost.feature_flop / 1e12:.3g} computing layer-n features, {cost.estimator_flop / 1e12:.3g} "
            f"in the estimators), {_hours(cost.gpu_hours(cost.total_flop))} GPU-hours at {cost.tflops:g} TFLOP/s")
    if cost.unknown:
        text += f" (not counted: {', '.join(cost.unknown)}, which give no cost)"
    if cost.retraining_flop:
        ratio = cost.retraining_flop / max(cost.total_flop, 1.0)
        times = f"{ratio:.2g}" if ratio < 10 else f"{ratio:,.0f}"
        text += (f"; the {cost.transfer_networks} transferred networks they stand in for need "
                 f"{_hours(cost.gpu_hours(cost.retraining_flop))} GPU-hours, {times} times as much")
    return text
