"""A reduced quickstart through the CLI, as a newcomer runs it (the real config, smaller)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "transferbench"

REDUCED = [
    "--set", "data.num_classes=10", "--set", "data.train_per_class=24", "--set", "data.eval_per_class=6",
    "--set", "train.epochs=1", "--set", "experiments.0.layers=[1,4,7]", "--set", "executor.workers=1",
]


def test_reduced_quickstart_runs_and_reports(tmp_path):
    env = {**os.environ, "COLUMNS": "100"}
    out = tmp_path / "run"
    proc = subprocess.run([str(EXE), "run", "configs/quickstart.yaml", "--out", str(out), *REDUCED],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    for header in ("baseB", "BnB", "BnB+", "AnB", "AnB+"):
        assert header in text
    for row in ("conv1", "conv4", "fc7"):
        assert row in text
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 2 + 4 * 3 and all(r["status"] == "ok" for r in records)
    frozen_cached = [r for r in records if r.get("frozen_cache")]
    assert len(frozen_cached) == 6, "BnB and AnB at n = 1, 4, 7 use the frozen-prefix cache"

    rep = subprocess.run([str(EXE), "report", str(out)], capture_output=True, text=True, cwd=REPO, env=env)
    assert rep.returncode == 0, rep.stderr
    assert "derived metrics" in rep.stdout
    assert list(out.glob("*.png")) or list(out.rglob("*.png")), "report writes plots"
    assert (out / "results_top1.csv").is_file() and (out / "results_long.csv").is_file()
