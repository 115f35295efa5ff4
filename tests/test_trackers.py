"""The TensorBoard and MLflow observers, with the real libraries on local folders: what they
wrote is read back from their files (TensorBoard's EventAccumulator, MLflow's client on the
file store). Skipped, saying why, where the optional extra is not installed; CI installs
both extras and runs these (``pytest -m extras``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from transferbench import testing
from transferbench.cli import main
from transferbench_plugins.mlflow_observer import MLflowObserver, metric_name
from transferbench_plugins.tensorboard_observer import TensorBoardObserver

pytestmark = pytest.mark.extras

needs_tensorboard = pytest.mark.skipif(bool(TensorBoardObserver.missing_requirements()),
                                       reason="needs tensorboard: pip install 'transferbench[tensorboard]'")
needs_mlflow = pytest.mark.skipif(bool(MLflowObserver.missing_requirements()),
                                  reason="needs mlflow: pip install 'transferbench[mlflow]'")


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _tensor_tags(folder: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc.Tags()["tensors"]


def _mlflow_client(uri: str):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# --------------------------------------------------------------------------- TensorBoard


@needs_tensorboard
def test_tensorboard_writes_curves_and_grids_of_the_example_run(tmp_path):
    testing.check_observer(TensorBoardObserver, tmp_path)
    logdir = tmp_path / "tensorboard"
    base = _scalars(logdir / "exp" / "baseA_seed0")
    assert [s for s, _ in base["eval/top1"]] == [1, 2, 4]
    assert [v for _, v in base["eval/top1"]] == pytest.approx([0.25, 0.5, 1.0])
    assert base["final/top1"] == [(4, pytest.approx(1.0))]
    assert [s for s, _ in base["train/loss_running"]] == [1, 2, 3, 4]
    assert "record" in " ".join(_tensor_tags(logdir / "exp" / "baseA_seed0"))
    transfer = _scalars(logdir / "exp" / "AnB_n2_seed0")
    assert [s for s, _ in transfer["eval/top1"]] == [1, 2]
    failed = _scalars(logdir / "exp" / "baseB_seed0")
    assert "eval/top1" not in failed and "final/top1" not in failed
    assert _scalars(logdir / "grids" / "exp" / "AnB")["grid/top1"] == [(2, pytest.approx(0.5))]
    assert _scalars(logdir / "grids" / "exp" / "baseA")["grid/top1"] == [(0, pytest.approx(1.0))]


# --------------------------------------------------------------------------- MLflow


def test_mlflow_metric_names_are_valid():
    assert metric_name("exp/AnB+/top1") == "exp/AnB_plus/top1"
    assert metric_name("a b:c") == "a b_c"


@needs_mlflow
def test_mlflow_logs_one_run_per_network_with_params_metrics_and_the_record(tmp_path):
    testing.check_observer(MLflowObserver, tmp_path)
    client = _mlflow_client((tmp_path.resolve() / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("contract")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"baseA (exp, seed 0)", "baseB (exp, seed 0)", "AnB n=2 (exp, seed 0)", "report"}
    base = runs["baseA (exp, seed 0)"]
    assert base.info.status == "FINISHED" and runs["baseB (exp, seed 0)"].info.status == "FAILED"
    assert base.data.tags["transferbench.job_id"] == "base-a"
    assert base.data.params["treatment"] == "baseA" and base.data.params["train.lr"] == "0.1"
    assert base.data.params["architecture.widths"] == "4, 4"
    history = client.get_metric_history(base.info.run_id, "top1")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.5), (4, 1.0)]
    assert [m.step for m in client.get_metric_history(base.info.run_id, "train_loss_running")] == [1, 2, 3, 4]
    assert base.data.metrics["final_top1"] == 1.0
    record = Path(client.download_artifacts(base.info.run_id, "record.json", str(tmp_path / "dl")))
    assert json.loads(record.read_text())["job_id"] == "base-a"
    report = runs["report"]
    assert [(m.step, m.value) for m in client.get_metric_history(report.info.run_id, "exp/AnB/top1")] == [(2, 0.5)]
    assert [a.path for a in client.list_artifacts(report.info.run_id)] == ["results_top1.csv"]


# --------------------------------------------------------------------------- through a real run


@needs_tensorboard
@needs_mlflow
def test_both_trackers_watch_a_real_run_through_the_cli(tiny_config_file, tmp_path, capsys):
    config = tiny_config_file(observers=["tensorboard", {"name": "mlflow", "experiment": "tiny-grid"}])
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0, capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text())
    jobs = len(plan["jobs"])
    # TensorBoard: one folder per network under the experiment, and the grids
    folders = sorted(p.name for p in (out / "tensorboard" / "parity").iterdir())
    assert len(folders) == jobs and "baseB_seed0" in folders and "AnB+_n1_seed0" in folders
    curves = _scalars(out / "tensorboard" / "parity" / "baseB_seed0")
    assert len(curves["eval/top1"]) == tiny_config()["train"]["epochs"]  # one evaluation an epoch
    grid = _scalars(out / "tensorboard" / "grids" / "parity" / "AnB")["grid/top1"]
    assert [n for n, _ in grid] == [1, 2, 3]
    # MLflow: the file store in the run directory, one run per network plus the report
    client = _mlflow_client((out.resolve() / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny-grid")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == jobs + 1
    assert all(r.info.status == "FINISHED" for r in runs)
    ids = {r.data.tags.get("transferbench.job_id") for r in runs} - {None}
    assert ids == set(plan["jobs"])
    # a rerun trains nothing: no new network runs, one more report
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == jobs + 2


def test_a_missing_tracker_library_is_a_clear_exit_2(tiny_config_file, monkeypatch, capsys):
    monkeypatch.setattr(MLflowObserver, "requires", ("surely_not_installed_mlflow_xyz",))
    config = tiny_config_file(observers=[{"name": "mlflow"}])
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert "observers.0.name" in err and "surely_not_installed_mlflow_xyz" in err
    assert "transferbench[mlflow]" in err


@needs_tensorboard
def test_observer_keys_are_checked(tiny_config_file, capsys):
    config = tiny_config_file(observers=[{"name": "tensorboard", "log_dir": "x"}])
    assert main(["validate", str(config)]) == 2
    assert "observers.0.log_dir" in capsys.readouterr().err
    assert yaml.safe_load(config.read_text())["observers"]
