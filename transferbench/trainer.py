"""Train and evaluate one job: build, copy / freeze / re-initialise, train, evaluate.

Read it top to bottom: :func:`train_job` is the whole story; the helpers above it are the
steps it takes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from . import __version__
from .config import Augment, Config
from .data import BatchTransform, FeatureData, TaskData, TensorSplit
from .errors import TransferbenchError
from .interfaces import Layer, LayerAction
from .plan import Job
from .resolve import Components

ProgressFn = Callable[[int, int, dict[str, float]], None]


class TrainingFailed(TransferbenchError):
    """A job failed for a reason of its own (NaN loss, say): recorded, not raised further."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, then Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class TrainContext:
    """What every job of a run shares: config, plugins, device and the in-memory data."""

    config: Config
    components: Components
    device: torch.device
    data_cache: dict[str, TensorSplit] = field(default_factory=dict)

    def task(self, split: str, classes: Sequence[int]) -> TaskData:
        return TaskData(
            self.components.data,
            split,
            classes,
            cache=self.data_cache,
            in_memory_max_bytes=self.config.loader.in_memory_max_gb * 1e9,
            workers=self.config.loader.workers,
            decode_cache=Path(self.config.loader.cache_dir).expanduser()
            if self.config.loader.decode_cache else None,
        )


# --------------------------------------------------------------------------- transfer


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def apply_transfer(
    model: nn.Module,
    layers: Sequence[Layer],
    actions: Sequence[LayerAction],
    source_state: Mapping[str, torch.Tensor] | None,
) -> tuple[dict[str, float], list[str]]:
    """Copy and freeze layers as the protocol says.

    Returns the protocol's per-parameter learning-rate multipliers and the module prefixes
    of the frozen layers.

    Parameters of layers that are not copied keep the fresh initialisation the model was
    built with: that is what "re-initialised" means.
    """
    if len(actions) != len(layers):
        raise TransferbenchError(f"protocol gave {len(actions)} actions for {len(layers)} layers")
    state = model.state_dict()
    lr_mult: dict[str, float] = {}
    frozen_prefixes: list[str] = []
    for layer, action in zip(layers, actions):
        if action.copy:
            if source_state is None:
                raise TransferbenchError(f"layer {layer.name} is to be copied but the job has no source")
            keys = [k for k in state if _under(k, layer.modules)]
            if not keys:
                raise TransferbenchError(f"layer {layer.name} names modules with no parameters: {layer.modules}")
            for k in keys:
                if k not in source_state:
                    raise TransferbenchError(f"source checkpoint lacks {k!r} (layer {layer.name})")
                if source_state[k].shape != state[k].shape:
                    raise TransferbenchError(
                        f"cannot copy {k!r}: source shape {tuple(source_state[k].shape)} "
                        f"!= target {tuple(state[k].shape)}"
                    )
                state[k].copy_(source_state[k])
        if not action.train:
            frozen_prefixes.extend(layer.modules)
        for name, _ in model.named_parameters():
            if _under(name, layer.modules):
                lr_mult[name] = action.lr_mult
    for name, p in model.named_parameters():
        if _under(name, frozen_prefixes):
            p.requires_grad_(False)
    return lr_mult, frozen_prefixes


