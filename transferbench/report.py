"""The report on the console: tables (rich) for a computed :class:`~transferbench.runreport.RunReport`.

Entry points:

* :func:`print_report`: print a computed report (``full=False``: the main tables, the
  estimators' curves and the validity checks, as at the end of ``transferbench run``).
* :func:`run_report`: ``transferbench report RUN_DIR [--paper] [--compare paper]
  [--no-plots] [--metric top1|top1_best_k]``: compute the report once
  (:mod:`transferbench.runreport`), write its files (:mod:`transferbench.report_files`) and
  print it.

Accuracies print as fractions with three decimals like the paper (``.625``), with ``±`` the
standard deviation over networks when a cell has several. Derived metrics print in points
of top-1 (``+1.6`` = 1.6 percentage points), with ``±`` the half-width of the 95% interval.
Every table fits 80 columns; the caller's rich Console decides colour and TTY handling.
Nothing here computes a statistic or writes a file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .analysis import POOL, Difference, Grid, SpecificLayer, Stat, transfer_source
from .estimator_report import print_estimator_report
from .findings import SCALE, FindingResult
from .paperdata import PAPER_METRIC
from .report_files import write_report
from .results import ResultsError, RunResults, check_metric
from .runreport import ExperimentReport, RunReport, compared_papers, paper_report, read_report
from .validity import CheckResult

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not determined")

__all__ = ["DEFAULT_PAPER_OUT", "print_checks", "print_report", "print_scorecard", "run_report"]

#: Where ``run_report(None, paper=True)`` writes its plots and tables by default.
DEFAULT_PAPER_OUT = Path("paper-report")

_MAX_TREATMENTS = 5  # per table, so that "n layer" + 5 x ".625±.004" fits in 80 columns


# --------------------------------------------------------------------------- formatting


def _acc(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:.3f}"
    return text[1:] if text.startswith("0.") else text


def _cell(stat: Stat | None) -> str:
    if stat is None:
        return ""
    return _acc(stat.mean) if stat.std is None else f"{_acc(stat.mean)}±{_acc(stat.std)}"


def _points(est: Difference | None) -> str:
    if est is None:
        return ""
    text = f"{100 * est.value:+.1f}"
    return text if est.half_width is None else f"{text}±{100 * est.half_width:.1f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _layer_name(results: RunResults, n: int) -> str:
    return results.layer_names[n - 1] if 0 < n <= len(results.layer_names) else ""


@dataclass(frozen=True)
class Section:
    """A table with its heading and a note. Heading and note are printed as lines of their
    own, so they wrap at the console's width rather than at a narrow table's."""

    title: str
    table: Table
    note: str = ""

    def print(self, console: Console) -> None:
        """Print heading, table and note."""
        console.print(Text(self.title, style="bold"))
        console.print(self.table)
        if self.note:
            console.print(Text(self.note, style="dim"))
        console.print()


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)


def _chunks(names: Sequence[str], size: int) -> list[Sequence[str]]:
    return [names[i:i + size] for i in range(0, len(names), size)] or [[]]


def _span(values: Iterable[int]) -> str:
    vs = sorted(set(values))
    return str(vs[0]) if len(vs) == 1 else f"{vs[0]}-{vs[-1]}"


def _counts(grid: Grid, names: Iterable[str]) -> str:
    """Networks (and independent units, where they differ) per cell of each treatment."""
    parts = []
    for name in names:
        stats = [s for (t, _), s in grid.cells.items() if t == name]
        if stats:
            nets, units = _span(s.count for s in stats), _span(s.units for s in stats)
            parts.append(f"{name} {nets}" + (f" ({units} units)" if units != nets else ""))
    return ", ".join(parts)


# --------------------------------------------------------------------------- tables


def grid_sections(grid: Grid, results: RunResults, half_names: Mapping[str, str] | None = None) -> list[Section]:
    """The main table of one experiment: one row per n, one column per treatment.

    Base treatments fill the n = 0 row; columns follow the paper's order (baseB, BnB, BnB+,
    AnB, AnB+), then any other treatment in plan order, at most five per table. The layer
    column names layer n, the last one transferred.
    """
    sections = []
    chunks = _chunks(grid.treatments, _MAX_TREATMENTS)
    for i, names in enumerate(chunks):
        part = f" ({i + 1}/{len(chunks)})" if len(chunks) > 1 else ""
        counts = _counts(grid, names)
        notes = [f"networks per cell: {counts}"] if counts else []
        halves = [f"{h} = {v}" for h, v in (half_names or {}).items() if h in ("A", "B")]
        if halves:
            notes.append(", ".join(halves))
        if grid.merged:
            notes.append(f"pooled as in the paper: {', '.join(f'{t} in {POOL[t]}' for t in sorted(grid.merged))}")
        if len(grid.cells) and any(s.std is not None for s in grid.cells.values()):
            notes.append("± = std over networks (a description; intervals are over units: a split seed and a "
                          "direction)")
        table = _table()
        table.add_column("n", justify="right")
        if results.layer_names:
            table.add_column("layer")
        for name in names:
            table.add_column(name, justify="right")
        for n in grid.layers:
            cells = [_cell(grid.get(t, n)) for t in names]
            if not any(cells):
                continue
            table.add_row(str(n), *([_layer_name(results, n)] if results.layer_names else []), *cells)
        sections.append(Section(f"{grid.experiment}: top-1 ({grid.metric}){part}", table, "; ".join(notes)))
    return sections


def metrics_section(e: ExperimentReport) -> Section | None:
    """Derived metrics by n in points of top-1 (only the columns the run can compute).

    None unless the grid has a co-adaptation, specificity or boost to show (an unpooled
    dissimilar split is shown by :func:`drop_section` instead).
    """
    grid, rows = e.grid, e.metrics
    a = e.source  # A, or X for a weights file
    columns = [
        ("co-adapt", "baseB-BnB", lambda m: _points(m.coadaptation)),
        ("specif.", f"BnB-{a}nB", lambda m: _points(m.specificity)),
        ("boost", f"{a}nB+-baseB", lambda m: _points(m.boost_base)),
        ("boost/sf", f"{a}nB+-BnB+", lambda m: _points(m.boost_selffer)),
        # generality (AnB / baseB) is 1 - this; it is in results_metrics_<metric>.csv
        ("drop", "% of baseB", lambda m: _pct(m.relative_drop)),
    ]
    cells = [[fmt(m) for _, _, fmt in columns] for m in rows]
    keep = [j for j in range(len(columns)) if any(row[j] for row in cells)]
    if not any(j < 4 for j in keep):
        return None
    table = _table()
    table.add_column("n", justify="right")
    for j in keep:
        table.add_column(f"{columns[j][0]}\n{columns[j][1]}", justify="right")
    for m, row in zip(rows, cells):
        table.add_row(str(m.n), *(row[j] for j in keep))
    units = sorted({d.units for m in rows for d in (m.coadaptation, m.specificity, m.boost_base, m.boost_selffer)
                    if d is not None})
    note = ("differences in points of top-1, each unit's own difference (a unit: a split seed and a direction); "
            f"± = half-width of the 95% t-interval over {_span(units) if units else 0} units, blank with fewer than "
            f"3; drop = (baseB - {a}nB) / baseB")
    return Section(f"{grid.experiment}: derived metrics", table, note)


def table1_section(e: ExperimentReport) -> Section | None:
    """The paper's Table 1: the fine-tuning boost averaged over ranges of layers."""
    grid, rows = e.grid, e.table1
    if not rows:
        return None
    table = _table()
    plus = f"{transfer_source(grid)}nB+"
    for head in ("layers", "networks", "units", f"{plus} - baseB", "published way", f"{plus} - BnB+"):
        table.add_column(head, justify="right")
    for r in rows:
        units = str(r.boost_base.units) if r.boost_base else ""
        published = "" if r.as_published is None else f"{100 * r.as_published:+.1f}"
        table.add_row(f"{r.lo}-{r.hi}", str(r.networks), units, _points(r.boost_base), published,
                      _points(r.boost_selffer))
    note = (f"points of top-1; each unit's {plus} networks in the range against that unit's own base, then the "
            "mean and its 95% interval (±) over units; published way: the paper's arithmetic, every network "
            "against the mean of every base network (no interval: networks of one unit are not independent)")
    return Section(f"{grid.experiment}: Table 1, fine-tuning boost", table, note)


