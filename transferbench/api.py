"""The Python API, for notebooks and scripts: run an experiment, load its results.

>>> import transferbench
>>> run = transferbench.run("configs/quickstart.yaml", overrides=["train.epochs=1"], out="runs/try")
>>> run.rows          # a pandas DataFrame, one row per table cell
>>> run.summary()     # mean, std and 95% interval per (experiment, treatment, n)

``transferbench.load_run(run_dir)`` reads a finished (or interrupted) run the same way.
See docs/python-api.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .analysis import Grid, build_grids, layer_metrics, specific_layer
from .components import Components
from .config import Config, apply_override, check_size, parse_config, read_yaml
from .errors import ConfigError
from .plan import Plan, build_plan
from .resolve import raw_plugin_problems, resolve
from .results import RunResults, read_results

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

__all__ = ["Prepared", "Run", "load_run", "prepare", "run"]


@dataclass
class Prepared:
    """A config checked and resolved, with its plan: everything but the training."""

    config: Config
    components: Components
    plan: Plan


def _parse(config: str | Path | Mapping[str, Any] | Config, overrides: Sequence[str]) -> Config:
    if isinstance(config, Config):
        if not overrides:
            return config
        return parse_config(config.model_dump(mode="json"), overrides)
    if isinstance(config, Mapping):
        raw, source = dict(config), None
    else:
        raw, source = read_yaml(config), str(config)
    check_size(raw, source=source)  # the fallback below walks the raw config too
    try:
        return parse_config(raw, overrides, source=source)
    except ConfigError as exc:
        # structural problems first, then every plugin-name or plugin-key problem as well
        raw = dict(raw)
        for assignment in overrides:
            apply_override(raw, assignment)
        seen = set(exc.problems)
        extra = [p for p in raw_plugin_problems(raw) if p not in seen]
        raise ConfigError(exc.problems + extra, source=source) from None


def prepare(config: str | Path | Mapping[str, Any] | Config, overrides: Sequence[str] = ()) -> Prepared:
    """Load, validate and resolve a config and expand it into its plan (nothing is trained).

    Args:
        config: a YAML file, a mapping shaped like one, or a :class:`~transferbench.config.Config`.
        overrides: ``key.path=value`` assignments, as ``--set`` takes them.

    Raises:
        ConfigError: every problem of the config, each with its key path.
    """
    cfg = _parse(config, list(overrides))
    components = resolve(cfg)
    return Prepared(cfg, components, build_plan(cfg, components))


@dataclass
class Run:
    """The results of one run directory, ready for pandas.

    Attributes:
        dir: the run directory.
        results: every cell of the plan with its network's numbers (see :mod:`transferbench.results`).
    """

    dir: Path
    results: RunResults

    @property
    def rows(self) -> pd.DataFrame:
        """One row per table cell (experiment, split seed, treatment, n): the tidy export's columns."""
        import pandas as pd

        from .results import LONG_COLUMNS

        return pd.DataFrame([r.to_dict() for r in self.results.rows], columns=list(LONG_COLUMNS))

    def grids(self, metric: str = "top1", pool: bool | None = None) -> list[Grid]:
        """The report's grids: per experiment, the accuracies of every (treatment, n) cell."""
        return build_grids(self.results, metric, pool)

    def summary(self, metric: str = "top1", pool: bool | None = None) -> pd.DataFrame:
        """Mean, std and 95% interval of every (experiment, treatment, n) cell."""
        import pandas as pd

        rows = []
        for g in self.grids(metric, pool):
            for t in g.treatments:
                for n in g.layers:
                    s = g.get(t, n)
                    if s is not None:
                        rows.append({"experiment": g.experiment, "treatment": t, "n": n, "count": s.count,
                                     "mean": s.mean, "std": s.std, "ci95_low": s.ci_low, "ci95_high": s.ci_high})
        return pd.DataFrame(rows, columns=["experiment", "treatment", "n", "count", "mean", "std",
                                           "ci95_low", "ci95_high"])

    def metrics(self, metric: str = "top1", pool: bool | None = None) -> pd.DataFrame:
        """The paper's derived quantities by experiment and n (differences in accuracy, with intervals)."""
        import pandas as pd

        rows = []
        for g in self.grids(metric, pool):
            for m in layer_metrics(g):
                for name in ("coadaptation", "specificity", "boost_base", "boost_selffer", "drop"):
                    d = getattr(m, name)
                    if d is not None:
                        rows.append({"experiment": g.experiment, "n": m.n, "quantity": name, "value": d.value,
                                     "ci95_low": d.ci_low, "ci95_high": d.ci_high})
        return pd.DataFrame(rows, columns=["experiment", "n", "quantity", "value", "ci95_low", "ci95_high"])

    def specific_layer(self, experiment: str, metric: str = "top1") -> int | None:
        """The first n where features turn specific in ``experiment`` (None: none, or not determined)."""
        for g in self.grids(metric):
            if g.experiment == experiment:
                spec = specific_layer(g)
                return None if spec is None else spec.n
        raise KeyError(f"no experiment {experiment!r}; the run has {', '.join(self.results.experiments)}")


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory (finished or not): its plan and every record.

    Raises:
        RunDirError: the directory is missing or is not a run directory.
    """
    return Run(Path(run_dir), read_results(run_dir))


def run(
    config: str | Path | Mapping[str, Any] | Config,
    *,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    console: Console | None = None,
    estimate_only: bool = False,
) -> Run:
    """Train every network of a config (resuming what ``out`` already holds) and load the results.

    Args:
        config: a YAML file, a mapping shaped like one, or a :class:`~transferbench.config.Config`.
        overrides: ``key.path=value`` assignments, as ``--set`` takes them.
        out: the run directory (default: the config's ``output.dir``).
        console: where progress goes (default: a new rich console).
        estimate_only: train the base networks and run the config's estimators only
            (``run --estimate-only``; docs/estimators.md).

    Raises:
        ConfigError, PluginError, DataError, RunDirError: bad input, before anything trains.
    """
    from rich.console import Console

    from .engine import run_plan

    prepared = prepare(config, overrides)
    plan = prepared.plan.without_transfers() if estimate_only else prepared.plan
    prepared.components.data.check()
    run_dir = Path(out) if out is not None else prepared.config.run_dir()
    run_plan(prepared.config, prepared.components, plan, run_dir, console or Console())
    return load_run(run_dir)
