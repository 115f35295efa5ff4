"""docs/your-data.md runs as written: every config, script and command of the page, in order,
on reduced data (8 classes, a few images, one epoch, two layers)."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from transferbench.cli import main
from transferbench.files import sha256_file

DOC = Path(__file__).resolve().parents[1] / "docs" / "your-data.md"

#: What the test changes in each config the page writes: the same recipe, in seconds.
REDUCE: dict[str, Any] = {
    "data": {"num_classes": 8, "train_per_class": 6, "eval_per_class": 3},
    "train": {"epochs": 1, "batch_size": 16},
    "executor": {"name": "local", "workers": 1},
}
LAYERS = {"transfer.yaml": [1, 7], "my-images.yaml": [1, 7], "timm.yaml": [1, 5]}


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), re.S)


def _reduced(name: str, text: str) -> str:
    cfg = yaml.safe_load(text)
    for key, changes in REDUCE.items():
        if key == "data" and cfg["data"]["name"] != "synthetic":
            continue
        cfg[key] = {**cfg.get(key, {}), **changes}
    if name in LAYERS:
        cfg["experiments"][0]["layers"] = LAYERS[name]
    return yaml.safe_dump(cfg, sort_keys=False)


def _run(line: str, capsys: pytest.CaptureFixture[str]) -> str:
    words = shlex.split(line)
    if words[0] == "python":
        runpy.run_path(words[1], run_name="__main__")
        return ""
    assert words[0] == "transferbench", line
    code = main(words[1:])
    out = capsys.readouterr()
    assert code == 0, f"{line} exited {code}:\n{out.out}\n{out.err}"
    return out.out


def test_the_recipe_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outputs: dict[str, str] = {}
    written = []
    for lang, body in _blocks():
        first = body.splitlines()[0] if body.strip() else ""
        named = re.match(r"# (\S+\.(yaml|py)):", first)
        if lang in ("yaml", "python") and named:
            name = named[1]
            Path(name).write_text(_reduced(name, body) if lang == "yaml" else body)
            written.append(name)
        elif lang == "bash":
            for line in body.strip().splitlines():
                outputs[line] = _run(line, capsys)
    assert {"source.yaml", "transfer.yaml", "make_images.py", "my-images.yaml", "timm_weights.py",
            "timm.yaml"} <= set(written)

    info = json.loads(Path("geometric.json").read_text())
    assert info["architecture"]["name"] == "caffenet_scaled" and info["sha256"] == sha256_file(
        Path("geometric.safetensors"))
    assert [c["id"] for c in info["classes"]] == ["syn000", "syn001", "syn002", "syn003"]  # the geometric half
    assert "the file's classifier (fc8" in outputs["transferbench validate transfer.yaml"]
    report = outputs["transferbench report runs/to-organic"]
    assert "organic: recommendation (top1)" in report and "95% interval" in report
    plan = json.loads(Path("runs/to-organic/plan.json").read_text())
    x_jobs = [jid for jid, j in plan["jobs"].items() if j["source"] == "X"]
    assert len(x_jobs) == 2 * 2 * 2  # XnB and XnB+, n = 1 and 7, two replicates
    for jid in x_jobs:
        record = json.loads(Path(f"runs/to-organic/records/{jid}.json").read_text())
        assert record["status"] == "ok" and record["source_sha256"] == info["sha256"]
    assert "my-images: recommendation" in outputs["transferbench report runs/to-my-images"]
    assert "fc.weight" in outputs["transferbench validate timm.yaml"]
    assert "organic: recommendation" in outputs["transferbench report runs/timm-to-organic"]
