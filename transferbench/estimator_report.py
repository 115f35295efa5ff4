"""The estimators' part of a report: their curves beside retraining, how well they agreed
with it (beside the depth-only baseline), where they say features turn specific, what they
cost; the files ``results_estimators.csv``, ``results_estimator_validation.csv`` and
``results_estimator_cost.csv``; the figure ``estimators.{png,svg}``.

When no network was retrained (``transferbench run --estimate-only``) the report says
plainly that the curves are a proxy, and how well each estimator tracked retraining where it
was validated (:data:`VALIDATED`, measured on the configs docs/estimators.md names).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .analysis import SpecificLayer, Stat
from .plots import STYLES, save_figure
from .results import EstimateRow, RunResults
from .source_ranking import SourceRanking
from .validation import Agreement, CostSummary, SpecificComparison

if TYPE_CHECKING:
    from .runreport import EstimatorSection

__all__ = [
    "PAPER_SCALE",
    "VALIDATED",
    "estimator_figure",
    "print_estimator_report",
    "write_estimator_figure",
]

#: The paper's grid with the four built-in estimators on its two transfer experiments, as
#: ``transferbench plan configs/yosinski.yaml --set 'experiments.0.estimators=[linear,knn,logme,cka]'
#: --set 'experiments.1.estimators=[linear,knn,logme,cka]'`` counts it: (GPU-hours of the
#: estimators, GPU-hours of the 245 transferred networks) at an effective 20 TFLOP/s. A test
#: recomputes it.
PAPER_SCALE: tuple[float, float] = (0.0612, 1266.7)

#: How each built-in estimator tracked retraining where it was validated (docs/estimators.md
#: gives the commands): what an ``--estimate-only`` report quotes.
VALIDATED: dict[str, str] = {
    "linear": "ranks the layers no better than depth alone (rho with AnB +.79 and +.35 against "
              "depth's +.92 and +.35, synthetic images and signals); at equal n, where depth knows "
              "nothing, +.64 and +.40 (+.40 to +.80 over two replicates)",
    "knn": "ranks the layers no better than depth alone (+.85 and +.14 against +.92 and +.35); "
           "tracks BnB - AnB (+.88, +.41); at equal n +.48 and +.00; found retraining's specific "
           "layer each time there was one",
    "logme": "does not rank the layers (-.08 and -.19 against depth's +.92 and +.35); tracks BnB - "
             "AnB (+.92, +.38); at equal n +.44 and +.60 (+.44 to +.70 over two replicates)",
    "cka": "ranks the layers worse than depth (+.69 and +.31 against +.92 and +.35); its gap and its "
           "ranking at equal n are unreliable (-.40 to +.40); says features turn specific at n=1",
}


def _num(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _ratio(value: float | None) -> str:
    return "" if value is None else (f"{value:.2g}" if value < 10 else f"{value:,.0f}")


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)


def _print(console: Console, title: str, table: Table | None, note: str = "") -> None:
    console.print(Text(title, style="bold"))
    if table is not None:
        console.print(table)
    if note:
        console.print(Text(note, style="dim"))
    console.print()


# --------------------------------------------------------------------------- curves


def _pairs(estimates: Sequence[EstimateRow], experiment: str) -> list[tuple[str, str]]:
    """(source, target) pairs of an experiment: transfers first, then own bases."""
    pairs = dict.fromkeys((e.source, e.target) for e in estimates if e.experiment == experiment)
    return sorted(pairs, key=lambda p: (p[0] == p[1], p))


def _retrained(results: RunResults, experiment: str, pair: tuple[str, str], metric: str
               ) -> dict[str, dict[int, list[float]]]:
    """treatment -> n -> accuracies, for the treatments that transfer along ``pair``."""
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results.rows:
        value = r.value(metric)
        if r.experiment == experiment and r.kind == "transfer" and (r.source, r.target) == pair and value is not None:
            out[r.treatment][r.n].append(value)
    return out


def _curves(estimates: Sequence[EstimateRow], experiment: str, pair: tuple[str, str]
            ) -> dict[str, dict[int, list[float]]]:
    """estimator -> n -> scores (one per split seed) on ``pair``."""
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in estimates:
        if e.experiment == experiment and (e.source, e.target) == pair and e.value is not None:
            out[e.estimator][e.n].append(e.value)
    return out


def _curve_table(results: RunResults, estimates: Sequence[EstimateRow], experiment: str,
                 pair: tuple[str, str], metric: str) -> Table:
    retrained = _retrained(results, experiment, pair, metric)
    curves = _curves(estimates, experiment, pair)
    layers = sorted({n for c in curves.values() for n in c})
    table = _table()
    table.add_column("n", justify="right")
    for name in [*retrained, *curves]:
        table.add_column(name, justify="right")
    for n in layers:
        cells = [f"{Stat.of(v[n]).mean:.3f}" if v.get(n) else "" for v in retrained.values()]
        cells += [f"{Stat.of(v[n]).mean:.4g}" if v.get(n) else "" for v in curves.values()]
        table.add_row(str(n), *cells)
    return table


# --------------------------------------------------------------------------- validation


def _short(value: float | None) -> str:
    """``+.93``, ``-1.00``: two decimals without the leading zero, so tables fit 80 columns."""
    if value is None:
        return ""
    text = f"{value:+.2f}"
    return text.replace("0.", ".", 1) if abs(value) < 1 else text


def _ci(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"{_short(low)}/{_short(high)}"


_ORDER = {"layers": 0, "gap": 1, "same_n": 2}


def _vs(a: Agreement) -> str:
    return a.reference + {"gap": " gap", "same_n": " same n"}.get(a.comparison, "")


def _validation_table(rows: Sequence[Agreement]) -> Table:
    table = _table()
    for head in ("vs", "estimator", "ρ", "95%", "τ", "wτ", "95%", "regret", "units"):
        table.add_column(head, justify="left" if head in ("vs", "estimator") else "right")
    for a in sorted(rows, key=lambda a: (_ORDER.get(a.comparison, 3), a.reference)):
        ci = a.spearman_ci or (None, None)
        w = a.weighted_tau
        table.add_row(_vs(a), a.estimator, _short(a.spearman), _ci(*ci), _short(a.kendall),
                      _short(w.value if w else None), _ci(w.ci_low, w.ci_high) if w else "",
                      "" if a.regret is None else f"{a.regret.value:.3f}", str(a.units))
    return table


def _baseline_table(rows: Sequence[Agreement]) -> Table:
    table = _table()
    for head in ("vs", "estimator", "strongest", "its ρ", "Δρ 95%", "beats", "ceiling", "share"):
        table.add_column(head, justify="left" if head in ("vs", "estimator", "strongest", "beats") else "right")
    for a in sorted(rows, key=lambda a: (_ORDER.get(a.comparison, 3), a.reference)):
        best = next((b for b in a.baselines if b.name == a.strongest), None)
        diff = best.difference if best else None
        c = a.ceiling
        ceiling = c.seed_to_seed.value if c and c.seed_to_seed else None
        share = c.fraction.value if c and c.fraction else None
        table.add_row(_vs(a), a.estimator, a.strongest or "", _short(best.spearman.value if best and best.spearman
                                                                      else None),
                      _ci(diff.ci_low, diff.ci_high) if diff else "", a.beats, _short(ceiling),
                      "" if share is None else f"{share:.0%}")
    return table


_VALIDATION_NOTE = (
    "ρ, τ, wτ: Spearman, Kendall (tau-b) and weighted Kendall (hyperbolic weights, the top "
    "counts most) of each estimator with retraining; 95%: cluster bootstrap over the independent "
    "units (split seed x direction; none with fewer than 3); regret: the accuracy of the layer "
    "best on average minus that of the layer the estimator ranks first, mean over units. AnB: the estimator on "
    "A->B vs AnB's accuracy across n and split seeds; BnB-AnB gap: e(B->B) - e(A->B) vs BnB - AnB; "
    "frozen same n: transfers at equal n, e(S->T) - e(T->T) vs accuracy / base, where depth knows "
    "nothing (ρ, wτ: mean within n). Every treatment is a ground truth of its protocol (AnB frozen, "
    "AnB+ fine-tuned, ...). All of it in results_estimator_validation.csv")

_BASELINE_NOTE = (
    "strongest: the free baseline with the highest ρ on the same points (depth: the rank of n; "
    "static: the mean ground truth at n on the run's other experiments; source accuracy; random: "
    "a random score, whose ρ is 0 on average); Δρ 95%: the estimator's ρ minus the baseline's, "
    "paired on the same resampled units; beats: yes when that interval lies above 0, no when "
    "below, else not determined. ceiling: how well one unit's retraining ranks another's layers "
    "(mean ρ over pairs of units); share: the estimator's within-unit ρ as a fraction of it")


def _predicts_lines(rows: Sequence[Agreement]) -> list[str]:
    """Per estimator and non-frozen ground truth: whether the interval lets us say it predicts it."""
    lines = []
    for a in rows:
        if a.comparison != "layers" or a.ground_truth in ("", "frozen"):
            continue
        ci = _ci(*(a.spearman_ci or (None, None)))
        if a.predicts():
            said = f"predicts the {a.ground_truth} ground truth ({a.reference}): ρ {_short(a.spearman)} [{ci}]"
        elif a.spearman_ci is None:
            said = f"not determined against the {a.ground_truth} ground truth ({a.reference}): no interval"
        elif a.spearman_ci[1] < 0:
            said = (f"ranks the {a.ground_truth} ground truth ({a.reference}) the wrong way round: ρ "
                    f"{_short(a.spearman)} [{ci}]")
        else:
            said = (f"not shown to predict the {a.ground_truth} ground truth ({a.reference}): ρ "
                    f"{_short(a.spearman)} [{ci}] includes 0")
        lines.append(f"{a.experiment}: {a.estimator} {said}")
    return lines


def _ground_truth_lines(section: EstimatorSection) -> list[str]:
    out = []
    for g in section.ground_truths:
        rho, w = g.spearman, g.weighted_tau
        ci = _ci(rho.ci_low, rho.ci_high) if rho else ""
        out.append(f"{g.experiment}: {g.first} and {g.second} rank their {g.points} points with ρ "
                   f"{_short(rho.value if rho else None)}{f' [{ci}]' if ci else ''}, wτ "
                   f"{_short(w.value if w else None)}")
    return out


def _where(spec: SpecificLayer | None) -> str:
    if spec is None or not spec.determined:
        return "not determined (fewer than 3 units)"
    return "no layer" if spec.n is None else f"n={spec.n}"


def _specific_lines(comparisons: Sequence[SpecificComparison]) -> list[str]:
    lines = []
    for s in comparisons:
        by_retraining, by_estimate = _where(s.retraining), _where(s.estimate)
        if s.retraining is None:
            by_retraining = "nothing: it needs BnB and AnB"
        lines.append(f"{s.experiment}: {s.estimator} says features turn specific at {by_estimate}; "
                     f"retraining says {by_retraining}")
    return lines


# --------------------------------------------------------------------------- which source


def _picks(right: int, units: int) -> str:
    return f"{right}/{units}" if units else ""


def _source_table(rows: Sequence[SourceRanking]) -> Table:
    table = _table()
    for head in ("ground truth", "estimator", "picks", "95%", "ρ", "95%", "wτ", "regret", "strongest", "its picks",
                 "beats", "ceiling"):
        table.add_column(head, justify="left" if head in ("ground truth", "estimator", "strongest", "beats")
                         else "right")
    for r in rows:
        p = r.picks
        best = next((b for b in r.baselines if b.name == r.strongest), None)
        if best is None or best.name == "random":
            theirs = f"1/{len(r.sources)}" if best is not None and r.pairwise else ("ρ 0" if best else "")
        elif r.pairwise:
            theirs = _picks(best.picks.right, best.picks.units) if best.picks else ""
        else:
            theirs = f"ρ {_short(best.spearman.value)}" if best.spearman else ""
        rho, w = r.spearman, r.weighted_tau
        table.add_row(f"{r.treatments[r.sources[0]].split('@')[0]} ({r.ground_truth})", r.estimator,
                      _picks(p.right, p.units), _ci(p.ci_low, p.ci_high), _short(rho.value if rho else None),
                      _ci(rho.ci_low, rho.ci_high) if rho else "", _short(w.value if w else None),
                      "" if r.regret is None else f"{r.regret.value:.3f}", r.strongest or "", theirs, r.beats,
                      "" if r.ceiling is None else f"{r.ceiling.value:.2f}")
    return table


_SOURCE_NOTE = (
    "picks: units in which the estimator's first choice is the source retraining found best (of the "
    "units retraining decides), with its exact 95% interval; with 2 sources that choice is all a "
    "ranking says (no correlation of 2 items is shown); ρ, wτ: with 3+ sources, the mean within-unit "
    "Spearman and weighted tau, 95% over units; regret: accuracy of the source best on average minus "
    "the pick's; strongest: the free baseline that picks best (source accuracy: the source's own "
    "top-1 on its task; parameters; static: a source's mean ground truth on the other units; random: "
    "1 in k); beats: with 2 sources by the exact sign test over the units where only one of the two picks "
    "right (against random: the pick rate's exact interval against 1/2), with more by the interval of the "
    "paired difference of ρ; ceiling: how often two units' "
    "retraining picks the same source (2 sources), or their mean ρ. Every unit reads the same source "
    "networks: the intervals cover the target's retraining, not the sources'. All of it in "
    "results_source_ranking.csv")


def _print_sources(console: Console, rows: Sequence[SourceRanking], metric: str) -> None:
    groups = list(dict.fromkeys((r.experiment, r.target, r.n, r.sources) for r in rows))
    for i, (exp, target, n, sources) in enumerate(groups):
        mine = [r for r in rows if (r.experiment, r.target, r.n, r.sources) == (exp, target, n, sources)]
        _print(console, f"{exp}: which source for {target}? {', '.join(sources)} at n={n}, {mine[0].units} units "
               f"({metric})", _source_table(mine), _SOURCE_NOTE if i == len(groups) - 1 else "")


# --------------------------------------------------------------------------- cost


def _cost_table(cost: CostSummary) -> Table:
    table = _table()
    for head in ("estimator", "jobs", "seconds", "retraining s / estimator s"):
        table.add_column(head, justify="right" if head != "estimator" else "left")
    for name, seconds in cost.estimator_s.items():
        ratio = cost.ratio(name)
        table.add_row(name, str(cost.estimator_jobs[name]), f"{seconds:.1f}", _ratio(ratio))
    table.add_row("all", str(sum(cost.estimator_jobs.values())), f"{cost.total_estimator_s:.1f}", _ratio(cost.ratio()))
    return table


def _cost_note(cost: CostSummary) -> str:
    est, retrain = PAPER_SCALE
    paper = (f"At the paper's scale (`transferbench plan configs/yosinski.yaml` with these four "
             f"estimators) the estimators need {est:.2g} GPU-hours against {retrain:,.0f} for the "
             f"transferred networks, {retrain / est:,.0f} times less; `transferbench plan CONFIG` "
             "projects any config.")
    if not cost.transfer_networks:
        return f"no network was retrained here; the base networks took {cost.base_s:.0f} s. {paper}"
    return (f"the {cost.transfer_networks} retrained networks took {cost.retraining_s:.0f} s, "
            f"{cost.finetune_s:.0f} s of it fine-tuned (no frozen-feature cache helps those); the base "
            f"networks, needed by both, {cost.base_s:.0f} s. Estimator seconds are wall time on this "
            f"machine, features included. {paper}")


# --------------------------------------------------------------------------- entry points


def print_estimator_report(console: Console, results: RunResults, section: EstimatorSection, metric: str = "top1",
                           *, full: bool = True) -> None:
    """Print the estimators' curves and, with ``full``, their validation, specific layers and cost
    (every number from ``section``, as the report computed it)."""
    estimates = section.rows
    experiments = list(dict.fromkeys(e.experiment for e in estimates))
    for exp in experiments:
        for pair in _pairs(estimates, exp):
            network = f"base{pair[0]}" if pair[0] in ("A", "B") else f"the weights file {pair[0]}"
            _print(console, f"{exp}: estimators on {pair[0]}n{pair[1]} (layer n of {network} on "
                   f"{pair[1]}'s examples)", _curve_table(results, estimates, exp, pair, metric),
                   f"means over split seeds; retrained accuracy ({metric}) where measured")
    rows = section.agreements
    if not rows:
        _print(console, "Estimates only: a proxy, not a measurement", None, _proxy_note(estimates))
        if not full:
            return
    elif full:
        experiments = list(dict.fromkeys(a.experiment for a in rows))
        for exp in experiments:
            title = "all experiments" if exp == "*" else exp
            mine = [a for a in rows if a.experiment == exp]
            _print(console, f"{title}: estimators against retraining ({metric})", _validation_table(mine),
                   _VALIDATION_NOTE if exp == experiments[-1] else "")
            _print(console, f"{title}: against the strongest free baseline, and the ceiling", _baseline_table(mine),
                   _BASELINE_NOTE if exp == experiments[-1] else "")
        predicts = _predicts_lines(rows)
        if predicts:
            _print(console, "Beyond frozen features", None, "\n".join(predicts))
        truths = _ground_truth_lines(section)
        if truths:
            _print(console, "Ground truths against each other", None, "\n".join(truths))
    if full and section.sources:
        _print_sources(console, section.sources, metric)
    if full:
        lines = _specific_lines(section.specific)
        if lines and rows:
            _print(console, "Where features turn specific", None, "\n".join(lines))
        _print(console, "What the estimators cost", _cost_table(section.cost), _cost_note(section.cost))


def _proxy_note(estimates: Sequence[EstimateRow]) -> str:
    names = list(dict.fromkeys(e.estimator for e in estimates))
    lines = ["No network of these experiments was retrained, so the curves above are what cheap "
             "estimators say layer n would give, not what retraining gives. Where they were validated "
             "against retraining (docs/estimators.md):"]
    lines += [f"  {name}: {VALIDATED.get(name, 'not validated by transferbench')}" for name in names]
    lines.append("Run the same config without --estimate-only (into the same directory: the base "
                 "networks and estimates are reused) to measure it.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figure

# Okabe-Ito colours the retrained treatments (STYLES) leave free, then greys
_EST_STYLES = [("#009E73", "v", "-"), ("#E69F00", "P", "--"), ("#000000", "X", "-."), ("#888888", "<", ":"),
               ("#009E73", ">", (0, (5, 1))), ("#E69F00", "*", (0, (1, 1)))]


def _scaled(series: dict[int, float], how: str) -> dict[int, float]:
    """Min-max to [0, 1] (``range``), or divided by the largest magnitude (``peak``)."""
    values = list(series.values())
    if how == "range":
        lo, hi = min(values), max(values)
        return {n: (v - lo) / (hi - lo) if hi > lo else 0.5 for n, v in series.items()}
    peak = max(abs(v) for v in values)
    return {n: v / peak if peak > 0 else 0.0 for n, v in series.items()}


def _means(by_n: dict[int, list[float]]) -> dict[int, float]:
    return {n: math.fsum(v) / len(v) for n, v in sorted(by_n.items()) if v}


def _gap(own: dict[int, float], other: dict[int, float]) -> dict[int, float]:
    return {n: own[n] - other[n] for n in own if n in other}


def _selffer(results: RunResults, experiment: str, treatment: str, target: str) -> str | None:
    protocol = {r.treatment: r.protocol for r in results.rows if r.experiment == experiment}
    return next((t for t, p in protocol.items() if p == protocol.get(treatment) and t != treatment
                 and any(r.treatment == t and r.source == r.target == target for r in results.rows)), None)


def _draw(ax: Axes, series: dict[int, float], label: str, style: tuple, filled: bool = True) -> None:
    color, marker, line = style
    xs = sorted(series)
    ax.plot(xs, [series[n] for n in xs], color=color, marker=marker, linestyle=line, linewidth=1.3, markersize=5,
            markerfacecolor=color if filled else "white", label=label)


def _panel(top: Axes, bottom: Axes, results: RunResults, estimates: Sequence[EstimateRow], exp: str,
           metric: str) -> None:
    pair = _pairs(estimates, exp)[0]
    src, tgt = pair
    retrained = {t: _means(v) for t, v in _retrained(results, exp, pair, metric).items()}
    for t, series in retrained.items():
        known = STYLES.get(t)
        look = (known.color, known.marker, known.linestyle) if known else ("#D55E00", "D", "-")
        _draw(top, _scaled(series, "range"), f"{t} (retrained)", look, filled=not t.endswith("+"))
        selffer = _selffer(results, exp, t, tgt)
        if src == tgt or t.endswith("+"):  # the specificity gap is the frozen transfer's
            continue
        if selffer:
            own = _means(_retrained(results, exp, (tgt, tgt), metric)[selffer])
        else:  # no selffer: the drop from the target's own base, as the validation uses
            bases = [v for r in results.rows if r.experiment == exp and r.kind == "base" and r.target == tgt
                     and (v := r.value(metric)) is not None]
            own = {n: math.fsum(bases) / len(bases) for n in series} if bases else {}
        if own:
            _draw(bottom, _scaled(_gap(own, series), "peak"), f"{selffer or 'base' + tgt} - {t} (retrained)", look,
                  not t.endswith("+"))
    curves = {k: _means(v) for k, v in _curves(estimates, exp, pair).items()}
    own_curves = {k: _means(v) for k, v in _curves(estimates, exp, (tgt, tgt)).items()}
    for i, (name, series) in enumerate(curves.items()):
        style = _EST_STYLES[i % len(_EST_STYLES)]
        _draw(top, _scaled(series, "range"), name, style)
        if src != tgt and name in own_curves and len(_gap(own_curves[name], series)) > 0:
            _draw(bottom, _scaled(_gap(own_curves[name], series), "peak"), f"{name}: e({tgt}n{tgt}) - e({src}n{tgt})",
                  style)
    top.set_title(f"{exp}: {src}n{tgt}, each series min-max scaled over n", fontsize=9)
    bottom.set_title("specificity gap (frozen), each divided by its largest |value|", fontsize=9)
    for ax in (top, bottom):
        ax.set_xticks(sorted({e.n for e in estimates if e.experiment == exp}))
        ax.set_xlabel("Layer n")
        ax.grid(True, color="0.88", linewidth=0.6)
        ax.legend(fontsize=6, loc="best")
    bottom.axhline(0.0, color="black", linewidth=0.8)


def estimator_figure(results: RunResults, estimates: Sequence[EstimateRow], metric: str = "top1") -> Figure | None:
    """Estimators vs retraining, one column of panels per experiment: top, each estimator's
    curve on a transfer (A->B) beside the retrained treatments' (AnB, AnB+), each scaled to
    [0, 1] over n so shapes compare; bottom, the specificity gap (BnB - AnB, and each
    estimator on the target's own base minus on the source). None without estimates."""
    experiments = [exp for exp in dict.fromkeys(e.experiment for e in estimates)
                   if any(e.value is not None for e in estimates if e.experiment == exp)]
    if not experiments:
        return None
    fig = Figure(figsize=(4.8 * len(experiments), 7.2), layout="constrained")
    axes = fig.subplots(2, len(experiments), squeeze=False)
    for j, exp in enumerate(experiments):
        _panel(axes[0][j], axes[1][j], results, estimates, exp, metric)
    return fig


def write_estimator_figure(results: RunResults, estimates: Sequence[EstimateRow], metric: str,
                           out_dir: Path) -> list[Path]:
    """``estimators.{png,svg}`` into ``out_dir`` (nothing without estimates)."""
    fig = estimator_figure(results, estimates, metric)
    return [] if fig is None else save_figure(fig, out_dir, "estimators")
