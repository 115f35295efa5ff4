"""Tables (rich), files and plots for a run directory or for the paper's own results.

Entry points:

* :func:`print_grid`: the main table only, and ``results_<metric>.csv``; the engine calls it when a
  run ends.
* :func:`run_report`: everything (``transferbench report RUN_DIR [--paper]
  [--compare paper] [--no-plots] [--metric top1|top1_best_k]``).

Accuracies print as fractions with three decimals like the paper (``.625``), with ``±`` the
standard deviation over networks when a cell has several. Derived metrics print in points
of top-1 (``+1.6`` = 1.6 percentage points), with ``±`` the half-width of the 95% interval.
Every table fits 80 columns; the caller's rich Console decides colour and TTY handling.
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

from .analysis import (
    POOL,
    Difference,
    Grid,
    SpecificLayer,
    Stat,
    build_grids,
    drops,
    layer_metrics,
    results_csv,
    specific_layer,
    table1,
    transfer_source,
)
from .estimator_report import print_estimator_report, write_estimator_figure, write_estimator_files
from .paperdata import HALF_NAMES, PAPER_METRIC, load_paper
from .plots import write_plots
from .plugins import get_registry
from .recommend import estimator_views, recommend
from .results import ResultsError, RunResults, check_metric, export_long, read_results, rows_to_csv, write_atomic
from .scorecard import print_scorecard, scorecard, write_scorecard
from .validation import read_estimates
from .validity import CheckResult, RunView, run_checks, write_checks

__all__ = ["DEFAULT_PAPER_OUT", "print_grid", "run_report", "write_tables"]

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


def _counts(grid: Grid, names: Iterable[str]) -> str:
    parts = []
    for name in names:
        counts = sorted({s.count for (t, _), s in grid.cells.items() if t == name})
        if counts:
            span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            parts.append(f"{name} {span}")
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
            notes.append("± = std over networks")
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


def metrics_section(grid: Grid) -> Section | None:
    """Derived metrics by n in points of top-1 (only the columns the run can compute).

    None unless the grid has a co-adaptation, specificity or boost to show (an unpooled
    dissimilar split is shown by :func:`drop_section` instead).
    """
    rows = layer_metrics(grid)
    a = transfer_source(grid)  # A, or X for a weights file
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
    note = ("differences in points of top-1; ± = half-width of the 95% t-interval (Welch), "
            f"blank where a cell has one network; drop = (baseB - {a}nB) / baseB")
    return Section(f"{grid.experiment}: derived metrics", table, note)


def table1_section(grid: Grid) -> Section | None:
    """The paper's Table 1: the fine-tuning boost averaged over ranges of layers."""
    rows = table1(grid)
    if not rows:
        return None
    table = _table()
    plus = f"{transfer_source(grid)}nB+"
    for head in ("layers", "networks", f"{plus} - baseB", f"{plus} - BnB+"):
        table.add_column(head, justify="right")
    for r in rows:
        table.add_row(f"{r.lo}-{r.hi}", str(r.networks), _points(r.boost_base), _points(r.boost_selffer))
    note = (f"points of top-1; mean over every {plus} network in the range, as the paper computes it; "
            "± = half-width of the 95% interval")
    return Section(f"{grid.experiment}: Table 1, fine-tuning boost", table, note)


def drop_section(grid: Grid, half_names: Mapping[str, str] | None = None) -> Section | None:
    """Figure 3's view: drop from each series' own base, for unpooled directions and for
    treatments without a source (random weights)."""
    series = {t: s for t, s in drops(grid).items() if not grid.pooled or grid.sources.get(t) is None}
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


