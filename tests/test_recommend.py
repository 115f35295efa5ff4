"""The recommendation of a weights-file experiment, on hand-made results."""

from __future__ import annotations

from rich.console import Console

from transferbench.analysis import build_grids, layer_metrics, table1, transfer_source
from transferbench.recommend import EstimatorView, estimator_views, recommend
from transferbench.report import _print_recommendations
from transferbench.results import EstimateRow, ResultRow, RunResults
from transferbench.runreport import RunReport, experiment_report
from transferbench.validation import agreements

NAMES = ("conv1", "conv2", "conv3", "fc4")


def _results(cells: dict[tuple[str, int], list[float]], source: str = "X") -> RunResults:
    rows = []
    for (treatment, n), values in cells.items():
        base = treatment.startswith("base")
        for i, value in enumerate(values):
            rows.append(ResultRow(
                experiment="e", split="superclass", split_seed=i, treatment=treatment, n=n,
                job_id=f"{treatment}-{n}-{i}", status="ok", top1=value, kind="base" if base else "transfer",
                source=None if base else source, target="B", num_classes=10,
                protocol=None if base else ("finetune" if treatment.endswith("+") else "frozen")))
    return RunResults(name="r", config_hash="h", num_layers=4, layer_names=NAMES, rows=tuple(rows))


def _grid(cells, source="X"):
    results = _results(cells, source)
    return build_grids(results, "top1")[0], results


CLEAR = {
    ("baseB", 0): [0.750, 0.760],
    ("XnB", 1): [0.800, 0.810], ("XnB", 2): [0.800, 0.805], ("XnB", 3): [0.700, 0.710],
    ("XnB+", 1): [0.850, 0.860], ("XnB+", 2): [0.860, 0.865], ("XnB+", 3): [0.870, 0.880],
}


def test_the_deepest_frozen_n_within_noise_and_fine_tuning_with_intervals():
    grid, _ = _grid(CLEAR)
    rec = recommend(grid)
    assert rec is not None and (rec.best_n, rec.n, rec.within) == (1, 2, [1, 2])
    assert rec.gap.ci_low is not None and rec.gap.ci_low <= 0 <= rec.gap.ci_high
    assert rec.finetune_vs_frozen.ci_low > 0 and rec.finetune_vs_base.ci_low > 0
    assert rec.finetune_best_n == 3
    text = "\n".join(rec.lines(NAMES))
    assert "Freeze layers 1..2: n=2 (conv2) is the deepest frozen transfer within noise" in text
    assert "within noise: n = 1, 2" in text
    assert "fine-tuning (XnB+) beats frozen transfer (XnB) (+6.0 points, 95% interval" in text
    assert "Fine-tuned (XnB+, n=2) beats training from scratch (baseB)" in text
    assert "Frozen (XnB, n=2) beats training from scratch" in text
    assert "(3 degrees of freedom)" in text


def test_hedged_words_follow_the_intervals():
    cells = {**CLEAR, ("XnB+", 2): [0.790, 0.820], ("baseB", 0): [0.900, 0.910]}
    rec = recommend(_grid(cells)[0])
    text = "\n".join(rec.lines(NAMES))
    assert "fine-tuning (XnB+) cannot be told apart from frozen transfer (XnB)" in text
    assert "Frozen (XnB, n=2) is worse than training from scratch (baseB)" in text
    assert text.startswith("Frozen transfer does not pay here: even at its best it is below training from scratch "
                           "(baseB). If layers must stay frozen, freeze at most layers 1..2: n=2 (conv2)")


def test_one_network_per_cell_says_the_noise_is_unknown():
    cells = {key: values[:1] for key, values in CLEAR.items()}
    cells[("XnB", 2)] = [0.795]
    rec = recommend(_grid(cells)[0])
    assert rec.n == 2 and rec.gap.ci_low is None
    text = "\n".join(rec.lines(NAMES))
    assert "noise is unknown and 1 point of top-1 is taken as noise" in text
    assert "one network per cell: no interval" in text and "may be noise" in text
    cells[("XnB", 2)] = [0.780]  # 2 points below the best: not within noise
    rec = recommend(_grid(cells)[0])
    assert rec.n == 1 and rec.lines(NAMES)[0].startswith("Freeze layer 1 only: n=1 (conv1) is the best frozen depth")


def test_x_stands_where_a_does_in_the_papers_metrics():
    grid, _ = _grid(CLEAR)
    assert transfer_source(grid) == "X"
    metrics = {m.n: m for m in layer_metrics(grid)}
    assert abs(metrics[3].boost_base.value - (0.875 - 0.755)) < 1e-9
    assert abs(metrics[3].drop.value - (0.755 - 0.705)) < 1e-9
    assert table1(grid) and table1(grid)[0].networks == 6


def _report(results: RunResults, grid, checks=()) -> RunReport:
    return RunReport(results, grid.metric, None, (experiment_report(grid, None, checks),), tuple(checks))


def test_validity_warnings_qualify_the_answer():
    from transferbench.validity import CheckResult

    console = Console(record=True, width=300)
    grid, results = _grid(CLEAR)
    checks = [CheckResult("power", "warn", "two networks", experiment="e"), CheckResult("chance", "pass", "ok"),
              CheckResult("convergence", "warn", "still improving"), CheckResult("power", "warn", "x", experiment="o")]
    _print_recommendations(console, _report(results, grid, checks))
    assert "The validity checks warn (power, convergence)" in console.export_text()


def test_no_frozen_transfer_no_recommendation():
    assert recommend(_grid({("baseB", 0): [0.7], ("XnB+", 1): [0.8]})[0]) is None


def test_estimators_that_ran_are_read_beside_retraining():
    cells = {("baseB", 0): [0.75, 0.76], ("BnB", 1): [0.76, 0.75], ("BnB", 2): [0.74, 0.75], ("BnB", 3): [0.73, 0.74],
             ("AnB", 1): [0.80, 0.81], ("AnB", 2): [0.80, 0.805], ("AnB", 3): [0.70, 0.71]}
    grid, results = _grid(cells, source="A")
    estimates = [EstimateRow("e", "superclass", 0, "A", "B", n, "knn", f"k{n}", "ok", value)
                 for n, value in ((1, 0.9), (2, 0.89), (3, 0.5))]
    views = estimator_views(grid, estimates, agreements(results, estimates, grid.metric))
    assert [(v.estimator, v.n) for v in views] == [("knn", 2)]
    rec = recommend(grid, views)
    assert rec.frozen == "AnB" and rec.n == 2
    assert "Estimator knn would freeze layers 1..2: it agrees with retraining" in "\n".join(rec.lines(NAMES))
    assert "it disagrees with retraining" in "\n".join(recommend(grid, [EstimatorView("x", 4)]).lines(NAMES))


def test_the_report_ends_weights_file_experiments_with_the_answer():
    console = Console(record=True, width=200)
    grid, results = _grid(CLEAR)
    _print_recommendations(console, _report(results, grid))
    assert "e: recommendation (top1)" in console.export_text()
    console = Console(record=True, width=200)
    cells = {("baseB", 0): [0.7], ("AnB", 1): [0.6], ("AnB+", 1): [0.8]}
    grid, results = _grid(cells, source="A")
    _print_recommendations(console, _report(results, grid))
    assert console.export_text() == ""  # the paper's experiments report as they always did
