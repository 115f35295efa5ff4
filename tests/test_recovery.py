"""Every state a run directory can be left in has a way forward (issue 23, class 1).

Each test injects one fault into a run directory (a checkpoint damaged or deleted, of a base
network, of a finished transfer; a weights-file source changed while the run trains or after
it, deleted, or made unreadable) and walks it through what a user does: read the message,
run the command it advises, and end with a completed run that ``check``, ``run`` and
``export`` all describe the same way.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from tests.conftest import tiny_config
from tests.test_external_sources import _weights, _x_experiment
from transferbench.api import prepare
from transferbench.cli import main
from transferbench.engine import run_plan
from transferbench.files import sha256_file


@pytest.fixture(autouse=True)
def wide_output(monkeypatch):
    """Messages on one line each (paths are long), as a wide terminal shows them."""
    monkeypatch.setenv("COLUMNS", "1000")


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _config(tmp_path: Path, name: str = "cfg.yaml", **changes) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(**changes)))
    return path


def _jobs(out: Path) -> dict[str, dict]:
    return json.loads((out / "plan.json").read_text())["jobs"]


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}


def _advised(message: str) -> list[str]:
    """The command a message advises (between backquotes), as arguments of ``main``."""
    found = re.search(r"`(transferbench [^`]+)`", message)
    assert found, f"no command advised in: {message}"
    return shlex.split(found.group(1))[1:]


def _completed(capsys, cfg: Path, out: Path) -> None:
    """The run is whole: a rerun trains nothing and exits 0; check says intact."""
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 0 and "training 0 networks" in stdout, stdout + err
    code, checked, _ = cli(capsys, "check", out)
    assert code == 0 and "intact" in checked, checked


# --------------------------------------------------------------------------- checkpoints


def _victim(out: Path, kind: str) -> str:
    jobs = _jobs(out)
    return next(j for j, spec in sorted(jobs.items()) if spec["kind"] == kind
                and (out / "checkpoints" / f"{j}.safetensors").is_file())


@pytest.mark.parametrize("kind", ["base", "transfer"])
@pytest.mark.parametrize("fault", ["damaged", "missing"])
def test_a_lost_checkpoint_of_a_finished_run_is_retrained_by_the_command_the_messages_advise(
        fake_plugins, tmp_path, capsys, kind, fault):
    """A base network's checkpoint (kept: others copy from it), or a transfer's (kept with
    output.checkpoints: all), damaged or deleted after the run finished."""
    cfg = _config(tmp_path, output={"checkpoints": "all" if kind == "transfer" else "sources"})
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out)[0] == 0
    job = _victim(out, kind)
    ckpt = out / "checkpoints" / f"{job}.safetensors"
    before = _records(out)
    if fault == "damaged":
        data = bytearray(ckpt.read_bytes())
        data[-8:] = b"\0" * 8
        ckpt.write_bytes(bytes(data))
    else:
        ckpt.unlink()

    # check, export and run say the same thing: this network must train again
    code, checked, _ = cli(capsys, "check", out)
    assert f"a rerun trains 1 networks: checkpoint {fault}" in checked and "intact" not in checked, checked
    assert code == (1 if fault == "damaged" else 0)
    code, _, err = cli(capsys, "export", out, "--job", job, "--out", tmp_path / "x")
    assert code == 2 and f"is {fault}" in err and "was kept" in err, err
    assert "were not kept" not in err

    # the command it advises repairs the run, and nothing else changes
    code, stdout, err = cli(capsys, *_advised(err))
    assert code == 0, stdout + err
    after = _records(out)
    assert after[job]["checkpoint_sha256"] == before[job]["checkpoint_sha256"]  # retrained to the same weights
    assert sha256_file(ckpt) == before[job]["checkpoint_sha256"]
    for other, rec in before.items():
        if other != job:
            assert after[other]["finished_at"] == rec["finished_at"], "a dependent was retrained for nothing"
    if fault == "damaged":
        assert list((out / "damaged").rglob(f"{ckpt.name}.*")), "the damaged file is kept, not deleted"
    _completed(capsys, cfg, out)
    assert cli(capsys, "export", out, "--job", job, "--out", tmp_path / "x")[0] == 0


def test_weights_that_were_never_kept_are_kept_by_the_command_export_advises(fake_plugins, tmp_path, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out)[0] == 0
    job = next(j for j, spec in _jobs(out).items() if spec["kind"] == "transfer")
    code, _, err = cli(capsys, "export", out, "--job", job, "--out", tmp_path / "x")
    assert code == 2 and "were not kept" in err
    code, stdout, err = cli(capsys, *_advised(err))
    assert code == 0, stdout + err
    assert cli(capsys, "export", out, "--job", job, "--out", tmp_path / "x")[0] == 0
    code, checked, _ = cli(capsys, "check", out)
    assert code == 0 and "intact" in checked, checked


def test_estimator_jobs_keep_no_checkpoint_and_count_as_finished(fake_plugins, tmp_path, capsys):
    """With output.checkpoints: all, an estimator's job (which trains no network) is finished
    once it has its record: no rerun recomputes it and the run exits 0."""
    exp = {**tiny_config()["experiments"][0], "estimators": ["knn"], "layers": [1, 2]}
    cfg = _config(tmp_path, experiments=[exp], output={"checkpoints": "all"})
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out)[0] == 0
    _completed(capsys, cfg, out)


# --------------------------------------------------------------------------- a weights-file source


def _x_run(tmp_path: Path, name: str = "cfg.yaml") -> tuple[Path, Path]:
    weights = tmp_path / "w.safetensors"
    if not weights.exists():
        _weights(weights)
    return _config(tmp_path, name, experiments=_x_experiment(str(weights), ["XnB", "XnB+", "BnB"])), weights


def _x_jobs(out: Path) -> list[str]:
    return [j for j, spec in _jobs(out).items() if spec["source"] == "X"]


def _changed_while_training(cfg: Path, weights: Path, out: Path) -> str:
    """Plan with the file as it is, change it before the networks that copy it start, run:
    the error they record."""
    original = weights.read_bytes()
    prepared = prepare(cfg)
    _weights(weights, seed=5)
    summary = run_plan(prepared.config, prepared.components, prepared.plan, out, Console(quiet=True))
    failed = [r for r in _records(out).values() if r["status"] == "failed"]
    assert summary.failed == len(failed) == len(_x_jobs(out)) == 6
    assert weights.read_bytes() != original
    return failed[0]["error"]


def test_a_source_file_changed_while_the_run_trains(fake_plugins, tmp_path, capsys):
    cfg, weights = _x_run(tmp_path)
    original = weights.read_bytes()
    out = tmp_path / "run"
    error = _changed_while_training(cfg, weights, out)
    assert str(weights) in error and "changed since the run was planned" in error
    assert "put back the file it was planned with and rerun the command" in error and "another --out" in error
    # way 1: measure the new file in another run directory
    code, stdout, err = cli(capsys, "run", cfg, "--out", tmp_path / "new")
    assert code == 0, stdout + err
    # way 2: put the planned file back and rerun: this run finishes
    weights.write_bytes(original)
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 0 and "training 6 networks" in stdout, stdout + err
    _completed(capsys, cfg, out)


def test_a_changed_source_file_takes_over_the_cells_where_nothing_of_the_old_one_finished(
        fake_plugins, tmp_path, capsys):
    cfg, weights = _x_run(tmp_path)
    out = tmp_path / "run"
    _changed_while_training(cfg, weights, out)
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)  # the plain rerun hides no result: it works
    assert code == 0, stdout + err
    assert {r["source_sha256"] for j, r in _records(out).items() if j in _x_jobs(out)} == {sha256_file(weights)}
    _completed(capsys, cfg, out)


def test_a_source_file_changed_after_some_networks_finished_is_named_with_the_ways_forward(
        fake_plugins, tmp_path, capsys):
    cfg, weights = _x_run(tmp_path)
    original = weights.read_bytes()
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out)[0] == 0
    for job in _x_jobs(out)[:2]:  # as if they had not finished when the file changed
        (out / "records" / f"{job}.json").unlink()
    _weights(weights, seed=5)
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 2, stdout + err
    assert "now names a different network" in err and f"the weights file {weights} changed" in err
    assert "put back the file it was planned with" in err and "another --out" in err
    code, checked, _ = cli(capsys, "check", out)  # check says what run says
    assert code == 1 and "a rerun of its config.yaml is refused" in checked and str(weights) in checked
    # the two ways forward work
    assert cli(capsys, "run", cfg, "--out", tmp_path / "new")[0] == 0
    weights.write_bytes(original)
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 0 and "training 2 networks" in stdout, stdout + err
    _completed(capsys, cfg, out)


def test_a_source_file_moved_and_changed_is_named_by_both_paths(fake_plugins, tmp_path, capsys):
    cfg, weights = _x_run(tmp_path)
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out)[0] == 0
    other = tmp_path / "other.safetensors"
    _weights(other, seed=7)
    cfg2 = _config(tmp_path, "cfg2.yaml", experiments=_x_experiment(str(other), ["XnB", "XnB+", "BnB"]))
    code, _, err = cli(capsys, "run", cfg2, "--out", out)
    assert code == 2 and f"its weights file is now {other}" in err and f"trained from {weights}" in err, err


@pytest.mark.parametrize("fault", ["deleted", "unreadable"])
def test_a_source_file_deleted_or_damaged_after_the_run_is_named_until_it_is_back(
        fake_plugins, tmp_path, capsys, fault):
    cfg, weights = _x_run(tmp_path)
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out)[0] == 0
    original = weights.read_bytes()
    if fault == "deleted":
        weights.unlink()
    else:
        weights.write_bytes(original[:40])
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 2 and "experiments.0.source.checkpoint" in err and str(weights) in err, err
    assert "Traceback" not in stdout + err
    code, checked, _ = cli(capsys, "check", out)
    assert "cannot be resolved here" in checked and str(weights) in checked and "fails the same way" in checked
    assert cli(capsys, "report", out, "--no-plots")[0] == 0  # the results stay readable
    weights.write_bytes(original)
    _completed(capsys, cfg, out)


def test_a_source_file_deleted_while_the_run_trains_says_to_put_it_back(fake_plugins, tmp_path, capsys):
    cfg, weights = _x_run(tmp_path)
    prepared = prepare(cfg)
    kept = tmp_path / "kept.safetensors"
    shutil.move(weights, kept)
    out = tmp_path / "run"
    run_plan(prepared.config, prepared.components, prepared.plan, out, Console(quiet=True))
    error = next(r["error"] for r in _records(out).values() if r["status"] == "failed")
    assert str(weights) in error and "put the file back and rerun the command" in error
    shutil.move(kept, weights)
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 0 and "training 6 networks" in stdout, stdout + err
    _completed(capsys, cfg, out)
