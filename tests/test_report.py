"""Report tables, files and plots, on a hand-made run directory and on the paper's data."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection, PolyCollection
from rich.console import Console

from tests.test_analysis import write_run  # the documented run-directory format, with known values
from transferbench.analysis import CANONICAL, build_grids
from transferbench.errors import ResultsError, RunDirError
from transferbench.paperdata import HALF_NAMES, load_paper
from transferbench.plots import STYLES, X_LABEL, Y_LABEL, figure2, figure3, write_plots
from transferbench.report import print_report, run_report
from transferbench.results import read_results as load_run
from transferbench.runreport import read_report


def print_grid(run_dir: Path, console: Console) -> None:
    """What ``run`` prints and writes at its end: the short report of the run's computed report."""
    from transferbench.report_files import write_report

    report = read_report(run_dir)
    write_report(report, run_dir)
    print_report(console, report, full=False)


def _console() -> Console:
    return Console(record=True, width=80, force_terminal=False, color_system=None, file=io.StringIO())


def _check_fits(text: str) -> None:
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert "…" not in text  # rich truncates cells with an ellipsis when they do not fit


# --------------------------------------------------------------------------- report


def test_report_fits_80_columns_and_writes_files(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    console = _console()
    run_report(run, console=console, plots=False)
    text = console.export_text()
    _check_fits(text)
    # the main grid row n=3 (pooled by default: equal halves): BnB .800±.000, AnB .710±.014
    row3 = next(line for line in text.splitlines() if line.startswith("3   l3"))
    assert row3.split()[2:] == [".800±.000", ".820±.000", ".710±.014", ".840±.000"]
    assert "1 pending" in text and "1 failed" in text and "NaN loss" in text
    assert "Features turn specific at n=3" in text
    for name in ("results_top1.csv", "results_long.csv", "results_long.jsonl", "results_summary_top1.csv",
                 "results_metrics_top1.csv"):
        assert (run / name).stat().st_size > 0, name


def test_reports_of_two_metrics_never_overwrite_each_other(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    run_report(run, console=_console(), metric="top1")
    first = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.suffix in (".csv", ".png")}
    run_report(run, console=_console(), metric="top1_best_k")
    for name, data in first.items():
        if not name.startswith("results_long"):  # the tidy export holds every metric
            assert (run / name).read_bytes() == data, f"{name} was overwritten by a report of another metric"
            assert "top1" in name
    for stem in ("results_top1_best_k.csv", "results_summary_top1_best_k.csv", "figure2_main_top1_best_k.png"):
        assert (run / stem).is_file()
    with open(run / "results_top1_best_k.csv", newline="") as fh:
        assert {r["metric"] for r in csv.DictReader(fh)} == {"top1_best_k"}


def test_unpooled_report_splits_wide_grids(tmp_path: Path) -> None:
    console = _console()
    run_report(write_run(tmp_path), pool=False, plots=False, console=console)
    text = console.export_text()
    _check_fits(text)
    # 8 treatments (baseA, AnA, BnA beside the canonical five): two tables of at most five
    assert "main: top-1 (top1) (1/2)" in text and "main: top-1 (top1) (2/2)" in text
    assert ".790±.014" in text  # baseA alone, not pooled into baseB


def test_report_of_a_run_with_nothing_finished(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    for record in (run / "records").iterdir():
        record.unlink()
    console = _console()
    run_report(run, compare="paper", plots=False, console=console)
    text = console.export_text()
    assert "no top1 results yet (30 networks pending, 0 failed)" in text
    assert "beside the paper" not in text
    assert (run / "results_top1.csv").read_text().count("\n") == 1 + 8  # header + 2 seeds x 4 n


def test_results_csv_has_one_row_per_experiment_seed_and_n(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    print_grid(run, _console())
    with open(run / "results_top1.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["split_seed"], r["n"]) for r in rows] == [(s, n) for s in "01" for n in "0123"]
    assert list(rows[0])[:5] == ["experiment", "split", "split_seed", "n", "metric"]
    head = [c for c in rows[0] if c in CANONICAL]
    assert head == list(CANONICAL)  # canonical order first
    seed1_n3 = rows[-1]
    assert float(seed1_n3["AnB"]) == pytest.approx(0.72) and seed1_n3["baseB"] == ""
    assert rows[1]["BnA"] == ""  # pending cell: empty, not zero


def test_print_grid_shows_the_main_table_only(tmp_path: Path) -> None:
    console = _console()
    print_grid(write_run(tmp_path), console)
    text = console.export_text()
    _check_fits(text)
    assert "main: top-1 (top1)" in text and ".800±.016" in text  # baseB pooled with baseA
    assert "Table 1" not in text and "derived metrics" not in text


def test_metric_option_changes_the_numbers(tmp_path: Path) -> None:
    console = _console()
    run_report(write_run(tmp_path), console=console, plots=False, metric="top1_best_k")
    text = console.export_text()
    assert "main: top-1 (top1_best_k)" in text and ".720±.014" in text


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not found"):
        run_report(tmp_path / "missing", console=_console())
    with pytest.raises(RunDirError, match="plan.json"):
        print_grid(tmp_path, _console())
    run = write_run(tmp_path / "run")
    with pytest.raises(ResultsError, match="paper"):
        run_report(run, compare="imagenet", console=_console())
    with pytest.raises(ResultsError, match="metric"):
        run_report(run, metric="top3", console=_console())
    with pytest.raises(ResultsError):
        run_report(None, console=_console())


def test_paper_report_reproduces_paper_md(tmp_path: Path) -> None:
    console = _console()
    run_report(None, paper=True, plots=False, console=console, out=tmp_path)
    text = console.export_text()
    _check_fits(text)
    lines = text.splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("0 ")))].split()[-1] == ".625±.005"
    table1 = {x.split()[0]: x.split()[2:] for x in lines if x.strip()[:3] in ("1-7", "3-7", "5-7")}
    assert [v[0][:4] for v in table1.values()] == ["+1.6", "+1.8", "+2.1"]
    assert ".291" in text and ".399" in text and ".492" in text and ".403" in text
    assert "24.6 (45.8%)" in text  # man-made at n=7: 25 points below its base
    assert (tmp_path / "results_top1_best_k.csv").stat().st_size > 0


def test_compare_with_the_paper(tmp_path: Path) -> None:
    console = _console()
    run_report(write_run(tmp_path), compare="paper", plots=False, console=console)
    text = console.export_text()
    _check_fits(text)
    assert "main beside the paper (random)" in text
    row1 = next(x for x in text.splitlines()[text.splitlines().index("main beside the paper (random)"):]
                if x.startswith("1 "))
    # run BnB .810 beside paper BnB (final top1) .626
    assert row1.split()[1:3] == [".810", ".626"]
    # unpooled, the equal halves still compare with the paper's random halves
    console = _console()
    run_report(tmp_path, compare="paper", pool=False, plots=False, console=console)
    assert "main beside the paper (random)" in console.export_text()


def test_a_split_by_meaning_compares_with_the_papers_manmade_natural_split(tmp_path: Path) -> None:
    """Equal halves drawn by meaning (one superclass against another) are the paper's
    dissimilar experiment, not its random halves."""
    import json

    run = write_run(tmp_path)
    plan = json.loads((run / "plan.json").read_text())
    plan["exchangeable"] = {"main": False}
    (run / "plan.json").write_text(json.dumps(plan))
    console = _console()
    run_report(run, compare="paper", plots=False, console=console)
    text = console.export_text()
    assert "main beside the paper (manmade_natural)" in text
    assert "main beside the paper (random)" not in text


# --------------------------------------------------------------------------- plots


def test_figure2_structure(tmp_path: Path) -> None:
    (grid,) = build_grids(load_run(write_run(tmp_path)), "top1")
    fig = figure2(grid)
    top, bottom = fig.axes
    assert bottom.get_xlabel() == X_LABEL and top.get_ylabel() == Y_LABEL
    points = [c for c in top.collections if isinstance(c, PathCollection)]
    assert sorted(c.get_label() for c in points if not c.get_label().startswith("_")) == sorted(CANONICAL)
    # baseB pooled with baseA: 4; then 4 treatments x 3 layers x 2 seeds (AnA failed, BnA pending)
    assert sum(len(c.get_offsets()) for c in points) == 4 + 4 * 3 * 2
    labels = [line.get_label() for line in bottom.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["BnB mean", "BnB+ mean", "AnB mean", "AnB+ mean", "baseB mean"]
    # the mean lines carry 95% intervals where a cell has three networks or more (here baseB: 4)
    assert any(c.get_label().startswith("_") for c in bottom.collections if not isinstance(c, PolyCollection))
    hatched = [c for c in bottom.collections if isinstance(c, PolyCollection)]
    assert [c.get_label() for c in hatched] == ["co-adaptation", "specificity"]
    assert all(c.get_hatch() for c in hatched)


def test_styles_read_in_greyscale() -> None:
    # marker shape + fill + line style alone must tell the canonical series apart
    keys = {(s.marker, s.filled, str(s.linestyle)) for s in STYLES.values()}
    assert len(keys) == len(STYLES) and len({str(s.linestyle) for s in STYLES.values()}) == len(STYLES)


def test_figure3_on_the_paper() -> None:
    grids = build_grids(load_paper(), "top1_best_k")
    fig = figure3(grids, HALF_NAMES)
    dissimilar, random_weights, relative = fig.axes

    def series(ax):
        return [line for line in ax.get_lines() if not line.get_label().startswith("_")]

    assert [line.get_label() for line in series(dissimilar)] == [
        "AnB (natural -> man-made)", "BnA (man-made -> natural)"]
    assert len(series(random_weights)) == 1
    assert len(series(relative)) == 4  # 2 directions, random weights, random halves
    random_halves = series(relative)[3]
    assert random_halves.get_ydata()[-1] == pytest.approx(-8.3, abs=0.1)
    assert figure3([g for g in grids if g.experiment == "random"]) is None


def test_write_plots_png_and_svg(tmp_path: Path) -> None:
    grids = build_grids(load_paper(), "top1_best_k")
    paths = write_plots(grids, tmp_path, HALF_NAMES)
    figure2s = {f"figure2_{e}_top1_best_k.{x}" for e in ("random", "manmade_natural", "random_weights")
                for x in ("png", "svg")}
    assert {p.name for p in paths} == figure2s | {"figure3_top1_best_k.png", "figure3_top1_best_k.svg"}
    assert all(p.stat().st_size > 1000 for p in paths)
    assert (tmp_path / "figure3_top1_best_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "figure2_random_top1_best_k.svg").read_text()[:2000]


def test_report_writes_plots_into_the_run_dir(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    run_report(run, console=_console())
    assert (run / "figure2_main_top1.png").stat().st_size > 0
    assert (run / "figure2_main_top1.svg").stat().st_size > 0
