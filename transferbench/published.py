"""Source-model rankings scored against a published ground-truth table, beside free baselines.

A *table* holds, for every (target data set, source model), the accuracy each training regime
reached (a ground truth: ``finetuned``, ``frozen``) and other columns: published estimators'
scores and the source's own properties (ImageNet accuracy, parameter count). ``transferbench
estimators score SCORES.csv --against TABLE`` ranks the sources of each target by every score,
and by the free baselines, and compares each ranking with the ground truth's:

* per target: weighted Kendall tau (the field's headline statistic), Spearman, Kendall and the
  top-1 regret (the best source's accuracy minus that of the source ranked first);
* over targets: the mean, with a 95% bootstrap interval over targets (the independent units
  here: each target is its own experiment, the sources shared by all);
* the free baselines: ``imagenet_top1`` and ``params_m`` where the table has them, ``static``
  (a source's mean ground truth on the *other* targets: what ranking by reputation gives) and
  ``random`` (a random score: the 95% range of its mean weighted tau);
* for each score: its mean weighted tau minus the strongest baseline's, paired by target, and
  "beats the strongest baseline: yes / no / not determined" by that interval.

Every statistic of a table is computed on the sources that have every column (a baseline with
gaps would otherwise be compared on other sources than the scores); the report says how many.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import DataError
from .ranking import Interval, bootstrap_units, kendall, spearman, top1_regret, weighted_tau

__all__ = ["BASELINE_COLUMNS", "GROUND_TRUTHS", "TABLES", "PublishedTable", "ScoreRow", "ScoreReport",
           "print_score_report", "read_scores", "read_table", "score_against"]

#: Tables shipped with transferbench: name -> file in ``transferbench/data`` (provenance beside it).
TABLES: dict[str, str] = {"agostinelli2022": "agostinelli2022_architectures.csv"}

#: Columns a table may hold that are ground truths (accuracies of a training regime).
GROUND_TRUTHS = ("finetuned", "frozen")

#: Columns that describe the source itself: free baselines, not estimators.
BASELINE_COLUMNS = ("imagenet_top1", "params_m")

Item = tuple[str, str]  # (target, source)


@dataclass(frozen=True)
class PublishedTable:
    """A ground-truth table: column -> (target, source) -> value (absent where empty)."""

    name: str
    columns: dict[str, dict[Item, float]]

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(t for col in self.columns.values() for t, _ in col))

    @property
    def scores(self) -> list[str]:
        """The published estimators' columns (neither a ground truth nor a baseline)."""
        return [c for c in self.columns if c not in GROUND_TRUTHS and c not in BASELINE_COLUMNS]


