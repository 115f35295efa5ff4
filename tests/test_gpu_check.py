"""The GPU check's CPU dry run: every part of benchmarks/gpu_check.py runs, small, and writes
a rates file that `plan --measured` reads (no figure is checked: a dry run measures nothing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_runs_every_part_on_a_cpu_and_writes_the_rates_plan_reads(fake_plugins, tmp_path, capsys,
                                                                                 monkeypatch):
    from tests.conftest import tiny_config
    from transferbench.cohort_cost import read_rates
    from transferbench.config import parse_config
    from transferbench.resolve import resolve

    monkeypatch.chdir(tmp_path)
    rates = tmp_path / "rates.json"
    assert _gpu_check().main(["--device", "cpu", "--tiny", "--batch", "4", "--steps", "1", "--warmup", "1",
                              "--classes", "4", "--train-per-class", "4", "--eval-per-class", "1",
                              "--data-batches", "1", "--ks", "1,2", "--layers", "1", "--workers", "0",
                              "--rates", str(rates)]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and "skipped" not in out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summary: ") and "nan" not in summary and "cohort_agreement=identical" in summary
    doc = json.loads(rates.read_text())
    assert set(doc["cohort_images_per_s"]) == {"1", "2"} and doc["cohort_agreement"]["identical"] is True
    config = parse_config(tiny_config(data={"name": "synthetic", "num_classes": 4, "image_size": 8,
                                            "cache_dir": str(tmp_path / "s")}))
    got = read_rates(rates, config, resolve(config))
    assert got.tflops == pytest.approx(doc["train_tflops"]) and got.read == pytest.approx(doc["store_images_per_s"])
