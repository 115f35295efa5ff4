"""The findings contract: a paper's claims, as a plugin kind (``register_findings``).

A :class:`PaperFindings` plugin names a paper and hands the report its :class:`Finding`\\ s.
A finding says which experiments it needs (:meth:`Finding.locate`), the paper's sentence and
where its effect size comes from, and computes one thing: its *contrast*, one value per
independent unit (a split seed and a direction, :mod:`transferbench.stats`), signed so that
the paper's direction is positive, on the scale a run and the paper share (a fraction of each
unit's headroom, :mod:`transferbench.findings`). Everything else (the interval over units,
the verdict or the equivalence test, the units a decisive answer needs, the bootstrap
stability, the caveats of the validity checks) comes from the core's
:func:`transferbench.findings.judge`, the same way for every paper.

The paper's effect is either recomputed from the paper's own networks (a plugin that has
them returns their grids from :meth:`PaperFindings.reference`, as the Yosinski et al. (2014)
plugin does) or stated: :attr:`Finding.effect`, on the shared scale, with its origin in
:attr:`Finding.source`.

This module is a contract: it imports no reporting code at run time, so the plugin host can
name the kind without depending on the report.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from .interfaces import P, Plugin
from .stats import Difference, over_units, welch

if TYPE_CHECKING:
    from .analysis import Grid

__all__ = ["Contrast", "Finding", "Kind", "PaperFindings"]

#: ``effect``: reproduced when the interval excludes 0 in the paper's direction;
#: ``equivalence``: a control, holds when the interval lies within a margin.
Kind = Literal["effect", "equivalence"]

#: Validity checks whose warning makes any comparison of their experiment not determined:
#: networks of other code, missing networks, inputs at the wrong scale.
INVALIDATING: frozenset[str] = frozenset({"provenance", "completeness", "input_scale"})


@dataclass(frozen=True)
class Contrast:
    """A finding's contrast on one run (or on the paper's networks).

    Attributes:
        groups: one tuple of per-unit values (a quantity within units), or two (the first set
            of units against the second: two experiments), on the shared scale, the paper's
            direction positive.
        headroom: the mean headroom of the units (shared scale times it: points of top-1).
        networks: the networks behind the values (a description).
        where: what was compared, in words (``BnB - AnB at n=7``).
        n: the layer it was read at, for a single-layer contrast (the paper is read at the same
            depth: :func:`transferbench.findings.same_depth`).
        layers: the layers it averaged over.
    """

    groups: tuple[tuple[float, ...], ...]
    headroom: float
    networks: int
    where: str
    n: int | None = None
    layers: tuple[int, ...] = ()

    @property
    def effect(self) -> float:
        """The point estimate: the mean of the first group (minus the second's)."""
        means = [math.fsum(g) / len(g) for g in self.groups]
        return means[0] - (means[1] if len(means) > 1 else 0.0)

    def estimate(self) -> Difference:
        """The mean over units with its interval (Welch's for two groups)."""
        if len(self.groups) == 1:
            return over_units(self.groups[0], self.networks)
        return welch(self.groups[0], self.groups[1], self.networks)


class Finding(abc.ABC):
    """A claim of a paper, judged on a run by :func:`transferbench.findings.judge`.

    Attributes:
        name: short name (``specificity``).
        claim: the paper's sentence (quoted, or marked as a paraphrase).
        source: where the paper's effect comes from (a table, a figure, its networks).
        kind: ``effect`` or ``equivalence`` (see :data:`Kind`).
        invalidated_by: validity checks whose warning makes the finding not determined.
        needs: what the finding needs from a run, in words (for "not determined").
        effect: the paper's effect on the shared scale (a fraction of headroom), when the
            paper states it rather than the plugin recomputing it from the paper's networks;
            None: recomputed (:meth:`PaperFindings.reference`) or not given.
        effect_points: the same effect in the paper's own points of top-1, when stated.
        margin: for a control, its equivalence margin on the shared scale (None: the
            report's ``--control-margin``, or the plugin's default).
        found_in: a config whose experiments the finding can be judged on (for "not in this run").
        scale: what the contrast is a fraction of, as the report prints it: ``headroom`` (the
            shared scale, the default), or another quantity a finding measures on, such as
            ``the training run`` for a convergence speed (steps as a fraction of the steps
            trained; its contrast's ``headroom`` is then 1).
        headroom_of: on the ``headroom`` scale, whose distance from chance a unit's headroom is,
            when it is not the unit's base network's (the default, None): e.g. ``the fully
            fine-tuned network`` for a finding with no base network. The report prints it on
            the finding's lines, so its percentages are never read against the wrong network.
    """

    name: str = ""
    claim: str = ""
    source: str = ""
    kind: Kind = "effect"
    invalidated_by: frozenset[str] = INVALIDATING
    needs: str = ""
    effect: float | None = None
    effect_points: float | None = None
    margin: float | None = None
    found_in: str = "configs/quickstart.yaml has all three of Yosinski et al.'s experiments"
    scale: str = "headroom"
    headroom_of: str | None = None

    @abc.abstractmethod
    def locate(self, grids: Sequence[Grid]) -> tuple[Grid, ...] | None:
        """The experiments the finding is judged on, or None when the run lacks one."""

    @abc.abstractmethod
    def contrast(self, grids: tuple[Grid, ...], like: Contrast | None = None) -> Contrast | None:
        """The contrast on these experiments, or None when a cell it needs is missing.
        ``like`` is the run's contrast when the paper's is computed: read it at the same n."""

    def parts(self) -> tuple[Finding, ...]:
        """For a compound finding (a shape with several parts), the parts; it holds only when
        every part does."""
        return ()

    def unit_rows(self, grids: tuple[Grid, ...]) -> list[tuple[float, ...]]:
        """For a compound finding, each unit's value of every part, aligned: what the
        stability of the compound verdict resamples jointly."""
        return []


class PaperFindings(Plugin[P], abc.ABC):
    """A paper's findings: the ``findings`` plugin kind (``report --compare NAME``).

    Attributes:
        paper: the paper, as a citation (authors, year, title).
        shape: the experiments the findings need, in words, with a config that has them.
    """

    paper: ClassVar[str] = ""
    shape: ClassVar[str] = ""

    @abc.abstractmethod
    def findings(self) -> Sequence[Finding]:
        """The paper's findings, in the order the scorecard prints them."""

    def reference(self, metric: str, pool: bool | None) -> Sequence[Grid]:
        """The paper's own networks as grids (under ``metric``), where effects that are not
        stated are recomputed; none by default."""
        return ()

    def default_margin(self, reference: Sequence[Grid]) -> float | None:
        """A control's margin on the shared scale when neither the finding nor the report sets
        one; None by default."""
        return None
