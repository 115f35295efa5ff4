"""The plugin kit: every hook documented and tested, the guide's examples run, and the example
third-party package installs, is discovered and runs a grid through the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from transferbench import hookspecs, interfaces, plugins
from transferbench.cli import main
from transferbench.plugins import PluginHost

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "writing-plugins.md"
EXAMPLE = REPO / "examples" / "transferbench-classlist"
TESTS = Path(__file__).resolve().parent


def hook_names() -> list[str]:
    """Every hook specification in transferbench/hookspecs.py."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return sorted(name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker))


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


# --------------------------------------------------------------------------- meta-tests


def test_there_are_hooks_to_check():
    assert len(hook_names()) >= 5


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_with_an_example(hook):
    guide = GUIDE.read_text()
    assert f"### `{hook}(register)`" in guide, f"docs/writing-plugins.md has no section for {hook}"
    assert any(f"def {hook}(register" in block for block in python_blocks(guide)), (
        f"docs/writing-plugins.md has no example implementing {hook}"
    )


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_test(hook):
    using = [p.name for p in sorted(TESTS.glob("*.py")) if hook in p.read_text()]
    assert using, f"no test under tests/ mentions the hook {hook}"


def test_guide_names_every_interface_and_the_discovery_knobs():
    guide = GUIDE.read_text()
    missing = [name for name in interfaces.__all__ if f"`{name}" not in guide]
    assert missing == [], f"interfaces not described in the guide: {missing}"
    for word in (f"`{plugins.ENTRY_POINT_GROUP}`", plugins.ALLOWLIST_ENV, "transferbench plugins",
                 "example_params", "example_input_shape", "transferbench layers"):
        assert word in guide


# --------------------------------------------------------------------------- the guide's examples


@pytest.fixture
def guide_plugin():
    """The guide's Python examples as one plugin module, registered for one test."""
    module = types.ModuleType("guide_examples")
    exec(compile("\n".join(python_blocks(GUIDE.read_text())), str(GUIDE), "exec"), module.__dict__)
    host = plugins.get_host()
    name = host.register(module, "guide_examples", origin="test")
    yield module
    host.unregister(name)


@pytest.mark.parametrize(
    "hook,kind,name",
    [
        ("register_data_sources", "data_source", "gaussians"),
        ("register_architectures", "architecture", "tiny_mlp"),
        ("register_splits", "split", "first_k"),
        ("register_protocols", "protocol", "frozen_bottom"),
        ("register_executors", "executor", "one_by_one"),
        ("register_observers", "observer", "jsonl_log"),
        ("register_estimators", "estimator", "centroid"),
        ("register_checks", "check", "seeds_everywhere"),
        ("register_findings", "findings", "reset_demo"),
        ("register_data_transforms", "data_transform", "invert"),
        ("register_evaluators", "evaluator", "weight_distance"),
    ],
)
def test_each_hook_of_the_guide_registers_its_class(guide_plugin, hook, kind, name):
    assert hasattr(guide_plugin, hook)
    entry = plugins.get_registry().get(kind, name)
    assert entry.plugin == "guide_examples" and entry.origin == "test"
    assert entry.factory.__module__ == "guide_examples"


def test_the_guide_examples_run_a_grid_through_the_cli(guide_plugin, tmp_path, capsys):
    guide = GUIDE.read_text()
    raw = yaml.safe_load(re.search(r"```yaml\n(.*?)```", guide, flags=re.S).group(1))
    raw.update(name="guide", device="cpu", eval={"best_k": 1},
               train={"lr": 0.1, "batch_size": 16, "epochs": 2, "weight_decay": 0.0})
    path = tmp_path / "guide.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0, capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["layer_names"] == ["fc1", "fc2", "fc3"]
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == len(plan["jobs"]) == 2 + 2 * 2 and all(r["status"] == "ok" for r in records)
    # frozen_bottom with frozen=1 trains everything but fc1; AnB freezes fc1..fcn.
    bottom = {c["n"]: c["job_id"] for c in plan["cells"] if c["treatment"] == "AnB-bottom"}
    anb = {c["n"]: c["job_id"] for c in plan["cells"] if c["treatment"] == "AnB"}
    trainable = {r["job_id"]: r["trainable_params"] for r in records}
    assert trainable[bottom[2]] > trainable[anb[2]]
    assert trainable[bottom[1]] == trainable[anb[1]]
    # the guide's observer logged the run
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["run_started", *["job_finished"] * len(records), "report_written"]
    assert {e["status"] for e in events if e["event"] == "job_finished"} == {"ok"}


def test_the_guide_observer_passes_its_contract(guide_plugin, tmp_path):
    from transferbench.testing import check_observer

    check_observer(guide_plugin.JsonlLog, tmp_path)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["event"] == "run_started" and len(lines) == 5


# --------------------------------------------------------------------------- the example package


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """The example package pip-installed (offline, no dependencies) into a fresh folder."""
    pytest.importorskip("setuptools", reason="building the example needs setuptools in this environment")
    root = tmp_path_factory.mktemp("classlist")
    source = root / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", ".pytest_cache",
                                                                    "__pycache__"))
    site = root / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--target", str(site), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["COLUMNS"] = "200"  # one table row per plugin
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no caches in the example's folder
    env.pop(plugins.ALLOWLIST_ENV, None)
    return env


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transferbench.cli", *args], capture_output=True, text=True,
                          env=_env(site), cwd=site.parent, timeout=300)


def test_installed_example_is_listed_by_transferbench_plugins(installed_example):
    done = _cli(installed_example, "plugins")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "classlist" in line)
    assert "package transferbench-classlist 0.1.0" in row and "split: classlist" in row
    assert "failed to load" not in done.stdout


def test_installed_example_runs_a_tiny_grid_through_the_cli(installed_example, tmp_path):
    config = {
        "name": "classlist-grid",
        "data": {"name": "signals", "num_classes": 6, "length": 64, "train_per_class": 8, "eval_per_class": 4},
        "architecture": {"name": "conv1d", "widths": [8, 8, 8, 8], "hidden": 16},
        "experiments": [{
            "name": "picked",
            "split": {"name": "classlist", "a": ["sig000", 3]},  # by id and by index; B: the other 4
            "treatments": ["AnB", "AnB+"],
            "layers": [2],
        }],
        "train": {"lr": 0.05, "batch_size": 8, "steps": 4, "weight_decay": 0.0},
        "eval": {"best_k": 1},
        "device": "cpu",
        "threads": 1,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    done = _cli(installed_example, "run", str(path), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert sorted(r["num_classes"] for r in records) == [2, 4, 4, 4]  # baseA on A, the rest on B
    assert "AnB+" in (out / "results_top1.csv").read_text()


def test_installed_example_is_discovered_and_obeys_the_allowlist(installed_example, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_example))
    monkeypatch.delenv(plugins.ALLOWLIST_ENV, raising=False)
    entry = PluginHost().registry().get("split", "classlist")
    assert entry.origin == "package transferbench-classlist 0.1.0" and entry.plugin == "classlist"
    monkeypatch.setenv(plugins.ALLOWLIST_ENV, "")
    assert "classlist" not in PluginHost().registry().names("split")
    monkeypatch.setenv(plugins.ALLOWLIST_ENV, "classlist")
    assert "classlist" in PluginHost().registry().names("split")


def test_example_package_own_tests_pass(installed_example):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, env=_env(installed_example), cwd=EXAMPLE, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\d+ passed", done.stdout)
