"""What every job of a run shares in one process: config, plugins, device, data in memory."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .config import Config
from .network import input_shape
from .resolve import Components
from .taskdata import SplitTensors

__all__ = ["TrainContext", "autocast", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, then Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA when ``performance.amp`` asks for it, else nothing."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


@dataclass
class TrainContext:
    """What every job of a run shares: config, plugins, device and the splits held in memory.

    Built once per process (a worker that runs many jobs reads the data once).
    """

    config: Config
    components: Components
    device: torch.device
    memory: dict[str, SplitTensors | None] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example as the network sees it (after any crop)."""
        return input_shape(self.config.train.augment, self.components.data)
