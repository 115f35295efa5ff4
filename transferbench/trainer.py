"""Train and evaluate one job. Read :func:`train_job` top to bottom: it is the whole story.

build the network (seeded) -> copy / freeze (the protocol) -> data, ready to iterate (with
the frozen-prefix cache where it is exact) -> optimizer and training length -> the loop ->
the record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ._version import __version__
from .augment import BatchTransform
from .config import Config
from .context import TrainContext
from .devices import autocast
from .errors import TrainingFailed, TransferbenchError
from .executor import ProgressFn
from .jobdata import JobData, input_transform, prepare_job_data, transformed
from .jobs import Job
from .network import Target, build_target
from .records import HistoryPoint, JobRecord, utc_now
from .schedule import TrainingLength
from .stepping import Course, TrainingSteps
from .taskdata import TaskData, open_task

__all__ = ["JobSetup", "count_correct", "evaluate", "job_record", "make_optimizer", "prepare_job", "train_job",
           "train_loop"]


def make_optimizer(
    config: Config,
    model: nn.Module,
    arch_multipliers: Mapping[str, tuple[float, float]],
    protocol_lr: Mapping[str, float],
) -> torch.optim.Optimizer:
    """One parameter group per distinct (lr, weight decay) pair; frozen parameters excluded."""
    train = config.train
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr_m, wd_m = arch_multipliers.get(name, (1.0, 1.0))
        key = (train.lr * lr_m * protocol_lr.get(name, 1.0), train.weight_decay * wd_m)
        groups.setdefault(key, []).append(p)
    if not groups:
        raise TransferbenchError("every parameter is frozen: nothing to train")
    param_groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    if train.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=train.lr, momentum=train.momentum)
    return torch.optim.AdamW(param_groups, lr=train.lr)


@torch.no_grad()
def evaluate(model: nn.Module, data: TaskData, transform: BatchTransform, device: torch.device,
             batch_size: int) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (top-k with k = min(5, classes)) on ``data``."""
    was_training = model.training
    model.eval()
    counts = [0, 0, 0]
    for x, y in data.batches(batch_size, shuffle=False):
        x = transform(x.to(device, non_blocking=True), train=False)
        count_correct(counts, model(x), y.to(device), len(data.classes))
    model.train(was_training)
    return counts[0] / counts[2], counts[1] / counts[2]


