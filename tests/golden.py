"""Golden records: what a few small grids give, so a refactoring can show it changed nothing.

``python -m tests.golden`` (from the repository root) runs every grid of :data:`GRIDS`
through the CLI and writes ``tests/data/golden_records.json``: for each grid, each cell
(experiment, split seed, treatment, n) with the numbers of the network that fills it.
tests/test_equivalence.py runs the same grids and compares. Regenerate only for a change
that is *meant* to change numbers (and say so in the commit).

Bit-identical numbers need the same floating-point kernels, so the file also records the
platform (torch version, CPU capability, one thread); the test skips elsewhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

GOLDEN = Path(__file__).parent / "data" / "golden_records.json"

#: Record fields that describe the computation (times, versions and devices do not).
COMPARED = ("status", "top1", "top5", "top1_best_k", "best_k", "steps", "frozen_cache",
            "num_classes", "trainable_params")


def _fake(**train: Any) -> dict[str, Any]:
    return {
        "name": "golden-fake",
        "seed": 0,
        "data": {"name": "blobs"},
        "architecture": {"name": "mlp"},
        "experiments": [{"name": "parity", "split": {"name": "parity", "seeds": [0, 1]},
                         "treatments": ["BnB", "BnB+", "AnB", "AnB+"]}],
        "train": {"lr": 0.1, "batch_size": 32, "epochs": 3, "weight_decay": 0.0, **train},
        "eval": {"best_k": 2},
        "device": "cpu",
    }


def _synthetic(**train: Any) -> dict[str, Any]:
    return {
        "name": "golden-synthetic",
        "seed": 3,
        "data": {"name": "synthetic", "num_classes": 10, "train_per_class": 24, "eval_per_class": 6,
                 "image_size": 16},
        "architecture": {"name": "caffenet_scaled", "width": 0.125, "fc_width": 32},
        "experiments": [
            {"name": "random", "split": {"name": "random", "seeds": [0]},
             "treatments": ["BnB", "AnB", "AnB+"], "layers": [2, 7]},
            {"name": "rw", "split": {"name": "random", "seeds": [0]}, "bases": ["all"],
             "treatments": [{"name": "random_frozen", "target": "all", "protocol": "random_frozen"}],
             "layers": [3]},
        ],
        "train": {"lr": 0.02, "batch_size": 16, "epochs": 5, **train,
                  "schedule": {"kind": "step", "step_every": 4, "gamma": 0.5}},
        "eval": {"best_k": 2},
        "device": "cpu",
    }


#: name -> config. Frozen-prefix cache on and off, augmentation on and off, a step schedule,
#: a protocol without a source, two split seeds.
GRIDS: dict[str, dict[str, Any]] = {
    "fake": _fake(),
    "fake_steps_nocache": {**_fake(epochs=None, steps=20),
                           "performance": {"cache_frozen": False}},
    "synthetic": _synthetic(),
    "synthetic_augment": {**_synthetic(augment={"crop": 16, "pad": 1, "mirror": True}),
                          "data": {"name": "synthetic", "num_classes": 10, "train_per_class": 24,
                                   "eval_per_class": 6, "image_size": 20}},
}


def cells(run_dir: Path) -> list[dict[str, Any]]:
    """The cells of a finished run with the compared fields of their records."""
    plan = json.loads((run_dir / "plan.json").read_text())
    out = []
    for cell in plan["cells"]:
        record = json.loads((run_dir / "records" / f"{cell['job_id']}.json").read_text())
        row = {k: cell[k] for k in ("experiment", "split_seed", "treatment", "n")}
        row.update({k: record.get(k) for k in COMPARED})
        row["history"] = [{k: h[k] for k in ("step", "epoch", "top1", "top5", "train_loss")}
                          for h in record.get("history") or []]
        out.append(row)
    return sorted(out, key=lambda r: (r["experiment"], r["split_seed"], r["treatment"], r["n"]))


def run_grid(name: str, workdir: Path) -> list[dict[str, Any]]:
    """Run one grid through the CLI (the fake plugins must be registered) and return its cells."""
    from transferbench.cli import main

    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(GRIDS[name]))
    out = workdir / name
    code = main(["run", str(config), "--out", str(out)])
    if code != 0:
        raise RuntimeError(f"grid {name} exited with {code}")
    return cells(out)


def platform() -> dict[str, str]:
    """What bit-identical floating-point results depend on (threads are fixed at one)."""
    import platform as pf

    import torch

    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
            "machine": pf.machine()}


def main() -> None:  # pragma: no cover - run by hand
    import tempfile

    import torch

    from tests import fakes
    from transferbench.plugins import get_host

    torch.set_num_threads(1)  # as in the test suite (tests/conftest.py)
    get_host().register(fakes, "tests.fakes", origin="test")
    with tempfile.TemporaryDirectory() as tmp:
        grids = {name: run_grid(name, Path(tmp)) for name in GRIDS}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"platform": platform(), "grids": grids}, indent=1) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    main()
