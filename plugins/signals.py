"""A non-vision domain: synthetic 1-D signals and a 1-D convolutional network for them.

Two plugins, proving that nothing in transferbench assumes images:

* data source ``signals``: offline, seeded time series of shape ``(channels, length)``.
  Every signal is a sum of *atoms* drawn from one bank shared by all classes: six waveform
  kinds (Gaussian tone bursts, chirps, tremolos, decaying strikes, square and sawtooth
  pulses) at eight carrier frequencies. The shared bank is the low-level structure (the
  first layers learn oscillation and onset detectors that serve every class); a class is a
  fixed sequence of a few atoms (kind, frequency, position, duration, sign), so the top
  layers become class-specific. Classes fall into superclasses with different *styles*:
  ``tonal`` (smooth envelopes, sinusoidal carriers) and ``percussive`` (sharp onsets,
  square and sawtooth carriers); each style prefers its own kinds 5:1 but may use every
  kind, like the man-made / natural split of the paper. Within a class, time shift,
  stretch, amplitude, frequency, phase, part dropout, distractor atoms, a slow drift and
  white noise vary.
* architecture ``conv1d``: conv1..conv4 (Conv1d, BatchNorm, ReLU, max-pool 2), fc5 and
  the classifier fc6 (dropout then linear): six transferable layers.

The data is small (the defaults: 40 classes x 90 signals of 128 samples, under 2 MB)
and generated in a fraction of a second, so it is held in memory, never cached on disk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from transferbench import Architecture, ClassInfo, ConfigError, DataError, DataSource, Layer, hookimpl

_SPLIT_STREAM = {"train": 1, "eval": 2}
_CLASS_STREAM = 0xC1A55

#: Carrier frequencies in cycles per sample (periods of 40 down to 5 samples): shared by
#: every class and superclass.
FREQUENCIES: tuple[float, ...] = tuple(float(f) for f in np.geomspace(1 / 40, 1 / 5, 8))

#: Atom kinds and the style each belongs to.
KINDS: tuple[str, ...] = ("burst", "chirp", "tremolo", "strike", "square", "saw")
_TONAL_KINDS = frozenset({"burst", "chirp", "tremolo"})


def superclass_names(num: int) -> list[str]:
    """The superclass names for ``num`` superclasses (1: ``mixed``, 2: tonal, percussive)."""
    return ["mixed"] if num == 1 else ["tonal", "percussive"]


# --------------------------------------------------------------------------- parameters


class SignalsParams(BaseModel):
    """Configuration of the ``signals`` data source."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(40, ge=2, le=10_000, description="number of classes")
    num_superclasses: int = Field(2, ge=1, le=2, description="2: tonal / percussive; 1: one mixed style")
    length: int = Field(128, ge=16, le=16_384, description="samples per signal")
    channels: int = Field(1, ge=1, le=16, description="channels per signal (each atom has fixed gains)")
    train_per_class: int = Field(60, ge=1, description="training signals per class")
    eval_per_class: int = Field(30, ge=1, description="held-out signals per class")
    seed: int = Field(0, ge=0, description="seed of the class definitions and of both splits")
    parts_per_class: int = Field(3, ge=1, le=8, description="atoms that make up one class")
    distractors: int = Field(1, ge=0, le=8, description="random atoms added to every signal")
    jitter: float = Field(1.0, ge=0.0, le=3.0, description="scale of all within-class variation (0: none)")
    noise: float = Field(0.35, ge=0.0, le=5.0, description="std of the white noise, relative to an atom's amplitude")

    @model_validator(mode="after")
    def _superclasses_fit(self) -> SignalsParams:
        if self.num_superclasses > self.num_classes:
            raise ValueError(f"num_superclasses ({self.num_superclasses}) exceeds num_classes ({self.num_classes})")
        return self


# --------------------------------------------------------------------------- classes


