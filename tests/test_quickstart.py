"""The quickstart as a newcomer runs it (the real config, much smaller) through the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "transferbench"

REDUCED = [
    "--set", "data.num_classes=10", "--set", "data.train_per_class=12", "--set", "data.eval_per_class=4",
    "--set", "train.epochs=2", "--set", "train.schedule.step_every=1", "--set", "eval.every=1",
    "--set", "experiments.0.split.seeds=[0]", "--set", "experiments.1.split.seeds=[0]",
    "--set", "experiments.2.split.seeds=[0]", "--set", "executor.workers=1",
]


def test_the_quickstart_config_runs_the_papers_three_experiments(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    assert [e["name"] for e in config["experiments"]] == ["random", "dissimilar", "random_weights"]
    assert len(config["experiments"][0]["split"]["seeds"]) >= 3
    assert {1, 7} <= set(config["experiments"][0]["layers"])
    miniature = yaml.safe_load((REPO / "configs" / "miniature.yaml").read_text())
    assert all(e["layers"] == [1, 2, 3, 4, 5, 6, 7] for e in miniature["experiments"])
    assert {k: v for k, v in miniature.items() if k not in ("name", "experiments", "output")} == {
        k: v for k, v in config.items() if k not in ("name", "experiments", "output")}


def test_reduced_quickstart_runs_and_reports(tmp_path):
    env = {**os.environ, "COLUMNS": "120"}
    out = tmp_path / "run"
    proc = subprocess.run([str(EXE), "run", "configs/quickstart.yaml", "--out", str(out), *REDUCED],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    for header in ("random: top-1", "dissimilar: top-1", "random_weights: top-1", "Validity checks"):
        assert header in text
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    # random: 2 bases + 4 treatments x 3 n; dissimilar: 2 bases + 2 directions x 3 n; random weights: 1 + 3
    assert len(records) == (2 + 4 * 3) + (2 + 2 * 3) + (1 + 3) and all(r["status"] == "ok" for r in records)

    rep = subprocess.run([str(EXE), "report", str(out), "--compare", "paper"], capture_output=True, text=True,
                         cwd=REPO, env=env)
    assert rep.returncode == 0, rep.stderr
    assert "derived metrics" in rep.stdout and "Reproduction scorecard" in rep.stdout
    for name in ("figure2_random_top1.png", "figure2_dissimilar_top1.png", "figure2_random_weights_top1.png",
                 "figure3_top1.png", "results_top1.csv", "results_long.csv", "validity_checks_top1.csv",
                 "scorecard_top1.csv"):
        assert (out / name).is_file(), name
    with open(out / "scorecard_top1.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["name"] for r in rows if not r["part_of"]} == {"control", "co-adaptation", "specificity",
                                                             "fine-tuning boost", "dissimilar split", "random weights"}
    assert {r["name"] for r in rows if r["part_of"] == "co-adaptation"} == {"dip", "recovery"}
    assert {r["verdict"] for r in rows} <= {"reproduced", "contradicted", "inconclusive", "not determined"}
