"""Shifted targets, as data transforms: ``corrupt`` (an input-level shift: noise, blur or
contrast, at a severity 1..5) and ``relabel`` (an output-level shift: the classes permuted or
merged). Lee et al. (ICLR 2023, "Surgical fine-tuning improves adaptation to distribution
shifts") tune the first block for an input-level shift and the last for an output-level one;
these make both kinds of target from any data set.

Each is a function of one example and the settings: the noise of an example is drawn from a
generator seeded by the setting ``seed`` and the example's own content, so an example gets the
same noise in every epoch, batch and order (a fixed corrupted data set, as ImageNet-C is).
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from transferbench import DataTransform, hookimpl

#: The strength of each corruption at severities 1..5. Our own values, chosen for small
#: (32-pixel) images so that severity 1 is a mild change and 5 a strong one: noise, the
#: standard deviation as a fraction of the input's range (255 for 8-bit images, the example's
#: own standard deviation for float inputs); blur, the Gaussian's standard deviation in
#: pixels (samples, for 1-D signals); contrast, the factor that scales each example's
#: distance from its own mean.
SEVERITY: dict[str, tuple[float, ...]] = {
    "noise": (0.04, 0.08, 0.12, 0.18, 0.26),
    "blur": (0.5, 0.75, 1.0, 1.5, 2.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
}


class CorruptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["noise", "blur", "contrast"] = Field(
        "noise", description="noise: additive Gaussian noise; blur: a Gaussian blur over the last two axes (the "
        "last one for 1-D signals); contrast: each example pulled towards its own mean")
    severity: int = Field(3, ge=1, le=5, description="1 (mild) .. 5 (strong); the values per kind are in "
                          "transferbench_plugins.shifts.SEVERITY")
    seed: int = Field(0, ge=0, description="seed of the noise (with each example's own content)")


class Corrupt(DataTransform[CorruptParams]):
    """An input-level shift: every example corrupted the same way every time it is read."""

    description = "corrupt the inputs: Gaussian noise, blur or contrast at a severity 1..5 (an input-level shift)"
    Params = CorruptParams

    @property
    def strength(self) -> float:
        return SEVERITY[self.params.kind][self.params.severity - 1]

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        if self.params.kind == "blur" and len(shape) < 2:
            return f"blur needs examples with a channel axis and at least one more; got {shape}"
        return None

    def apply(self, inputs: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        eight_bit = inputs.dtype == torch.uint8
        x = inputs.float()
        kind = self.params.kind
        if kind == "noise":
            out = x + torch.stack([self._noise(example, eight_bit) for example in inputs]).to(x.dtype)
        elif kind == "blur":
            out = _blur(x, self.strength, axes=2 if inputs.dim() >= 4 else 1)
        else:
            mean = x.flatten(1).mean(dim=1).view(-1, *([1] * (x.dim() - 1)))
            out = mean + self.strength * (x - mean)
        if eight_bit:
            out = out.round().clamp(0, 255)
        return out.to(inputs.dtype), labels

    def _noise(self, example: torch.Tensor, eight_bit: bool) -> torch.Tensor:
        """The example's noise: its seed from the setting and the example's bytes alone."""
        digest = hashlib.blake2b(example.contiguous().numpy().tobytes(), digest_size=8,
                                 key=str(self.params.seed).encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2 ** 63 - 1))
        scale = 255.0 if eight_bit else float(example.float().std())
        return torch.randn(example.shape, generator=gen) * (self.strength * scale)

    @classmethod
    def example_params(cls, workdir):
        return {"kind": "noise", "severity": 2, "seed": 1}


def _blur(x: torch.Tensor, sigma: float, axes: int) -> torch.Tensor:
    """A Gaussian blur of standard deviation ``sigma`` over the last ``axes`` axes of each
    example (separable; the borders reflected, or replicated when an axis is too short)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    out = x
    for axis in range(1, axes + 1):
        moved = out.movedim(-axis, -1)
        shape = moved.shape
        rows = moved.reshape(-1, 1, shape[-1])
        mode = "reflect" if shape[-1] > radius else "replicate"
        padded = torch.nn.functional.pad(rows, (radius, radius), mode=mode)
        rows = torch.nn.functional.conv1d(padded, kernel.view(1, 1, -1))
        out = rows.reshape(shape).movedim(-1, -axis)
    return out


class RelabelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["permute", "merge"] = Field(
        "permute", description="permute: every label mapped to another by one seeded permutation of the classes; "
        "merge: the classes, in a seeded order, dealt into `groups` groups, each label becoming its group's index "
        "(the classifier keeps its width: the outputs above groups-1 go unused)")
    groups: int = Field(2, ge=1, description="with merge: how many classes remain")
    seed: int = Field(0, ge=0, description="seed of the permutation")


class Relabel(DataTransform[RelabelParams]):
    """An output-level shift: the same inputs, other labels."""

    description = "relabel the classes: a seeded permutation, or classes merged into groups (an output-level shift)"
    Params = RelabelParams

    def mapping(self, classes: int) -> torch.Tensor:
        """New label of each label 0..classes-1 (the same for every call)."""
        perm = torch.randperm(classes, generator=torch.Generator().manual_seed(self.params.seed))
        if self.params.mode == "permute":
            return perm
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(classes)
        return rank % min(self.params.groups, classes)

    def apply(self, inputs: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs.clone(), self.mapping(classes)[labels]

    @classmethod
    def example_params(cls, workdir):
        return {"mode": "merge", "groups": 2, "seed": 1}


@hookimpl
def register_data_transforms(register) -> None:
    register("corrupt", Corrupt)
    register("relabel", Relabel)
