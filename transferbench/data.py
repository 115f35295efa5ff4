"""From a DataSource to batches of one task: class selection, label remapping, batching,
augmentation and normalisation.

Two paths, chosen per split by size:

* in memory: the whole split becomes one tensor once per process (small sources such as the
  synthetic quickstart data); batches are index slices, no workers, no copies.
* streaming: a torch DataLoader with worker processes over the ``datasets`` rows of the task
  (ImageNet-sized sources); workers decode, the engine augments batches on the device.

Augmentation (random crop, mirror) and normalisation run on whole batches on the training
device, so the same code serves a laptop CPU and a GPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .config import Augment
from .errors import DataError
from .interfaces import DataSource


@dataclass
class TensorSplit:
    """A whole split held in memory."""

    inputs: torch.Tensor  # (N, *input_shape), uint8 or float
    labels: torch.Tensor  # (N,) int64, source class indices


def _declared_dtype(feature: Any) -> str | None:
    """The dtype a ``datasets`` feature declares (Array2D/3D, Value, nested Sequence)."""
    while feature is not None:
        dtype = getattr(feature, "dtype", None)
        if isinstance(dtype, str) and dtype not in ("list", "dict"):
            return dtype if hasattr(np, dtype) else None
        feature = getattr(feature, "feature", None)
    return None


def _labels_of(ds: Any) -> np.ndarray:
    return np.asarray(ds.with_format("numpy")["label"][:], dtype=np.int64)


def estimate_bytes(ds: Any, input_shape: Sequence[int]) -> float:
    """Rough size of a split as uint8 tensors."""
    try:
        n = len(ds)
    except TypeError:  # iterable dataset: size unknown, never in memory
        return float("inf")
    return float(n) * float(np.prod(input_shape))


def load_tensor_split(source: DataSource, split: str, ds: Any = None) -> TensorSplit:
    """Read a whole split into memory (inputs converted with the source's ``to_tensor``).

    ``ds`` is the split's dataset when the caller already loaded it.
    """
    ds = source.load(split) if ds is None else ds
    try:
        array = ds.with_format("numpy")["input"]
        if not isinstance(array, np.ndarray):  # datasets >= 4 returns a lazy Column
            array = array[:]
        declared = _declared_dtype(ds.features.get("input"))
        if isinstance(array, np.ndarray) and declared and array.dtype != declared:
            array = array.astype(declared)  # datasets widens uint8 images to int64 on read
        if isinstance(array, np.ndarray) and array.dtype.kind in "biuf":
            inputs = torch.from_numpy(np.ascontiguousarray(array))
        else:
            inputs = torch.stack([source.to_tensor(v) for v in array])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"could not read split {split!r} of the data source: {exc}") from exc
    return TensorSplit(inputs, torch.from_numpy(_labels_of(ds)))


class _RowDataset(torch.utils.data.Dataset):
    """Rows of a ``datasets.Dataset`` turned into (tensor, task label) in loader workers."""

    def __init__(self, source: DataSource, ds: Any, remap: dict[int, int]) -> None:
        self.source, self.ds, self.remap = source, ds, remap

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.ds[int(i)]
        return self.source.to_tensor(row["input"]), self.remap[int(row["label"])]


class _StreamRows(torch.utils.data.IterableDataset):
    """A streaming ``datasets.IterableDataset`` filtered to a task's classes.

    ``datasets`` shards an iterable dataset across DataLoader workers by itself (when it
    has several shards), so each worker reads its own files.
    """

    def __init__(self, source: DataSource, ds: Any, remap: dict[int, int]) -> None:
        self.source, self.ds, self.remap = source, ds, remap
        self.seed: int | None = None  # set per pass: shuffle with this seed, or None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        ds = self.ds if self.seed is None else self.ds.shuffle(seed=self.seed, buffer_size=10_000)
        for row in ds:
            label = self.remap.get(int(row["label"]))
            if label is not None:
                yield self.source.to_tensor(row["input"]), label


class TaskData:
    """The examples of one task (a subset of the source's classes), labels 0..k-1."""

    def __init__(
        self,
        source: DataSource,
        split: str,
        classes: Sequence[int],
        *,
        cache: dict[str, TensorSplit] | None = None,
        in_memory_max_bytes: float = 4e9,
        workers: int = 0,
        decode_cache: Path | None = None,
    ) -> None:
        self.source, self.split, self.classes = source, split, list(classes)
        self.workers = workers
        self.mmap: np.ndarray | None = None
        remap = np.full(max(max(self.classes) + 1, 1), -1, dtype=np.int64)
        remap[self.classes] = np.arange(len(self.classes))
        cache = cache if cache is not None else {}
        self.stream: _StreamRows | None = None
        ds = None
        if split not in cache:
            ds = source.load(split)
            if not hasattr(ds, "__len__"):  # an IterableDataset: stream it, every pass
                self.inputs, self.rows = None, None
                self.labels = None
                self.stream = _StreamRows(source, ds, {c: i for i, c in enumerate(self.classes)})
                return
            if estimate_bytes(ds, source.input_shape()) <= in_memory_max_bytes:
                cache[split] = load_tensor_split(source, split, ds)
            else:
                cache[split] = None  # type: ignore[assignment]
        tensors = cache[split]
        if tensors is not None:
            labels = tensors.labels.numpy()
            keep = np.nonzero(np.isin(labels, self.classes))[0]
            self.inputs: torch.Tensor | None = tensors.inputs[torch.from_numpy(keep)]
            self.labels = torch.from_numpy(remap[labels[keep]])
            self.rows = None
        elif decode_cache is not None:
            self.mmap, labels = decoded_split(source, split, decode_cache, workers)
            self.keep = np.nonzero(np.isin(labels, self.classes))[0]
            self.inputs, self.rows = None, None
            self.labels = torch.from_numpy(remap[labels[self.keep]])
        else:
            ds = source.load(split) if ds is None else ds
            labels = _labels_of(ds)
            keep = np.nonzero(np.isin(labels, self.classes))[0]
            self.inputs = None
            self.labels = torch.from_numpy(remap[labels[keep]])
            self.rows = _RowDataset(source, ds.select(keep), {c: i for i, c in enumerate(self.classes)})
        if len(self.labels) == 0:
            raise DataError(f"split {split!r} has no examples of the task's {len(self.classes)} classes")

    def __len__(self) -> int:
        if self.stream is not None:
            raise DataError("a streaming data source has no known length: set train.steps, not train.epochs")
        return len(self.labels)

    def batches(
        self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the task's examples."""
        if self.stream is not None:
            self.stream.seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if shuffle else None
            yield from torch.utils.data.DataLoader(
                self.stream, batch_size=batch_size, num_workers=self.workers,
                pin_memory=torch.cuda.is_available(), drop_last=drop_last,
            )
            return
        n = len(self)
        if self.mmap is not None:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            for start in range(0, n, batch_size):
                pos = np.sort(order[start : start + batch_size].numpy())  # sorted reads are sequential
                yield torch.from_numpy(self.mmap[self.keep[pos]]), self.labels[torch.from_numpy(pos)]
            return
        if self.inputs is not None:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            stop = n - n % batch_size if drop_last and n >= batch_size else n
            for start in range(0, stop, batch_size):
                idx = order[start : start + batch_size]
                yield self.inputs[idx], self.labels[idx]
            return
        sampler = torch.utils.data.RandomSampler(self.rows, generator=generator) if shuffle else None
        loader = torch.utils.data.DataLoader(
            self.rows,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last and n >= batch_size,
            persistent_workers=False,
        )
        yield from loader


def decoded_split(source: DataSource, split: str, root: Path, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A split decoded once into a uint8 memory-mapped array (and its labels).

    The first call decodes every example with ``source.to_tensor`` (in ``workers``
    processes) into ``root/decoded/<hash of the source and split>``; later calls, in any
    run or process, map the file, so no epoch decodes an image again. Built in a temporary
    folder and renamed, so a concurrent build never exposes half a file.
    """
    from .plan import content_hash

    key = content_hash({"source": f"{type(source).__module__}.{type(source).__qualname__}",
                        "params": source.params.model_dump(mode="json"), "split": split})
    folder = Path(root).expanduser() / "decoded" / key
    if not (folder / "labels.npy").is_file():
        ds = source.load(split)
        labels = _labels_of(ds)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
        try:
            out = np.lib.format.open_memmap(tmp / "inputs.npy", mode="w+", dtype=np.uint8,
                                            shape=(len(labels), *source.input_shape()))
            identity = {int(c.index): int(c.index) for c in source.classes()}
            loader = torch.utils.data.DataLoader(_RowDataset(source, ds, identity), batch_size=256,
                                                 num_workers=workers)
            at = 0
            for x, _ in loader:
                if x.dtype != torch.uint8:
                    raise DataError("loader.decode_cache needs a source whose inputs are uint8 images")
                out[at : at + len(x)] = x.numpy()
                at += len(x)
            out.flush()
            del out
            np.save(tmp / "labels.npy", labels)
            try:
                os.rename(tmp, folder)
            except OSError:  # another process finished first: keep its copy
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return np.load(folder / "inputs.npy", mmap_mode="r"), np.load(folder / "labels.npy")


class FeatureData(TaskData):
    """Precomputed inputs (what frozen layers output) with the task's labels, in memory."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]) -> None:
        self.inputs, self.labels, self.classes = inputs, labels, list(classes)
        self.rows = self.stream = self.mmap = None


class BatchTransform:
    """Scale, augment and normalise a batch on its device.

    uint8 inputs are scaled to [0, 1]. Training: optional padding, random crop of size
    ``crop`` and horizontal mirroring, each example drawn independently. Evaluation: the
    centre crop. Then per-channel normalisation with the source's mean and std.
    """

    def __init__(self, augment: Augment, normalization: tuple[Sequence[float], Sequence[float]] | None,
                 device: torch.device) -> None:
        self.augment = augment
        self.mean = self.std = None
        if normalization is not None:
            mean, std = normalization
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example after the transform."""
        if self.augment.crop is None:
            return input_shape
        return (*input_shape[:-2], self.augment.crop, self.augment.crop)

    def __call__(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        aug = self.augment
        if x.dim() == 4:
            if train and aug.pad:
                x = torch.nn.functional.pad(x, (aug.pad,) * 4)
            if aug.crop is not None:
                x = self._random_crop(x, aug.crop, generator) if train else _centre_crop(x, aug.crop)
            if train and aug.mirror:
                flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            if self.mean is not None:
                x = (x - self.mean) / self.std
        return x

    @staticmethod
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
