"""JPEG decoding and resizing on one CPU core: the data-pipeline rate behind `plan`'s bound.

    python benchmarks/decode_rate.py        # a few seconds

Decodes an ImageNet-sized photo-like JPEG (500x375, quality 90, about 77 KiB) and resizes it
to 256x256 with ``transferbench.images.decode_image`` (what the ``imagefolder`` and ``hf``
sources run for every image), on one torch thread, best of 5 rounds of 100. Prints:

    summary: decode_ms=R images_per_s_per_core=R
"""

from __future__ import annotations

import io
import sys
import time

import numpy as np
import torch
from PIL import Image


def photo_like_jpeg(width: int = 500, height: int = 375) -> bytes:
    """Smooth gradients with noise: compresses about as an ImageNet photo does."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 0.5 + 40 * np.sin(y / 17)) % 255, (y * 0.6 + 30 * np.cos(x / 23)) % 255,
                    (x + y) % 255], -1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> int:
    from transferbench.images import decode_image

    torch.set_num_threads(1)
    value = {"bytes": photo_like_jpeg()}
    decode_image(value, 256)  # warm-up
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(100):
            decode_image(value, 256)
        best = min(best, (time.perf_counter() - t0) / 100)
    print(f"decode + resize to 256: {1000 * best:.2f} ms per image on one core ({1 / best:.0f} images/s)")
    print(f"summary: decode_ms={1000 * best:.2f} images_per_s_per_core={1 / best:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
