"""The CLI as a user runs it: a real ``transferbench`` process on fake plugins installed
through an entry point."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
EXE = shutil.which("transferbench", path=str(Path(sys.executable).parent)) or "transferbench"


@pytest.fixture
def env(tmp_path):
    """An environment where the fake plugins are an installed third-party package."""
    site = tmp_path / "site"
    info = site / "tb_fakes-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tb-fakes\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[transferbench]\nfakes = tests.fakes\n")
    pythonpath = os.pathsep.join([str(site), str(REPO)])
    return {**os.environ, "PYTHONPATH": pythonpath, "COLUMNS": "120", "TERM": "dumb"}


def tb(env, *args, cwd=None, check_code=None):
    proc = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)
    if check_code is not None:
        assert proc.returncode == check_code, proc.stdout + proc.stderr
    return proc


def write(tmp_path, name="cfg.yaml", **changes):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(**changes)))
    return path


def test_validate_and_plan(env, tmp_path):
    cfg = write(tmp_path)
    out = tb(env, "validate", cfg, check_code=0).stdout
    assert "OK" in out and "14 networks" in out
    out = tb(env, "plan", cfg, "--set", "experiments.0.layers=[1,3]", check_code=0).stdout
    assert "10 networks to train (2 base, 8 transferred)" in out


@pytest.mark.parametrize(
    "changes, sets, expected",
    [
        ({"data": {"name": "blobz"}}, [], "unknown data source 'blobz'; known: blobs"),
        ({}, ["train.lr=fast"], "train.lr: Input should be a valid number"),
        ({}, ["data.dims=3"], "data.dims: unknown key"),
        ({}, ["experiments.0.layers=[4]"], "n must be in 1..3"),
        ({}, ["experiments.0.split.name=overlap"], "halves overlap"),
        ({}, ["train.epochs=null"], "set exactly one of train.epochs and train.steps"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(env, tmp_path, changes, sets, expected):
    cfg = write(tmp_path, **changes)
    run_dir = tmp_path / "existing"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("mine")
    args = ["run", cfg, "--out", run_dir] + [x for s in sets for x in ("--set", s)]
    proc = tb(env, *args, check_code=2)
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in run_dir.iterdir()) == ["keep.txt"]


def test_missing_config_file(env, tmp_path):
    proc = tb(env, "validate", tmp_path / "nope.yaml", check_code=2)
    assert "config file not found" in proc.stderr


def test_validate_reports_every_problem_with_its_key_path(env, tmp_path):
    cfg = write(tmp_path, architecture={"name": "mlp", "hidden": "wide"}, train={"lr": -1, "epochs": 1})
    proc = tb(env, "validate", cfg, check_code=2)
    assert "architecture.hidden" in proc.stderr and "train.lr" in proc.stderr


def test_run_then_report_then_resume(env, tmp_path):
    cfg = write(tmp_path)
    out_dir = tmp_path / "run"
    proc = tb(env, "run", cfg, "--out", out_dir, "--set", "train.epochs=2", check_code=0)
    assert "[14/14]" in proc.stdout
    assert (out_dir / "results_top1.csv").is_file()
    assert yaml.safe_load((out_dir / "config.yaml").read_text())["train"]["epochs"] == 2
    again = tb(env, "run", cfg, "--out", out_dir, "--set", "train.epochs=2", check_code=0)
    assert "14 of 14 networks already trained" in again.stdout


def test_run_killed_midway_resumes(env, tmp_path):
    # slow enough that the kill lands mid-grid: many epochs on more data
    cfg = write(tmp_path, data={"name": "blobs", "per_class": 100}, train={"lr": 0.05, "batch_size": 16, "epochs": 4})
    out_dir = tmp_path / "run"
    proc = subprocess.Popen([EXE, "run", cfg, "--out", out_dir], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list((out_dir / "records").glob("*.json")) if (out_dir / "records").exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.stem for p in (out_dir / "records").glob("*.json")}
    assert 3 <= len(finished) < 14, "the kill should land mid-grid"
    for p in (out_dir / "records").glob("*.json"):
        yaml.safe_load(p.read_text())  # every record file is whole
    resumed = tb(env, "run", cfg, "--out", out_dir, check_code=0)
    assert f"{len(finished)} of 14 networks already trained" in resumed.stdout
    assert len(list((out_dir / "records").glob("*.json"))) == 14


def test_failed_jobs_give_exit_code_1(env, tmp_path):
    cfg = write(tmp_path, data={"name": "blobs", "poison": 1})
    proc = tb(env, "run", cfg, "--out", tmp_path / "run", check_code=1)
    assert "FAILED" in proc.stdout
    assert "networks failed" in proc.stderr
