"""The report of a run, computed once: every number that the console, the files, ``--json``
and the run observers show.

:func:`build_report` turns a run's tidy rows (:mod:`transferbench.results`) into one
:class:`RunReport`: per experiment the grid, its derived metrics, Table 1, the drops from
base, the first specific layer and the recommendation; the estimators' agreement with
retraining; every registered validity check; and, when asked, the paper's counterpart grids
and the reproduction scorecard. Renderers (:mod:`transferbench.report` for the console,
:mod:`transferbench.report_files` for the files, :mod:`transferbench.jsonout` for
``--json``, :mod:`transferbench.observing` for the observers) read it and compute nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .analysis import (
    Difference,
    Grid,
    LayerMetrics,
    SpecificLayer,
    Table1Row,
    build_grids,
    drops,
    layer_metrics,
    specific_layer,
    table1,
    transfer_source,
)
from .claims import PaperFindings
from .errors import ResultsError
from .findings import FindingResult, headroom
from .paperdata import HALF_NAMES, PAPER_METRIC, load_paper
from .plugins import get_registry
from .recommend import Recommendation, estimator_views, recommend, recommendation_stability
from .results import EstimateRow, RunResults, check_metric, read_results
from .scorecard import PAPER_ALIAS, Boost, default_margin, scorecard
from .source_ranking import SourceRanking, source_info, source_rankings
from .validation import (
    Agreement,
    CostSummary,
    GroundTruthAgreement,
    SpecificComparison,
    agreements,
    cost_summary,
    ground_truth_agreements,
    specific_layers,
)
from .validity import CheckResult, RunView, ValidityCheck

__all__ = [
    "COMPARISONS",
    "EstimatorSection",
    "ExperimentReport",
    "RunReport",
    "build_report",
    "compared_papers",
    "experiment_report",
    "paper_report",
    "read_report",
    "registered_checks",
    "registered_findings",
    "run_checks",
]

#: What ``report --compare`` accepts beside the name of any findings plugin: ``paper``
#: (Yosinski et al.'s six findings, ``yosinski2014``) and ``all`` (every findings plugin).
COMPARISONS: tuple[str, ...] = ("paper", "all")


@dataclass(frozen=True)
class ExperimentReport:
    """Everything the report says about one experiment.

    Attributes:
        grid: the accuracies by (treatment, n).
        metrics: the derived metrics at every transfer layer.
        table1: the paper's Table 1 (the fine-tuning boost over ranges of n).
        drops: Figure 3's view: per treatment, n -> (drop from its base, relative drop).
        specific: the first layer whose features are specific (None: no BnB and AnB).
        recommendation: how many layers to freeze (experiments with a weights-file source).
        paper: the paper's counterpart grid, when the report compares with it.
        warned: names of the validity checks that warned about this experiment or the run.
    """

    grid: Grid
    metrics: tuple[LayerMetrics, ...] = ()
    table1: tuple[Table1Row, ...] = ()
    drops: Mapping[str, Mapping[int, tuple[Difference, float | None]]] = field(default_factory=dict)
    specific: SpecificLayer | None = None
    recommendation: Recommendation | None = None
    paper: Grid | None = None
    warned: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The experiment's name."""
        return self.grid.experiment

    @property
    def source(self) -> str:
        """``A`` for the paper's halves, ``X`` for a weights file (see :func:`transfer_source`)."""
        return transfer_source(self.grid)


@dataclass(frozen=True)
class EstimatorSection:
    """The estimators of a run: their scores, agreement with retraining, specific layers, cost."""

    rows: tuple[EstimateRow, ...]
    agreements: tuple[Agreement, ...]
    specific: tuple[SpecificComparison, ...]
    cost: CostSummary
    ground_truths: tuple[GroundTruthAgreement, ...] = ()
    sources: tuple[SourceRanking, ...] = ()