def input_scale_mismatch(results: RunResults, factor: float = 3.0) -> str | None:
    """A warning when networks saw inputs far from the scale their initialisation expects."""
    expected = results.expected_input_std
    measured = [r.input_std for r in results.rows if r.status == "ok" and r.input_std]
    if not expected or not measured:
        return None
    median = sorted(measured)[len(measured) // 2]
    if expected / factor <= median <= expected * factor:
        return None
    return (f"the networks' inputs have a std of {median:.3g}, but the architecture's initialisation expects "
            f"about {expected:.3g}: check the data's normalisation (data.mean / data.std) or the init")


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
    off = input_scale_mismatch(results)
    if off:
        console.print(Text(f"  warning: {off}"))
    differences = results.code_differences()
    if differences:
        console.print(Text(f"  warning: these networks were trained by different code ({'; '.join(differences)}): "
                           "compare them with care (docs/run-directory.md)"))


def _print_grids(console: Console, results: RunResults, grids: Sequence[Grid],
                 half_names: Mapping[str, Mapping[str, str]], full: bool) -> None:
    console.print(Text(_status_line(results)))
    _print_failures(console, results)
    console.print()
    for grid in grids:
        if not grid.cells:
            console.print(Text(f"{grid.experiment}: no {grid.metric} results yet "
                               f"({grid.pending} networks pending, {grid.failed} failed)"))
            console.print()
            continue
        hn = half_names.get(grid.experiment, {})
        for section in grid_sections(grid, results, hn):
            section.print(console)
        if not full:
            continue
        for section in (metrics_section(grid), table1_section(grid), drop_section(grid, hn)):
            if section is not None:
                section.print(console)
        spec = specific_layer(grid)
        if spec is not None:
            console.print(Text(_specific_line(spec, results, transfer_source(grid))))
            console.print()


def _specific_line(spec: SpecificLayer, results: RunResults, a: str = "A") -> str:
    if spec.noise_sd is None:
        return (f"First specific layer: not determined: needs >= 2 networks in a BnB or {a}nB cell to know the "
                "noise between networks (run more split seeds).")
    if spec.n is None:
        return f"No layer turns specific ({spec.rule}; threshold {100 * spec.threshold:.1f} points)."
    name = _layer_name(results, spec.n)
    return (f"Features turn specific at n={spec.n}{f' ({name})' if name else ''}: BnB - {a}nB = "
            f"{100 * (spec.gap or 0.0):.1f} points > {100 * spec.threshold:.1f} ({spec.rule}).")


# --------------------------------------------------------------------------- validity checks


def validity_checks(results: RunResults, metric: str = "top1", pool: bool | None = None) -> list[CheckResult]:
    """Every registered validity check (built-in and installed) on a run."""
    registry = get_registry()
    checks = {}
    for name in registry.names("check"):
        factory = registry.get("check", name).factory
        try:
            checks[name] = factory(factory.Params())
        except Exception:  # noqa: BLE001 - a check that needs settings cannot run with none
            continue
    return run_checks(RunView(results, metric, pool), checks)


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


def _print_recommendations(console: Console, results: RunResults, grids: Sequence[Grid], estimates: Sequence,
                           checks: Sequence[CheckResult] = ()) -> None:
    """The answer for every experiment that transfers from a weights file: how many layers
    to freeze, and whether fine-tuning pays (:mod:`transferbench.recommend`), with the
    validity checks that warned about its networks."""
    for grid in grids:
        if transfer_source(grid) != "X":
            continue
        rec = recommend(grid, estimator_views(grid, results, estimates))
        if rec is None:
            continue
        console.print(Text(f"{grid.experiment}: recommendation ({grid.metric})", style="bold"))
        warned = dict.fromkeys(c.check for c in checks if c.status == "warn"
                               and c.experiment in (None, "", grid.experiment))
        for line in rec.lines(results.layer_names, list(warned)):
            console.print(Text(f"  {line}"))
        console.print()


# --------------------------------------------------------------------------- files


def _summary_csv(grids: Sequence[Grid]) -> str:
    rows = []
    for g in grids:
        for t in g.treatments:
            for n in g.layers:
                s = g.get(t, n)
                if s is not None:
                    rows.append([g.experiment, t, n, g.metric, g.pooled, s.count, s.mean, s.std, s.ci_low, s.ci_high])
    head = ["experiment", "treatment", "n", "metric", "pooled", "count", "mean", "std", "ci95_low", "ci95_high"]
    return rows_to_csv(head, rows)


def _metrics_csv(grids: Sequence[Grid]) -> str:
    rows: list[list[object]] = []

    def add(g: Grid, quantity: str, layers: str, est: Difference | float | None) -> None:
        if isinstance(est, Difference):
            rows.append([g.experiment, g.metric, quantity, layers, est.value, est.ci_low, est.ci_high])
        elif est is not None:
            rows.append([g.experiment, g.metric, quantity, layers, est, None, None])

    for g in grids:
        for m in layer_metrics(g):
            for q in ("coadaptation", "specificity", "boost_base", "boost_selffer", "drop",
                      "relative_drop", "generality"):
                add(g, q, str(m.n), getattr(m, q))
        for r in table1(g):
            add(g, "table1_boost_base", f"{r.lo}-{r.hi}", r.boost_base)
            add(g, "table1_boost_selffer", f"{r.lo}-{r.hi}", r.boost_selffer)
        for name, series in drops(g).items():
            for n, (d, rel) in series.items():
                add(g, f"drop:{name}", str(n), d)
                add(g, f"relative_drop:{name}", str(n), rel)
        spec = specific_layer(g)
        if spec is not None and spec.n is not None:
            add(g, "specific_layer", str(spec.n), float(spec.n))
    return rows_to_csv(["experiment", "metric", "quantity", "layers", "value", "ci95_low", "ci95_high"], rows)


def write_tables(results: RunResults, grids: Sequence[Grid], out_dir: Path) -> list[Path]:
    """Write ``results_<metric>.csv``, ``results_summary_<metric>.csv`` and ``results_metrics_<metric>.csv``
    (the metric in every name, so reports of two metrics never overwrite each other)."""
    metric = grids[0].metric if grids else "top1"
    files = {
        f"results_{metric}.csv": results_csv(results, metric),
        f"results_summary_{metric}.csv": _summary_csv(grids),
        f"results_metrics_{metric}.csv": _metrics_csv(grids),
    }
    for name, text in files.items():
        write_atomic(Path(out_dir) / name, text)
    return [Path(out_dir) / name for name in files]


# --------------------------------------------------------------------------- entry points


def print_grid(run_dir: Path, console: Console, *, metric: str = "top1") -> None:
    """Print the main table of every experiment of a run and write ``results_<metric>.csv``.

    Raises:
        RunDirError: ``run_dir`` is missing or has no ``plan.json``.
    """
    results = read_results(run_dir)
    grids = build_grids(results, metric)
    write_atomic(Path(run_dir) / f"results_{metric}.csv", results_csv(results, metric))
    _print_grids(console, results, grids, {}, full=False)
    estimates = read_estimates(run_dir)
    if estimates:
        print_estimator_report(console, results, estimates, metric, full=False)
    checks = validity_checks(results, metric)
    write_checks(checks, Path(run_dir), metric)
    print_checks(console, checks)


def _paper_counterpart(grid: Grid, papers: Sequence[Grid]) -> Grid:
    by_name = {p.experiment: p for p in papers}
    if grid.experiment in by_name:
        return by_name[grid.experiment]
    if any(grid.sources.get(t) is None for t in grid.treatments if t not in grid.bases):
        return by_name["random_weights"]
    # a split by meaning (or of unequal halves) stands beside the paper's man-made/natural split
    return by_name["random" if grid.equal_halves and grid.exchangeable else "manmade_natural"]


def _report_run(run_dir: Path, console: Console, *, compare: str | None, plots: bool, metric: str,
                out: Path | None, pool: bool | None) -> None:
    """The report of one run: tables, estimators, validity checks, the paper's scorecard, plots."""
    results = read_results(run_dir)
    grids = build_grids(results, metric, pool)
    export_long(results)
    write_tables(results, grids, run_dir)
    _print_grids(console, results, grids, {}, full=True)
    estimates = read_estimates(run_dir)
    if estimates:  # the estimators (docs/estimators.md) beside retraining
        write_estimator_files(results, estimates, metric, run_dir)
        print_estimator_report(console, results, estimates, metric)
    checks = validity_checks(results, metric, pool)
    write_checks(checks, run_dir, metric)
    if compare == "paper":
        papers = build_grids(load_paper(), metric, pool)
        for grid in (g for g in grids if g.cells):
            for section in compare_sections(grid, _paper_counterpart(grid, papers)):
                section.print(console)
        card = scorecard(grids, checks)
        write_scorecard(card, run_dir, metric)
        print_scorecard(console, card)
    print_checks(console, checks)
    _print_recommendations(console, results, grids, estimates, checks)
    if plots:
        target = Path(out) if out else run_dir
        for path in write_plots(grids, target) + write_estimator_figure(results, estimates, metric, target):
            console.print(f"wrote {path}", highlight=False, markup=False)


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
) -> int:
    """Print the full report of a run and/or of the paper, and write its files.

    Args:
        run_dir: the run directory, or None with ``paper=True`` for the paper alone.
        paper: print the paper's own tables (recomputed from its per-network results).
        compare: ``"paper"`` puts the paper's means beside the run's, by n.
        plots: write Figure 2/3 style plots (PNG + SVG).
        metric: ``top1`` or ``top1_best_k``; default ``top1`` for a run and the paper's
            ``top1_best_k`` for the paper alone. A comparison uses the run's metric for both.
        console: where to print (a recording or narrow Console in tests).
        out: where plots (and, for the paper alone, tables) go; default the run directory,
            or ``./paper-report/`` for the paper alone.
        pool: pool mirror-image treatments (None: decide per experiment, see analysis).

    Returns:
        0 (errors raise).

    Raises:
        RunDirError: the run directory is missing or has no plan.json.
        ResultsError: an unknown metric or comparison, or neither a run nor ``paper``.
    """
    if compare not in (None, "paper"):
        raise ResultsError(f"unknown comparison {compare!r}: the only reference is 'paper'")
    if run_dir is None and not paper:
        raise ResultsError("give a run directory, or ask for the paper's own tables (--paper)")
    if metric is not None:
        check_metric(metric)
    if run_dir is not None:
        _report_run(Path(run_dir), console, compare=compare, plots=plots, metric=metric or "top1", out=out,
                    pool=pool)
    if paper:
        reference = load_paper()
        pgrids = build_grids(reference, metric or PAPER_METRIC, pool)
        title = "Yosinski et al. (2014), recomputed from the published logs"
        console.rule(title) if console.width <= 400 else console.print(Text(f"== {title} ==", style="bold"))
        _print_grids(console, reference, pgrids, HALF_NAMES, full=True)
        if run_dir is None:
            target = Path(out) if out else DEFAULT_PAPER_OUT
            write_tables(reference, pgrids, target)
            if plots:
                for path in write_plots(pgrids, target, HALF_NAMES):
                    console.print(f"wrote {path}", highlight=False, markup=False)
    return 0