def count_correct(counts: list[int], logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Add a batch's top-1 hits, top-k hits and examples to ``counts`` (k = min(5, classes))."""
    logits = logits[:, :num_classes]  # extra logits (fc8 wider than k) go unused
    top = logits.topk(min(5, num_classes), dim=1).indices
    counts[0] += int((top[:, 0] == y).sum())
    counts[1] += int((top == y[:, None]).any(dim=1).sum())
    counts[2] += y.numel()


def train_loop(
    config: Config,
    target: Target,
    data: JobData,
    optimizer: torch.optim.Optimizer,
    length: TrainingLength,
    generator: torch.Generator,
    device: torch.device,
    progress: ProgressFn | None = None,
) -> list[HistoryPoint]:
    """Train ``data.net`` for ``length.total`` steps; return the periodic evaluations.

    Each step and evaluation follows :class:`~transferbench.stepping.TrainingSteps`, as a
    cohort's members do.

    Raises:
        TrainingFailed: the loss became NaN or infinite.
    """
    steps = TrainingSteps(config, length, device)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    eval_batch = config.eval.batch_size or config.train.batch_size
    course = Course()
    done = 0
    staged = target.reading.staged  # some layers start to learn later (LP-FT): held until then
    target.train_mode()
    while done < length.total:
        for x, y in data.train.batches(config.train.batch_size, shuffle=True, generator=generator):
            if staged and target.stage(done, length.total):
                target.train_mode()
            x = data.transform(x.to(device, non_blocking=True), train=True, generator=generator)
            if data.input_std is None:  # what the network's inputs look like (its init expects a scale)
                data.input_std = float(x.detach().float().std())
            steps.step(data.net, optimizer, base_lrs, x, y.to(device, non_blocking=True), course, done)
            if course.error is not None:
                raise TrainingFailed(course.error)
            done += 1
            if steps.due(done):
                with steps.amp:
                    top1, top5 = evaluate(data.net, data.eval, data.transform, device, eval_batch)
                target.train_mode()
                steps.record(course, done, top1, top5)
            if progress is not None:
                progress(done, length.total, course.info())
            if done >= length.total:
                break
    return course.history


@dataclass
class JobSetup:
    """A job ready to train: its network, data, optimizer and length."""

    target: Target
    data: JobData
    optimizer: torch.optim.Optimizer | None  # None: the protocol only evaluates
    length: TrainingLength


def prepare_job(job: Job, ctx: TrainContext, source_state: Mapping[str, torch.Tensor] | None,
                init_state: Mapping[str, torch.Tensor] | None = None) -> JobSetup:
    """Build the job's network from its seed, transfer into it, and prepare its data and solver
    (no solver when the protocol only evaluates).

    Leaves torch's RNG where training starts (dropout draws from it next)."""
    config, arch, device = ctx.config, ctx.components.architecture, ctx.device
    torch.manual_seed(job.seed)  # right before the build: the init depends on the job alone
    target = build_target(arch, job, ctx.input_shape, source_state, init_state)
    target.model.to(device)
    if config.performance.channels_last and len(ctx.input_shape) == 3:
        target.model.to(memory_format=torch.channels_last)
    data = prepare_job_data(ctx, job.classes, target, job.transforms)
    optimizer = None if target.reading.evaluate_only else \
        make_optimizer(config, target.model, arch.param_multipliers(target.model), target.lr_mult)
    return JobSetup(target, data, optimizer, TrainingLength.of(config.train, config.eval, data.train.size))


def ood_top1(job: Job, ctx: TrainContext, model: nn.Module) -> float | None:
    """Top-1 of the whole trained ``model`` on the data source's out-of-distribution split
    (the job's classes, through the job's eval transforms), or None when the source has none.

    Evaluated once, after training, and never read by training: the network and its other
    numbers are the same with or without it (so it enters no job id)."""
    source = ctx.components.data
    if not source.has_ood():
        return None
    config = ctx.config
    channels_last = config.performance.channels_last and len(ctx.input_shape) == 3
    task = transformed(open_task(source, "ood", job.classes, config.loader, ctx.memory), job.transforms, "eval")
    with autocast(config.performance.amp, ctx.device):
        top1, _ = evaluate(model, task, input_transform(ctx, channels_last=channels_last), ctx.device,
                           config.eval.batch_size or config.train.batch_size)
    return top1


def job_record(job: Job, ctx: TrainContext, setup: JobSetup, history: list[HistoryPoint], started: str,
               seconds: float) -> JobRecord:
    """The record of a job that trained to the end."""
    best = sorted((h.top1 for h in history), reverse=True)[: min(ctx.config.eval.best_k, len(history))]
    return JobRecord(
        job_id=job.id, status="ok", top1=history[-1].top1, top5=history[-1].top5,
        top1_best_k=sum(best) / len(best), best_k=len(best), history=history,
        train_time_s=round(seconds, 3), steps=setup.length.total, frozen_cache=setup.data.cached,
        num_classes=job.num_classes,
        trainable_params=sum(p.numel() for p in setup.target.model.parameters() if p.requires_grad),
        device=str(ctx.device), seed=job.seed, started_at=started, finished_at=utc_now(),
        transferbench_version=__version__, torch_version=torch.__version__, input_std=setup.data.input_std,
        ood_top1=ood_top1(job, ctx, setup.target.model), ood_id=ctx.components.data.ood_id(),
    )


def train_job(
    job: Job,
    ctx: TrainContext,
    source_state: Mapping[str, torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[JobRecord, nn.Module]:
    """Train one network and return its record and the trained model.

    ``init_state`` holds the source's initial weights, for protocols that reset layers to
    them. A protocol that is ``evaluate_only`` trains nothing: the network is evaluated once.

    Raises:
        TrainingFailed: the loss became NaN or infinite.
    """
    started, t0 = utc_now(), time.perf_counter()
    setup = prepare_job(job, ctx, source_state, init_state)
    if setup.optimizer is None:
        return _evaluated(job, ctx, setup.target, setup.data, started, t0), setup.target.model
    generator = torch.Generator().manual_seed(job.stream_seed)  # the data order: the job's own, or its cohort's
    history = train_loop(ctx.config, setup.target, setup.data, setup.optimizer, setup.length, generator,
                         ctx.device, progress)
    return job_record(job, ctx, setup, history, started, time.perf_counter() - t0), setup.target.model


def _evaluated(job: Job, ctx: TrainContext, target: Target, data: JobData, started: str, t0: float) -> JobRecord:
    """The record of a network evaluated as built, without training (``evaluate_only``)."""
    config, device = ctx.config, ctx.device
    first = next(data.eval.batches(config.eval.batch_size or config.train.batch_size, shuffle=False))[0]
    input_std = float(data.transform(first.to(device), train=False).float().std())
    with autocast(config.performance.amp, device):
        top1, top5 = evaluate(data.net, data.eval, data.transform, device,
                              config.eval.batch_size or config.train.batch_size)
    return JobRecord(
        job_id=job.id, status="ok", top1=top1, top5=top5, top1_best_k=top1, best_k=1, history=[],
        train_time_s=round(time.perf_counter() - t0, 3), steps=0, frozen_cache=False,
        num_classes=job.num_classes, trainable_params=0, device=str(device), seed=job.seed,
        started_at=started, finished_at=utc_now(), transferbench_version=__version__,
        torch_version=torch.__version__, input_std=input_std, ood_top1=ood_top1(job, ctx, target.model),
        ood_id=ctx.components.data.ood_id(),
    )
