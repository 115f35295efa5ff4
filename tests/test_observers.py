"""Run observers (hook ``register_observers``): the engine calls them alongside the progress
display, in order, and a broken one never costs a run."""

from __future__ import annotations

import json
import types

import pytest

from transferbench import JobRecord, Observer, ReportInfo, RunInfo, hookimpl, plugins
from transferbench.cli import main

EVENTS: list[tuple] = []


class Recorder(Observer):
    """Appends every event to EVENTS."""

    def run_started(self, run: RunInfo) -> None:
        EVENTS.append(("run_started", run))

    def job_started(self, job) -> None:
        EVENTS.append(("job_started", job.id))

    def job_progress(self, job, step, total, info) -> None:
        EVENTS.append(("job_progress", job.id, step, total, info))

    def job_finished(self, job, record: JobRecord) -> None:
        EVENTS.append(("job_finished", job.id, record))

    def report_written(self, report: ReportInfo) -> None:
        EVENTS.append(("report_written", report))

    def close(self) -> None:
        EVENTS.append(("close",))


class Broken(Recorder):
    def job_finished(self, job, record) -> None:
        raise RuntimeError("the tracker's server went away")


class WontStart(Recorder):
    def run_started(self, run) -> None:
        raise ConnectionError("no tracker at that address")


@pytest.fixture
def observers(fake_plugins):
    module = types.ModuleType("test_observers_plugin")

    @hookimpl
    def register_observers(register):
        register("recorder", Recorder)
        register("broken", Broken)
        register("wont_start", WontStart)

    module.register_observers = register_observers
    EVENTS.clear()
    name = plugins.get_host().register(module, "test_observers_plugin", origin="test")
    yield EVENTS
    plugins.get_host().unregister(name)


def test_events_reach_the_observer_in_order(observers, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_config_file(observers=["recorder"])), "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    kinds = [e[0] for e in observers]
    assert kinds[0] == "run_started" and kinds[-2:] == ["report_written", "close"]
    run: RunInfo = observers[0][1]
    assert run.run_dir == out and run.name == "tiny" and set(run.todo) == set(plan["jobs"])
    assert run.layer_names == ("h1", "h2", "h3", "out")
    some = next(j for j in run.jobs if j.n == 2 and j.kind == "transfer")
    assert run.label(some).endswith("n=2 (parity, seed 0)")
    assert run.params(some)["train.lr"] == 0.1 and run.params(some)["n"] == 2
    finished = {e[1]: e[2] for e in observers if e[0] == "job_finished"}
    assert set(finished) == set(plan["jobs"]) and all(r.ok and r.history for r in finished.values())
    for jid in finished:  # each job: started, progress, finished, in that order
        mine = [e[0] for e in observers if len(e) > 1 and e[1] == jid]
        assert mine[0] == "job_started" and mine[-1] == "job_finished" and "job_progress" in mine
    progress = [e for e in observers if e[0] == "job_progress"]
    assert all(0 < step <= total and "loss" in info for _, _, step, total, info in progress)
    report: ReportInfo = observers[-2][1]
    names = [p.name for p in report.files]  # every file written from the run's computed report
    assert names[0] == "results_top1.csv" and "validity_checks_top1.json" in names and report.metric == "top1"
    assert all((out / name).is_file() for name in names)
    cell = next(c for c in report.cells if c["treatment"] == "AnB" and c["n"] == 2)
    assert cell["layer"] == "h2" and 0 <= cell["mean"] <= 1 and cell["experiment"] == "parity"


def test_a_rerun_reports_but_trains_nothing(observers, tiny_config_file, tmp_path):
    config = tiny_config_file(observers=["recorder"])
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    observers.clear()
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert [e[0] for e in observers] == ["run_started", "report_written", "close"]
    assert observers[0][1].todo == ()


def test_a_failing_observer_is_switched_off_and_the_run_goes_on(observers, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    config = tiny_config_file(observers=["broken", "recorder"])
    assert main(["run", str(config), "--out", str(out)]) == 0
    out_text = capsys.readouterr().out
    assert "observers.0 failed in job_finished (RuntimeError: the tracker's server went away)" in out_text
    finished = [e for e in observers if e[0] == "job_finished"]
    assert len(finished) == len(json.loads((out / "plan.json").read_text())["jobs"])  # the recorder saw all
    assert sum(1 for e in observers if e[0] == "close") == 2  # each closed once
    assert sum(1 for e in observers if e[0] == "report_written") == 1  # only the recorder


def test_an_observer_that_cannot_start_stops_the_run_before_training(observers, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_config_file(observers=["recorder", "wont_start"])), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "observers.1: could not start: ConnectionError: no tracker at that address" in err
    assert not list((out / "records").glob("*.json"))
    assert [e[0] for e in observers] == ["run_started", "close"]  # the first one was closed


def test_unknown_observer_is_a_config_error(observers, tiny_config_file, capsys):
    assert main(["validate", str(tiny_config_file(observers=["recorder", "recordr"]))]) == 2
    err = capsys.readouterr().err
    assert "observers.1.name" in err and "unknown observer 'recordr'" in err


def test_observers_do_not_change_job_ids(observers, tiny_config_file, tmp_path):
    from transferbench import prepare

    with_obs = prepare(tiny_config_file(observers=["recorder"])).plan
    without = prepare(tiny_config_file()).plan
    assert with_obs.config_hash == without.config_hash and set(with_obs.jobs) == set(without.jobs)


def test_the_observer_base_does_nothing_by_default(tmp_path):
    from transferbench import testing

    class Quiet(Observer):
        pass

    testing.check_observer(Quiet, tmp_path)
