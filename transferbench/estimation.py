"""Run one estimator job: layer-n features of a trained base network on a target task, scored.

:func:`estimate_job` is what the :class:`~transferbench.runner.TrainingRunner` calls for a
job of kind ``estimate``. The features (:mod:`transferbench.features`) are computed on a
fixed random subset of the target half's examples (``estimation.max_train`` and
``max_eval``; the same subset for every network, so a reference network sees the same
examples) and kept in a small per-process cache: the estimators of one (network, n, task)
compute them once. An estimator that needs the source network's classifier outputs (LEEP,
NCE) also gets them on the same examples: the network's logits, cached like a layer's features.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ._version import __version__
from .context import TrainContext
from .devices import autocast
from .errors import TrainingFailed
from .estimator import LayerFeatures
from .features import layer_features, network_outputs
from .hashing import content_hash
from .interfaces import Split
from .jobdata import input_transform
from .jobs import Job
from .records import JobRecord, utc_now
from .taskdata import TaskData, open_task

__all__ = ["CACHE_MAX_BYTES", "Features", "LoadNetwork", "estimate_job", "network_features", "source_network"]

#: ``load(job_id) -> (num_classes, state_dict)``: a trained network of the run.
LoadNetwork = Callable[[str], "tuple[int, Mapping[str, torch.Tensor]]"]

#: Features kept per process for the next estimator job on the same network and layer.
CACHE_MAX_BYTES = 2e9
#: ``(train, train_labels, eval, eval_labels)``: layer-n features and labels of a task.
Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

#: key -> (features, the std of the network's inputs).
_CACHE: OrderedDict[str, tuple[Features, float]] = OrderedDict()


def _subset_seed(classes: Sequence[int], split: str) -> int:
    return int(content_hash({"classes": list(classes), "split": split})[:8], 16)


def _batches(task: TaskData, limit: int, batch_size: int, seed: int, labels: list[torch.Tensor]
             ) -> Iterator[torch.Tensor]:
    """At most ``limit`` examples of ``task``: all of them, or a fixed random subset; their
    labels are appended to ``labels`` as the inputs are handed out."""
    size = task.size
    shuffle = size is None or size > limit
    generator = torch.Generator().manual_seed(seed)
    count = 0
    for x, y in task.batches(batch_size, shuffle=shuffle, generator=generator):
        x, y = x[: limit - count], y[: limit - count]
        labels.append(y.long())
        count += len(y)
        yield x
        if count >= limit:
            return


def _build(ctx: TrainContext, num_classes: int, state: Mapping[str, torch.Tensor]) -> nn.Module:
    arch = ctx.components.architecture
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move anyone's RNG
        model = arch.build(num_classes, tuple(ctx.input_shape))
    model.load_state_dict(state)
    return model.to(ctx.device)


def network_features(ctx: TrainContext, network: str, load: LoadNetwork, n: int | None, classes: Sequence[int]
                     ) -> tuple[Features, float, float]:
    """Layer-n features of the trained ``network`` on the task ``classes``; with ``n=None``,
    its classifier outputs (logits over the network's own classes) on the same examples.

    The inputs go through the run's :func:`~transferbench.jobdata.input_transform` (the
    architecture's normalisation, evaluation mode): exactly what the network saw in training.

    Returns:
        ``(train, train_labels, eval, eval_labels)``, the standard deviation of the network's
        inputs (first batch, as training measures it) and the seconds spent computing the
        features (0.0 when they came from this process's cache).
    """
    settings = ctx.config.estimation
    key = content_hash({"network": network, "n": n, "classes": list(classes),
                        "settings": settings.model_dump(mode="json")})
    if key in _CACHE:
        _CACHE.move_to_end(key)
        cached, input_std = _CACHE[key]
        return cached, input_std, 0.0
    t0 = time.perf_counter()
    config, source = ctx.config, ctx.components.data
    num_classes, state = load(network)
    model = _build(ctx, num_classes, state)
    layers = list(ctx.components.architecture.layers(model))
    transform = input_transform(ctx)
    batch_size = config.eval.batch_size or config.train.batch_size
    out: list[torch.Tensor] = []
    stds: list[float] = []
    splits: tuple[tuple[Split, int], ...] = (("train", settings.max_train), ("eval", settings.max_eval))
    for split, limit in splits:
        task = open_task(source, split, classes, config.loader, ctx.memory)
        labels: list[torch.Tensor] = []
        inputs = (_measured(transform(x.to(ctx.device), train=False), stds)
                  for x in _batches(task, limit, batch_size, _subset_seed(classes, split), labels))
        with autocast(config.performance.amp, ctx.device):
            feats = (network_outputs(model, inputs, num_classes) if n is None
                     else layer_features(model, layers, n, inputs, settings.max_features))
        out += [feats, torch.cat(labels)]
    result = (out[0], out[1], out[2], out[3])
    input_std = stds[0] if stds else 0.0
    _remember(key, (result, input_std))
    return result, input_std, time.perf_counter() - t0


def _measured(x: torch.Tensor, stds: list[float]) -> torch.Tensor:
    """``x``, its std noted when it is the first batch (the record's ``input_std``, as training notes it)."""
    if not stds:
        stds.append(float(x.detach().float().std()))
    return x


def _remember(key: str, value: tuple[Features, float]) -> None:
    _CACHE[key] = value
    while len(_CACHE) > 1 and _cached_bytes() > CACHE_MAX_BYTES:
        _CACHE.popitem(last=False)


def _cached_bytes() -> int:
    return sum(t.numel() * t.element_size() for features, _ in _CACHE.values() for t in features)


def source_network(job: Job) -> str:
    """The name ``load`` knows the job's source network by: its job id, or ``file:<sha256>``
    for a weights file (source ``X``)."""
    if job.depends_on is not None:
        return job.depends_on
    assert job.external is not None, "an estimate job reads a base network or a weights file"
    return f"file:{job.external.file.sha256}"


def estimate_job(job: Job, ctx: TrainContext, load: LoadNetwork) -> JobRecord:
    """Score layer ``job.n`` of the job's source network on its target task.

    Raises:
        TrainingFailed: the estimator returned something that is not a finite number.
    """
    assert job.estimator is not None and job.estimator_spec is not None
    started, t0 = utc_now(), time.perf_counter()
    network = source_network(job)
    # the estimator runs where the networks do when that is a CUDA device (the arithmetic of a
    # linear probe on ImageNet-sized features is GPU work), else on the CPU
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    feats, input_std, features_s = network_features(ctx, network, load, job.n, job.classes)
    tx, ty, ex, ey = (t.to(device) for t in feats)
    reference = None
    if job.estimator.needs_reference:
        ref_id = job.after[0] if job.after else network
        ref, _, ref_s = network_features(ctx, ref_id, load, job.n, job.classes)
        features_s += ref_s
        rtx, rty, rex, rey = (t.to(device) for t in ref)
        reference = LayerFeatures(rtx, rty, rex, rey, job.num_classes, job.n)
    logits: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    if job.estimator.needs_source_outputs:
        outputs, _, out_s = network_features(ctx, network, load, None, job.classes)
        features_s += out_s
        # rows must pair up with the features' rows: the same fixed subset in the same order
        if not (torch.equal(outputs[1], feats[1]) and torch.equal(outputs[3], feats[3])):
            raise TrainingFailed("the source network's outputs were computed on other examples than its features")
        logits = (outputs[0].to(device), outputs[2].to(device))
    features = LayerFeatures(tx, ty, ex, ey, job.num_classes, job.n, reference, job.seed, *logits)
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        value = float(job.estimator.score(features))
    estimate_s = time.perf_counter() - t1
    if not math.isfinite(value):
        raise TrainingFailed(f"estimator {job.estimator_spec['name']} returned {value}")
    return JobRecord(
        job_id=job.id, status="ok", estimator=job.estimator_spec["name"], estimate=value,
        estimate_s=round(estimate_s, 4), features_s=round(features_s, 4), feature_dim=max(1, features.dim),
        train_time_s=round(time.perf_counter() - t0, 4), num_classes=job.num_classes, device=str(ctx.device),
        seed=job.seed, started_at=started, finished_at=utc_now(), transferbench_version=__version__,
        torch_version=torch.__version__, input_std=input_std,
    )