def drop_section(e: ExperimentReport, half_names: Mapping[str, str] | None = None) -> Section | None:
    """Figure 3's view: drop from each series' own base, for unpooled directions and for
    treatments without a source (random weights)."""
    grid = e.grid
    series = {t: s for t, s in e.drops.items() if not grid.pooled or grid.sources.get(t) is None}
    if not series:
        return None
    names = list(series)[:_MAX_TREATMENTS]
    hn = half_names or {}
    table = _table()
    table.add_column("n", justify="right")
    for name in names:
        src, tgt = grid.sources.get(name), grid.targets.get(name)
        sub = f"{hn.get(src, src)}->{hn.get(tgt or '', tgt)}" if src else "random init"
        table.add_column(f"{name}\n{sub}", justify="right")
    for n in grid.transfer_layers:
        cells = []
        for name in names:
            d = series[name].get(n)
            cells.append("" if d is None else f"{100 * d[0].value:.1f} ({_pct(d[1])})")
        if any(cells):
            table.add_row(str(n), *cells)
    note = "base - treatment in points of top-1 (in brackets: % of that base); each series against its own base"
    return Section(f"{grid.experiment}: drop from base", table, note)


def compare_sections(grid: Grid, paper: Grid) -> list[Section]:
    """The run's means beside the paper's, row by row in n."""
    names = [t for t in grid.treatments if any(paper.get(t, n) for n in paper.layers)]
    sections = []
    for names_part in _chunks(names, 4):
        if not names_part:
            continue
        table = _table()
        table.add_column("n", justify="right")
        for name in names_part:
            table.add_column(f"{name}\nrun", justify="right")
            table.add_column(f"{name}\npaper", justify="right")
        for n in grid.layers:
            cells = []
            for name in names_part:
                ours, ref = grid.get(name, n), paper.get(name, n)
                cells += [_acc(ours.mean) if ours else "", _acc(ref.mean) if ref else ""]
            if any(cells[0::2]):
                table.add_row(str(n), *cells)
        note = (f"means; run metric {grid.metric}, paper metric {paper.metric}; rows matched by n "
                "(the paper's network is CaffeNet, 8 layers)")
        sections.append(Section(f"{grid.experiment} beside the paper ({paper.experiment})", table, note))
    return sections


