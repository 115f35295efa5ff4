"""Task splits of the paper: random halves, man-made / natural, and any source's superclasses.

Every split returns the SOURCE's class indices (``ClassInfo.index``), so a source holding
only part of ImageNet, in any order, gets the classes the paper's rule gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from transferbench import ClassInfo, ConfigError, Halves, TaskSplit, hookimpl, imagenet

Register = Callable[[str, type], None]

__all__ = ["ManMadeNaturalSplit", "RandomSplit", "SuperclassSplit", "random_halves"]


def _halves(a: Iterable[int], b: Iterable[int], split: str) -> Halves:
    """Sorted, disjoint, non-empty halves, or a ConfigError naming the empty one."""
    A, B = tuple(sorted(set(a))), tuple(sorted(set(b)))
    for label, half in (("A", A), ("B", B)):
        if not half:
            raise ConfigError(f"split {split!r}: half {label} holds no class of this data source")
    # An overlap would be a bug in a split here, not a user error.
    assert not set(A) & set(B), f"split {split!r}: halves overlap"
    return Halves(A=A, B=B)


def _imagenet_indices(classes: Sequence[ClassInfo]) -> list[int]:
    """The ImageNet index of each class, matched by WordNet id."""
    table = imagenet.wnid_to_index()
    return [table[c.id] for c in classes]


# --------------------------------------------------------------------------- random


def random_halves(
    num_classes: int, seed: int, size_a: int, size_b: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's random split of ``range(num_classes)``, as two sorted index arrays.

    Half A is ``sorted(RandomState([seed]).choice(arange(num_classes), size_a, replace=False))``,
    the rule that reproduces the paper's four ImageNet splits. Seeding with the one-element
    list ``[seed]`` matters: ``RandomState(seed)`` seeds differently and gives another split.
    Half B is the complement, or, when ``size_b`` is given, ``size_b`` of the remaining
    classes drawn from the same generator after A. A private generator is used, so numpy's
    global state is left alone.
    """
    rng = np.random.RandomState([seed])
    a = rng.choice(np.arange(num_classes), size_a, replace=False)
    rest = np.setdiff1d(np.arange(num_classes), a)
    b = rest if size_b is None else rng.choice(rest, size_b, replace=False)
    return np.sort(a), np.sort(b)


class RandomParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size_a: int | None = Field(
        None, ge=1, description="classes in half A (default: half of them, rounded down)"
    )
    size_b: int | None = Field(
        None, ge=1, description="classes in half B, drawn after A (default: all the others)"
    )
    reference: Literal["auto", "source", "imagenet"] = Field(
        "auto",
        description=(
            "class list the split is drawn over: 'imagenet' draws over the 1,000 ImageNet "
            "classes and keeps the source's ones (by WordNet id), 'source' over the source's "
            "own classes, 'auto' picks 'imagenet' when every class id is an ImageNet wnid"
        ),
    )


class RandomSplit(TaskSplit[RandomParams]):
    """Seeded random halves, the paper's rule (4 ImageNet splits for seeds 0..3).

    With the ImageNet reference, ``size_a`` and ``size_b`` count ImageNet classes (default
    500 / 500) and a source holding a subset of ImageNet gets the same classes the full set
    would, less those it lacks.
    """

    description = "seeded random halves A/B (the paper's similar split)"
    Params = RandomParams

    def split(self, classes: Sequence[ClassInfo], seed: int) -> Halves:
        reference = self.params.reference
        if reference == "auto":
            reference = "imagenet" if imagenet.is_imagenet(classes) else "source"
        if reference == "imagenet" and not imagenet.is_imagenet(classes):
            raise ConfigError(
                "split 'random': reference 'imagenet' needs a source whose class ids are all "
                "ImageNet-1k WordNet ids; use reference 'source' for this data source"
            )
        universe = imagenet.NUM_IMAGENET_CLASSES if reference == "imagenet" else len(classes)
        size_a = self.params.size_a if self.params.size_a is not None else universe // 2
        size_b = self.params.size_b
        wanted = size_a + (size_b if size_b is not None else 1)
        if size_a < 1 or wanted > universe:
            what = "ImageNet classes" if reference == "imagenet" else "classes in the source"
            raise ConfigError(
                f"split 'random': size_a={size_a} and size_b={size_b} need {wanted} classes "
                f"but there are {universe} {what} (A and B must both be non-empty)"
            )
        a, b = random_halves(universe, seed, size_a, size_b)
        if reference == "source":
            return _halves((classes[i].index for i in a), (classes[i].index for i in b), "random")
        in_a, in_b = set(a.tolist()), set(b.tolist())
        keys = _imagenet_indices(classes)
        return _halves(
            (c.index for c, k in zip(classes, keys) if k in in_a),
            (c.index for c, k in zip(classes, keys) if k in in_b),
            "random",
        )