class _Classes:
    """Every class's atoms, arrays of shape (classes, parts[, channels])."""

    def __init__(self, p: SignalsParams) -> None:
        n, k = p.num_classes, p.parts_per_class
        self.superclass = np.arange(n) * p.num_superclasses // n  # contiguous blocks
        self.kind = np.empty((n, k), dtype=int)
        self.freq = np.empty((n, k), dtype=int)
        self.centre = np.empty((n, k))  # fraction of the length
        self.width = np.empty((n, k))  # fraction of the length
        self.amp = np.empty((n, k))  # signed
        self.sweep = np.empty((n, k))  # chirp direction
        self.gain = np.empty((n, k, p.channels))
        tonal = np.array([kind in _TONAL_KINDS for kind in KINDS])
        for c in range(n):
            # One stream per class: a class's definition does not depend on the split sizes.
            rng = np.random.default_rng([p.seed, _CLASS_STREAM, c])
            if p.num_superclasses == 1:
                weights = np.ones(len(KINDS))
            else:
                own = tonal if self.superclass[c] == 0 else ~tonal
                weights = np.where(own, 5.0, 1.0)
            self.kind[c] = rng.choice(len(KINDS), k, p=weights / weights.sum())
            self.freq[c] = rng.integers(0, len(FREQUENCIES), k)
            # Parts spread over the signal in order, so their sequence is part of the class.
            slots = (np.arange(k) + rng.uniform(0.2, 0.8, k)) / k
            self.centre[c] = 0.1 + 0.8 * slots
            self.width[c] = rng.uniform(0.12, 0.3, k) * min(1.0, 3.0 / k)
            self.amp[c] = rng.uniform(0.7, 1.3, k) * rng.choice([-1.0, 1.0], k)
            self.sweep[c] = rng.choice([-1.0, 1.0], k)
            gain = rng.dirichlet(np.ones(p.channels), k) if p.channels > 1 else np.ones((k, 1))
            self.gain[c] = gain / np.linalg.norm(gain, axis=1, keepdims=True)

    def infos(self, p: SignalsParams) -> list[ClassInfo]:
        names = superclass_names(p.num_superclasses)
        out = []
        for c in range(p.num_classes):
            parts = ", ".join(f"{KINDS[k]}@f{f}" for k, f in zip(self.kind[c], self.freq[c]))
            out.append(ClassInfo(index=c, id=f"sig{c:03d}", name=f"{parts} #{c}", superclass=names[self.superclass[c]]))
        return out


# --------------------------------------------------------------------------- rendering


def _atom(kind: str, u: np.ndarray, width: np.ndarray, freq: np.ndarray, phase: np.ndarray,
          sweep: np.ndarray | float) -> np.ndarray:
    """One atom per row: ``u`` is time relative to the atom's centre, in samples (n, T);
    the other arguments are (n, 1) columns."""
    half = width / 2
    inside = np.abs(u) <= half
    hann = np.where(inside, 0.5 + 0.5 * np.cos(np.pi * u / half), 0.0)
    start = u + half  # time since the onset
    rect = (start >= 0) & (start <= width)
    angle = 2 * np.pi * freq * u + phase
    if kind == "burst":
        return np.exp(-0.5 * (u / (width / 4)) ** 2) * np.sin(angle)
    if kind == "chirp":  # frequency sweeps linearly by +-40% across the window
        return hann * np.sin(angle + 2 * np.pi * freq * 0.4 * sweep * u**2 / width)
    if kind == "tremolo":  # three slow amplitude beats
        return hann * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * u / width)) * np.sin(angle)
    if kind == "strike":  # sharp onset, exponential decay
        return np.where(start >= 0, np.exp(-np.clip(start, 0, None) / (width / 3)), 0.0) * np.sin(angle)
    if kind == "square":
        return rect * np.sign(np.sin(angle))
    if kind == "saw":
        return rect * (2 * ((freq * u + phase / (2 * np.pi)) % 1.0) - 1)
    raise ValueError(kind)  # pragma: no cover - KINDS is closed