def _read_csv(text: str, where: str) -> dict[str, dict[Item, float]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    fields = reader.fieldnames or []
    if fields[:2] != ["target", "source"] or len(fields) < 3:
        raise DataError(f"{where}: the first columns must be `target,source`, then one column per score "
                        f"(found {', '.join(fields) or 'nothing'})")
    columns: dict[str, dict[Item, float]] = {c: {} for c in fields[2:]}
    for i, row in enumerate(reader, start=2):
        item = (row["target"], row["source"])
        for c in fields[2:]:
            text_value = (row.get(c) or "").strip()
            if not text_value:
                continue
            try:
                value = float(text_value)
            except ValueError:
                raise DataError(f"{where}: row {i}, column {c}: {text_value!r} is not a number") from None
            if not math.isfinite(value):
                raise DataError(f"{where}: row {i}, column {c}: {text_value!r} is not a finite number")
            if item in columns[c]:
                raise DataError(f"{where}: row {i}: target {item[0]!r}, source {item[1]!r} appears twice")
            columns[c][item] = value
    return columns


def read_table(name_or_path: str) -> PublishedTable:
    """A shipped table by name (:data:`TABLES`) or a CSV file (``target,source,finetuned,...``).

    Raises:
        DataError: an unknown name, a missing file, or a table without a ground truth.
    """
    if name_or_path in TABLES:
        text = resources.files("transferbench").joinpath(f"data/{TABLES[name_or_path]}").read_text("utf-8")
        where = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DataError(f"{name_or_path}: no such file, and not a shipped table ({', '.join(TABLES)})")
        text, where = path.read_text("utf-8"), str(path)
    columns = _read_csv(text, where)
    if not any(t in columns for t in GROUND_TRUTHS):
        raise DataError(f"{where}: a ground-truth table needs a column {' or '.join(GROUND_TRUTHS)}")
    return PublishedTable(where, columns)


def read_scores(path: str) -> dict[str, dict[Item, float]]:
    """Scores to judge: ``target,source,NAME[,NAME...]``, one column per estimator."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    return _read_csv(Path(path).read_text("utf-8"), path)


@dataclass(frozen=True)
class ScoreRow:
    """One score (or baseline) against the ground truth.

    Attributes:
        name: the column's name.
        kind: ``estimator`` (given), ``published`` (a score column of the table) or ``baseline``.
        per_target: target -> weighted tau on that target's sources.
        weighted_tau: the mean over targets, with its bootstrap interval over targets.
        spearman, kendall, regret: their means over targets.
        difference: mean weighted tau minus the strongest baseline's, paired by target.
        beats: ``yes``, ``no`` or ``not determined`` by that interval (baselines: empty).
    """

    name: str
    kind: str
    per_target: dict[str, float | None]
    weighted_tau: Interval | None
    spearman: float | None
    kendall: float | None
    regret: float | None
    difference: Interval | None = None
    beats: str = ""


@dataclass(frozen=True)
class ScoreReport:
    """Every score and baseline against one ground truth of a table."""

    table: str
    truth: str
    targets: list[str]
    sources: int
    dropped: list[str]
    rows: list[ScoreRow]
    strongest: str | None
    random: Interval | None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def _static(truth: Mapping[Item, float], items: Sequence[Item]) -> dict[Item, float]:
    """A source's mean ground truth on the other targets (where it has any)."""
    out = {}
    for target, source in items:
        others = [v for (t, s), v in truth.items() if s == source and t != target]
        if others:
            out[(target, source)] = math.fsum(others) / len(others)
    return out


def _per_target(column: Mapping[Item, float], truth: Mapping[Item, float], target: str, sources: Sequence[str]
                ) -> tuple[float | None, float | None, float | None, float | None]:
    x = [column[(target, s)] for s in sources]
    y = [truth[(target, s)] for s in sources]
    return weighted_tau(x, y), spearman(x, y), kendall(x, y), top1_regret(x, y)


def score_against(table: PublishedTable, scores: Mapping[str, Mapping[Item, float]] | None = None,
                  truth: str = "finetuned", *, seed: int = 0, random_draws: int = 1000,
                  every_source: bool = False) -> ScoreReport:
    """Score ``scores`` (default: the table's own published scores) against ``truth``.

    With ``every_source``, a baseline column that lacks some source is left out instead of
    the sources it lacks.

    Raises:
        DataError: the table has no such ground truth, or no target shares 3 sources with it.
    """
    if truth not in table.columns:
        raise DataError(f"{table.name} has no ground truth {truth!r} (it has "
                        f"{', '.join(t for t in GROUND_TRUTHS if t in table.columns)})")
    gt = table.columns[truth]
    given = dict(scores) if scores is not None else {}
    published = {c: table.columns[c] for c in table.scores}
    baselines = {c: table.columns[c] for c in BASELINE_COLUMNS if c in table.columns
                 and not (every_source and any(item not in table.columns[c] for item in gt))}
    baselines["static"] = _static(gt, list(gt))
    columns: dict[str, tuple[str, Mapping[Item, float]]] = {
        **{n: ("estimator", v) for n, v in given.items()},
        **{n: ("published", v) for n, v in published.items() if n not in given},
        **{n: ("baseline", v) for n, v in baselines.items()},
    }
    all_sources = list(dict.fromkeys(s for _, s in gt))
    # the sources every column has on every target: one population for every comparison
    keep = [s for s in all_sources if all((t, s) in col for _, col in columns.values() for t in table.targets
                                          if (t, s) in gt)]
    targets = [t for t in table.targets if sum((t, s) in gt for s in keep) >= 3]
    if not targets:
        raise DataError(f"{table.name}: no target has 3 sources with a ground truth and every score")
    sources = {t: [s for s in keep if (t, s) in gt] for t in targets}
    stats = {name: {t: _per_target(col, gt, t, sources[t]) for t in targets} for name, (_, col) in columns.items()}
    wtau = {name: {t: v[0] for t, v in by_t.items()} for name, by_t in stats.items()}
    means = {name: _mean(list(v.values())) for name, v in wtau.items()}
    base_names = [n for n, (k, _) in columns.items() if k == "baseline"]
    strongest = max((n for n in base_names if means[n] is not None), key=lambda n: means[n] or 0.0, default=None)
    names = list(columns)

    def statistic(points: Sequence[tuple[str, str]]) -> list[float | None]:
        # points are (target, target): a resample of targets; each statistic is a mean over them
        drawn = [p[0] for p in points]
        out: list[float | None] = [_mean([wtau[n][t] for t in drawn]) for n in names]
        if strongest is not None:
            for n in names:
                diffs = [None if wtau[n][t] is None or wtau[strongest][t] is None
                         else wtau[n][t] - wtau[strongest][t] for t in drawn]  # type: ignore[operator]
                out.append(_mean(diffs))
        return out

    found = bootstrap_units({t: [(t, t)] for t in targets}, statistic, seed=seed)
    rows = []
    for i, name in enumerate(names):
        kind = columns[name][0]
        diff = found[len(names) + i] if strongest is not None and len(found) > len(names) else None
        beats = ""
        if kind != "baseline":
            beats = "not determined"
            if diff is not None and diff.determined:
                beats = "yes" if diff.above_zero else ("no" if diff.below_zero else "not determined")
        by_t = stats[name]
        rows.append(ScoreRow(name, kind, wtau[name], found[i], _mean([v[1] for v in by_t.values()]),
                             _mean([v[2] for v in by_t.values()]), _mean([v[3] for v in by_t.values()]),
                             diff if kind != "baseline" else None, beats))
    return ScoreReport(table.name, truth, targets, len(keep), [s for s in all_sources if s not in keep], rows,
                       strongest, _random(gt, sources, seed, random_draws))


def _random(truth: Mapping[Item, float], sources: Mapping[str, Sequence[str]], seed: int, draws: int = 1000
            ) -> Interval | None:
    """A random score's mean weighted tau over the targets: median and 95% range over draws."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(draws):
        values = [weighted_tau(list(rng.random(len(s))), [truth[(t, x)] for x in s]) for t, s in sources.items()]
        m = _mean(values)
        if m is not None:
            means.append(m)
    if not means:
        return None
    low, mid, high = np.percentile(means, [2.5, 50, 97.5])
    return Interval(float(mid), float(low), float(high), len(sources))


def _short(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:+.2f}"
    return text.replace("0.", ".", 1) if abs(value) < 1 else text


def print_score_report(console: Console, report: ScoreReport) -> None:
    """The weighted tau of every score and baseline per target, their means with intervals over
    targets, and whether each score beats the strongest baseline."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("score")
    table.add_column("kind")
    for t in report.targets:
        table.add_column(t[:8], justify="right")
    for head in ("mean wτ", "95%", "ρ", "regret", "beats"):
        table.add_column(head, justify="right" if head != "beats" else "left")
    for r in report.rows:
        w = r.weighted_tau
        ci = "" if w is None or not w.determined else f"{_short(w.ci_low)}/{_short(w.ci_high)}"
        table.add_row(r.name, r.kind, *[_short(r.per_target.get(t)) for t in report.targets],
                      _short(w.value if w else None), ci, _short(r.spearman),
                      "" if r.regret is None else f"{r.regret:.3f}", r.beats)
    console.print(Text(f"{report.table}: rankings of {report.sources} sources against the {report.truth} ground "
                       f"truth, per target data set (weighted Kendall tau)", style="bold"))
    console.print(table)
    rnd = report.random
    notes = [f"mean over the {len(report.targets)} targets; 95%: bootstrap over targets. beats: the interval of "
             f"the score's mean weighted tau minus the strongest baseline's ({report.strongest}), paired by "
             "target, lies above 0 (yes), below (no), or holds 0 (not determined). static: a source's mean "
             "ground truth on the other targets; regret: the best source's accuracy minus that of the source "
             "ranked first."]
    if rnd is not None and rnd.ci_low is not None and rnd.ci_high is not None:
        notes.append(f"A random score's mean weighted tau: {_short(rnd.value)} (95% of random scores within "
                     f"{_short(rnd.ci_low)} to {_short(rnd.ci_high)}).")
    if report.dropped:
        notes.append(f"Scored on the sources with every column; left out: {', '.join(report.dropped)}.")
    console.print(Text(" ".join(notes), style="dim"))
