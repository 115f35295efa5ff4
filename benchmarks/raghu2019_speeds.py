"""The convergence table of docs/followups.md's Raghu section: per treatment and n, the mean
over units of the steps to 90% of the final accuracy (a fraction of the steps trained) and
the final top-1, with the units behind them.

    python benchmarks/raghu2019_speeds.py runs/followups/raghu2019
"""

from __future__ import annotations

import math
import sys

from transferbench.analysis import build_grids
from transferbench.results import read_results


def main(run_dir: str, fraction: float = 0.9) -> None:
    for grid in build_grids(read_results(run_dir)):
        print(f"{grid.experiment}: steps to {fraction:.0%} of final (fraction of the run) | final top-1 | units")
        for (treatment, n), stat in sorted(grid.cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            speed = grid.unit_speed(treatment, n, fraction)
            mean = math.fsum(speed.values()) / len(speed) if speed else float("nan")
            print(f"  {treatment:12} n={n}: {mean:.3f} | {stat.mean:.3f} | {len(speed)}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.9)