def _status_line(results: RunResults) -> str:
    jobs = len({r.job_id for r in results.rows})
    ok, pending, failed = (results.count(s) for s in ("ok", "pending", "failed"))
    line = f"{results.name} (config {results.config_hash[:12] or '?'}): {jobs} networks, {ok} done"
    if pending:
        line += f", {pending} pending (left out of the statistics)"
    if failed:
        line += f", {failed} failed"
    return line


def _print_failures(console: Console, results: RunResults, limit: int = 3) -> None:
    seen: dict[str, str] = {}
    for r in results.rows:
        if r.status == "failed" and r.job_id not in seen:
            seen[r.job_id] = f"{r.experiment} {r.treatment} n={r.n}: {r.error or 'unknown error'}"
    for line in itertools.islice(seen.values(), limit):
        console.print(Text(f"  failed: {line}"))
    if len(seen) > limit:
        console.print(Text(f"  ... and {len(seen) - limit} more failed networks"))
    for path, why in results.unreadable:
        console.print(Text(f"  unreadable: {path}: {why} (counted as pending; a rerun moves it aside "
                           "and trains the network again)"))
    if results.ood_stale:
        console.print(Text(
            f"  ood_top1 of {results.ood_stale} network(s) left out: measured on another out-of-distribution split "
            "than this plan's (the data source's OOD settings changed after they trained; job ids leave them out, "
            "so a rerun reuses the networks and does not re-evaluate them). To measure them on this split, run the "
            "config into a new --out"))


