"""Helpers for image data sources: shared config keys, decoding, ImageNet normalisation.

Part of the public API (``from transferbench import images``); the built-in ``imagefolder``
and ``hf`` sources use it, and so can a third-party image source.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import DataError

__all__ = ["ImageSourceParams", "Triple", "decode_image", "image_size", "imagenet_normalization",
           "warn_if_upsampled"]

#: Marks, in the environment, the image sources already warned about (so that worker
#: processes spawned after the main process warned do not warn again).
_WARNED_ENV = "TRANSFERBENCH_WARNED_UPSAMPLING"

#: resize at least this many times the largest stored side (per side) is "much larger".
UPSAMPLING_FACTOR = 2.0

Triple = tuple[float, float, float]


class ImageSourceParams(BaseModel):
    """Config keys shared by the image data sources."""

    model_config = ConfigDict(extra="forbid")

    resize: int | None = Field(
        256,
        ge=1,
        description="resize every image to resize x resize (the paper: 256); "
        "null keeps the stored size, which must then be the same for all images",
    )
    imagenet: Literal["auto"] | bool = Field(
        "auto",
        description="label classes with the ImageNet-1k metadata (wnid ids, names, "
        "man-made/natural); auto: when the class names are ImageNet wnids",
    )
    mean: Triple | None = Field(
        None, description="per-channel mean on the [0, 1] scale; null: timm's ImageNet mean"
    )
    std: Triple | None = Field(
        None, description="per-channel std on the [0, 1] scale; null: timm's ImageNet std"
    )

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: Triple | None) -> Triple | None:
        if std is not None and any(v <= 0 for v in std):
            raise ValueError("every std value must be positive")
        return std


def imagenet_normalization(params: ImageSourceParams) -> tuple[Triple, Triple]:
    """The (mean, std) of ``params``, defaulting to timm's ImageNet constants.

    The paper subtracted a mean image; a per-channel mean is the usual stand-in.
    """
    # Imported here: importing timm costs over a second and most commands never normalise.
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean = params.mean if params.mean is not None else _triple(IMAGENET_DEFAULT_MEAN)
    std = params.std if params.std is not None else _triple(IMAGENET_DEFAULT_STD)
    return mean, std


def _triple(values: Sequence[float]) -> Triple:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _open_image(value: Any) -> Any:
    """A PIL image from a path, bytes, a ``{"bytes", "path"}`` dict, an array or an image."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):  # datasets' Image(decode=False) value
        data, path = value.get("bytes"), value.get("path")
        value = data if data is not None else path
        if value is None:
            raise DataError("an image value holds neither bytes nor a path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(value))
    if isinstance(value, (str, os.PathLike)):
        return Image.open(value)
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    raise DataError(f"cannot read an image from a {type(value).__name__}")


def _name_of(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"({type(value).__name__})"


def decode_image(value: Any, resize: int | None) -> torch.Tensor:
    """Decode one image into a uint8 tensor of shape (3, H, W).

    Any mode (grayscale, CMYK, palette, RGBA, ...) is converted to RGB; with ``resize`` the
    image is resized to ``resize x resize`` (bilinear, aspect ratio not kept, as in the
    paper's Caffe pipeline). A top-level function so loader workers can pickle it.

    Args:
        value: a file path, encoded bytes, a ``{"bytes", "path"}`` dict, a PIL image or an
            H x W (x C) uint8 array.
        resize: the side of the square output, or None to keep the image's size.
    """
    from PIL import Image

    try:
        img = _open_image(value)
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # avoids PIL's warning about palette transparency
        if img.mode != "RGB":
            img = img.convert("RGB")
        if resize is not None and img.size != (resize, resize):
            img = img.resize((resize, resize), Image.Resampling.BILINEAR)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds; the message names the file
        raise DataError(f"cannot decode the image {_name_of(value)}: {type(exc).__name__}: {exc}") from None
    # Transposed by numpy, not torch: torch's multi-threaded copy of one small image is
    # slower by 100x on a busy machine when the caller has not limited torch's threads.
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()  # C order, writable
    return torch.from_numpy(arr)




def image_size(value: Any) -> tuple[int, int]:
    """``(width, height)`` of one stored image (any value :func:`decode_image` takes),
    read from its header without decoding the pixels where the format allows."""
    width, height = _open_image(value).size
    return int(width), int(height)


def warn_if_upsampled(source: str, where: str, sizes: list[tuple[int, int]], resize: int | None) -> bool:
    """Warn, once, when ``resize`` makes the stored images much larger (at least
    :data:`UPSAMPLING_FACTOR` times their largest side): 8x8 images resized to 256 cost
    1,000 times the pixels and add nothing. Returns whether it warned.

    Args:
        source: the data source's name, for the message (``hf``).
        where: what identifies the data (its path), so each data set warns once per run,
            in worker processes too.
        sizes: ``(width, height)`` of a sample of the stored images.
        resize: the source's ``resize`` setting.
    """
    if resize is None or not sizes:
        return False
    side = max(max(w, h) for w, h in sizes)
    if resize < UPSAMPLING_FACTOR * side:
        return False
    mark = f"{source}:{where}:{resize}"
    if mark in os.environ.get(_WARNED_ENV, "").split("|"):
        return False
    os.environ[_WARNED_ENV] = "|".join(filter(None, [os.environ.get(_WARNED_ENV), mark]))
    same = len(set(sizes)) == 1
    stored = f"{sizes[0][0]}x{sizes[0][1]}" if same else f"up to {side}x{side}"
    factor = resize / side
    keep = f"data.resize: {side}" + (" (or null, which keeps the stored size)" if same else "")
    import warnings

    warnings.warn(
        f"{source}: the images of {where} are stored at {stored} pixels, and resize: {resize} upsamples "
        f"them {factor:.3g}x per side ({factor * factor:,.0f}x the pixels), which costs compute and adds "
        f"nothing. Set {keep} to train at the stored size, with an architecture for images that small "
        "(e.g. architecture: caffenet_scaled; `transferbench layers NAME --input-shape 3,H,W` shows "
        "what fits).",
        UserWarning,
        stacklevel=3,
    )
    return True