@dataclass(frozen=True)
class RunReport:
    """One run's report (or the paper's own results), computed once.

    Attributes:
        results: the tidy rows it was computed from.
        metric: the accuracy every number is based on.
        pool: the pooling asked for (None: decided per experiment).
        experiments: one :class:`ExperimentReport` per experiment, in plan order.
        checks: every validity check's findings (empty for the paper's data).
        estimators: the estimators' section, when the run has estimator points.
        scorecard: the findings of the papers compared with judged on the run (each result
            names its findings plugin in ``paper``), else None.
        compare: what was compared with (``paper``, a findings plugin's name, ``all``), or None.
        half_names: experiment -> {half: name} (the paper's man-made / natural).
        title: a heading for the whole report (the paper's), or None.
        reference: Yosinski et al.'s own report under the same metric, when comparing with it.
        margins: experiment -> the control's equivalence margin (top-1 as a fraction).
    """

    results: RunResults
    metric: str
    pool: bool | None
    experiments: tuple[ExperimentReport, ...]
    checks: tuple[CheckResult, ...] = ()
    estimators: EstimatorSection | None = None
    scorecard: tuple[FindingResult, ...] | None = None
    compare: str | None = None
    half_names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    title: str | None = None
    reference: RunReport | None = None
    margins: Mapping[str, float] = field(default_factory=dict)

    @property
    def grids(self) -> list[Grid]:
        """The experiments' grids, in plan order."""
        return [e.grid for e in self.experiments]

    @property
    def run_dir(self) -> Path | None:
        """Where the run lies (None for the paper's data)."""
        return self.results.run_dir


# --------------------------------------------------------------------------- validity checks


def registered_checks() -> dict[str, ValidityCheck]:
    """Every registered validity check (built-in and installed) with its default settings."""
    registry = get_registry()
    checks: dict[str, ValidityCheck] = {}
    for name in registry.names("check"):
        factory = registry.get("check", name).factory
        try:
            check = factory(factory.Params())
            if isinstance(check, ValidityCheck):  # the registry refuses any other class
                checks[name] = check
        except Exception:  # noqa: BLE001 - a check that needs settings cannot run with none
            continue
    return checks


def registered_findings() -> dict[str, PaperFindings]:
    """Every registered findings plugin (built-in and installed) with its default settings."""
    registry = get_registry()
    out: dict[str, PaperFindings] = {}
    for name in registry.names("findings"):
        factory = registry.get("findings", name).factory
        plugin = factory(factory.Params())
        if isinstance(plugin, PaperFindings):  # the registry refuses any other class
            out[name] = plugin
    return out


def compared_papers(compare: str | None) -> dict[str, PaperFindings]:
    """The findings plugins ``compare`` names: none, one (``paper`` is ``yosinski2014``) or
    every registered one (``all``, Yosinski et al.'s first).

    Raises:
        ResultsError: a name no findings plugin registers.
    """
    if compare is None:
        return {}
    known = registered_findings()
    if compare == "all":
        return dict(sorted(known.items(), key=lambda kv: (kv[0] != PAPER_ALIAS, kv[0])))
    name = PAPER_ALIAS if compare == "paper" else compare
    if name not in known:
        raise ResultsError(f"unknown comparison {compare!r}: use paper, all or a findings plugin "
                           f"({', '.join(sorted(known)) or 'none installed'}; `transferbench plugins` lists them)")
    return {name: known[name]}


def run_checks(view: RunView, checks: Mapping[str, ValidityCheck]) -> list[CheckResult]:
    """Every check on ``view``, in name order; a check that raises becomes a warning about itself."""
    out: list[CheckResult] = []
    for name in sorted(checks):
        check = checks[name]
        check.name = name
        try:
            results = list(check.check(view))
        except Exception as exc:  # noqa: BLE001 - a broken third-party check must not hide the others
            results = [CheckResult(name, "warn", f"the check itself failed: {type(exc).__name__}: {exc}",
                                   "report it to the plugin's authors")]
        out += [r if r.check else CheckResult(name, r.status, r.message, r.remedy, r.experiment) for r in results]
    return out


def _warned(checks: Sequence[CheckResult], experiment: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.check for c in checks if c.status == "warn"
                               and c.experiment in (None, "", experiment)))


# --------------------------------------------------------------------------- building


def _paper_counterpart(grid: Grid, papers: Sequence[Grid]) -> Grid:
    by_name = {p.experiment: p for p in papers}
    if grid.experiment in by_name:
        return by_name[grid.experiment]
    if any(grid.sources.get(t) is None for t in grid.treatments if t not in grid.bases):
        return by_name["random_weights"]
    # a split by meaning (or of unequal halves) stands beside the paper's man-made/natural split
    return by_name["random" if grid.equal_halves and grid.exchangeable else "manmade_natural"]


def _estimators(results: RunResults, metric: str) -> EstimatorSection | None:
    if not results.estimates:
        return None
    rows = results.estimates
    return EstimatorSection(rows, tuple(agreements(results, rows, metric)),
                            tuple(specific_layers(results, rows, metric)), cost_summary(results, rows),
                            tuple(ground_truth_agreements(results, metric)),
                            tuple(source_rankings(results, rows, metric,
                                                  source_info(results.run_dir) if results.run_dir else None)))


