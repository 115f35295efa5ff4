"""Batch augmentation and normalisation, on the training device.

The paper's random crops and mirroring run on whole batches where the network runs, so
the same code serves a laptop CPU and a GPU, and data sources only decode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import Augment
from .errors import DataError

__all__ = ["BatchTransform", "output_shape"]


def output_shape(augment: Augment, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of one example after the transform: the input's, or the crop's."""
    shape = tuple(input_shape)
    if augment.crop is None:
        return shape
    return (*shape[:-2], augment.crop, augment.crop)


class BatchTransform:
    """Scale, augment and normalise a batch on its device.

    uint8 inputs are scaled to [0, 1]. Training: optional padding, random crop of size
    ``crop`` and horizontal mirroring, each example drawn independently from ``generator``.
    Evaluation: the centre crop. Then per-channel normalisation with the source's mean and
    std, and, where asked, the channels-last memory format.
    """

    def __init__(self, augment: Augment, normalization: tuple[Sequence[float], Sequence[float]] | None,
                 device: torch.device, *, channels_last: bool = False) -> None:
        self.augment = augment
        self.channels_last = channels_last
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        if normalization is not None:
            mean, std = normalization
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if x.dim() != 4:
            return x
        aug = self.augment
        if train and aug.pad:
            x = torch.nn.functional.pad(x, (aug.pad,) * 4)
        if aug.crop is not None:
            x = _random_crop(x, aug.crop, generator) if train else _centre_crop(x, aug.crop)
        if train and aug.mirror:
            flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    if size > h or size > w:
        raise DataError(f"crop {size} is larger than the inputs ({h}x{w})")
    if size == h == w:
        return x
    oy = torch.randint(0, h - size + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, w - size + 1, (n,), generator=generator).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, None, :, None]  # (n, 1, size, 1)
    cols = (ox[:, None] + ar)[:, None, None, :]  # (n, 1, 1, size)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[batch, chans, rows, cols]


def _centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise DataError(f"crop {size} is larger than the inputs ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]
