"""Hook specifications: the ways a plugin extends transferbench.

Every hook has the same shape: the host passes a ``register(name, factory)`` callback and
the plugin calls it once per thing it provides. ``factory`` is normally a subclass of the
matching interface in :mod:`transferbench.interfaces`; it is called with the validated
``Params`` instance.

A plugin is any module or object with functions marked ``@transferbench.hookimpl``; a
third-party package exposes it through the entry-point group ``transferbench``::

    [project.entry-points.transferbench]
    my_split = "my_package.plugin"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("transferbench")
hookimpl = pluggy.HookimplMarker("transferbench")

Register = Callable[[str, type], None]


@hookspec
def register_architectures(register: Register) -> None:
    """Register :class:`~transferbench.interfaces.Architecture` classes by name."""


@hookspec
def register_splits(register: Register) -> None:
    """Register :class:`~transferbench.interfaces.TaskSplit` classes by name."""


@hookspec
def register_protocols(register: Register) -> None:
    """Register :class:`~transferbench.interfaces.TransferProtocol` classes by name."""


@hookspec
def register_data_sources(register: Register) -> None:
    """Register :class:`~transferbench.interfaces.DataSource` classes by name."""


@hookspec
def register_executors(register: Register) -> None:
    """Register :class:`~transferbench.Executor` classes by name."""


@hookspec
def register_observers(register: Register) -> None:
    """Register :class:`~transferbench.Observer` classes by name (run observers: trackers, loggers)."""


@hookspec
def register_estimators(register: Register) -> None:
    """Register :class:`~transferbench.Estimator` classes by name."""


@hookspec
def register_checks(register: Register) -> None:
    """Register :class:`~transferbench.ValidityCheck` classes by name (every report runs them all)."""


@hookspec
def register_findings(register: Register) -> None:
    """Register :class:`~transferbench.PaperFindings` classes by name: a paper's findings,
    judged by ``transferbench report RUN --compare NAME`` (or ``--compare all``)."""


@hookspec
def register_data_transforms(register: Register) -> None:
    """Register :class:`~transferbench.DataTransform` classes by name: changes to a task's
    examples (``experiments[].transforms``), such as block-shuffled images."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Register :class:`~transferbench.Evaluator` classes by name: measurements of trained
    networks made after training (``experiments[].evaluators``), such as the loss barrier on
    the straight line between two networks' weights."""
