"""The ``ray`` executor against a real local Ray instance (2 CPUs), on the fake plugins.

Ray takes ~10 s to start, so one instance serves the whole module and the grid is small
(2 base networks, 4 transfers).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from rich.console import Console

from tests import fakes
from tests.conftest import tiny_config
from transferbench import hookimpl, plugins
from transferbench.config import parse_config
from transferbench.engine import run_plan
from transferbench.errors import ConfigError, TransferbenchError
from transferbench.plan import build_plan
from transferbench.progress import ProgressDisplay
from transferbench.resolve import resolve
from transferbench.runner import TrainingRunner
from transferbench.store import RunStore
from transferbench_plugins.protocols import Frozen
from transferbench_plugins.ray_executor import INSTALL_HINT, RayExecutor, RayParams, _check_reachable

pytestmark = [pytest.mark.slow, pytest.mark.extras]

REPO = Path(__file__).resolve().parents[1]


class DyingBlobsParams(fakes.BlobParams):
    marker: str  # created by the one worker that dies, so that only one does
    driver_pid: int  # never die in the test process itself


class DyingBlobs(fakes.Blobs):
    """The fake data source, whose first load in a worker process kills that process."""

    Params = DyingBlobsParams

    def load(self, split):
        p = self.params
        if os.getpid() != p.driver_pid:
            try:
                fd = os.open(p.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a lost node would
        return super().load(split)


class SlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay_s: float = 1.0


class SlowFrozen(Frozen):
    """The frozen protocol, taking ``delay_s`` to answer: a transfer job long enough to be
    interrupted. Short sleeps, so that a cancelled job is interrupted at once."""

    Params = SlowParams

    def actions(self, n, num_layers):
        end = time.monotonic() + self.params.delay_s
        while time.monotonic() < end:
            time.sleep(0.01)
        return super().actions(n, num_layers)


class _TestPlugin:
    @hookimpl
    def register_data_sources(self, register):
        register("dying_blobs", DyingBlobs)

    @hookimpl
    def register_protocols(self, register):
        register("slow_frozen", SlowFrozen)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason=f"Ray is not installed ({INSTALL_HINT})")
    try:
        # workers import tests.* (the fake plugins) from the repository, as the driver does
        ray.init(num_cpus=2, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}})  # and this checkout's plugins
    except Exception as exc:  # noqa: BLE001 - no Ray here is a reason to skip, not to fail
        pytest.skip(f"a local Ray instance could not start: {type(exc).__name__}: {exc}")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def plugin_host():
    host = plugins.get_host()
    names = [host.register(fakes, "tests.fakes.ray", origin="test"),
             host.register(_TestPlugin(), "tests.ray_plugins", origin="test")]
    yield host
    for name in names:
        host.unregister(name)


def _config(executor: dict[str, Any] | str = "local", **changes: Any) -> dict[str, Any]:
    exp = {"name": "parity", "split": {"name": "parity", "seeds": [0]},
           "treatments": ["AnB", "BnB+"], "layers": [1, 2]}
    return tiny_config(experiments=[exp], executor=executor, **changes)


def _run(run_dir: Path, cfg: dict[str, Any]):
    config = parse_config(cfg)
    components = resolve(config)
    plan = build_plan(config, components)
    summary = run_plan(config, components, plan, run_dir, Console(quiet=True))
    return plan, summary, RunStore(run_dir)


def _records(store: RunStore) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in store.records_dir.glob("*.json")}


def _same_results(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for jid in a:
        for key in ("status", "top1", "top5", "top1_best_k", "history"):
            assert a[jid][key] == b[jid][key], f"job {jid}: {key} differs"


@pytest.fixture(scope="module")
def local_reference(plugin_host, tmp_path_factory):
    """The grid trained by the local executor: what every Ray run must reproduce."""
    _, summary, store = _run(tmp_path_factory.mktemp("local") / "run", _config())
    assert summary.failed == 0
    return _records(store)


def _dying(tmp_path: Path, **executor: Any) -> dict[str, Any]:
    data = {"name": "dying_blobs", "marker": str(tmp_path / "died"), "driver_pid": os.getpid()}
    return _config({"name": "ray", **executor}, data=data)


# ---------------------------------------------------------------------- no Ray needed


def test_ray_executor_registers_without_ray_and_refuses_only_when_used(tmp_path):
    script = (
        "import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
        "from transferbench.plugins import get_registry\n"
        "reg = get_registry()\n"
        "assert 'ray' in reg.names('executor'), reg.names('executor')\n"
        "assert not reg.failures, reg.failures\n"
        "from transferbench.config import PluginRef\n"
        "from transferbench.resolve import instantiate\n"
        "problems = []\n"
        "assert instantiate(reg, 'executor', PluginRef(name='ray'), 'executor', problems) is None\n"
        "print(problems)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "executor.name" in out.stdout and "needs ray" in out.stdout
    assert INSTALL_HINT in out.stdout


def test_missing_ray_is_a_config_error_at_the_executor_key(plugin_host, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as err:
        resolve(parse_config(_config("ray")))
    expected = f"executor 'ray' needs ray, which is not installed: {INSTALL_HINT}"
    assert err.value.problems == [("executor.name", expected)]


@pytest.mark.parametrize(
    ("params", "cluster_gpus", "device", "gpus"),
    [({}, 4, "auto", 1), ({}, 4, "cpu", 0), ({}, 0, "cuda", 0), ({"num_gpus_per_job": 0.5}, 0, "cpu", 0.5)],
)
def test_task_options(params, cluster_gpus, device, gpus):
    pytest.importorskip("ray", reason=f"Ray is not installed ({INSTALL_HINT})")
    options = RayExecutor(RayParams(memory_per_job_gb=1.5, **params)).task_options(cluster_gpus, device)
    assert options["num_gpus"] == gpus
    assert options["memory"] == int(1.5 * 1024**3)
    assert options["max_retries"] == 2 and options["retry_exceptions"] is False


def test_every_ray_key_is_in_docs_ray():
    text = (REPO / "docs" / "ray.md").read_text()
    missing = [k for k in RayParams.model_fields if f"| `{k}` |" not in text]
    assert not missing, f"undocumented keys of the ray executor: {missing}"


def test_an_address_nobody_answers_at_fails_at_once():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(TransferbenchError, match="nothing answers at"):
            _check_reachable(address)
    assert time.monotonic() - started < 5  # Ray itself would retry for minutes
    _check_reachable("auto")  # resolved by Ray, not checked here


# ---------------------------------------------------------------------- on a Ray instance


def test_ray_grid_gives_the_records_of_the_local_executor(ray_instance, local_reference, tmp_path,
                                                         monkeypatch):
    events: list[tuple[str, str]] = []
    for name in ("job_started", "job_progress", "job_finished"):
        def spy(self, job, *args, _name=name, _real=getattr(ProgressDisplay, name)):  # noqa: B008 - binds now
            events.append((_name, job.id))
            _real(self, job, *args)

        monkeypatch.setattr(ProgressDisplay, name, spy)
    # a relative run directory: the workers run elsewhere (here: in the cwd Ray started in)
    monkeypatch.chdir(tmp_path)
    plan, summary, store = _run(Path("run"), _config("ray"))
    assert (summary.total, summary.skipped, summary.trained, summary.failed) == (6, 0, 6, 0)
    _same_results(_records(store), local_reference)
    ckpts = {p.stem for p in (tmp_path / "run" / "checkpoints").glob("*.safetensors")}
    assert ckpts == {j.id for j in plan.jobs.values() if j.kind == "base"}
    # the progress display heard of every job: started once, finished once, in that order
    # (step progress is best effort: these jobs end before a message is due)
    for jid, job in plan.jobs.items():
        mine = [e for e, j in events if j == jid]
        assert mine[0] == "job_started" and mine[-1] == "job_finished", mine
        assert mine.count("job_started") == 1 and mine.count("job_finished") == 1
        if job.depends_on:
            assert events.index(("job_finished", job.depends_on)) < events.index(("job_started", jid))

    # a task started again for a finished job (a retry after the record was written, or Ray
    # rebuilding a lost result) returns the record on disk instead of training again
    before = _records(store)
    config = parse_config(_config("ray"))
    components = resolve(config)
    components.executor.run(list(plan.jobs.values()), TrainingRunner(config, components, plan, tmp_path / "run"))
    assert _records(store) == before


def test_ray_trains_a_cohort_as_one_task_with_the_local_executor_s_records(ray_instance, plugin_host, tmp_path):
    from transferbench.testing import check_executor

    check_executor(RayExecutor(RayParams(cohorts=True)), tmp_path)
    _, _, local = _run(tmp_path / "local", _config({"name": "local", "cohorts": True}))
    plan, summary, store = _run(tmp_path / "ray", _config({"name": "ray", "cohorts": True}))
    assert plan.cohorts and summary.failed == 0 and summary.trained == len(plan.jobs)
    _same_results(_records(store), _records(local))


def test_a_killed_worker_is_retried_and_the_grid_completes(ray_instance, plugin_host, tmp_path):
    cfg = _dying(tmp_path, max_retries=1)
    plan, summary, store = _run(tmp_path / "ray", cfg)
    assert (tmp_path / "died").exists(), "no worker was killed: the test tests nothing"
    assert summary.failed == 0 and summary.trained == len(plan.jobs)
    # the retried job gives what an undisturbed run gives (the driver never dies: local run)
    _, _, local = _run(tmp_path / "local", {**cfg, "executor": "local"})
    _same_results(_records(store), _records(local))


def test_a_job_whose_worker_dies_too_often_is_recorded_failed(ray_instance, plugin_host, tmp_path):
    plan, summary, store = _run(tmp_path / "run", _dying(tmp_path, max_retries=0))
    records = _records(store)
    assert len(records) == len(plan.jobs)  # every job has a record, the lost one too
    lost = [r for r in records.values() if r["error"] and r["error"].startswith("ray: WorkerCrashedError")]
    assert len(lost) == 1
    lost_id = lost[0]["job_id"]
    assert plan.jobs[lost_id].kind == "base"  # bases start first, so one of them died
    for job in plan.jobs.values():
        if job.depends_on == lost_id:
            assert records[job.id]["status"] == "failed"
            assert records[job.id]["error"].startswith(f"source network {lost_id} failed")
        elif job.id != lost_id:
            assert records[job.id]["status"] == "ok"
    assert summary.failed == 1 + len(plan.dependents(lost_id))
    # a rerun retrains exactly the failed jobs (the marker is there: nothing dies now)
    _, again, _ = _run(tmp_path / "run", _dying(tmp_path, max_retries=0))
    assert (again.skipped, again.trained, again.failed) == (len(plan.jobs) - summary.failed, summary.failed, 0)


def test_interrupted_driver_cancels_and_the_rerun_resumes(ray_instance, plugin_host, tmp_path,
                                                          monkeypatch):
    slow = {"name": "slowAnB", "source": "A", "target": "B",
            "protocol": {"name": "slow_frozen", "delay_s": 1.5}}
    exp = {"name": "parity", "split": {"name": "parity", "seeds": [0]}, "treatments": [slow],
           "layers": [1, 2], "bases": ["A", "B"]}
    cfg = tiny_config(experiments=[exp], executor={"name": "ray", "cancel_grace_s": 5})
    finish = ProgressDisplay.job_finished

    def interrupt_after_first(self, job, record):
        finish(self, job, record)
        raise KeyboardInterrupt  # Ctrl-C while the driver waits for the other jobs

    monkeypatch.setattr(ProgressDisplay, "job_finished", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "run", cfg)
    monkeypatch.undo()
    store = RunStore(tmp_path / "run")
    kept = _records(store)
    assert 1 <= len(kept) < 4  # a base or two; the slow transfers cannot have finished
    assert all(r["status"] == "ok" for r in kept.values())
    time.sleep(2.5)  # longer than a slow job: a task that escaped cancellation would finish
    assert _records(store).keys() == kept.keys()

    plan, summary, _ = _run(tmp_path / "run", cfg)
    assert len(plan.jobs) == 4
    assert (summary.skipped, summary.trained, summary.failed) == (len(kept), 4 - len(kept), 0)
    final = _records(store)
    assert len(final) == 4 and all(r["status"] == "ok" for r in final.values())
    for jid, rec in kept.items():
        assert final[jid]["finished_at"] == rec["finished_at"]  # kept, not retrained