def render(p: SignalsParams, classes: _Classes, c: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` signals of class ``c`` as a float32 array (count, channels, length)."""
    T, j = p.length, p.jitter
    t = np.arange(T, dtype=np.float64)[None, :]
    x = np.zeros((count, p.channels, T))
    shift = rng.uniform(-0.08, 0.08, (count, 1)) * T * j
    stretch = np.exp(rng.uniform(-0.1, 0.1, (count, 1)) * j)
    k = p.parts_per_class
    dropped = np.where(rng.random(count) < 0.15 * j, rng.integers(0, k, count), -1) if k > 1 else np.full(count, -1)
    for i in range(k):
        kind = KINDS[classes.kind[c, i]]
        centre = (T / 2 + (classes.centre[c, i] * T - T / 2) * stretch + shift
                  + rng.normal(0, 0.02 * T * j, (count, 1)))
        width = classes.width[c, i] * T * stretch
        freq = FREQUENCIES[classes.freq[c, i]] * np.exp(rng.normal(0, 0.04 * j, (count, 1)))
        phase = rng.uniform(0, 2 * np.pi, (count, 1))
        amp = classes.amp[c, i] * np.exp(rng.normal(0, 0.2 * j, (count, 1)))
        wave = amp * _atom(kind, t - centre, width, freq, phase, classes.sweep[c, i]) * (dropped != i)[:, None]
        x += wave[:, None, :] * classes.gain[c, i][None, :, None]
    for _ in range(p.distractors):
        kinds = rng.integers(0, len(KINDS), count)
        centre = rng.uniform(0.05, 0.95, (count, 1)) * T
        width = rng.uniform(0.08, 0.2, (count, 1)) * T
        freq = np.asarray(FREQUENCIES)[rng.integers(0, len(FREQUENCIES), count)][:, None]
        phase = rng.uniform(0, 2 * np.pi, (count, 1))
        amp = rng.uniform(0.3, 0.6, (count, 1)) * rng.choice([-1.0, 1.0], (count, 1))
        gain = rng.dirichlet(np.ones(p.channels), count) if p.channels > 1 else np.ones((count, 1))
        for kk, kind in enumerate(KINDS):
            rows = kinds == kk
            if rows.any():
                wave = amp[rows] * _atom(kind, t - centre[rows], width[rows], freq[rows], phase[rows], 1.0)
                x[rows] += wave[:, None, :] * gain[rows][:, :, None]
    # A slow random drift (a smoothed random walk) and white noise.
    drift = np.cumsum(rng.normal(0, 1, (count, p.channels, T)), axis=-1)
    drift -= drift.mean(axis=-1, keepdims=True)
    x += 0.3 * drift / (drift.std(axis=-1, keepdims=True) + 1e-8)
    x += rng.normal(0, p.noise, x.shape)
    x -= x.mean(axis=-1, keepdims=True)
    x /= x.std(axis=(1, 2), keepdims=True) + 1e-8
    return x.astype(np.float32)


def generate(p: SignalsParams, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All signals of a split: inputs (N, channels, length) float32, labels (N,) int64."""
    if split not in _SPLIT_STREAM:
        raise DataError(f"signals: unknown split {split!r}; expected 'train' or 'eval'")
    classes = _Classes(p)
    per = p.train_per_class if split == "train" else p.eval_per_class
    xs = []
    for c in range(p.num_classes):
        rng = np.random.default_rng([p.seed, _SPLIT_STREAM[split], c])
        xs.append(render(p, classes, c, per, rng))
    labels = np.repeat(np.arange(p.num_classes, dtype=np.int64), per)
    return np.concatenate(xs), labels


class SignalsDataSource(DataSource[SignalsParams]):
    """Synthetic 1-D signals: classes are sequences of shared waveform atoms."""

    description = "synthetic 1-D signals (tonal / percussive superclasses), generated offline"
    Params = SignalsParams

    def __init__(self, params: SignalsParams | None = None) -> None:
        super().__init__(params)
        self._datasets: dict[str, Any] = {}

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        return {"num_classes": 6, "length": 64, "train_per_class": 8, "eval_per_class": 4}

    def classes(self) -> Sequence[ClassInfo]:
        return _Classes(self.params).infos(self.params)

    def input_shape(self) -> tuple[int, ...]:
        return (self.params.channels, self.params.length)

    def load(self, split: str) -> Any:
        if split not in self._datasets:
            import datasets

            x, y = generate(self.params, split)
            features = datasets.Features(
                {"input": datasets.Array2D(shape=x.shape[1:], dtype="float32"), "label": datasets.Value("int64")}
            )
            self._datasets[split] = datasets.Dataset.from_dict({"input": x, "label": y}, features=features)
        return self._datasets[split]

    def to_tensor(self, value: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value, dtype=np.float32))


# --------------------------------------------------------------------------- architecture


class Conv1dParams(BaseModel):
    """Configuration of the ``conv1d`` architecture."""

    model_config = ConfigDict(extra="forbid")

    widths: list[int] = Field([16, 32, 64, 64], min_length=1, description="output channels of conv1..convK")
    kernel_sizes: list[int] = Field([7, 5, 3, 3], min_length=1, description="kernel size of conv1..convK")
    hidden: int = Field(128, ge=1, description="outputs of the fully connected layer before the classifier")
    pooled_length: int = Field(8, ge=1, description="time steps kept (adaptive max-pool) before the first fc layer")
    batchnorm: bool = Field(True, description="BatchNorm after every convolution")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout before the classifier")

    @model_validator(mode="after")
    def _same_length(self) -> Conv1dParams:
        if len(self.widths) != len(self.kernel_sizes):
            raise ValueError(f"widths has {len(self.widths)} entries but kernel_sizes has {len(self.kernel_sizes)}")
        if any(w < 1 for w in self.widths) or any(k < 1 for k in self.kernel_sizes):
            raise ValueError("widths and kernel_sizes must be positive")
        return self


class Conv1dNet(nn.Sequential):
    """conv1..convK, fc(K+1), fc(K+2): a plain sequence of named layers."""

    def __init__(self, in_channels: int, num_classes: int, p: Conv1dParams) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_channels
        for i, (out, k) in enumerate(zip(p.widths, p.kernel_sizes), 1):
            block: list[nn.Module] = [nn.Conv1d(width, out, k, padding=k // 2, bias=not p.batchnorm)]
            if p.batchnorm:
                block.append(nn.BatchNorm1d(out))
            block += [nn.ReLU(inplace=True), nn.MaxPool1d(2, ceil_mode=True)]
            layers[f"conv{i}"] = nn.Sequential(*block)
            width = out
        K = len(p.widths)
        layers[f"fc{K + 1}"] = nn.Sequential(
            nn.AdaptiveMaxPool1d(p.pooled_length), nn.Flatten(), nn.Linear(width * p.pooled_length, p.hidden),
            nn.ReLU(inplace=True),
        )
        # Dropout opens the classifier rather than closing fc(K+1), so every layer below
        # the classifier is deterministic in training mode (see split_at).
        layers[f"fc{K + 2}"] = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(p.hidden, num_classes))
        super().__init__(layers)


class Conv1dArchitecture(Architecture[Conv1dParams]):
    """A 1-D convolutional network: conv1..conv4, fc5, fc6 (the classifier) by default."""

    description = "1-D conv net for signals: conv1..conv4 (BN, ReLU, pool), fc5, fc6"
    Params = Conv1dParams
    example_input_shape = (1, 64)

    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        if len(input_shape) != 2:
            raise ConfigError(
                [("", f"conv1d takes signals (channels, length); the data gives {tuple(input_shape)}")]
            )
        return Conv1dNet(input_shape[0], num_classes, self.params)

    def layers(self, model: nn.Module) -> Sequence[Layer]:
        return [Layer(name, (name,)) for name, _ in model.named_children()]

    def split_at(self, model: nn.Module, n: int) -> tuple[nn.Module, nn.Module] | None:
        """Layers 1..n and the rest, sharing the model's modules."""
        children = list(model.named_children())
        return nn.Sequential(OrderedDict(children[:n])), nn.Sequential(OrderedDict(children[n:]))


@hookimpl
def register_data_sources(register: Any) -> None:
    """Register the ``signals`` data source."""
    register("signals", SignalsDataSource)


@hookimpl
def register_architectures(register: Any) -> None:
    """Register the ``conv1d`` architecture."""
    register("conv1d", Conv1dArchitecture)