def set_frozen_norm_eval(model: nn.Module, frozen_prefixes: Sequence[str]) -> None:
    """Frozen normalisation layers use their running statistics (eval mode).

    Dropout in frozen layers stays active, as in the paper (Caffe's frozen fc6/fc7 kept
    dropout); only BatchNorm-style running statistics are pinned.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and _under(name, frozen_prefixes):
            module.eval()


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


def lr_factor(config: Config, steps_per_unit: int, total_steps: int) -> Callable[[int], float]:
    """The schedule as a function of the step number (multiplies every group's lr)."""
    sched = config.train.schedule
    if sched.kind == "step":
        every = max(1, round(sched.step_every * steps_per_unit))
        return lambda step: sched.gamma ** (step // every)
    if sched.kind == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lambda step: 1.0


def _can_cache(config: Config, job: Job, actions: Sequence[LayerAction], data: TaskData) -> bool:
    """Whether the frozen-prefix cache gives the same result as the plain path."""
    return (
        config.performance.cache_frozen
        and job.n > 0
        and not config.train.augment.active  # random inputs: the prefix output changes each epoch
        and all(not a.train for a in actions[: job.n])
        and data.inputs is not None  # streaming sources: no tensor to run the prefix over once
    )


@torch.no_grad()
def _cache_features(prefix: nn.Module, datasets: Sequence[TaskData], transform: BatchTransform,
                    device: torch.device, batch_size: int, max_bytes: float) -> list[FeatureData] | None:
    """Run the frozen prefix once over each dataset; None if the result would be too large."""
    was_training = prefix.training
    prefix.eval()  # frozen layers: no dropout in a prefix by contract, BN uses running stats
    out = []
    try:
        for data in datasets:
            first = next(data.batches(1, shuffle=False))[0]
            per_example = prefix(transform(first.to(device), train=False)).numel() * 4
            if per_example * len(data) > max_bytes:
                return None
            chunks = [prefix(transform(x.to(device), train=False)) for x, _ in data.batches(batch_size, shuffle=False)]
            out.append(FeatureData(torch.cat(chunks).float(), data.labels, data.classes))
    finally:
        prefix.train(was_training)
    return out


def _autocast(amp: str, device: torch.device):
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(model: nn.Module, data: TaskData, transform: BatchTransform, device: torch.device,
             batch_size: int) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (top-k with k = min(5, classes)) on ``data``."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    k = min(5, len(data.classes))
    for x, y in data.batches(batch_size, shuffle=False):
        x = transform(x.to(device, non_blocking=True), train=False)
        y = y.to(device)
        logits = model(x)[:, : len(data.classes)]  # extra logits (fc8 wider than k) go unused
        top = logits.topk(k, dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        total += y.numel()
    model.train(was_training)
    return correct1 / total, correct5 / total


def train_job(
    job: Job,
    ctx: TrainContext,
    source_state: Mapping[str, torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, Any], nn.Module]:
    """Train one network and return its record and the trained model.

    Raises:
        TrainingFailed: the loss became NaN or infinite.
    """
    config, arch, device = ctx.config, ctx.components.architecture, ctx.device
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    torch.manual_seed(job.seed)
    data_gen = torch.Generator().manual_seed(job.seed + 1)

    train_data = ctx.task("train", job.classes)
    eval_data = ctx.task("eval", job.classes)
    transform = BatchTransform(config.train.augment, ctx.components.data.normalization(), device)
    net_input = transform.output_shape(tuple(ctx.components.data.input_shape()))

    model = arch.build(job.num_classes, net_input)
    layers = list(arch.layers(model))
    if job.protocol is not None:
        actions = job.protocol.actions(job.n, len(layers))
    else:
        actions = [LayerAction(copy=False, train=True)] * len(layers)
    protocol_lr, frozen = apply_transfer(model, layers, actions, source_state)
    model.to(device)
    perf = config.performance
    channels_last = perf.channels_last and device.type == "cuda" and len(net_input) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model, arch.param_multipliers(model), protocol_lr)

    # Frozen-prefix cache: with layers 1..n frozen and deterministic inputs, what they compute
    # never changes, so compute it once and train only the layers above on it.
    net, cached = model, False
    if _can_cache(config, job, actions, train_data):
        split = arch.split_at(model, job.n)
        if split is not None:
            prefix, suffix = split
            feats = _cache_features(prefix, (train_data, eval_data), transform, device,
                                    config.eval.batch_size or config.train.batch_size,
                                    perf.cache_frozen_max_gb * 1e9)
            if feats is not None:
                train_data, eval_data = feats
                transform = BatchTransform(Augment(), None, device)  # inputs are features now
                net, cached = suffix, True
    if perf.compile:
        net = torch.compile(net)
    autocast = _autocast(perf.amp, device)

    batch = config.train.batch_size
    if config.train.epochs is not None:
        steps_per_epoch = max(1, math.ceil(len(train_data) / batch))  # a stream raises: needs steps
        total = max(1, round(config.train.epochs * steps_per_epoch))
        unit = steps_per_epoch
    else:
        total, unit = config.train.steps, 1
        # a stream has no length: its history counts the whole run as one epoch
        steps_per_epoch = total if train_data.stream is not None else max(1, math.ceil(len(train_data) / batch))
    factor = lr_factor(config, unit, total)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    eval_every = max(1, round(config.eval.every * unit)) if config.eval.every else (
        steps_per_epoch if config.train.epochs is not None else max(1, total // 20))
    eval_bs = config.eval.batch_size or batch
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)

    history: list[dict[str, float]] = []
    step, running = 0, 0.0
    model.train()
    set_frozen_norm_eval(model, frozen)
    while step < total:
        for x, y in train_data.batches(batch, shuffle=True, generator=data_gen):
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * factor(step)
            x = transform(x.to(device, non_blocking=True), train=True, generator=data_gen)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with autocast:
                loss = loss_fn(net(x), y)
            value = loss.item()  # one device sync a step, shared by the check and the average
            if not math.isfinite(value):
                raise TrainingFailed(f"loss became {value} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running = value if step == 1 else 0.9 * running + 0.1 * value
            if step % eval_every == 0 or step == total:
                with autocast:
                    top1, top5 = evaluate(net, eval_data, transform, device, eval_bs)
                model.train()
                set_frozen_norm_eval(model, frozen)
                history.append({"step": step, "epoch": round(step / steps_per_epoch, 4),
                                "top1": top1, "top5": top5, "train_loss": running})
            if progress is not None:
                progress(step, total, {"loss": running, "top1": history[-1]["top1"] if history else float("nan")})
            if step >= total:
                break

    final = history[-1]
    k = min(config.eval.best_k, len(history))
    best = sorted((h["top1"] for h in history), reverse=True)[:k]
    record = {
        "job_id": job.id,
        "status": "ok",
        "error": None,
        "top1": final["top1"],
        "top5": final["top5"],
        "top1_best_k": sum(best) / len(best),
        "best_k": k,
        "history": history,
        "train_time_s": round(time.perf_counter() - t0, 3),
        "steps": total,
        "frozen_cache": cached,
        "num_classes": job.num_classes,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        "seed": job.seed,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "transferbench_version": __version__,
        "torch_version": torch.__version__,
    }
    return record, model
