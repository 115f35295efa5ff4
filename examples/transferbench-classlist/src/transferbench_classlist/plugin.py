"""The ``classlist`` task split: halves A and B named explicitly in the config.

A config names the classes of half A (and optionally of half B) by id, by name, or by
index into the data source's class list::

    split:
      name: classlist
      a: [n01440764, n01443537, goldfish]   # ids or names
      b: [0, 1, 2]                           # or indices; default: every class not in a

The split is fixed, so the seed is ignored. This module imports only transferbench's public
API, like any third-party plugin.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferbench import ClassInfo, ConfigError, Halves, TaskSplit, hookimpl

#: A class as a config names it: its id or name (a string) or its index (an integer).
ClassRef = int | str


class ClassListParams(BaseModel):
    """Configuration of the ``classlist`` split."""

    model_config = ConfigDict(extra="forbid")

    a: list[ClassRef] = Field(..., min_length=1, description="classes of half A: ids, names or indices")
    b: list[ClassRef] | None = Field(
        None, min_length=1, description="classes of half B (default: every class not in a)"
    )


def resolve_classes(refs: Sequence[ClassRef], classes: Sequence[ClassInfo], key: str) -> list[int]:
    """The class indices ``refs`` name, matched by id first, then by name, then by index.

    Raises:
        ConfigError: at ``split.<key>``, listing every reference that matches no class (with close
            matches) or several classes.
    """
    by_id = {c.id: c.index for c in classes}
    by_name: dict[str, list[int]] = {}
    for c in classes:
        by_name.setdefault(c.name, []).append(c.index)
    problems: list[tuple[str, str]] = []
    out: list[int] = []
    for i, ref in enumerate(refs):
        where = f"{key}.{i}"
        if isinstance(ref, int):
            if not 0 <= ref < len(classes):
                problems.append((where, f"class index {ref} is out of range 0..{len(classes) - 1}"))
            else:
                out.append(ref)
        elif ref in by_id:
            out.append(by_id[ref])
        elif len(by_name.get(ref, [])) == 1:
            out.append(by_name[ref][0])
        elif ref in by_name:
            ids = ", ".join(classes[j].id for j in by_name[ref][:5])
            problems.append((where, f"{ref!r} names several classes ({ids}); use an id"))
        else:
            close = difflib.get_close_matches(ref, [*by_id, *by_name], n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            problems.append((where, f"no class has id or name {ref!r}{hint}"))
    if problems:
        raise ConfigError([(f"split.{where}", f"classlist: {msg}") for where, msg in problems])
    return out


class ClassListSplit(TaskSplit):
    """Half A (and B) from explicit class lists; B defaults to every other class."""

    exchangeable = False  # halves chosen by meaning: the directions stay apart in the report

    description = "halves from explicit class lists (ids, names or indices)"
    Params = ClassListParams

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        # Indices work on any data source with at least four classes (the contract tests').
        return {"a": [0, 1, 2]}

    def split(self, classes: Sequence[ClassInfo], seed: int) -> Halves:
        p: ClassListParams = self.params  # type: ignore[assignment]
        a = set(resolve_classes(p.a, classes, "a"))
        if p.b is None:
            b = {c.index for c in classes} - a
        else:
            b = set(resolve_classes(p.b, classes, "b"))
        both = sorted(a & b)
        if both:
            names = ", ".join(classes[i].id for i in both[:5])
            raise ConfigError([("split.b", f"classlist: {len(both)} classes are in both halves: {names}")])
        if not b:
            raise ConfigError([("split.a", "classlist: half A holds every class, so half B is empty")])
        return Halves(A=tuple(sorted(a)), B=tuple(sorted(b)))


@hookimpl
def register_splits(register: Callable[[str, type], None]) -> None:
    """Register the ``classlist`` split."""
    register("classlist", ClassListSplit)
