"""Running a plan's evaluators (``experiments[].evaluators``) after its networks are trained.

Each :class:`~transferbench.jobs.EvaluationCell` of the plan reads networks of one split seed
at one n. Its record is written to ``evaluations/<key>.json`` of the run directory, where the
key is the content hash of the evaluator's name, settings and revision and of the networks'
checkpoints (their SHA-256): the same evaluator on the same trained weights is computed once,
whichever experiment, label or rerun asks for it (a record lists every cell it serves). torch
is seeded from the key, so the numbers are the same every time. An evaluation whose networks
are not all trained (or whose checkpoint is missing) waits for a later run; one that fails
writes nothing and is tried again by the next run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ._version import __version__
from .components import Components
from .config import Config
from .context import TrainContext
from .evaluator import EvalInputs, Evaluation, Evaluator
from .files import atomic_write_json
from .hashing import content_hash
from .jobdata import input_transform, transformed
from .jobs import EvaluationCell
from .plan import Plan
from .store import RunStore
from .taskdata import open_task

__all__ = ["EVALUATION_FORMAT", "EvaluationsDone", "evaluation_key", "run_evaluations"]

#: Version of the evaluation record and of how inputs reach the evaluator (in every key).
EVALUATION_FORMAT = 1


@dataclass
class EvaluationsDone:
    """What :func:`run_evaluations` did: computed, found already done, waiting (why), failed (why)."""

    computed: int = 0
    reused: int = 0
    waiting: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def evaluation_key(cell: EvaluationCell, revision: int, checkpoints: list[str]) -> str:
    """The evaluation's identity: the evaluator (name, settings, revision) and the weights it reads."""
    return content_hash({"format": EVALUATION_FORMAT, "evaluator": cell.spec, "revision": revision,
                         "checkpoints": checkpoints})


def cell_entry(cell: EvaluationCell) -> dict[str, Any]:
    """Where an evaluation belongs in the run's tables (a record lists every cell it serves)."""
    return {"experiment": cell.experiment, "split_seed": cell.split_seed, "label": cell.label, "n": cell.n,
            "target": cell.target, "treatments": list(cell.treatments), "job_ids": list(cell.job_ids)}


def _label(cell: EvaluationCell) -> str:
    return f"{cell.experiment}/{cell.label} (split seed {cell.split_seed}, n={cell.n})"


def _network(ctx: TrainContext, num_classes: int, state: dict[str, torch.Tensor]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move anyone's RNG
        model = ctx.components.architecture.build(num_classes, tuple(ctx.input_shape))
    model.load_state_dict(state)
    return model.to(ctx.device).eval()


def _inputs(ctx: TrainContext, plan: Plan, cell: EvaluationCell, seed: int) -> EvalInputs:
    """The target task's examples as the first network saw them (every network of a cell
    shares its task and transforms: the planner checks)."""
    job = plan.jobs[cell.job_ids[0]]
    config, source = ctx.config, ctx.components.data
    transform = input_transform(ctx)
    batch_size = config.eval.batch_size or config.train.batch_size

    def batches(split: Literal["train", "eval"]) -> Callable[[], Any]:
        def each() -> Any:
            task = transformed(open_task(source, split, job.classes, config.loader, ctx.memory), job.transforms, split)
            for x, y in task.batches(batch_size, shuffle=False):
                yield transform(x.to(ctx.device), train=False), y.to(ctx.device)
        return each

    return EvalInputs(batches("eval"), batches("train"), job.num_classes, ctx.device, seed)


def _evaluate(ctx: TrainContext, plan: Plan, store: RunStore, cell: EvaluationCell, evaluator: Evaluator,
              key: str) -> Evaluation:
    networks = [_network(ctx, plan.jobs[j].num_classes, store.load_checkpoint(j)) for j in cell.job_ids]
    seed = int(key[:12], 16)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return evaluator.evaluate(networks, _inputs(ctx, plan, cell, seed))


def run_evaluations(config: Config, components: Components, plan: Plan, run_dir: Path, device: torch.device,
                    ctx: TrainContext | None = None) -> EvaluationsDone:
    """Every evaluation of ``plan`` whose networks are trained and whose record is not yet
    written; see the module's docstring."""
    done = EvaluationsDone()
    store = RunStore(run_dir)
    folder = store.evaluations_dir
    for cell in plan.evaluations:
        records = [store.read_record(j) for j in cell.job_ids]
        if any(r is None or r.status != "ok" for r in records):
            done.waiting.append(f"{_label(cell)}: not every network it reads is trained")
            continue
        problems = [p for j, r in zip(cell.job_ids, records)
                    if r and (p := store.checkpoint_problem(j, r.checkpoint_sha256))]
        if problems:
            done.waiting.append(f"{_label(cell)}: a checkpoint is {problems[0]}")
            continue
        shas = [r.checkpoint_sha256 or "" for r in records if r is not None]
        evaluator = components.evaluators[(cell.experiment, cell.label)]
        key = evaluation_key(cell, type(evaluator).revision, shas)
        path = folder / f"{key}.json"
        entry = cell_entry(cell)
        if path.is_file():
            data = json.loads(path.read_text())
            if entry not in data["cells"]:  # the same evaluation asked for by another cell: listed, not redone
                data["cells"].append(entry)
                atomic_write_json(path, data)
            done.reused += 1
            continue
        ctx = ctx or TrainContext(config, components, device)
        t0 = time.perf_counter()
        try:
            got = _evaluate(ctx, plan, store, cell, evaluator, key)
            missing = set(evaluator.quantities) - set(got.values)
            if missing:
                raise ValueError(f"returned no {', '.join(sorted(missing))}")
        except Exception as exc:  # noqa: BLE001 - one evaluation's failure is reported, the others still run
            done.failed.append(f"{_label(cell)}: {cell.evaluator}: {type(exc).__name__}: {exc}")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {
            "format": EVALUATION_FORMAT, "key": key, "evaluator": cell.spec, "revision": type(evaluator).revision,
            "checkpoints": shas, "cells": [entry], "values": {k: float(v) for k, v in got.values.items()},
            "details": got.details, "seconds": round(time.perf_counter() - t0, 3), "device": str(device),
            "transferbench_version": __version__})
        done.computed += 1
    return done
