"""``--json`` on plan, plugins, validate, layers and report: one JSON document on stdout, with
the documented keys (docs/json-output.md), and nothing else; tables never wrap when piped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from transferbench.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "json-output.md").read_text()


def _json(capsys, *argv: str, code: int = 0) -> dict:
    assert main(list(argv)) == code
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout is one document


def _documented_keys(command: str) -> set[str]:
    """The top-level keys the doc lists for a command (its ```json block)."""
    section = DOC.split(f"## `{command}")[1].split("\n## ")[0]
    block = re.search(r"```json\n(.*?)```", section, flags=re.S).group(1)
    return set(re.findall(r'^  "(\w+)":', block, flags=re.M))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run on the fake plugins."""
    from tests import fakes
    from tests.conftest import tiny_config
    from transferbench import plugins

    host = plugins.get_host()
    name = host.register(fakes, "tests.fakes.json", origin="test")
    root = tmp_path_factory.mktemp("json")
    import yaml

    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    assert main(["run", str(config), "--out", str(root / "run")]) == 0
    yield root / "run"
    host.unregister(name)


def test_validate_json_ok_and_with_problems(tiny_config_file, capsys):
    path = tiny_config_file()
    doc = _json(capsys, "validate", str(path), "--json")
    assert doc["format"] == "transferbench.validate/1" and doc["ok"] is True and doc["problems"] == []
    assert doc["networks"] == 14 and doc["layer_names"] == ["h1", "h2", "h3", "out"]
    assert set(doc) == _documented_keys("validate")
    doc = _json(capsys, "validate", str(path), "--json", "--set", "train.lrr=1", "--set", "data.dimm=3", code=2)
    assert doc["ok"] is False
    problems = {p["path"]: p["message"] for p in doc["problems"]}
    assert "did you mean 'lr'?" in problems["train.lrr"] and "did you mean 'dim'?" in problems["data.dimm"]


def test_plan_json(tiny_config_file, capsys):
    doc = _json(capsys, "plan", str(tiny_config_file()), "--json")
    assert doc["format"] == "transferbench.plan/1" and set(doc) == _documented_keys("plan")
    assert doc["summary"] == {"networks": 14, "base": 2, "transferred": 12, "cells": 14}
    ids = {j["id"] for j in doc["jobs"]}
    assert all(j["depends_on"] in ids for j in doc["jobs"] if j["depends_on"])
    assert {c["job_id"] for c in doc["cells"]} == ids
    assert doc["compute"]["networks"] == 14 and doc["compute"]["gpu_hours"] > 0


def test_plugins_json_lists_every_setting(capsys):
    doc = _json(capsys, "plugins", "--json")
    assert doc["format"] == "transferbench.plugins/1" and set(doc) == _documented_keys("plugins")
    entries = {(e["kind"], e["name"]): e for e in doc["entries"]}
    hf = entries[("data_source", "hf")]
    resize = next(s for s in hf["settings"] if s["name"] == "resize")
    assert resize == {"name": "resize", "type": "int | null", "required": False, "default": "256",
                      "constraints": ">= 1", "description": resize["description"]}
    assert "resize" in resize["description"]
    assert next(s for s in hf["settings"] if s["name"] == "path")["required"] is True
    assert hf["example"].startswith("data:\n  name: hf\n")
    assert entries[("observer", "mlflow")]["requires"] == ["mlflow"]
    one = _json(capsys, "plugins", "caffenet_scaled", "--json")
    assert [e["name"] for e in one["entries"]] == ["caffenet_scaled"]


def test_plugins_json_unknown_name_is_an_error_document(capsys):
    assert main(["plugins", "cafenet", "--json"]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["format"] == "transferbench.error/1" and doc["command"] == "plugins"
    assert "did you mean 'caffenet'" in doc["message"] and set(doc) == _documented_keys("error")
    assert "did you mean" in captured.err


def test_layers_json(capsys):
    doc = _json(capsys, "layers", "caffenet_scaled", "--json", "--classes", "4")
    assert doc["format"] == "transferbench.layers/1" and set(doc) == _documented_keys("layers")
    assert [layer["name"] for layer in doc["layers"]] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                                                          "fc8"]
    assert sum(layer["parameters"] for layer in doc["layers"]) == doc["parameters"]
    assert doc["input_shape"] == [3, 32, 32] and doc["transfer_n"] == list(range(1, 8))
    assert doc["unowned"] == [] and doc["shared"] == []


def test_report_json(run_dir, capsys):
    doc = _json(capsys, "report", str(run_dir), "--json", "--no-plots")
    assert doc["format"] == "transferbench.report/2" and set(doc) == _documented_keys("report")
    assert doc["paper"] is None and doc["metric"] == "top1"
    run = doc["run"]
    assert run["networks"] == {"total": 14, "ok": 14, "pending": 0, "failed": 0}
    (grid,) = run["experiments"]
    assert grid["experiment"] == "parity" and grid["metric"] == "top1"
    cell = next(c for c in grid["cells"] if c["treatment"] == "AnB" and c["n"] == 2)
    assert cell["layer"] == "h2" and cell["count"] == 1 and 0 <= cell["mean"] <= 1
    assert {m["quantity"] for m in grid["metrics"]} >= {"specificity", "coadaptation"}
    assert str(run_dir / "results_summary_top1.csv") in doc["files"]


def test_report_json_with_the_paper(run_dir, capsys):
    doc = _json(capsys, "report", str(run_dir), "--json", "--no-plots", "--compare", "paper")
    assert doc["run"] is not None and doc["paper"]["name"]
    assert {g["experiment"] for g in doc["paper"]["experiments"]} >= {"random"}


def test_tables_do_not_wrap_when_piped():
    """`transferbench plugins | grep` sees one line per plugin, however long."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "transferbench.cli", "plugins", "-v"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "transferbench_plugins.tensorboard_observer" in line]
    assert len(rows) >= 1 and "observer: tensorboard" in rows[0]
    # a long description stays on its key's line
    resize = next(line for line in done.stdout.splitlines() if line.startswith("resize "))
    assert "null keeps the stored size, which must then be the same for all images" in resize


def test_report_power_json_lists_every_finding_with_the_documented_fields(run_dir, capsys):
    doc = _json(capsys, "report", str(run_dir), "--json", "--no-plots", "--power")
    rows = doc["power"]
    assert {r["finding"] for r in rows} >= {"control", "co-adaptation: dip", "co-adaptation: recovery",
                                            "specificity", "fine-tuning boost"}
    section = DOC.split("## `report RUN_DIR --json`")[1].split("\n## ")[0]
    for key in rows[0]:
        assert f"`{key}`" in section, key
    card = doc["run"]["scorecard"]
    assert all(f["verdict"] in ("reproduced", "contradicted", "inconclusive", "not determined") for f in card)
