"""The regret table of several recommend targets pooled, from their finished run directories.

    python benchmarks/recommend_pooled.py [--set KEY=VALUE ...] \
        configs/recommend/signals.yaml runs/recommend/signals \
        configs/recommend/signals-corrupt.yaml runs/recommend/signals-corrupt ...

Each pair is a recommend config and the ``--out`` of its ``transferbench recommend
--validate`` run (default: the config's ``output.dir``). Reads the advice's choices (and the
selectors': 0.5's halving, the kNN-pruned halving, Auto-RGN, TransRate) from ``RUN_DIR/advice.json`` and the
sweep's results from ``RUN_DIR/sweep``, trains nothing, and prints, per row, the regret over
every unit of every target (units of different targets are independent) with its 95%
interval, and the mean compute fraction: the "all" table of one ``recommend --validate`` over
several targets, for targets run one config at a time; then each target's own table.
``--set`` applies the overrides the runs were made with (``recommend --set``) to every config,
e.g. ``--set 'experiments.0.split.seeds=[3,4,5]'``; a run directory without the config's
units is refused with that hint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from transferbench.advise import (
    ADVICE,
    SWEEP,
    Costs,
    Selection,
    read_sweep_plan,
    selector_advice,
    sweeps_of,
    table_rows,
    verdict_lines,
)
from transferbench.api import prepare
from transferbench.regret import Advice, Regime, RegretRow, heuristics, overall, regret
from transferbench.store import RunStore


def _regime(label: str) -> Regime:
    kind, _, n = label.partition(" ")
    return Regime(kind, int(n.split("=")[1])) if n else Regime(kind)


def rows_of(config: str, run_dir: Path, overrides: Sequence[str] = ()) -> list[tuple[str, list[RegretRow]]]:
    """Each target's table of the finished run: (target, its rows)."""
    prepared = prepare(config, overrides)
    sweep = read_sweep_plan(prepared)
    advice = json.loads((run_dir / "advice.json").read_text())
    choice = {tuple(u["unit"]): _regime(u["choice"]) for u in advice["units"]}
    missing = sorted(set(sweep.units) - set(choice))
    if missing:
        raise SystemExit(f"{run_dir}: no advice for {config}'s units {missing} (its units: {sorted(choice)}); "
                         "a run made with `recommend --set ...` needs the same --set here")
    spent = {tuple(u["unit"]): u["flops"] for u in advice["units"]}
    selections = {name: {tuple(u["unit"]): Selection(_regime(u["choice"]), u["flops"]) for u in rows}
                  for name, rows in advice.get("selectors", {}).items()}
    out = []
    for s in sweeps_of(sweep, RunStore(run_dir / SWEEP), Costs(prepared.config, prepared.components, sweep)):
        mine = Advice(ADVICE, {u: choice[u] for u in s.units},  # type: ignore[index]
                      {u: spent[u] for u in s.units})  # type: ignore[index]
        out.append((s.target, [regret(s, a) for a in (mine, *selector_advice(selections, s.units),  # type: ignore[arg-type]
                                                      *heuristics(s))]))
    return out


def main(argv: list[str]) -> int:
    overrides: list[str] = []
    while len(argv) >= 2 and argv[0] == "--set":
        overrides.append(argv[1])
        argv = argv[2:]
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__)
        return 2
    by_name: dict[str, list[RegretRow]] = {}
    tables: list[tuple[str, list[RegretRow]]] = []
    for config, run_dir in zip(argv[::2], argv[1::2]):
        tables += rows_of(config, Path(run_dir), overrides)
    for _, rows in tables:
        for row in rows:
            by_name.setdefault(row.advice, []).append(row)
    pooled = [overall(rows) for rows in by_name.values()]
    print("row | regret (points) | 95% interval | units | compute | chose")
    for cells in table_rows(pooled):
        print(" | ".join(cells))
    for line in verdict_lines(pooled):
        print(line)
    for target, rows in tables:
        print(f"\n{target}:")
        for cells in table_rows(rows):
            print(" | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