def _print_experiment(console: Console, report: RunReport, e: ExperimentReport, full: bool) -> None:
    grid, results = e.grid, report.results
    if not grid.cells:
        console.print(Text(f"{grid.experiment}: no {grid.metric} results yet "
                           f"({grid.pending} networks pending, {grid.failed} failed)"))
        console.print()
        return
    hn = report.half_names.get(grid.experiment, {})
    for section in grid_sections(grid, results, hn):
        section.print(console)
    if not full:
        return
    for part in (metrics_section(e), table1_section(e), drop_section(e, hn)):
        if part is not None:
            part.print(console)
    if e.specific is not None:
        console.print(Text(_specific_line(e.specific, results, e.source)))
        console.print()


def _specific_line(spec: SpecificLayer, results: RunResults, a: str = "A") -> str:
    if not spec.determined:
        return (f"First specific layer: not determined: BnB - {a}nB has an interval at no n (it needs 3 units, a "
                "split seed and a direction each, with both networks; run more split seeds).")
    stab = f"; {spec.stability.label} under resampling of the units" if spec.stability else ""
    gap = spec.gap
    assert gap is not None
    if spec.n is None:
        return (f"No layer turns specific ({spec.rule}; at the deepest, BnB - {a}nB = {_points(gap)} points over "
                f"{gap.units} units){stab}.")
    name = _layer_name(results, spec.n)
    return (f"Features turn specific at n={spec.n}{f' ({name})' if name else ''}: BnB - {a}nB = "
            f"{_points(gap)} points over {gap.units} units ({spec.rule}){stab}.")


def print_checks(console: Console, checks: Sequence[CheckResult]) -> None:
    """The "Validity checks" section: one line per finding, a remedy under each warning."""
    if not checks:
        return
    warned = sum(1 for c in checks if c.status == "warn")
    head = "all pass" if not warned else f"{warned} warning{'s' if warned > 1 else ''}"
    console.print(Text(f"Validity checks ({head})", style="bold"))
    for c in checks:
        where = f" ({c.experiment})" if c.experiment else ""
        mark = "pass" if c.status == "pass" else "WARN"
        console.print(Text(f"  {mark} {c.check}{where}: {c.message}"))
        if c.status == "warn" and c.remedy:
            console.print(Text(f"       -> {c.remedy}"))
    console.print()


def _share(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}%"


