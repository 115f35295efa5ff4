"""How far a trained source network's per-tensor weight statistics moved from its own
initialisation: what Mean Var Init (``meanvar``) can carry over that a fresh initialisation
does not. For every base network of a run (the sources), each weight tensor's std trained /
initial (recomputed from the network's seed) and its mean, per layer, averaged over sources.

    python benchmarks/raghu2019_weight_scale.py runs/followups/raghu2019
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from safetensors.torch import load_file

from transferbench.config import load_config
from transferbench.network import initial_state, input_shape
from transferbench.resolve import resolve


def main(run_dir: str) -> None:
    run = Path(run_dir)
    config = load_config(run / "config.yaml")
    components = resolve(config)
    arch = components.architecture
    shape = input_shape(config.train.augment, components.data)
    plan = json.loads((run / "plan.json").read_text())
    ratios: dict[str, list[float]] = {}
    means: dict[str, list[tuple[float, float]]] = {}
    for job_id, job in plan["jobs"].items():
        ckpt = run / "checkpoints" / f"{job_id}.safetensors"
        if job["kind"] != "base" or not ckpt.is_file():
            continue
        trained = load_file(str(ckpt))
        init = initial_state(arch, job["num_classes"], shape, job["seed"])
        for key, value in trained.items():
            if not key.endswith("weight") or value.dim() < 2:
                continue
            t, i = value.double(), init[key].double()
            ratios.setdefault(key, []).append(t.std(correction=0).item() / i.std(correction=0).item())
            means.setdefault(key, []).append((t.mean().item(), i.mean().item()))
    print("tensor | std trained / std at init (mean over sources) | mean trained, mean at init | sources")
    for key, rs in ratios.items():
        mt = math.fsum(m for m, _ in means[key]) / len(rs)
        mi = math.fsum(m for _, m in means[key]) / len(rs)
        print(f"{key:22} {math.fsum(rs) / len(rs):6.3f}  ({min(rs):.3f}-{max(rs):.3f})  {mt:+.5f} {mi:+.5f}  {len(rs)}")


if __name__ == "__main__":
    main(sys.argv[1])
