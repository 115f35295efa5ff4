"""Fault injection: bad input, damaged files, changed code, dead processes (issue 12).

Every test injects a fault (a foreign folder, a truncated file, a corrupt image, a kill, a
misspelling, a umask) and checks what a user sees: the exit code (2 for bad input before any
work; 1 only when a network failed for a reason of its own), a message naming the key or file,
no traceback, and nothing the user had lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from tests.test_cli import EXE, env, tb, write  # noqa: F401 - env is a fixture
from transferbench.cli import main
from transferbench.store import RunStore


@pytest.fixture(autouse=True)
def wide_output(monkeypatch):
    """Messages on one line each (paths are long), as a wide terminal shows them."""
    monkeypatch.setenv("COLUMNS", "400")


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process (the fake plugins registered by the fixture)."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def config_file(tmp_path: Path, filename: str = "cfg.yaml", **changes) -> Path:
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(tiny_config(**changes)))
    return path


def finished_run(tmp_path: Path, capsys, **changes) -> tuple[Path, Path]:
    cfg = config_file(tmp_path, **changes)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 0, err
    return cfg, out


def no_traceback(*texts: str) -> None:
    assert all("Traceback" not in t for t in texts)


# --------------------------------------------------------------------------- 1. foreign folders


@pytest.mark.parametrize("what", ["folder with files", "a file", "under a file"])
def test_run_never_writes_into_a_folder_that_is_not_its_own(fake_plugins, tmp_path, capsys, what):
    cfg = config_file(tmp_path)
    if what == "folder with files":
        out = tmp_path / "mine"
        out.mkdir()
        (out / "config.yaml").write_text("my own file")
        (out / "results.csv").write_text("my results")
    elif what == "a file":
        out = tmp_path / "notes.txt"
        out.write_text("my notes")
    else:
        (tmp_path / "notes.txt").write_text("my notes")
        out = tmp_path / "notes.txt" / "run"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 2 and str(out.name) in err, err
    no_traceback(stdout, err)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_name_that_would_escape_runs_is_refused(fake_plugins, tmp_path, capsys, name):
    cfg = config_file(tmp_path, name=name)
    code, _, err = cli(capsys, "validate", cfg)
    assert code == 2 and "name" in err


def test_output_dir_pointing_at_the_working_directory_is_refused(fake_plugins, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_file(tmp_path, output={"dir": "."})
    code, _, err = cli(capsys, "run", cfg)
    assert code == 2 and "not a transferbench run directory" in err
    assert yaml.safe_load(cfg.read_text())["name"] == "tiny"  # the input config is untouched


def test_an_empty_folder_or_its_own_run_is_fine(fake_plugins, tmp_path, capsys):
    cfg = config_file(tmp_path)
    (tmp_path / "empty").mkdir()
    assert cli(capsys, "run", cfg, "--out", tmp_path / "empty")[0] == 0
    code, out, _ = cli(capsys, "run", cfg, "--out", tmp_path / "empty")
    assert code == 0 and "14 of 14 networks already trained" in out


# --------------------------------------------------------------------------- 2. experiment lists


def test_changing_the_experiments_extends_the_run_and_hides_nothing(fake_plugins, tmp_path, capsys):
    cfg, out = finished_run(tmp_path, capsys)
    other = {"name": "other", "split": {"name": "parity", "seeds": [1]}, "treatments": ["AnB"], "layers": [2]}
    cfg2 = config_file(tmp_path, "cfg2.yaml", experiments=[other])
    code, stdout, err = cli(capsys, "run", cfg2, "--out", out)
    assert code == 0, err
    assert "keeping the cells of experiments no longer in the config (parity)" in stdout
    code, report, _ = cli(capsys, "report", out, "--no-plots")
    assert code == 0 and "parity: top-1" in report and "other: top-1" in report
    assert "pending" not in report.splitlines()[0]  # every network of both experiments has its record


def test_redefining_a_treatment_under_the_same_name_is_refused(fake_plugins, tmp_path, capsys):
    cfg, out = finished_run(tmp_path, capsys)
    exp = tiny_config()["experiments"][0]
    changed = {**exp, "treatments": [{"name": "AnB", "source": "A", "target": "B",
                                      "protocol": {"name": "finetune", "copied_lr_mult": 0.5}}]}
    code, _, err = cli(capsys, "run", config_file(tmp_path, "cfg2.yaml", experiments=[changed]), "--out", out)
    assert code == 2 and "'AnB'" in err and "different network" in err


# --------------------------------------------------------------------------- 3. damaged files


def _some_record(out: Path, kind: str = "transfer") -> Path:
    plan = json.loads((out / "plan.json").read_text())
    job_id = next(j for j, spec in plan["jobs"].items() if spec["kind"] == kind)
    return out / "records" / f"{job_id}.json"


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],                     # truncated
    lambda text: "[1, 2, 3]",                                # valid JSON, wrong shape
    lambda text: text.replace('"top1": 0', '"top1": "abc"', 1).replace('"top1": 1', '"top1": "abc"', 1),
    lambda text: json.dumps({**json.loads(text), "job_id": "someone-else"}),
], ids=["truncated", "wrong-shape", "non-numeric", "other-job"])
def test_a_damaged_record_is_named_moved_aside_and_recomputed(fake_plugins, tmp_path, capsys, damage):
    cfg, out = finished_run(tmp_path, capsys)
    record = _some_record(out)
    good = json.loads(record.read_text())
    record.write_text(damage(record.read_text()))
    code, report, err = cli(capsys, "report", out, "--no-plots")
    assert code == 0 and record.name in report and "unreadable" in report, err  # named; the rest reported
    code, checked, _ = cli(capsys, "check", out)
    assert code == 1 and record.name in checked and "a rerun trains 1 networks" in checked
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 0 and record.name in stdout and "damaged" in stdout, stdout + err
    assert json.loads(record.read_text())["top1"] == good["top1"]  # recomputed, same numbers
    assert list((out / "damaged" / "records").iterdir()), "the damaged file is kept, not deleted"
    assert cli(capsys, "check", out)[0] == 0


def test_a_truncated_plan_is_named_and_rebuilt(fake_plugins, tmp_path, capsys):
    cfg, out = finished_run(tmp_path, capsys)
    plan = out / "plan.json"
    plan.write_text(plan.read_text()[:100])
    code, _, err = cli(capsys, "report", out)
    assert code == 2 and "plan.json" in err and "damaged" in err
    no_traceback(err)
    code, stdout, _ = cli(capsys, "run", cfg, "--out", out)
    assert code == 0 and "14 of 14 networks already trained" in stdout
    assert json.loads(plan.read_text())["cells"] and list((out / "damaged").glob("plan.json.*"))


def test_a_damaged_source_checkpoint_is_moved_aside_and_its_network_retrained(fake_plugins, tmp_path, capsys):
    cfg, out = finished_run(tmp_path, capsys)
    ckpt = next((out / "checkpoints").glob("*.safetensors"))
    data = bytearray(ckpt.read_bytes())
    data[-20:] = b"\0" * 20  # flipped bytes: the file still parses, its weights are wrong
    ckpt.write_bytes(bytes(data))
    record = out / "records" / f"{ckpt.stem}.json"
    code, checked, _ = cli(capsys, "check", out)
    assert code == 1 and ckpt.name in checked
    # a dependent must train (so the source is needed): remove one
    plan = json.loads((out / "plan.json").read_text())
    dependent = next(j for j, spec in plan["jobs"].items() if spec["depends_on"] == ckpt.stem)
    (out / "records" / f"{dependent}.json").unlink()
    code, stdout, err = cli(capsys, "run", cfg, "--out", out)
    assert code == 0, stdout + err
    assert RunStore(out).checkpoint_problem(ckpt.stem, json.loads(record.read_text())["checkpoint_sha256"]) is None
    assert list((out / "damaged").rglob(f"{ckpt.name}.*"))
    assert cli(capsys, "check", out)[0] == 0


def test_a_damaged_shared_cache_entry_is_moved_aside_and_trained(fake_plugins, tmp_path, capsys):
    shared = tmp_path / "shared"
    cfg, out = finished_run(tmp_path, capsys, output={"shared_cache": str(shared)})
    entry = next(shared.glob("*.json"))
    entry.write_text("{ not json")
    cfg2 = config_file(tmp_path, "cfg2.yaml", output={"shared_cache": str(shared)})
    code, stdout, err = cli(capsys, "run", cfg2, "--out", tmp_path / "second")
    assert code == 0, stdout + err
    assert "reusing 13 networks from the shared cache" in stdout
    assert list((shared / "damaged").iterdir())


def test_check_says_intact_and_what_a_rerun_redoes(fake_plugins, tmp_path, capsys):
    cfg, out = finished_run(tmp_path, capsys)
    code, checked, _ = cli(capsys, "check", out)
    assert code == 0 and "intact" in checked
    _some_record(out).unlink()
    code, checked, _ = cli(capsys, "check", out)
    assert code == 0 and "a rerun trains 1 networks: not trained yet" in checked
    code, _, err = cli(capsys, "check", tmp_path)
    assert code == 2 and "not a run directory" in err


# --------------------------------------------------------------------------- 4. other code


def test_networks_of_other_code_are_retrained_unless_the_user_opts_in(fake_plugins, tmp_path, capsys):
    cfg, out = finished_run(tmp_path, capsys)
    record = _some_record(out)
    data = json.loads(record.read_text())
    data["fingerprint"]["id"] = "0ld0ld0ld0ld0ld0"
    data["fingerprint"]["versions"]["torch"] = "1.0.0"
    record.write_text(json.dumps(data))
    code, report, _ = cli(capsys, "report", out, "--no-plots")
    assert "WARN provenance: networks trained by different code: torch 1.0.0 / " in report
    code, stdout, _ = cli(capsys, "run", cfg, "--out", out, "--set", "output.reuse_across_code=true")
    assert code == 0 and "13 of 14 networks already trained" not in stdout  # kept: 14 of 14
    assert json.loads(record.read_text())["fingerprint"]["id"] == "0ld0ld0ld0ld0ld0"
    code, stdout, _ = cli(capsys, "run", cfg, "--out", out)
    assert code == 0 and "retraining 1 networks trained by other code" in stdout
    assert json.loads(record.read_text())["fingerprint"]["id"] != "0ld0ld0ld0ld0ld0"
    assert (out / "superseded" / "records" / record.name).is_file()


# --------------------------------------------------------------------------- 5. vanishing sources


def test_no_checkpoints_with_transfer_is_refused_before_training(fake_plugins, tmp_path, capsys):
    cfg = config_file(tmp_path, output={"checkpoints": "none"})
    code, _, err = cli(capsys, "run", cfg, "--out", tmp_path / "run")
    assert code == 2 and "output.checkpoints" in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- 6. found before work


@pytest.mark.parametrize("changes, sets, expected", [
    ({"device": "cuda"}, [], "device: 'cuda' asks for CUDA"),
    ({"device": "gpu0"}, [], "device: 'gpu0' is not a device"),
    ({}, ["train.lr=.inf"], "train.lr: inf is not a finite number"),
    ({}, ["data.noise=.nan"], "data.noise: nan is not a finite number"),
])
def test_problems_are_found_by_validate_not_inside_every_job(fake_plugins, tmp_path, capsys, changes, sets, expected):
    if changes.get("device") == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    cfg = config_file(tmp_path, **changes)
    args = [x for s in sets for x in ("--set", s)]
    for command in (["validate", cfg], ["run", cfg, "--out", tmp_path / "run"]):
        code, stdout, err = cli(capsys, *command, *args)
        assert code == 2 and expected in err, err
        no_traceback(stdout, err)
    assert not (tmp_path / "run").exists()


def test_duplicate_yaml_keys_are_refused_with_their_line(fake_plugins, tmp_path, capsys):
    cfg = tmp_path / "dup.yaml"
    text = yaml.safe_dump(tiny_config())
    cfg.write_text(text + "train:\n  lr: 0.5\n  batch_size: 8\n  epochs: 1\n")
    code, _, err = cli(capsys, "validate", cfg)
    assert code == 2 and "'train' is given twice" in err and "line" in err


@pytest.mark.parametrize("line,field,value", [("batched: on", "batched", "on"), ("batched: off", "batched", "off"),
                                              ("amp: off", "amp", "off"), ("batched: 'on'", "batched", "on")])
def test_unquoted_yaml_switches_mean_what_they_say(fake_plugins, tmp_path, capsys, line, field, value):
    """YAML 1.1 reads unquoted on/off as booleans; a switch written that way means its word."""
    from transferbench.config import load_config

    cfg = tmp_path / "switch.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in tiny_config().items() if k != "performance"})
                   + f"performance:\n  {line}\n")
    assert getattr(load_config(cfg).performance, field) == value
    code, stdout, err = cli(capsys, "validate", cfg, "--set", f"performance.{field}={value}")
    assert code == 0, err


def test_amp_on_says_which_word_to_write(fake_plugins, tmp_path, capsys):
    code, stdout, err = cli(capsys, "validate", config_file(tmp_path), "--set", "performance.amp=on")
    assert code == 2 and "write amp: bf16" in err
    no_traceback(stdout, err)


def test_a_config_that_is_not_utf8_is_a_message(fake_plugins, tmp_path, capsys):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes(b"# r\xe9sum\xe9 of the run (latin-1)\n" + yaml.safe_dump(tiny_config()).encode())
    code, stdout, err = cli(capsys, "validate", cfg)
    assert code == 2 and "UTF-8" in err
    no_traceback(stdout, err)


@pytest.mark.parametrize("args", [["plan", "{cfg}", "--tflops", "0"], ["layers", "mlp", "--classes", "-1"],
                                  ["plan", "{cfg}", "--tflops", "nan"]])
def test_bad_numbers_on_the_command_line(fake_plugins, tmp_path, capsys, args):
    cfg = config_file(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([a.format(cfg=cfg) for a in args])
    assert exc.value.code == 2
    assert "must be a finite number above 0" in capsys.readouterr().err


def test_a_cache_path_under_a_file_is_refused_before_training(fake_plugins, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cfg = config_file(tmp_path, output={"shared_cache": str(tmp_path / "file" / "cache")})
    code, _, err = cli(capsys, "run", cfg, "--out", tmp_path / "run")
    assert code == 2 and "output.shared_cache" in err and "is a file" in err
    assert not (tmp_path / "run").exists()


def test_corrupt_images_stop_the_run_once_naming_every_bad_file(env, tmp_path):  # noqa: F811
    from tests.test_data_sources import make_ilsvrc

    root = tmp_path / "tree"
    make_ilsvrc(root, per_class=(4, 4, 4, 4))
    for split in ("train",):
        for k, wnid_dir in enumerate(sorted((root / split).iterdir())):
            (wnid_dir / f"val_{k}.JPEG").write_bytes((wnid_dir / f"{wnid_dir.name}_0.JPEG").read_bytes())
    import shutil

    shutil.copytree(root / "train", root / "val")
    bad = [root / "train" / sorted(os.listdir(root / "train"))[0] / "broken.JPEG",
           root / "val" / sorted(os.listdir(root / "val"))[1] / "also_broken.JPEG"]
    for path in bad:
        path.write_bytes(b"not an image at all")
    cfg = tmp_path / "cfg.yaml"
    raw = tiny_config(data={"name": "imagefolder", "root": str(root), "resize": 8, "imagenet": False},
                      architecture={"name": "caffenet_scaled", "width": 0.125, "fc_width": 16,
                                    "conv1_stride": 1},
                      experiments=[{"name": "e", "split": {"name": "random", "reference": "source"},
                                    "treatments": ["AnB"], "layers": [1]}],
                      loader={"in_memory_max_gb": 0})
    cfg.write_text(yaml.safe_dump(raw))
    proc = tb(env, "run", cfg, "--out", tmp_path / "run", check_code=2)
    no_traceback(proc.stdout, proc.stderr)
    assert all(path.name in proc.stderr for path in bad), proc.stderr
    assert "2 unreadable examples" in proc.stderr
    assert not list((tmp_path / "run" / "records").glob("*.json")), "no failed record per network"


# --------------------------------------------------------------------------- 8. processes


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.slow
def test_workers_die_with_their_driver(env, tmp_path):  # noqa: F811
    cfg = write(tmp_path, executor={"name": "local", "workers": 2},
                train={"lr": 0.1, "batch_size": 8, "epochs": 40, "weight_decay": 0.0})
    proc = subprocess.Popen([EXE, "run", str(cfg), "--out", str(tmp_path / "run")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [p for p in _children(proc.pid) if "spawn" in open(f"/proc/{p}/cmdline").read()]
        time.sleep(0.2)
    assert len(workers) >= 2, "the run should have started its workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "worker processes outlived their driver"


@pytest.mark.slow
def test_a_dead_worker_costs_only_its_own_job(env, tmp_path):  # noqa: F811
    marker = tmp_path / "died"
    cfg = write(tmp_path, executor={"name": "local", "workers": 2},
                data={"name": "dying_blobs", "marker": str(marker), "driver_pid": -1})
    env = {**env, "PYTHONPATH": env["PYTHONPATH"]}
    site = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    (site / "tb_fakes-0.1.dist-info" / "entry_points.txt").write_text(
        "[transferbench]\nfakes = tests.fakes\ndying = tests.test_faults\n")
    proc = tb(env, "run", cfg, "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert marker.exists(), "one worker should have died"
    assert "worker process died" in proc.stdout and "trying it again" in proc.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    assert len(records) == 14 and all(r["status"] == "ok" for r in records)


def test_stale_temporary_files_are_cleaned_up(fake_plugins, tmp_path, capsys):
    cfg, out = finished_run(tmp_path, capsys)
    stale = [out / ".plan.json.abc123.tmp", out / "records" / ".x.json.def456.tmp",
             out / "checkpoints" / ".y.safetensors.0a1b2c.tmp", out / "cohorts" / "c0ffee" / ".m.pt.9z8y7x.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half a file from a killed run")
    assert cli(capsys, "run", cfg, "--out", out)[0] == 0
    assert not any(p.exists() for p in stale)


def test_an_interrupted_cache_build_is_cleaned_up_and_a_damaged_one_rebuilt(tmp_path):
    from transferbench import cached_dir

    target = tmp_path / "cache" / "entry"
    target.parent.mkdir()
    leftover = tmp_path / "cache" / ".entry.k1ll3d.tmp"
    leftover.mkdir()
    (leftover / "half.bin").write_bytes(b"...")

    def build(tmp: Path) -> None:
        (tmp / "data.txt").write_text("whole")

    def valid(folder: Path) -> bool:
        return (folder / "data.txt").is_file() and (folder / "data.txt").read_text() == "whole"

    assert cached_dir(target, build, valid=valid) == target
    assert not leftover.exists()
    (target / "data.txt").write_text("wh")  # damaged
    cached_dir(target, build, valid=valid)
    assert valid(target) and list((tmp_path / "cache" / "damaged").iterdir())


# --------------------------------------------------------------------------- 9. permissions


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_follow_the_umask(fake_plugins, tmp_path, capsys, umask, mode):
    old = os.umask(umask)
    try:
        _, out = finished_run(tmp_path, capsys, output={"shared_cache": str(tmp_path / "shared")})
    finally:
        os.umask(old)
    files = [p for p in [*out.rglob("*"), *(tmp_path / "shared").rglob("*")] if p.is_file() and p.name != "run.lock"]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}
    folders = [p for p in out.rglob("*") if p.is_dir()]
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {oct(0o777 & ~umask)}


# --------------------------------------------------------------------------- 10, 12. determinism


def test_a_job_gives_the_same_numbers_however_its_data_is_held(fake_plugins, tmp_path, capsys):
    """In memory, decoded into a memory map, or read row by row: the same job id, the same numbers."""
    runs = {}
    for name, loader in [("memory", {}), ("rows", {"in_memory_max_gb": 0}),
                         ("mmap", {"in_memory_max_gb": 0, "decode_cache": True, "cache_dir": str(tmp_path / "c")})]:
        cfg = config_file(tmp_path, f"{name}.yaml", data={"name": "synthetic", "num_classes": 6, "train_per_class": 8,
                                                          "eval_per_class": 4, "image_size": 20},
                          architecture={"name": "caffenet_scaled", "width": 0.125, "fc_width": 16},
                          experiments=[{"name": "e", "split": {"name": "random"}, "treatments": ["AnB+"],
                                        "layers": [2]}],
                          train={"lr": 0.01, "batch_size": 8, "epochs": 2, "augment": {"crop": 16, "mirror": True}},
                          loader=loader)
        code, stdout, err = cli(capsys, "run", cfg, "--out", tmp_path / name)
        assert code == 0, stdout + err
        records = (tmp_path / name / "records").iterdir()
        runs[name] = {p.name: json.loads(p.read_text())["history"] for p in records}
    assert runs["memory"] == runs["rows"] == runs["mmap"]


def test_job_ids_and_seeds_do_not_depend_on_where_the_data_lies(fake_plugins, tmp_path, capsys):
    import shutil

    from tests.test_data_sources import make_ilsvrc

    make_ilsvrc(tmp_path / "a" / "tree", per_class=(3, 3, 3, 3))
    shutil.copytree(tmp_path / "a" / "tree" / "train", tmp_path / "a" / "tree" / "val")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    plans = []
    for root in (tmp_path / "a" / "tree", str(tmp_path / "a" / "tree") + "/", tmp_path / "b" / "tree"):
        cfg = config_file(tmp_path, data={"name": "imagefolder", "root": str(root), "resize": 8, "imagenet": False},
                          architecture={"name": "caffenet_scaled", "width": 0.125, "fc_width": 16, "conv1_stride": 1},
                          experiments=[{"name": "e", "split": {"name": "random", "reference": "source"},
                                        "treatments": ["AnB"]}])
        from transferbench.api import prepare

        plans.append(prepare(cfg).plan)
    ids = [[(j.id, j.seed) for j in p.jobs.values()] for p in plans]
    assert ids[0] == ids[1] == ids[2]


# --------------------------------------------------------------------------- 11. input scale


def test_the_paper_input_scale_belongs_to_the_network(tmp_path):
    from transferbench_plugins.caffenet import CAFFE_INPUT_STD, CaffeNetArch, CaffeNetScaled

    paper = CaffeNetArch()
    imagenet_norm = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    mean, std = paper.input_normalization(imagenet_norm)
    assert mean == imagenet_norm[0] and std == pytest.approx((1 / 255,) * 3)  # whatever the data says
    assert paper.expected_input_std() == CAFFE_INPUT_STD
    he = CaffeNetScaled()
    assert he.input_normalization(imagenet_norm) == imagenet_norm and he.expected_input_std() == 1.0


def test_the_report_warns_when_inputs_are_far_from_the_expected_scale(tmp_path, capsys, monkeypatch):
    from tests.test_data_sources import make_ilsvrc

    make_ilsvrc(tmp_path / "tree", per_class=(3, 3, 3, 3))
    import shutil

    shutil.copytree(tmp_path / "tree" / "train", tmp_path / "tree" / "val")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(
        data={"name": "imagefolder", "root": str(tmp_path / "tree"), "resize": 8, "std": [10.0, 10.0, 10.0],
              "imagenet": False},
        architecture={"name": "caffenet_scaled", "width": 0.125, "fc_width": 16, "conv1_stride": 1},
        experiments=[{"name": "e", "split": {"name": "random", "reference": "source"}, "treatments": ["AnB"],
                      "layers": [1]}],
        train={"lr": 0.01, "batch_size": 4, "epochs": 1})))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run"), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "the architecture's initialisation expects" in text and "data.std" in text


# --------------------------------------------------------------------------- a plugin for the dying-worker test

from tests import fakes  # noqa: E402
from transferbench import hookimpl  # noqa: E402


class DyingBlobsParams(fakes.BlobParams):
    marker: str
    driver_pid: int = -1


class DyingBlobs(fakes.Blobs):
    """The fake data source whose first load in a worker process kills that process."""

    Params = DyingBlobsParams

    def load(self, split):
        if "spawn" in open(f"/proc/{os.getpid()}/cmdline").read():
            try:
                fd = os.open(self.params.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return super().load(split)


@hookimpl
def register_data_sources(register):
    register("dying_blobs", DyingBlobs)
