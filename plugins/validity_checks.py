"""The built-in validity checks: what must hold for a report's comparisons to mean anything.

* ``convergence``: the base networks stopped improving, and the control holds: BnB+, the
  same network trained again from baseB's weights, is shown to match baseB within a margin
  (an equivalence test over units: the whole 95% interval of BnB+ - baseB inside
  +-margin). Where it is not shown, a fine-tuning "boost" may be extra training, not transfer.
* ``power``: enough independent units (split seed x direction) per cell for an interval.
* ``chance``: no cell at or near chance by accident (random weights reach it on purpose).
* ``completeness``: failed or pending networks, and what they leave out.
* ``provenance``: every network trained by the same code and library versions.
* ``input_scale``: the inputs had the scale the architecture's initialisation expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from transferbench import MIN_UNITS, CheckResult, Grid, NoParams, RunView, ValidityCheck, diff, equivalence, hookimpl

SEEDS_REMEDY = ("run more split seeds (experiments.<i>.split.seeds: [0, 1, 2]; intervals need 3 units, "
                "`transferbench report RUN_DIR --power` says how many a decisive answer needs)")


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _interval(d) -> str:
    if d.ci_low is None:
        return f"no interval: {d.units} unit(s)"
    return f"95% CI {_pts(d.ci_low)} to {_pts(d.ci_high)} over {d.units} units"


class Convergence(ValidityCheck[NoParams]):
    """Base networks stopped improving, and BnB+ does not beat baseB beyond noise."""

    description = "bases converged: no late improvement, and the BnB+ control matches baseB"

    def check(self, run: RunView) -> list[CheckResult]:
        out = [r for grid in run.grids() for r in self._control(grid, run.margin(grid.experiment))]
        return out + self._plateau(run)

    def _control(self, grid: Grid, margin: float) -> list[CheckResult]:
        base = grid.get("baseB", 0)
        plus = grid.over_layers("BnB+", grid.transfer_layers)
        tuned = [t for t in grid.treatments if t.endswith("+") and t != "BnB+" and t not in grid.bases]
        if base is not None and plus is None and tuned:  # boosts with nothing to tell them from extra training
            return [CheckResult(self.name, "warn", f"no BnB+ control beside {', '.join(sorted(tuned))}: a boost over "
                                "baseB cannot be told from extra training", "add BnB+ to the treatments",
                                grid.experiment)]
        if base is None or plus is None:
            return []
        d = diff(plus, base)  # each unit's BnB+ against its own baseB
        said = (f"BnB+ {plus.mean:.3f} vs baseB {base.mean:.3f}: {_pts(d.value)} points ({_interval(d)}); "
                f"margin +-{100 * margin:.1f} points")
        outcome = equivalence(d, margin)
        if outcome == "not determined":
            return [CheckResult(self.name, "warn", f"the BnB+ control is not determined: {d.units} unit(s) have both "
                                f"baseB and BnB+ (needs >= {MIN_UNITS} for an interval)", SEEDS_REMEDY,
                                grid.experiment)]
        if outcome == "holds":
            return [CheckResult(self.name, "pass", f"{said}: the control holds (the whole interval is within the "
                                "margin), as in the paper (.627 vs .625)", experiment=grid.experiment)]
        if outcome == "fails":
            return [CheckResult(self.name, "warn", f"{said}: retraining baseB's own layers changes its accuracy beyond "
                                "the margin, so the base networks are short of convergence and boosts are confounded "
                                "with training length", "train longer (train.epochs) or end with a lower learning rate "
                                "(train.schedule) until BnB+ matches baseB", grid.experiment)]
        return [CheckResult(self.name, "warn", f"{said}: the control is not shown (the interval is wider than the "
                            "margin: a training-length confound that large cannot be excluded)",
                            "run more split seeds (`transferbench report RUN_DIR --power` says how many show the "
                            "control), or set the margin you accept (`report --control-margin POINTS`)",
                            grid.experiment)]

    def _plateau(self, run: RunView) -> list[CheckResult]:
        jobs = {r.job_id: r.experiment for r in run.results.rows if r.kind == "base" and r.status == "ok"}
        gains, short = [], 0
        for job_id in jobs:
            record = run.record(job_id)
            history = [h.top1 for h in (record.history or [])] if record else []
            factors = [h.lr_factor for h in (record.history or [])] if record else []
            if len(history) >= MIN_EVALUATIONS:
                gains.append(late_gain(history, factors))
            else:
                short += 1
        more = "evaluate more often (eval.every) so that the end of training can be judged"
        if not gains:
            return [] if not short else [CheckResult(
                self.name, "warn", f"whether the base networks stopped improving is not determined: none of "
                f"{short} has {MIN_EVALUATIONS} evaluations", more)]
        unjudged = f"; {short} more with fewer than {MIN_EVALUATIONS} evaluations not judged" if short else ""
        improving = [g for g, noise in gains if g > max(0.01, 2 * noise)]
        worst = max(g for g, _ in gains)
        if improving:
            return [CheckResult(self.name, "warn", f"{len(improving)} of {len(gains)} base networks still improve "
                                f"at the end of training (up to {_pts(worst)} points over their last "
                                f"evaluations){unjudged}", "train longer (train.epochs), or decay the learning rate "
                                "earlier")]
        if short:
            return [CheckResult(self.name, "warn", f"{len(gains)} base networks have stopped improving (at most "
                                f"{_pts(worst)} points over their last evaluations){unjudged}", more)]
        return [CheckResult(self.name, "pass", f"every base network ({len(gains)}) has stopped improving: at most "
                            f"{_pts(worst)} points over its last evaluations")]


#: Evaluations a base network needs before its end of training can be judged.
MIN_EVALUATIONS = 6


def late_gain(history: Sequence[float], lr_factors: Sequence[float | None] = ()) -> tuple[float, float]:
    """How much a network's last evaluations still improve: (the second half of the tail minus its
    first half, the standard error of that difference from the evaluations' scatter).

    The tail is the evaluations after the last change of the learning rate, when the history
    records it and at least 4 come after it (the jump a decay gives is not "still improving"),
    else the last 30%.
    """
    k = max(4, math.ceil(0.3 * len(history)))
    if len(lr_factors) == len(history) and all(f is not None for f in lr_factors):
        changes = [i for i in range(1, len(lr_factors)) if lr_factors[i] != lr_factors[i - 1]]
        if changes and len(history) - changes[-1] >= 4:
            k = len(history) - changes[-1]
    tail = list(history[-k:])
    first, second = tail[: k // 2], tail[k // 2:]
    gain = sum(second) / len(second) - sum(first) / len(first)
    # the scatter of single evaluations, from successive differences: a steady trend is not noise
    steps = [b - a for a, b in zip(tail, tail[1:])]
    mean = sum(steps) / len(steps)
    sd = math.sqrt(sum((d - mean) ** 2 for d in steps) / max(1, len(steps) - 1) / 2)
    return gain, sd * math.sqrt(1 / len(first) + 1 / len(second))


class Power(ValidityCheck[NoParams]):
    """Enough independent units per cell for intervals."""

    description = "enough independent units (split seed x direction) per cell for intervals (>= 3)"

    def check(self, run: RunView) -> list[CheckResult]:
        out = []
        for grid in run.grids():
            if not grid.cells:
                continue
            fewest = min(s.units for s in grid.cells.values())
            thin = sorted((t, n) for (t, n), s in grid.cells.items() if s.units == fewest)
            shown = ", ".join(f"{t}" + (f" n={n}" if n else "") for t, n in thin[:4])
            shown += " ..." if len(thin) > 4 else ""
            if fewest < MIN_UNITS:
                words = "one unit" if fewest == 1 else f"{fewest} units"
                out.append(CheckResult(self.name, "warn", f"{len(thin)} cells have {words} ({shown}): no intervals "
                                       f"(networks of one unit are not independent; intervals need {MIN_UNITS} units)",
                                       SEEDS_REMEDY, grid.experiment))
            else:
                out.append(CheckResult(self.name, "pass", f"at least {fewest} units (split seed x direction) in every "
                                       "cell; `report --power` says whether they decide each finding",
                                       experiment=grid.experiment))
        return out


class Chance(ValidityCheck[NoParams]):
    """No cell at or near chance by accident (broken training); random weights may reach it."""

    description = "no cell at or near chance, except random weights where that is the finding"

    def check(self, run: RunView) -> list[CheckResult]:
        out = []
        for grid in run.grids():
            broken: list[str] = []
            floor: list[str] = []
            for (t, n), s in sorted(grid.cells.items()):
                chance = run.chance(grid.experiment, t)
                if chance is None or s.mean > max(1.5 * chance, chance + 0.05):
                    continue
                random_weights = t not in grid.bases and grid.sources.get(t) is None
                cell = f"{t}" + (f" n={n}" if n else "") + f" {s.mean:.3f} (chance {chance:.3f})"
                (floor if random_weights else broken).append(cell)
            if broken:
                out.append(CheckResult(self.name, "warn", f"at or near chance: {', '.join(broken)}",
                                       "check the learning rate, the input scale and the data of these networks",
                                       grid.experiment))
            elif floor:
                out.append(CheckResult(self.name, "pass", f"only random weights reach chance ({', '.join(floor)}): "
                                       "the paper's finding", experiment=grid.experiment))
            elif grid.cells:
                out.append(CheckResult(self.name, "pass", "no cell near chance", experiment=grid.experiment))
        return out


class Completeness(ValidityCheck[NoParams]):
    """Failed or pending networks, and what they leave out of the statistics."""

    description = "every network finished (failed and pending ones are left out of the statistics)"

    def check(self, run: RunView) -> list[CheckResult]:
        out = []
        for grid in run.grids():
            rows = [r for r in run.results.rows if r.experiment == grid.experiment and r.status != "ok"]
            cells = sorted({f"{r.treatment}" + (f" n={r.n}" if r.n else "") for r in rows})
            if grid.failed or grid.pending:
                out.append(CheckResult(
                    self.name, "warn", f"{grid.failed} failed and {grid.pending} pending networks: left out of "
                    f"every mean and interval of {', '.join(cells[:6])}{' ...' if len(cells) > 6 else ''}",
                    "rerun the same `transferbench run` (failed networks: see their records)", grid.experiment))
            else:
                out.append(CheckResult(self.name, "pass", "every network finished", experiment=grid.experiment))
        return out


class Provenance(ValidityCheck[NoParams]):
    """Every network trained by the same code and library versions."""

    description = "one code (transferbench, plugins, torch, timm) trained every network"

    def check(self, run: RunView) -> list[CheckResult]:
        differences = run.results.code_differences()
        if differences:
            return [CheckResult(self.name, "warn", f"networks trained by different code: {'; '.join(differences)}",
                                "rerun without output.reuse_across_code to retrain the others with this code")]
        return [CheckResult(self.name, "pass", "one code and library versions trained every network")]


class InputScale(ValidityCheck[NoParams]):
    """The inputs had the scale the architecture's initialisation expects: the trained
    networks' (their records) and, separately, the estimators' features' (estimate records,
    which must see the inputs the networks were trained on)."""

    description = "network inputs have the scale the architecture's initialisation expects"

    def check(self, run: RunView) -> list[CheckResult]:
        expected = run.results.expected_input_std
        if not expected:
            return []
        results = run.results
        groups = [
            ("the networks' inputs", [r.input_std for r in results.rows if r.status == "ok" and r.input_std]),
            ("the estimators' inputs", [e.input_std for e in results.estimates if e.status == "ok" and e.input_std]),
        ]
        out = []
        for what, values in groups:
            if not values:
                continue
            measured = sorted(values)
            median = measured[len(measured) // 2]
            said = f"{what} have a std of {median:.3g}; the architecture's initialisation expects about {expected:.3g}"
            if expected / 3 <= median <= expected * 3:
                out.append(CheckResult(self.name, "pass", said))
            else:
                out.append(CheckResult(self.name, "warn", said, "fix the data's normalisation (data.mean / data.std) "
                                       "or use an architecture init made for this scale"))
        return out


@hookimpl
def register_checks(register) -> None:
    register("convergence", Convergence)
    register("power", Power)
    register("chance", Chance)
    register("completeness", Completeness)
    register("provenance", Provenance)
    register("input_scale", InputScale)
