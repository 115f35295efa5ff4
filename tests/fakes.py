"""Tiny plugins for engine tests: a Gaussian-cluster data source, an MLP, a parity split.

Registered by the ``fake_plugins`` fixture in conftest.py; they exercise the engine without
any built-in plugin.
"""

from __future__ import annotations

import datasets
import numpy as np
from pydantic import BaseModel, ConfigDict
from torch import nn

from transferbench import Architecture, ClassInfo, DataSource, Halves, Layer, TaskSplit, hookimpl


class BlobParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_classes: int = 8
    dim: int = 12
    per_class: int = 40
    eval_per_class: int = 20
    seed: int = 0
    noise: float = 1.0
    poison: int | None = None  # class whose inputs are NaN (to make a job fail)


class Blobs(DataSource):
    """Gaussian clusters: class c has a random centre; inputs are float vectors."""

    Params = BlobParams

    def classes(self):
        p = self.params
        return [ClassInfo(i, f"c{i}", f"class {i}", "odd" if i % 2 else "even") for i in range(p.num_classes)]

    def _make(self, split: str):
        p = self.params
        rng = np.random.default_rng(p.seed)
        centres = rng.normal(0, 2.0, (p.num_classes, p.dim))
        rng = np.random.default_rng(p.seed + (1 if split == "train" else 2))
        per = p.per_class if split == "train" else p.eval_per_class
        labels = np.repeat(np.arange(p.num_classes), per)
        x = centres[labels] + rng.normal(0, p.noise, (len(labels), p.dim))
        if p.poison is not None:
            x[labels == p.poison] = np.nan
        return datasets.Dataset.from_dict({"input": x.astype(np.float32), "label": labels})

    def load(self, split):
        return self._make(split)

    def input_shape(self):
        return (self.params.dim,)


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = 16
    depth: int = 3  # hidden layers; plus the classifier


class MLP(Architecture):
    """A plain MLP: layers h1..h<depth>, then out."""

    Params = MLPParams

    def build(self, num_classes, input_shape):
        p = self.params
        layers: dict[str, nn.Module] = {}
        width = int(np.prod(input_shape))
        for i in range(1, p.depth + 1):
            layers[f"h{i}"] = nn.Sequential(nn.Linear(width, p.hidden), nn.ReLU())
            width = p.hidden
        layers["out"] = nn.Linear(width, num_classes)
        return _Named(layers)

    def layers(self, model):
        return [Layer(name, (name,)) for name in model.names]

    def param_multipliers(self, model):
        return {n: (2.0, 0.0) for n, _ in model.named_parameters() if n.endswith("bias")}

    def split_at(self, model, n):
        return _Named.view(model, model.names[:n]), _Named.view(model, model.names[n:])


class _Named(nn.Module):
    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.names = list(layers)
        for k, v in layers.items():
            self.add_module(k, v)

    @classmethod
    def view(cls, model: _Named, names: list[str]) -> _Named:
        """A module running some of ``model``'s layers (shared, not copied)."""
        return cls({n: getattr(model, n) for n in names})

    def forward(self, x):
        x = x.flatten(1)
        for name in self.names:
            x = getattr(self, name)(x)
        return x


class Parity(TaskSplit):
    """Even classes to A, odd to B; the seed rotates which even/odd classes are dropped (none)."""

    def split(self, classes, seed):
        a = tuple(c.index for c in classes if c.index % 2 == 0)
        b = tuple(c.index for c in classes if c.index % 2 == 1)
        return Halves(a, b) if seed % 2 == 0 else Halves(b, a)


class Overlap(TaskSplit):
    """A broken split whose halves share a class (the engine must refuse it)."""

    def split(self, classes, seed):
        idx = tuple(c.index for c in classes)
        return Halves(idx[:3], idx[2:])


@hookimpl
def register_data_sources(register):
    register("blobs", Blobs)


@hookimpl
def register_architectures(register):
    register("mlp", MLP)


@hookimpl
def register_splits(register):
    register("parity", Parity)
    register("overlap", Overlap)