# --------------------------------------------------------------------------- man-made / natural


class ManMadeNaturalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: Literal["man-made", "natural"] = Field(
        imagenet.NATURAL,
        description=(
            "group that forms half A (the source task); the paper's 'man-made' target "
            "transfers features from natural classes, i.e. a='natural'"
        ),
    )


class ManMadeNaturalSplit(TaskSplit[ManMadeNaturalParams]):
    """The paper's dissimilar split of ImageNet: 449 natural against 551 man-made classes.

    Works on any source whose class ids are ImageNet-1k WordNet ids (a subset keeps its
    own classes of each group). The seed is ignored: the split is fixed.
    """

    exchangeable = False  # halves chosen by meaning: the directions stay apart in the report

    description = "ImageNet man-made vs natural classes (the paper's dissimilar split)"
    Params = ManMadeNaturalParams

    def split(self, classes: Sequence[ClassInfo], seed: int) -> Halves:
        if not imagenet.is_imagenet(classes):
            raise ConfigError(
                "split 'manmade_natural' needs a source whose class ids are ImageNet-1k "
                "WordNet ids; split another source by its classes' groups with split "
                "'superclass' instead"
            )
        groups = [imagenet.superclass_of(k) for k in _imagenet_indices(classes)]
        a = [c.index for c, g in zip(classes, groups) if g == self.params.a]
        b = [c.index for c, g in zip(classes, groups) if g != self.params.a]
        return _halves(a, b, "manmade_natural")


# --------------------------------------------------------------------------- superclass


class SuperclassParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: list[str] = Field(..., min_length=1, description="superclasses whose classes form half A")
    b: list[str] | None = Field(
        None, min_length=1, description="superclasses of half B (default: all the others)"
    )

    @model_validator(mode="after")
    def _disjoint(self) -> SuperclassParams:
        both = sorted(set(self.a) & set(self.b or ()))
        if both:
            raise ValueError(f"superclasses in both a and b: {both}")
        return self


class SuperclassSplit(TaskSplit[SuperclassParams]):
    """Splits any source by its classes' ``superclass`` (CIFAR-100 coarse labels, ...).

    The seed picks no classes (the superclass lists fix the halves): several seeds give
    replicates, networks initialised independently on the same halves.
    """

    exchangeable = False  # halves chosen by meaning: the directions stay apart in the report

    description = "halves by the classes' superclass (any source that has them)"
    Params = SuperclassParams

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        # Contract tests run it on ImageNet classes, whose superclasses are the paper's groups.
        return {"a": [imagenet.NATURAL]}

    def split(self, classes: Sequence[ClassInfo], seed: int) -> Halves:
        missing = [c for c in classes if c.superclass is None]
        if missing or not classes:
            shown = ", ".join(repr(c.id) for c in missing[:5])
            raise ConfigError(
                "split 'superclass' needs every class to have a superclass; "
                + (f"{len(missing)} have none (e.g. {shown})" if missing else "there are no classes")
            )
        known = sorted({c.superclass for c in classes if c.superclass is not None})
        unknown = [s for s in [*self.params.a, *(self.params.b or [])] if s not in known]
        if unknown:
            raise ConfigError(
                f"split 'superclass': unknown superclasses {unknown}; this source has {known}"
            )
        in_a = set(self.params.a)
        in_b = set(self.params.b) if self.params.b is not None else set(known) - in_a
        a = [c.index for c in classes if c.superclass in in_a]
        b = [c.index for c in classes if c.superclass in in_b]
        return _halves(a, b, "superclass")


@hookimpl
def register_splits(register: Register) -> None:
    """Register the built-in task splits."""
    register("random", RandomSplit)
    register("manmade_natural", ManMadeNaturalSplit)
    register("superclass", SuperclassSplit)
