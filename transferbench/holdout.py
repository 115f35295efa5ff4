"""A validation split held out of a data source's training examples.

The advice of ``transferbench recommend`` chooses a regime from short trainings; scoring them
on the eval examples would choose on the very examples its regret is then read on (the test
set). :class:`HoldoutSource` gives it its own: a fixed share of every class's *training*
examples becomes its ``eval`` split, and the rest its ``train`` split, so nothing the advice
reads to choose is an example the sweep is evaluated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .interfaces import ClassInfo, DataSource, Split
from .taskdata import labels_of

__all__ = ["HoldoutSource", "holdout_indices"]


def holdout_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): sorted indices of ``labels``, holding out ``round(fraction * count)``
    examples of every class of two or more (at least one, never all: a class keeps an example to
    learn from; a class of one is kept whole), drawn with ``seed`` class by class, so a class's
    share does not depend on the others'."""
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        k = 0 if len(idx) < 2 else min(max(1, round(fraction * len(idx))), len(idx) - 1)
        rng = np.random.default_rng([seed, int(c)])
        held.append(np.sort(rng.permutation(idx)[:k]))
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), out)
    return kept, out


class HoldoutSource(DataSource[Any]):
    """``source`` with a share of its training examples as the eval split.

    ``load("train")`` is the training split without the held-out examples; ``load("eval")``
    is those examples (the source's own eval split is never read); there is no OOD split.
    Everything else (classes, shapes, normalisation) is the source's. Its :meth:`identity`
    adds the holdout, so a cache keyed by it never mixes the two.

    Raises:
        DataError: (on load) the training split is a stream, which cannot be held out from.
    """

    def __init__(self, source: DataSource[Any], fraction: float, seed: int) -> None:
        super().__init__(source.params)
        if not 0 < fraction < 1:
            raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
        self.source, self.fraction, self.seed = source, fraction, seed
        self._splits: dict[str, Any] | None = None

    def _split(self) -> dict[str, Any]:
        if self._splits is None:
            train = self.source.load("train")
            if not hasattr(train, "select") or not hasattr(train, "__len__"):
                raise DataError("the advice holds a validation share out of the target's training examples, "
                                "and this data source's train split is a stream: a stream cannot be held out from "
                                "(use a map-style split, e.g. a local folder or a non-streaming dataset)")
            kept, held = holdout_indices(labels_of(train), self.fraction, self.seed)
            self._splits = {"train": train.select(kept), "eval": train.select(held)}
        return self._splits

    def load(self, split: Split) -> Any:
        if split not in ("train", "eval"):
            raise DataError(f"a holdout of the training examples has no {split!r} split")
        return self._split()[split]

    def examples(self, classes: Sequence[int]) -> int:
        """How many held-out examples belong to ``classes`` (the source's class indices)."""
        return int(np.isin(labels_of(self.load("eval")), list(classes)).sum())

    def classes(self) -> Sequence[ClassInfo]:
        return self.source.classes()

    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape()

    def to_tensor(self, value: Any) -> torch.Tensor:
        return self.source.to_tensor(value)

    def normalization(self) -> tuple[Sequence[float], Sequence[float]] | None:
        return self.source.normalization()

    def check(self) -> None:
        self.source.check()

    def identity(self) -> dict[str, Any]:
        return {**self.source.identity(), "holdout": {"fraction": self.fraction, "seed": self.seed}}
