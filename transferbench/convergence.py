"""Convergence speed from a network's evaluation history: how many steps it took to reach a
fraction of its final accuracy (Raghu et al. 2019 compare initialisations by the steps to a
fixed accuracy; a fraction of each network's own final accuracy keeps a toy task comparable).

Every record keeps its periodic evaluations (``JobRecord.history``); the report reads them into
one :class:`Curve` per network, and :meth:`transferbench.analysis.Grid.unit_speed` gives a
finding one value per independent unit. Nothing here trains: the history is the one the
network was evaluated on at the config's ``eval.every``, so the resolution of a step count is
that interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Curve", "steps_to_fraction"]


@dataclass(frozen=True)
class Curve:
    """A network's periodic evaluations: the steps and the top-1 accuracies at them.

    Attributes:
        steps: the step of each evaluation, ascending.
        top1: the top-1 accuracy at each (a fraction).
        total: the steps the network trained in all (the last evaluation's step when unknown).
    """

    steps: tuple[int, ...]
    top1: tuple[float, ...]
    total: int

    @classmethod
    def of(cls, points: Iterable[tuple[int, float]], total: int | None = None) -> Curve | None:
        """The curve of (step, top-1) points in any order; None without a point, or when the
        network trained no step (an evaluated-only network has no history to read)."""
        pts = sorted(points)
        if not pts:
            return None
        last = total if total else pts[-1][0]
        if last <= 0:
            return None
        return cls(tuple(s for s, _ in pts), tuple(a for _, a in pts), last)

    @property
    def final(self) -> float:
        """The final accuracy: the last evaluation's (what the record's ``top1`` is)."""
        return self.top1[-1]


def steps_to_fraction(curve: Curve, fraction: float = 0.9) -> int:
    """The first evaluated step at which top-1 reached ``fraction`` of the final accuracy.

    The answer is an evaluation's step (no interpolation between evaluations): its resolution
    is the evaluation interval, and a network that is already there at the first evaluation gets
    that step. The last evaluation always reaches it (for a fraction of at most 1).

    Raises:
        ValueError: a fraction outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the fraction of the final accuracy must lie in (0, 1], not {fraction}")
    target = fraction * curve.final
    return next(s for s, a in zip(curve.steps, curve.top1) if a >= target)
