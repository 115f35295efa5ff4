"""Estimators as jobs of the plan (hook ``register_estimators``): planned, content-hashed,
run after their base networks, resumed, and the cheap mode ``run --estimate-only``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from tests.conftest import tiny_config
from transferbench.audit import audit_run
from transferbench.cli import main
from transferbench.config import parse_config
from transferbench.engine import run_plan
from transferbench.errors import ConfigError
from transferbench.plan import build_plan
from transferbench.records import JobRecord, RecordError
from transferbench.resolve import resolve
from transferbench.store import RunStore

ESTIMATORS = ["linear", "knn", "logme", "cka"]


def _config(estimators=ESTIMATORS, **changes):
    cfg = tiny_config(**changes)
    cfg["experiments"][0]["treatments"] = ["BnB", "AnB", "AnB+"]
    cfg["experiments"][0]["estimators"] = list(estimators)
    return cfg


def _setup(cfg):
    config = parse_config(cfg)
    components = resolve(config)
    return config, components, build_plan(config, components)


def test_plan_has_one_estimate_job_per_pair_layer_and_estimator(fake_plugins):
    _, _, plan = _setup(_config())
    _, _, plain = _setup(_config(estimators=[]))
    estimates = [j for j in plan.jobs.values() if j.kind == "estimate"]
    # pairs A->B (AnB, AnB+) and B->B (BnB, and every target's own base), n = 1..3
    assert len(estimates) == len(plan.estimates) == 2 * 3 * len(ESTIMATORS)
    assert {(c.source, c.target) for c in plan.estimates} == {("A", "B"), ("B", "B")}
    # the networks do not change with estimators: same ids, same order, same cells
    assert [j for j in plan.jobs if plan.jobs[j].kind != "estimate"] == list(plain.jobs)
    assert plan.cells == plain.cells
    assert "estimates" in plan.to_json() and "estimates" not in plain.to_json()
    base = {j.target: j.id for j in plan.jobs.values() if j.kind == "base"}
    for job in estimates:
        assert job.depends_on == base[job.source] and job.classes == plan.jobs[base[job.target]].classes
        needs_ref = job.estimator_spec["name"] == "cka" and job.source != job.target
        assert job.after == ((base["B"],) if needs_ref else ())
        assert job.dependencies == (job.depends_on, *job.after)
    kinds = [j.kind for j in plan.jobs.values()]
    assert kinds == sorted(kinds, key=["base", "estimate", "transfer"].index)  # bases, then the cheap proxy
    waits = {j.id for j in estimates if j.source == "B" or j.estimator_spec["name"] == "cka"}
    assert {d.id for d in plan.dependents(base["B"]) if d.kind == "estimate"} == waits


def test_estimate_job_ids_hash_what_determines_the_score(fake_plugins):
    _, _, plan = _setup(_config())
    _, _, other = _setup({**_config(), "estimation": {"max_features": 8}})
    _, _, knn = _setup(_config(estimators=[{"name": "knn", "k": 3}, "linear"]))
    ids = {j for j in plan.jobs if plan.jobs[j].kind == "estimate"}
    assert not ids & set(other.jobs), "feature settings change every estimate job"
    assert {j for j in other.jobs if other.jobs[j].kind != "estimate"} == set(plan.jobs) - ids
    linear = {c.job_id for c in plan.estimates if c.estimator == "linear"}
    assert linear == {c.job_id for c in knn.estimates if c.estimator == "linear"}
    assert not {c.job_id for c in plan.estimates if c.estimator == "knn"} & set(knn.jobs)


def test_estimators_need_a_transfer_between_halves(fake_plugins):
    cfg = _config()
    cfg["experiments"][0]["treatments"] = [{"name": "random", "target": "B", "protocol": "random_frozen"}]
    with pytest.raises(ConfigError, match="estimators"):
        _setup(cfg)
    with pytest.raises(ConfigError, match="unknown estimator"):
        _setup(_config(estimators=["nope"]))


def test_estimate_jobs_run_resume_and_rerun_what_is_missing(fake_plugins, tmp_path):
    config, components, plan = _setup(_config())
    run_dir = tmp_path / "run"
    summary = run_plan(config, components, plan, run_dir, Console(quiet=True))
    assert summary.failed == 0 and summary.trained == len(plan.jobs)
    store = RunStore(run_dir)
    records = [store.read_record(c.job_id) for c in plan.estimates]
    assert all(r.ok and r.estimator and r.top1 is None and r.estimate is not None for r in records)
    assert all(r.features_s is not None and r.estimate_s is not None and r.feature_dim for r in records)
    again = run_plan(config, components, plan, run_dir, Console(quiet=True))
    assert (again.trained, again.skipped) == (0, len(plan.jobs))
    # a lost estimate is recomputed alone; one whose network lost its checkpoint retrains that network
    lost = plan.estimates[0]
    store.record_path(lost.job_id).unlink()
    assert [j.id for j in audit_run(plan, store).todo] == [lost.job_id]
    rerun = run_plan(config, components, plan, run_dir, Console(quiet=True))
    assert (rerun.trained, rerun.failed) == (1, 0)
    assert store.read_record(lost.job_id).estimate == records[0].estimate  # deterministic
    # an estimate whose second network (the reference, `after`) lost its checkpoint: that
    # network retrains, and every job reading it is recomputed (kept if the weights are the same)
    ref = next(j for j in plan.jobs.values() if j.kind == "estimate" and j.after)
    store.checkpoint_path(ref.after[0]).unlink()
    store.record_path(ref.id).unlink()
    audit = audit_run(plan, store)
    todo = [j.id for j in audit.todo]
    assert todo[0] == ref.after[0] and ref.id in todo
    assert set(todo) >= {j.id for j in plan.dependents(ref.after[0])}
    rerun = run_plan(config, components, plan, run_dir, Console(quiet=True))
    assert rerun.failed == 0 and store.read_record(ref.id).ok


def test_estimates_of_a_failed_base_are_recorded_as_failed(fake_plugins, tmp_path):
    cfg = _config(estimators=["linear"], data={"name": "blobs", "poison": 0})  # class 0 is in half A
    config, components, plan = _setup(cfg)
    run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    store = RunStore(tmp_path / "run")
    on_a = [store.read_record(c.job_id) for c in plan.estimates if c.source == "A"]
    on_b = [store.read_record(c.job_id) for c in plan.estimates if c.source == "B"]
    assert on_a and all(not r.ok and "source network" in r.error for r in on_a)
    assert all(r.ok for r in on_b)


def test_estimates_run_in_parallel_workers(fake_plugins, tmp_path):
    cfg = _config(estimators=["cka", "knn"], executor={"name": "local", "workers": 2})
    cfg["experiments"][0]["treatments"] = ["AnB"]
    config, components, plan = _setup(cfg)
    summary = run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    assert summary.failed == 0 and summary.trained == len(plan.jobs)


def test_estimate_record_round_trip_and_validation():
    record = JobRecord(job_id="e1", status="ok", estimator="knn", estimate=0.5, estimate_s=0.1, features_s=0.0,
                       feature_dim=12)
    again = JobRecord.from_json(record.to_json())
    assert again == record and again.ok and again.value("top1") is None
    network = JobRecord(job_id="n1", status="ok", top1=0.5)
    assert "estimator" not in json.loads(network.to_json()), "a network's record reads as in 0.1"
    with pytest.raises(RecordError, match="without top1"):
        JobRecord.from_json(json.dumps({"job_id": "x", "status": "ok"}))


# --------------------------------------------------------------------------- the CLI


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_cli_estimate_only_then_full_run_on_the_fake_plugins(tmp_path, fake_plugins, capsys):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_config()))
    out = tmp_path / "run"
    assert main(["plan", str(path), "--estimate-only", "-q"]) == 0
    assert "0 transferred" in capsys.readouterr().out
    assert main(["run", str(path), "--estimate-only", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "estimators on AnB" in text and "a proxy" in text
    plan = json.loads((out / "plan.json").read_text())
    assert plan["estimate_only"] and {j["kind"] for j in plan["jobs"].values()} == {"base", "estimate"}
    assert main(["report", str(out), "--no-plots"]) == 0
    report = capsys.readouterr().out
    assert "Estimates only: a proxy, not a measurement" in report and "linear:" in report
    rows = _csv(out / "results_estimators.csv")
    assert len(rows) == len(plan["estimates"]) and list(rows[0])[:8] == [
        "experiment", "split_seed", "source", "target", "n", "estimator", "value", "seconds"]
    assert _csv(out / "results_estimator_validation.csv") == []  # nothing to validate against

    assert main(["run", str(path), "--out", str(out)]) == 0  # the full grid reuses bases and estimates
    full = json.loads((out / "plan.json").read_text())
    trained = [p for p in (out / "records").glob("*.json")]
    assert len(trained) == len(full["jobs"]) and "estimate_only" not in full
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    report = capsys.readouterr().out
    for words in ("estimators against retraining", "against the strongest free baseline", "BnB-AnB gap",
                  "Where features turn specific",
                  "What the estimators cost"):
        assert words in report
    validation = _csv(out / "results_estimator_validation.csv")
    assert {r["comparison"] for r in validation} == {"layers", "gap"}
    assert {r["reference"] for r in validation} >= {"AnB", "AnB+", "BnB", "BnB-AnB"}
    assert all(r["points"] == "3" for r in validation)
    assert (out / "estimators.png").is_file() and (out / "results_estimator_cost.csv").is_file()


# --------------------------------------------------------------------------- cost before running


def test_plan_prints_what_the_estimators_cost_beside_retraining(tmp_path, fake_plugins, capsys):
    import yaml

    from transferbench.estimator_cost import estimate_estimators

    config, components, plan = _setup(_config())
    cost = estimate_estimators(config, components, plan, 20.0)
    assert cost.jobs == len(plan.estimates) and cost.transfer_networks == 9
    assert cost.feature_flop > 0 and cost.estimator_flop > 0 and cost.retraining_flop > 0 and not cost.unknown
    assert estimate_estimators(*_setup(_config(estimators=[]))[:2], _setup(_config(estimators=[]))[2], 20.0) is None
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_config()))
    assert main(["plan", str(path), "-q"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "11 networks to train (2 base, 9 transferred)" in out and "24 estimator jobs" in out
    assert "estimators: 24 jobs" in out and "times as much" in out


def test_the_paper_scale_quoted_by_the_report_is_what_plan_computes():
    from transferbench.api import prepare
    from transferbench.estimator_cost import estimate_estimators
    from transferbench.estimator_report import PAPER_SCALE

    four = "[linear,knn,logme,cka]"
    repo = Path(__file__).resolve().parents[1]
    prepared = prepare(repo / "configs" / "yosinski.yaml", [f"experiments.0.estimators={four}",
                                                            f"experiments.1.estimators={four}"])
    cost = estimate_estimators(prepared.config, prepared.components, prepared.plan, 20.0)
    assert cost.gpu_hours(cost.total_flop) == pytest.approx(PAPER_SCALE[0], rel=0.01)
    assert cost.gpu_hours(cost.retraining_flop) == pytest.approx(PAPER_SCALE[1], rel=0.01)


def test_estimator_code_is_not_the_networks_code(fake_plugins):
    from transferbench.fingerprint import ESTIMATION_ENTRY, training_modules

    assert not {"estimation", "features", "estimator"} & set(training_modules())
    assert {"estimation", "features", "estimator"} <= set(training_modules(ESTIMATION_ENTRY))
    _, _, plan = _setup(_config())
    kinds = {j.kind: j.fingerprint for j in plan.jobs.values()}
    assert kinds["estimate"] and kinds["estimate"] != kinds["base"]


def test_estimate_only_into_a_finished_run_keeps_its_retrained_networks(fake_plugins, tmp_path):
    config, components, plan = _setup(_config(estimators=["knn"]))
    run_dir = tmp_path / "run"
    run_plan(config, components, plan, run_dir, Console(quiet=True))
    again = run_plan(config, components, plan.without_transfers(), run_dir, Console(quiet=True))
    assert again.trained == 0
    saved = json.loads((run_dir / "plan.json").read_text())
    assert len(saved["cells"]) == len(plan.cells) and "estimate_only" not in saved
    assert len(saved["estimates"]) == len(plan.estimates)


def test_estimator_inputs_are_the_training_jobs_inputs(tmp_path):
    """With the paper's init (Caffe's 0-255 scale), the estimators' features see exactly the
    inputs training sees, and their records say so (the input-scale check reads them)."""
    from transferbench.context import TrainContext
    from transferbench.jobdata import input_transform, prepare_job_data
    from transferbench.network import build_target
    from transferbench.results import read_results
    from transferbench_plugins.caffenet import CAFFE_INPUT_STD

    cfg = tiny_config(data={"name": "synthetic", "num_classes": 4, "train_per_class": 6, "eval_per_class": 3,
                            "image_size": 16},
                      architecture={"name": "caffenet_scaled", "width": 0.125, "fc_width": 16, "conv1_stride": 1,
                                    "init": "paper"},
                      experiments=[{"name": "e", "split": {"name": "random", "seeds": [0]}, "treatments": ["AnB"],
                                    "layers": [1], "estimators": ["knn"]}],
                      train={"lr": 0.001, "batch_size": 8, "epochs": 1})
    config, components, plan = _setup(cfg)
    ctx = TrainContext(config, components, torch.device("cpu"))
    base = next(j for j in plan.jobs.values() if j.kind == "base")
    job_data = prepare_job_data(ctx, base.classes, build_target(components.architecture, base, ctx.input_shape, None))
    x = next(job_data.train.batches(8, shuffle=False))[0]
    trained_on = job_data.transform(x, train=False)
    assert torch.equal(input_transform(ctx)(x, train=False), trained_on)
    assert float(trained_on.std()) > CAFFE_INPUT_STD / 3  # Caffe's scale, not the data source's unit std

    run_plan(config, components, plan, tmp_path / "run", console=Console(quiet=True))
    results = read_results(tmp_path / "run")
    trained = [r.input_std for r in results.rows if r.input_std]
    estimated = [e.input_std for e in results.estimates if e.input_std]
    assert trained and estimated
    assert max(estimated) < 1.5 * min(trained) and min(estimated) > min(trained) / 1.5


def test_leep_and_nce_score_the_source_classifier_end_to_end(fake_plugins, tmp_path):
    cfg = _config(estimators=["linear", "leep", "nce"], train={"lr": 0.1, "batch_size": 32, "epochs": 2})
    cfg["experiments"][0]["treatments"] = ["AnB"]
    config, components, plan = _setup(cfg)
    _, _, linear_only = _setup({**cfg, "experiments": [{**cfg["experiments"][0], "estimators": ["linear"]}]})
    # the estimators that need the source's outputs leave the other estimate jobs' ids alone
    assert ({c.job_id for c in plan.estimates if c.estimator == "linear"}
            == {c.job_id for c in linear_only.estimates})
    summary = run_plan(config, components, plan, tmp_path / "run", Console(quiet=True))
    assert summary.failed == 0
    store = RunStore(tmp_path / "run")
    scores: dict[tuple[str, str, str], set[float]] = {}
    for cell in plan.estimates:
        record = store.read_record(cell.job_id)
        assert record.ok and record.estimate is not None
        scores.setdefault((cell.source, cell.target, cell.estimator), set()).add(record.estimate)
    classes = len(plan.jobs[plan.estimates[0].job_id].classes)
    for (_, _, name), values in scores.items():
        if name == "linear":
            continue
        assert len(values) == 1, f"{name} reads the source's classifier: one score at every n, got {values}"
        (value,) = values
        assert value <= 0  # both are log-likelihoods: -H(Y | Z) >= -log(classes) as well
        assert name != "nce" or value >= -math.log(classes) - 1e-9
