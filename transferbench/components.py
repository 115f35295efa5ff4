"""The plugin instances a config resolves to: what the engine works on, below the plugin host.

:func:`transferbench.resolve.resolve` builds a :class:`Components` from a config's names (the
edge); everything below it (the planner, the runner, the trainer, the executors) receives
this value and never sees a name or the plugin host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .executor import Executor
from .interfaces import Architecture, DataSource, DataTransform, TaskSplit, TransferProtocol
from .observers import Observer

if TYPE_CHECKING:  # the estimator contract is not training code: editing it retrains no network
    from .estimator import Estimator
    from .evaluator import Evaluator

__all__ = ["Components"]


@dataclass
class Components:
    """The plugin instances an experiment needs; the engine works on these alone."""

    data: DataSource
    architecture: Architecture
    splits: dict[str, TaskSplit]  # experiment name -> split
    protocols: dict[tuple[str, str], TransferProtocol]  # (experiment, treatment) -> protocol
    executor: Executor
    observers: list[Observer] = field(default_factory=list)  # in the config's order
    estimators: dict[tuple[str, str], Estimator] = field(default_factory=dict)  # (experiment, name) -> estimator
    transforms: dict[str, list[DataTransform]] = field(default_factory=dict)  # experiment -> its transforms, in order
    evaluators: dict[tuple[str, str], Evaluator] = field(default_factory=dict)  # (experiment, label) -> evaluator
