"""Numbers that do not depend on scheduling (issue 23, class 2).

Floating-point sums depend on torch's thread count, so a job must compute with the same
count wherever the local executor runs it: in a worker process, or in the driver when it
is the only unit pending (as after every resume). And a run killed at any point resumes to
the numbers of the uninterrupted run, bit for bit on one machine, cohorts included.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console

from tests.golden import COMPARED
from tests.test_cli import EXE, env, tb  # noqa: F401 - env is a fixture
from transferbench.api import prepare
from transferbench.engine import run_plan


def _config(**changes: Any) -> dict[str, Any]:
    """caffenet_scaled on tiny synthetic images: its sums differ with 1 and 2 threads."""
    cfg: dict[str, Any] = {
        "name": "sched",
        "seed": 1,
        "data": {"name": "synthetic", "num_classes": 8, "train_per_class": 12, "eval_per_class": 4,
                 "image_size": 16},
        "architecture": {"name": "caffenet_scaled", "width": 0.125, "fc_width": 32},
        "experiments": [{"name": "random", "split": {"name": "random", "seeds": [0]},
                         "treatments": ["AnB+"], "layers": [1, 2]}],
        "train": {"lr": 0.02, "batch_size": 16, "epochs": 3},
        "eval": {"best_k": 2},
        "device": "cpu",
    }
    cfg.update(changes)
    return cfg


def _records(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")}


def _same(a: dict[str, Any], b: dict[str, Any], where: str) -> None:
    for key in (*COMPARED, "history", "input_std", "checkpoint_sha256"):
        assert a.get(key) == b.get(key), f"{where}: {key} differs"


def test_a_job_computes_the_same_in_the_driver_and_in_a_worker(tmp_path):
    """threads_per_worker: 2 while this process runs torch with 1 thread (tests/conftest.py):
    a job trained in a worker, then alone (in the driver), gives the same record."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(executor={"name": "local", "workers": 2, "threads_per_worker": 2},
                                          output={"checkpoints": "all"})))
    prepared = prepare(cfg)
    run_dir = tmp_path / "run"
    run_plan(prepared.config, prepared.components, prepared.plan, run_dir, Console(quiet=True))  # in workers
    in_worker = _records(run_dir)
    job = next(j for j in prepared.plan.jobs.values() if j.kind == "transfer")
    (run_dir / "records" / f"{job.id}.json").unlink()
    threads = torch.get_num_threads()
    summary = run_plan(prepared.config, prepared.components, prepared.plan, run_dir, Console(quiet=True))
    assert summary.trained == 1  # one unit pending: it runs in this process
    assert torch.get_num_threads() == threads, "the driver's own thread count is restored"
    _same(_records(run_dir)[job.id], in_worker[job.id], job.id)


# --------------------------------------------------------------------------- kill and resume


def _kill_when(env, cfg: Path, run_dir: Path, ready) -> int:  # noqa: F811
    """Start ``transferbench run``, SIGKILL it once ``ready(run_dir)``; the records it left."""
    proc = subprocess.Popen([EXE, "run", str(cfg), "--out", str(run_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None and not ready(run_dir):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the point it was to be killed at"
        proc.send_signal(signal.SIGKILL)  # its workers die with it (they ask the kernel)
    finally:
        proc.wait()
    return len(list((run_dir / "records").glob("*.json")))


def _joint_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "cohorts").rglob("*.pt"))


def _records_at_least(n: int):
    return lambda run_dir: len(list((run_dir / "records").glob("*.json"))) >= n


@pytest.mark.slow
@pytest.mark.parametrize("point", ["joint checkpoint", "bases finished"])
def test_a_run_killed_with_cohorts_resumes_to_the_uninterrupted_numbers(env, tmp_path, point):  # noqa: F811
    """Two workers (1 thread each on two cores) and one cohort of the transferred networks.
    The driver runs torch with its default count, so before the fix the resumed cohort (the
    only unit pending) computed with other sums than in the worker of the uninterrupted run."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(
        experiments=[{"name": "random", "split": {"name": "random", "seeds": [0]},
                      "treatments": ["BnB+", "AnB+"], "layers": [1, 5]}],
        executor={"name": "local", "workers": 2, "cohorts": True},
        output={"checkpoints": "all", "cohort_checkpoint_minutes": 0})))
    tb(env, "run", cfg, "--out", tmp_path / "whole", check_code=0)
    whole = _records(tmp_path / "whole")
    killed = tmp_path / "killed"
    ready = _joint_checkpoint if point == "joint checkpoint" else _records_at_least(2)
    left = _kill_when(env, cfg, killed, ready)
    assert left < len(whole), "killed after the work was done"
    tb(env, "run", cfg, "--out", killed, check_code=0)
    resumed = _records(killed)
    assert resumed.keys() == whole.keys()
    for jid in whole:
        _same(resumed[jid], whole[jid], jid)
    assert not _joint_checkpoint(killed)
