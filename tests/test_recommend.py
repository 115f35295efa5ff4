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


CLEAR = {  # three units (split seeds); n=2 is within 0.6 points of n=1 in every unit, n=3 10 points below
    ("baseB", 0): [0.750, 0.760, 0.755],
    ("XnB", 1): [0.800, 0.810, 0.805], ("XnB", 2): [0.798, 0.806, 0.803], ("XnB", 3): [0.700, 0.710, 0.705],
    ("XnB+", 1): [0.850, 0.860, 0.855], ("XnB+", 2): [0.860, 0.865, 0.862], ("XnB+", 3): [0.870, 0.880, 0.875],
}


def test_the_deepest_frozen_n_shown_as_good_as_the_best_and_fine_tuning_with_intervals():
    grid, _ = _grid(CLEAR)
    rec = recommend(grid)
    assert rec is not None and (rec.best_n, rec.n, rec.within) == (1, 2, [1, 2]) and rec.determined
    assert rec.gap.units == 3 and -0.01 <= rec.gap.ci_low <= rec.gap.ci_high <= 0.01  # within the 1-point margin
    assert rec.finetune_vs_frozen.ci_low > 0 and rec.finetune_vs_base.ci_low > 0
    assert rec.finetune_best_n == 3
    text = "\n".join(rec.lines(NAMES))
    assert "Freeze layers 1..2: n=2 (conv2) is the deepest frozen transfer shown as good as the best one" in text
    assert "as good: n = 1, 2" in text and "lies within 1.0 points" in text
    assert "fine-tuning (XnB+) beats frozen transfer (XnB) (+6.0 points, 95% interval +5.6 to +6.4 over 3 units)" \
        in text
    assert "over 3 units" in text
    assert "Fine-tuned (XnB+, n=2) beats training from scratch (baseB)" in text
    assert "Frozen (XnB, n=2) beats training from scratch" in text


def test_a_depth_not_shown_within_the_margin_is_not_recommended():
    cells = {**CLEAR, ("XnB", 2): [0.790, 0.809, 0.780]}  # per unit 1.0, 0.1, 2.5 points below n=1: too wide
    rec = recommend(_grid(cells)[0])
    assert (rec.n, rec.within) == (1, [1])
    assert recommend(_grid(cells)[0], margin=0.05).n == 2  # a wider margin the user accepts


def test_hedged_words_follow_the_intervals():
    cells = {**CLEAR, ("XnB+", 2): [0.790, 0.820, 0.800], ("baseB", 0): [0.900, 0.910, 0.905]}
    rec = recommend(_grid(cells)[0])
    text = "\n".join(rec.lines(NAMES))
    assert "fine-tuning (XnB+) cannot be told apart from frozen transfer (XnB)" in text
    assert "Frozen (XnB, n=2) is worse than training from scratch (baseB)" in text
    assert text.startswith("Frozen transfer does not pay here: even at its best it is below training from scratch "
                           "(baseB). If layers must stay frozen, freeze at most layers 1..2: n=2 (conv2)")


def test_two_units_give_no_interval_and_say_so():
    cells = {key: values[:2] for key, values in CLEAR.items()}
    rec = recommend(_grid(cells)[0])
    assert not rec.determined and rec.n == rec.best_n == 1 and rec.gap.ci_low is None
    text = "\n".join(rec.lines(NAMES))
    assert "has the best mean frozen accuracy, but with 2 unit(s) no interval says" in text
    assert "2 units: too few for an interval" in text and "is not determined" in text


def test_x_stands_where_a_does_in_the_papers_metrics():
    grid, _ = _grid(CLEAR)
    assert transfer_source(grid) == "X"
    metrics = {m.n: m for m in layer_metrics(grid)}
    assert abs(metrics[3].boost_base.value - (0.875 - 0.755)) < 1e-9
    assert abs(metrics[3].drop.value - (0.755 - 0.705)) < 1e-9
    assert table1(grid) and table1(grid)[0].networks == 9


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
    cells = {("baseB", 0): [0.75, 0.76, 0.755], ("BnB", 1): [0.76, 0.75, 0.755], ("BnB", 2): [0.74, 0.75, 0.745],
             ("BnB", 3): [0.73, 0.74, 0.735], ("AnB", 1): [0.80, 0.81, 0.805], ("AnB", 2): [0.80, 0.805, 0.803],
             ("AnB", 3): [0.70, 0.71, 0.705]}
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


def test_the_recommended_depth_carries_its_stability():
    from transferbench.recommend import recommendation_stability

    grid, _ = _grid(CLEAR)
    stab = recommendation_stability(grid)
    assert stab is not None and stab.resamples == 200 and stab.stable  # n=2 in every unit
    assert recommendation_stability(grid) == stab  # seeded
    report = _report(*reversed(_grid(CLEAR)))  # through the report, as a user reads it
    rec = experiment_report(report.experiments[0].grid, None, ()).recommendation
    assert rec.stability is not None and "under resampling of the units" in "\n".join(rec.lines(NAMES))
    # near-equal depths: whether n=2 is "as good as n=1" depends on which units are drawn
    shaky = {**CLEAR, ("XnB", 2): [0.800, 0.809, 0.797, 0.806, 0.8], ("XnB", 1): [0.800, 0.810, 0.805, 0.806, 0.81],
             ("XnB", 3): [0.700, 0.710, 0.705, 0.7, 0.7], ("baseB", 0): [0.750, 0.760, 0.755, 0.75, 0.75]}
    unstable = recommendation_stability(_grid(shaky)[0])
    assert unstable is not None and not unstable.stable
