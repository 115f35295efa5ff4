"""Shared fixtures: fake plugins registered for a test, tiny configs, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from transferbench import plugins

torch.set_num_threads(1)
os.environ.setdefault("TRANSFERBENCH_CACHE", str(Path(__file__).parent / ".cache"))


@pytest.fixture
def fake_plugins():
    """Register tests/fakes.py as a plugin for one test, then remove it."""
    from tests import fakes

    host = plugins.get_host()
    name = host.register(fakes, "tests.fakes", origin="test")
    yield host
    host.unregister(name)


def tiny_config(**changes: Any) -> dict[str, Any]:
    """A grid on the fake plugins that trains in about a second."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "blobs"},
        "architecture": {"name": "mlp"},
        "experiments": [
            {
                "name": "parity",
                "split": {"name": "parity", "seeds": [0]},
                "treatments": ["BnB", "BnB+", "AnB", "AnB+"],
            }
        ],
        "train": {"lr": 0.1, "batch_size": 32, "epochs": 5, "weight_decay": 0.0},
        "eval": {"best_k": 2},
        "device": "cpu",
    }
    cfg.update(changes)
    return cfg


@pytest.fixture
def tiny_config_file(tmp_path, fake_plugins):
    def write(**changes: Any) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(tiny_config(**changes)))
        return path

    return write
