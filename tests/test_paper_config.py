"""configs/yosinski.yaml without ImageNet: splits reproduce the paper's, plan works, run stops."""

from __future__ import annotations

import csv
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from transferbench.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "yosinski.yaml")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def split_rows():
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["splits", CONFIG]) == 0
    return list(csv.DictReader(io.StringIO(buf.getvalue()), delimiter="\t"))


def test_random_splits_match_the_paper(split_rows):
    ref = list(csv.DictReader((DATA / "imagenet_random_splits.tsv").open(), delimiter="\t"))
    for seed in range(4):
        ours = {(r["index"], r["id"]): r["half"] for r in split_rows if r["split"] == f"random/seed{seed}"}
        theirs = {(r["index"], r["wnid"]): r[f"split{seed}"] for r in ref}
        assert len(ours) == 1000 and ours == theirs, f"split {seed}"


def test_manmade_natural_matches_the_paper(split_rows):
    ref = list(csv.DictReader((DATA / "imagenet_manmade_natural.tsv").open(), delimiter="\t"))
    ours = {(r["index"], r["id"]): r["half"] for r in split_rows if r["split"] == "manmade_natural/seed0"}
    theirs = {(r["index"], r["wnid"]): "A" if r["group"] == "natural" else "B" for r in ref}
    assert ours == theirs
    assert sum(h == "A" for h in ours.values()) == 449


def test_split_rows_have_names(split_rows):
    row = next(r for r in split_rows if r["id"] == "n01440764")
    assert row["name"].startswith("tench") and row["index"] == "0"


def test_plan_prints_the_paper_grid_and_its_compute(capsys):
    assert main(["plan", CONFIG, "-q"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "256 networks to train (11 base, 245 transferred)" in out
    assert "GPU-hours" in out and "1.45 GFLOP per forward pass" in out


def test_run_without_imagenet_stops_with_exit_2_before_any_work(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["run", CONFIG, "--out", str(out_dir), "--set", f"data.root={tmp_path / 'nope'}"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "is not a folder" in err and "--set data.<key>=<path>" in err and "Hugging Face" in err
    assert not out_dir.exists()
