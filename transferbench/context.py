"""What every job of a run shares in one process: config, plugins, device, data in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .components import Components
from .config import Config
from .network import input_shape
from .taskdata import SplitTensors

__all__ = ["TrainContext"]


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
