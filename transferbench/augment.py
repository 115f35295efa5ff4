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
        stored = x.dtype == torch.uint8
        if x.dim() != 4:
            return x.float().div_(255.0) if stored else x.float()
        # padding, cropping and mirroring only move values: done on the stored dtype (uint8 from
        # a decoded store: a quarter of the bytes) before the scaling, with the same numbers
        x = self.place(x, train=train, generator=generator)
        if stored:  # a new tensor: scaled and normalised in place (the same numbers, fewer passes)
            x = x.float().div_(255.0)
            if self.mean is not None and self.std is not None:
                x = x.sub_(self.mean).div_(self.std)
        else:
            x = x.float()
            if self.mean is not None and self.std is not None:
                x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def place(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """The padding, crop and mirroring of a batch of images, in its own dtype (uint8 stays
        uint8): what ``__call__`` does before it scales and normalises, drawing the same
        random numbers from ``generator``."""
        return _place(x, self.augment, train, generator)


def _place(x: torch.Tensor, augment: Augment, train: bool, generator: torch.Generator | None) -> torch.Tensor:
    if train and augment.pad:
        x = torch.nn.functional.pad(x, (augment.pad,) * 4)
    if augment.crop is None or not train:
        x = _centre_crop(x, augment.crop) if augment.crop is not None else x
        return _mirror(x, generator) if train and augment.mirror else x
    n, _, h, w = x.shape
    size = augment.crop
    if size > h or size > w:
        raise DataError(f"crop {size} is larger than the inputs ({h}x{w})")
    if size == h == w:
        return _mirror(x, generator) if augment.mirror else x
    # the random numbers in one order on every device: the windows' rows, their columns, the mirror
    oy = torch.randint(0, h - size + 1, (n,), generator=generator)
    ox = torch.randint(0, w - size + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if augment.mirror else torch.zeros(n, dtype=torch.bool)
    windows = _copied_windows if x.device.type == "cpu" else _gathered_windows
    return windows(x, oy, ox, flip, size)


def _copied_windows(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
                    size: int) -> torch.Tensor:
    """The windows, mirrored where ``flip`` says, as one copy each (fast on a CPU)."""
    tops, lefts, flips = oy.tolist(), ox.tolist(), flip.tolist()
    windows = [x[i, :, tops[i] : tops[i] + size, lefts[i] : lefts[i] + size] for i in range(len(tops))]
    return torch.stack([v.flip(2) if f else v for v, f in zip(windows, flips)])


def _gathered_windows(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
                      size: int) -> torch.Tensor:
    """The same windows as one gather (one kernel on an accelerator)."""
    oy, ox, flip = oy.to(x.device), ox.to(x.device), flip.to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, None, :, None]  # (n, 1, size, 1)
    cols = (ox[:, None] + torch.where(flip[:, None], size - 1 - ar, ar))[:, None, None, :]  # mirrored columns
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[batch, chans, rows, cols]


def _mirror(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def _centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise DataError(f"crop {size} is larger than the inputs ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]