def experiment_report(grid: Grid, estimators: EstimatorSection | None,
                      checks: Sequence[CheckResult], paper: Grid | None = None) -> ExperimentReport:
    """One experiment's part of the report: its metrics, Table 1, drops, specific layer, the
    recommendation (weights-file sources) and the validity checks that warned about it."""
    rec = None
    if transfer_source(grid) == "X":  # the practitioner's answer, for a weights-file source
        views = estimator_views(grid, estimators.rows, estimators.agreements) if estimators else []
        rec = recommend(grid, views)
        if rec is not None and rec.determined:  # how often resampled units give the same n
            rec = replace(rec, stability=recommendation_stability(grid, views))
    return ExperimentReport(grid, tuple(layer_metrics(grid)), tuple(table1(grid)), drops(grid), specific_layer(grid),
                            rec, paper, _warned(checks, grid.experiment))


def _margins(grids: Sequence[Grid], paper: Sequence[Grid], points: float | None) -> dict[str, float]:
    """The control's margin per experiment, in top-1: ``points`` when given, else the share of
    the paper's boost (on the shared scale) times the experiment's mean headroom."""
    share = None if points is not None else default_margin(paper)
    out = {}
    for g in grids:
        room = headroom(g)
        if points is not None:
            out[g.experiment] = points
        elif share is not None and room:
            out[g.experiment] = share * sum(room.values()) / len(room)
    return out


def build_report(results: RunResults, metric: str = "top1", pool: bool | None = None, *,
                 compare: str | None = None, checks: Mapping[str, ValidityCheck] | None = None,
                 control_margin: float | None = None) -> RunReport:
    """The report of a run's results (see the module docstring).

    Args:
        results: the run's rows, as :func:`transferbench.results.read_results` reads them.
        metric: ``top1`` or ``top1_best_k``.
        pool: pool mirror-image treatments (None: per experiment).
        compare: ``"paper"`` (or ``"yosinski2014"``) adds the paper's counterpart grids and its
            scorecard; the name of another findings plugin adds that paper's scorecard;
            ``"all"`` every findings plugin's (see :func:`compared_papers`).
        checks: the validity checks to run (default: every registered one).
        control_margin: the control's equivalence margin in top-1 (0.008 = 0.8 points;
            default: half the paper's boost, scaled to each experiment's headroom).

    Raises:
        ResultsError: an unknown metric or comparison, or a margin that is not above 0.
    """
    check_metric(metric)
    papers_compared = compared_papers(compare)
    if control_margin is not None and not control_margin > 0:
        raise ResultsError(f"the control margin must be above 0, got {control_margin}")
    grids = build_grids(results, metric, pool)
    reference = paper_report(metric, pool)
    margins = _margins(grids, reference.grids, control_margin)
    view = RunView(results, grids, metric, pool, results.records.get, margins)
    found = run_checks(view, registered_checks() if checks is None else checks)
    estimators = _estimators(results, metric)
    with_paper = PAPER_ALIAS in papers_compared
    papers = reference.grids if with_paper else []
    experiments = tuple(experiment_report(g, estimators, found, _paper_counterpart(g, papers) if papers and g.cells
                                          else None) for g in grids)
    card = None
    if papers_compared:
        room = Boost().locate(grids)
        margin = None
        if control_margin is not None and room:
            h = headroom(room[0])
            margin = control_margin / (sum(h.values()) / len(h)) if h else None
        card = tuple(scorecard(grids, papers_compared, found, metric=metric, pool=pool, margin=margin))
    return RunReport(results, metric, pool, experiments, tuple(found), estimators, card, compare,
                     reference=reference if with_paper else None, margins=margins)


def read_report(run_dir: Path | str, metric: str = "top1", pool: bool | None = None, *,
                compare: str | None = None, control_margin: float | None = None) -> RunReport:
    """Read a run directory (once) and build its report.

    Raises:
        RunDirError: not a run directory, or its plan is damaged.
        ResultsError: an unknown metric or comparison.
    """
    check_metric(metric)
    return build_report(read_results(run_dir), metric, pool, compare=compare, control_margin=control_margin)


def paper_report(metric: str = PAPER_METRIC, pool: bool | None = None) -> RunReport:
    """The paper's own results, recomputed from its published per-network logs."""
    check_metric(metric)
    results = load_paper()
    experiments = tuple(ExperimentReport(g, tuple(layer_metrics(g)), tuple(table1(g)), drops(g), specific_layer(g))
                        for g in build_grids(results, metric, pool))
    return RunReport(results, metric, pool, experiments, half_names=HALF_NAMES,
                     title="Yosinski et al. (2014), recomputed from the published logs")
