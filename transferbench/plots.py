"""Figures in the style of the paper's Figures 2 and 3 (matplotlib, PNG + SVG).

Figures are built on :class:`matplotlib.figure.Figure` directly (rendered by the Agg
canvas), never through pyplot, so nothing depends on or changes the global backend.
Every series differs by marker shape, fill and line style as well as colour (Okabe-Ito
palette), so the figures read in greyscale.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .analysis import Grid, transfer_source
from .results import write_atomic

__all__ = ["STYLES", "Style", "figure2", "figure3", "save_figure", "write_plots"]

X_LABEL = "Layer n at which network is chopped and retrained"
Y_LABEL = "Top-1 accuracy (higher is better)"
Y_REL_LABEL = "Top-1 relative to base (points)"


@dataclass(frozen=True)
class Style:
    """How one treatment is drawn."""

    color: str
    marker: str
    filled: bool
    linestyle: str | tuple[int, tuple[int, ...]]


#: The paper's treatments: white circles for base, circles for selffers, diamonds for
#: transfers, light (hollow) for fine-tuned.
STYLES: dict[str, Style] = {
    "baseB": Style("#000000", "o", False, ":"),
    "BnB": Style("#0072B2", "o", True, "-"),
    "BnB+": Style("#56B4E9", "s", False, "--"),
    "AnB": Style("#D55E00", "D", True, "-."),
    "AnB+": Style("#CC79A7", "^", False, (0, (1, 1))),
    # a weights file stands where A does: the same colours, its own shapes
    "XnB": Style("#D55E00", "p", True, (0, (6, 2, 1, 2))),
    "XnB+": Style("#CC79A7", "h", False, (0, (2, 1, 2, 3))),
}
_EXTRA = [
    Style("#009E73", "v", True, (0, (5, 1, 1, 1))),
    Style("#E69F00", "P", False, (0, (3, 1, 1, 1, 1, 1))),
    Style("#000000", "X", True, (0, (8, 2))),
    Style("#0072B2", "<", False, (0, (2, 2))),
    Style("#D55E00", ">", True, (0, (4, 1, 1, 1))),
]
_JITTER = 0.07


def _styles(names: Sequence[str]) -> dict[str, Style]:
    extra = itertools.cycle(_EXTRA)
    return {name: STYLES.get(name) or next(extra) for name in names}


def _scatter(ax: Axes, x: float, values: Sequence[float], style: Style, label: str | None) -> None:
    ax.scatter(
        [x] * len(values), list(values), s=22, marker=style.marker, linewidths=0.9, zorder=3,
        facecolors=style.color if style.filled else "white", edgecolors=style.color, label=label,
    )


def _mean_line(ax: Axes, grid: Grid, name: str, style: Style, label: str | None, with_base: bool,
               error_bars: bool = False) -> None:
    layers = [n for n in grid.transfer_layers if grid.get(name, n) is not None]
    if not layers:
        return
    stats = [s for n in layers if (s := grid.get(name, n)) is not None]
    base = grid.base_for(name)
    if with_base and base is not None:
        layers, stats = [0, *layers], [base, *stats]
    ys = [s.mean for s in stats]
    ax.plot(layers, ys, color=style.color, linestyle=style.linestyle, linewidth=1.4, label=label, zorder=2)
    if error_bars:
        _error_bars(ax, layers, stats, style, shift=0.0, scale=1.0)


def _error_bars(ax: Axes, xs: Sequence[float], stats: Sequence, style: Style, shift: float, scale: float) -> None:
    """95% intervals of the means (cells with fewer than three networks have none)."""
    points = [(x, s) for x, s in zip(xs, stats) if s is not None and s.ci_low is not None]
    if not points:
        return
    ys = [scale * (s.mean - shift) for _, s in points]
    err = [[scale * (s.mean - s.ci_low) for _, s in points], [scale * (s.ci_high - s.mean) for _, s in points]]
    ax.errorbar([x for x, _ in points], ys, yerr=err, fmt="none", ecolor=style.color, elinewidth=1.0,
                capsize=3, zorder=2)


def _setup(ax: Axes, grid: Grid, ylabel: str = Y_LABEL) -> None:
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_xticks(grid.layers)
    ax.grid(True, color="0.88", linewidth=0.6)


def figure2(grid: Grid, title: str | None = None) -> Figure:
    """The paper's Figure 2 for one experiment.

    Top: every network as a point by n and treatment (slightly jittered), with lines through
    the means. Bottom: the mean lines only, with the co-adaptation gap (baseB above BnB) and
    the specificity gap (BnB above AnB) hatched and labelled.
    """
    fig = Figure(figsize=(7.5, 8.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    styles = _styles(grid.treatments)
    offsets = {name: (i - (len(grid.treatments) - 1) / 2) * _JITTER for i, name in enumerate(grid.treatments)}
    for name in grid.treatments:
        style = styles[name]
        for n in grid.layers:
            stat = grid.get(name, n)
            if stat is not None:
                first = n == min(m for m in grid.layers if grid.get(name, m) is not None)
                _scatter(top, n + offsets[name], stat.values, style, name if first else None)
        if name not in grid.bases:
            _mean_line(top, grid, name, style, None, with_base=True)
            _mean_line(bottom, grid, name, style, f"{name} mean", with_base=True, error_bars=True)
    _shade_gaps(bottom, grid)
    base = grid.get("baseB", 0)
    if base is not None:
        bottom.axhline(base.mean, color="black", linestyle=":", linewidth=1.0, label="baseB mean")
    _setup(top, grid)
    _setup(bottom, grid)
    top.set_xlabel("")  # shared axis: one label, under the bottom panel
    top.set_title(title or f"{grid.experiment}: each network ({grid.metric})", fontsize=10)
    bottom.set_title("means with 95% intervals; hatched: co-adaptation (//) and specificity (\\\\) drops",
                     fontsize=10)
    top.legend(fontsize=8, loc="lower left", ncol=3)
    bottom.legend(fontsize=8, loc="lower left", ncol=2)
    return fig


def _mean(grid: Grid, treatment: str, n: int) -> float:
    """The mean of a cell the caller knows is there."""
    stat = grid.get(treatment, n)
    if stat is None:
        raise KeyError(f"no {treatment} cell at n={n}")
    return stat.mean


def _shade_gaps(ax: Axes, grid: Grid) -> None:
    base = grid.get("baseB", 0)
    layers = [n for n in grid.transfer_layers if grid.get("BnB", n) is not None]
    if base is None or not layers:
        return
    xs = [0, *layers]
    bnb = [base.mean, *(_mean(grid, "BnB", n) for n in layers)]
    ax.fill_between(xs, [base.mean] * len(xs), bnb, where=[b < base.mean for b in bnb], interpolate=True,
                    facecolor="none", edgecolor="0.35", hatch="//", linewidth=0, label="co-adaptation")
    anb = f"{transfer_source(grid)}nB"
    both = [n for n in layers if grid.get(anb, n) is not None]
    if not both:
        return
    xs = [0, *both]
    top = [base.mean, *(_mean(grid, "BnB", n) for n in both)]
    low = [base.mean, *(_mean(grid, anb, n) for n in both)]
    ax.fill_between(xs, top, low, where=[a < b for a, b in zip(low, top)], interpolate=True,
                    facecolor="none", edgecolor="#D55E00", hatch="\\\\", linewidth=0, label="specificity")


def _direction_label(grid: Grid, name: str, half_names: Mapping[str, str]) -> str:
    src, tgt = grid.sources.get(name), grid.targets.get(name)
    if src is None:
        return f"{name} (frozen random layers, on {half_names.get(tgt or '', tgt)})"
    return f"{name} ({half_names.get(src, src)} -> {half_names.get(tgt or '', tgt)})"


def figure3(grids: Sequence[Grid], half_names: Mapping[str, Mapping[str, str]] | None = None) -> Figure | None:
    """The paper's Figure 3: transfer by direction on a dissimilar split, random weights,
    and every frozen-transfer series relative to its own base.

    The first panel shows each direction of every experiment whose halves are not pooled
    (each line starts at its own base at n = 0); the second the treatments without a source
    network (random weights); the third subtracts each series' base, so the drop of a
    dissimilar split compares directly with that of random halves.

    Returns:
        None when no grid has an unpooled transfer or a source-less treatment.
    """
    half_names = half_names or {}
    dissimilar = [(g, t) for g in grids if not g.pooled for t in g.treatments
                  if t not in g.bases and g.sources.get(t) not in (None, g.targets.get(t))
                  and not t.endswith("+") and g.base_for(t) is not None]
    random = [(g, t) for g in grids for t in g.treatments
              if t not in g.bases and g.sources.get(t) is None and g.base_for(t) is not None]
    if not dissimilar and not random:
        return None
    relative = list(dissimilar) + list(random)
    # The pooled random-halves AnB is the yardstick the dissimilar drop is compared with.
    relative += [(g, "AnB") for g in grids if g.pooled and g.base_for("AnB") is not None
                 and any(g.get("AnB", n) for n in g.transfer_layers)]
    panels = [p for p in (("transfer between dissimilar halves", dissimilar),
                          ("random frozen lower layers", random)) if p[1]]
    fig = Figure(figsize=(5.2 * (len(panels) + 1), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
    cycle = itertools.cycle(_EXTRA[:1] + [STYLES["AnB"], STYLES["BnB"]] + _EXTRA[1:])
    drawn: dict[tuple[str, str], Style] = {}

    def style_of(grid: Grid, name: str) -> Style:
        # One style per series across panels, so a series is recognisable everywhere.
        if (grid.experiment, name) not in drawn:
            drawn[(grid.experiment, name)] = next(cycle)
        return drawn[(grid.experiment, name)]

    for ax, (title, series) in zip(axes, panels):
        for grid, name in series:
            style = style_of(grid, name)
            label = _direction_label(grid, name, half_names.get(grid.experiment, {}))
            _plot_series(ax, grid, name, style, label, relative=False)
        _setup(ax, series[0][0])
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[-1]
    for grid, name in relative:
        style = style_of(grid, name)
        label = f"{grid.experiment}: {_direction_label(grid, name, half_names.get(grid.experiment, {}))}"
        _plot_series(ax, grid, name, style, label, relative=True)
    _setup(ax, relative[0][0], Y_REL_LABEL)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_title("relative to each series' base", fontsize=10)
    ax.legend(fontsize=6, loc="lower left")
    return fig


def _plot_series(ax: Axes, grid: Grid, name: str, style: Style, label: str, relative: bool) -> None:
    base = grid.base_for(name)
    assert base is not None
    layers = [n for n in grid.transfer_layers if grid.get(name, n) is not None]
    shift, scale = (base.mean, 100.0) if relative else (0.0, 1.0)
    xs = [0, *layers]
    stats = [base, *(s for n in layers if (s := grid.get(name, n)) is not None)]
    ys = [scale * (s.mean - shift) for s in stats]
    ax.plot(xs, ys, color=style.color, linestyle=style.linestyle, marker=style.marker,
            markerfacecolor=style.color if style.filled else "white", markersize=5, linewidth=1.3, label=label)
    _error_bars(ax, xs, stats, style, shift, scale)


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``out_dir``, each atomically."""
    paths = []
    for ext, dpi in (("png", 130), ("svg", None)):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=dpi if dpi is not None else "figure")
        path = Path(out_dir) / f"{stem}.{ext}"
        write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths


def write_plots(grids: Sequence[Grid], out_dir: Path,
                half_names: Mapping[str, Mapping[str, str]] | None = None) -> list[Path]:
    """Figure 2 for every experiment with transferred networks (each network, and the means with
    95% intervals), and Figure 3 when it has anything to show (the dissimilar split's directions
    and random weights, also relative to each series' base, beside random halves).

    Returns:
        The files written (``figure2_<experiment>_<metric>.{png,svg}``, ``figure3_<metric>.{png,svg}``).
    """
    written: list[Path] = []
    for grid in grids:  # one Figure 2 per experiment with any transferred (or random-weights) network
        if any(t not in grid.bases for t, _ in grid.cells):
            written += save_figure(figure2(grid), out_dir, f"figure2_{_safe(grid.experiment)}_{grid.metric}")
    fig3 = figure3(grids, half_names)
    if fig3 is not None:
        written += save_figure(fig3, out_dir, f"figure3_{grids[0].metric}")
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
