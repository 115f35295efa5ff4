"""Real data sources through the CLI on tiny generated data, and the random-weights protocol."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from transferbench.cli import main
from transferbench.config import parse_config
from transferbench.context import TrainContext
from transferbench.plan import build_plan
from transferbench.resolve import resolve
from transferbench.trainer import train_job
from transferbench_plugins.hf import HFImages
from transferbench_plugins.imagefolder import ImageFolder


def _grid(data: dict, tmp_path: Path) -> dict:
    return {
        "name": "tiny-real",
        "data": data,
        "architecture": {"name": "mlp", "hidden": 8, "depth": 2},
        "experiments": [{"name": "r", "split": {"name": "random", "seeds": [0], "reference": "source"},
                         "treatments": ["AnB", "BnB+"]}],
        "train": {"lr": 0.05, "batch_size": 4, "epochs": 1, "augment": {"crop": 16, "mirror": True}},
        "device": "cpu",
    }


def _run(cfg: dict, tmp_path: Path) -> list[dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    return [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]


def test_imagefolder_tree_through_the_cli(fake_plugins, tmp_path):
    params = ImageFolder.example_params(tmp_path / "data")
    records = _run(_grid({"name": "imagefolder", **params, "resize": 20}, tmp_path), tmp_path)
    assert len(records) == 2 + 2 * 2 and all(r["status"] == "ok" for r in records)


def test_hf_saved_dataset_through_the_cli(fake_plugins, tmp_path):
    params = HFImages.example_params(tmp_path / "data")
    records = _run(_grid({"name": "hf", **params, "resize": 20}, tmp_path), tmp_path)
    assert len(records) == 2 + 2 * 2 and all(r["status"] == "ok" for r in records)


def test_random_frozen_keeps_layers_at_their_initialisation(fake_plugins):
    from tests.conftest import tiny_config

    cfg = tiny_config(experiments=[{
        "name": "rw", "split": {"name": "parity"}, "bases": ["all"],
        "treatments": [{"name": "random", "target": "all", "protocol": "random_frozen"}],
    }])
    config = parse_config(cfg)
    components = resolve(config)
    plan = build_plan(config, components)
    job = next(j for j in plan.jobs.values() if j.kind == "transfer" and j.n == 2)
    assert job.depends_on is None and job.num_classes == 8
    torch.manual_seed(job.seed)
    init = components.architecture.build(job.num_classes, (12,)).state_dict()
    _, model = train_job(job, TrainContext(config, components, torch.device("cpu")))
    after = model.state_dict()
    for k in ("h1.0.weight", "h1.0.bias", "h2.0.weight", "h2.0.bias"):
        assert torch.equal(after[k], init[k]), k
    assert not torch.equal(after["h3.0.weight"], init["h3.0.weight"])


def test_hf_streaming_through_the_cli(fake_plugins, tmp_path):
    params = HFImages.example_params(tmp_path / "data")
    params.pop("superclass_column", None)  # needs a full read of the labels: not with streaming
    cfg = _grid({"name": "hf", **params, "resize": 20, "streaming": True}, tmp_path)
    cfg["train"] = {**cfg["train"], "epochs": None, "steps": 3}
    records = _run(cfg, tmp_path)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records), records
    assert all(r["steps"] == 3 for r in records)


def test_decode_cache_decodes_once_and_gives_the_streamed_results(fake_plugins, tmp_path):
    params = ImageFolder.example_params(tmp_path / "data")
    base = _grid({"name": "imagefolder", **params, "resize": 20}, tmp_path)
    base["loader"] = {"in_memory_max_gb": 0}  # force the on-disk paths
    plain = _run(base, tmp_path / "plain")
    cached_cfg = {**base, "loader": {"in_memory_max_gb": 0, "decode_cache": True,
                                     "cache_dir": str(tmp_path / "cache")}}
    cached = _run(cached_cfg, tmp_path / "cached")
    decoded = list((tmp_path / "cache" / "decoded").glob("*/inputs.npy"))
    assert len(decoded) == 2  # train and eval, decoded once for all six networks
    by_id = {r["job_id"]: r for r in plain}
    for r in cached:
        assert r["status"] == "ok"
        # same data, different batching order within a batch only: same number of steps
        assert r["steps"] == by_id[r["job_id"]]["steps"]