def _finding_lines(f: FindingResult, indent: str, part: bool = False) -> list[str]:
    where = f" ({f.experiment})" if f.experiment else ""
    lines = [indent + f"{f.verdict.upper():15} {f.name}{where}"]
    pad = indent + " " * 16
    if f.equivalence is not None and f.margin is not None and f.estimate is not None and f.points is not None:
        room = f.points.value / f.estimate.value if f.estimate.value else None
        width = f" (±{100 * f.margin * room:.1f} points)" if room else ""
        width = width if f.scale == "headroom" else ""
        lines.append(pad + f"{f.equivalence} within a margin of ±{100 * f.margin:.1f}% of {f.scale}{width}")
    if not f.parts:
        lines.append(pad + f"run: {f.run}")
    if f.estimate is not None:
        est = f.estimate
        shared = f"{_share(est.value)} of {f.scale}"
        if f.scale == "headroom" and f.headroom_of:
            # not the base's distance from chance, as the footer says of the shared scale
            shared += f" (headroom: {f.headroom_of}'s distance from chance)"
        if est.determined:
            shared += f" ±{100 * (est.half_width or 0):.1f} [{_share(est.ci_low)}, {_share(est.ci_high)}]"
        lines.append(pad + f"     = {shared}")
        if f.effect is not None:
            at = f" (+{100 * f.effect_points:.1f} points at its base)" if f.effect_points is not None else ""
            lines.append(pad + f"paper: {_share(f.effect)} of {f.scale}{at}".replace("(++", "(+").replace("(+-", "(-"))
        if f.size in ("smaller", "larger"):
            lines.append(pad + f"{f.size} than the paper's effect: the whole interval lies "
                         f"{'below' if f.size == 'smaller' else 'above'} it (the direction reproduces, not the size)")
        if f.verdict == "inconclusive" and f.units_needed:
            side = " per side" if len(f.sizes) > 1 else ""
            lines.append(pad + f"{f.units_needed} units{side} would decide it at 80% power (`report --power`: the "
                         "split seeds and their cost)")
    for sub in f.parts:
        lines += _finding_lines(sub, pad, part=True)
    tail = []
    if f.stability is not None:
        tail.append(("both parts together: " if f.parts else "") + f.stability.label)
    if f.caveats and not part:
        why = f" (not determined because of {', '.join(f.invalidated)})" if f.invalidated else ""
        tail.append(f"caveats: {', '.join(f.caveats)} warned{why}")
    if tail:
        lines.append(pad + "; ".join(tail))
    if f.claim and not part:
        lines.append(pad + f"the paper: {f.claim}")
    return lines


def print_scorecard(console: Console, findings: Sequence[FindingResult]) -> None:
    """The scorecard, one section per paper compared with: per finding its verdict, the run's
    comparison (points and the shared scale, with the interval over units), the paper's
    effect, the stability and the caveats."""
    papers = list(dict.fromkeys(f.paper for f in findings))
    for paper in papers:
        mine = [f for f in findings if f.paper == paper]
        counts = {v: sum(f.verdict == v for f in mine) for v in VERDICTS}
        summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        title = "Reproduction scorecard" + (f": {paper}" if paper else "")
        console.print(Text(f"{title} ({len(mine)} findings: {summary})", style="bold"))
        for f in mine:
            for line in _finding_lines(f, "  "):
                console.print(Text(line))
    if len(papers) > 1:
        counts = {v: sum(f.verdict == v for f in findings) for v in VERDICTS}
        console.print(Text(f"All papers: {len(findings)} findings: "
                           + ", ".join(f"{n} {v}" for v, n in counts.items() if n), style="bold"))
    console.print(Text(f"verdicts on the shared scale, {SCALE}, with 95% intervals over units (a split seed and a "
                       "direction); reproduced: the interval excludes 0 in the paper's direction; contradicted: it "
                       "excludes the paper's effect; inconclusive: it holds both; a control is an equivalence "
                       "test; stability: the share of 200 bootstrap resamples of the units giving the same verdict",
                       style="dim"))
    console.print()


def _print_recommendations(console: Console, report: RunReport) -> None:
    """The answer for every experiment that transfers from a weights file: how many layers
    to freeze, and whether fine-tuning pays, with the validity checks that warned."""
    for e in report.experiments:
        if e.recommendation is None:
            continue
        console.print(Text(f"{e.name}: recommendation ({report.metric})", style="bold"))
        for line in e.recommendation.lines(report.results.layer_names, list(e.warned)):
            console.print(Text(f"  {line}"))
        console.print()


def print_report(console: Console, report: RunReport, *, full: bool = True) -> None:
    """Print a computed report: the status and every experiment's tables, then (with ``full``)
    the derived metrics, the comparison with the paper and its scorecard, the estimators, the
    validity checks and the recommendations. ``full=False`` is what ``run`` prints at its end:
    the main tables, the estimators' curves and the validity checks."""
    results = report.results
    if report.title:
        title = report.title
        console.rule(title) if console.width <= 400 else console.print(Text(f"== {title} ==", style="bold"))
    console.print(Text(_status_line(results)))
    _print_failures(console, results)
    console.print()
    for e in report.experiments:
        _print_experiment(console, report, e, full)
    if report.estimators is not None:
        print_estimator_report(console, results, report.estimators, report.metric, full=full)
    if full:
        for e in report.experiments:
            if e.paper is not None:
                for section in compare_sections(e.grid, e.paper):
                    section.print(console)
        if report.scorecard is not None:
            print_scorecard(console, report.scorecard)
    print_checks(console, report.checks)
    if full:
        _print_recommendations(console, report)


# --------------------------------------------------------------------------- entry point


def run_report(
    run_dir: Path | None,
    *,
    paper: bool = False,
    compare: str | None = None,
    plots: bool = True,
    metric: str | None = None,
    console: Console,
    out: Path | None = None,
    pool: bool | None = None,
    control_margin: float | None = None,
) -> list[RunReport]:
    """Compute, write and print the report of a run and/or of the paper.

    Args:
        run_dir: the run directory, or None with ``paper=True`` for the paper alone.
        paper: print the paper's own tables (recomputed from its per-network results).
        compare: ``"paper"`` puts the paper's means beside the run's, by n, and judges the
            paper's findings on the run (the scorecard).
        plots: write Figure 2/3 style plots (PNG + SVG).
        metric: ``top1`` or ``top1_best_k``; default ``top1`` for a run and the paper's
            ``top1_best_k`` for the paper alone. A comparison uses the run's metric for both.
        console: where to print (a recording or narrow Console in tests).
        out: where plots (and, for the paper alone, tables) go; default the run directory,
            or ``./paper-report/`` for the paper alone.
        pool: pool mirror-image treatments (None: decide per experiment, see analysis).
        control_margin: the control's equivalence margin in top-1 (0.008 = 0.8 points).

    Returns:
        The reports printed (the run's, then the paper's own).

    Raises:
        RunDirError: the run directory is missing or has no plan.json.
        ResultsError: an unknown metric or comparison, or neither a run nor ``paper``.
    """
    reports = build_reports(run_dir, paper=paper, compare=compare, metric=metric, pool=pool,
                            control_margin=control_margin)
    written: list[Path] = []
    for report in reports:
        written += write_report_of(report, run_dir, plots=plots, out=out)
        print_report(console, report)
    for path in written:
        if path.suffix in (".png", ".svg"):
            console.print(f"wrote {path}", highlight=False, markup=False)
    return reports


def build_reports(run_dir: Path | None, *, paper: bool = False, compare: str | None = None,
                  metric: str | None = None, pool: bool | None = None,
                  control_margin: float | None = None) -> list[RunReport]:
    """The reports ``report`` prints: the run's, then the paper's own (``paper``).

    Raises:
        ResultsError: an unknown metric or comparison, or neither a run nor ``paper``.
    """
    compared_papers(compare)  # an unknown name fails before anything is read
    if run_dir is None and not paper:
        raise ResultsError("give a run directory, or ask for the paper's own tables (--paper)")
    if metric is not None:
        check_metric(metric)
    reports = []
    if run_dir is not None:
        reports.append(read_report(Path(run_dir), metric or "top1", pool, compare=compare,
                                   control_margin=control_margin))
    if paper:
        reports.append(paper_report(metric or PAPER_METRIC, pool))
    return reports


def write_report_of(report: RunReport, run_dir: Path | None, *, plots: bool, out: Path | None) -> list[Path]:
    """Write a report's files where ``report`` puts them: a run's tables into its run directory
    and its plots into ``out`` (default the run directory); the paper's own report, when it is
    the only one, into ``out`` (default ``./paper-report/``)."""
    if report.run_dir is not None:
        return write_report(report, report.run_dir, plots=plots, plot_dir=out)
    if run_dir is None:  # the paper alone: its tables and plots
        target = Path(out) if out else DEFAULT_PAPER_OUT
        return write_report(report, target, plots=plots)
    return []
