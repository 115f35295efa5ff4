"""The examples of one task: a source's split, restricted to the task's classes, labels 0..k-1.

One interface, :class:`TaskData`, and one small class per way of holding the examples,
chosen by :func:`open_task`:

* :class:`InMemoryTask`: the split is one tensor in this process (small sources such as the
  synthetic quickstart data, and the outputs of a frozen prefix); batches are index slices.
* :class:`MemoryMapTask`: a split decoded once into a uint8 memory map (``loader.decode_cache``).
* :class:`RowsTask`: ``datasets`` rows decoded in DataLoader workers (large sources).
* :class:`StreamTask`: a streaming ``datasets.IterableDataset`` (length unknown).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Loader
from .errors import DataError
from .files import cached_dir
from .hashing import content_hash
from .interfaces import DataSource, Split

__all__ = [
    "InMemoryTask",
    "MemoryMapTask",
    "RowsTask",
    "SplitTensors",
    "StreamTask",
    "TaskData",
    "bad_data_error",
    "decoded_split",
    "labels_of",
    "load_split_tensors",
    "open_task",
]

Batch = tuple[torch.Tensor, torch.Tensor]


def _loader_generator() -> torch.Generator:
    """A DataLoader's own generator: without one, every pass over a DataLoader draws from
    torch's global RNG (for its workers' seeds), so a job's dropout would depend on how its
    data is held. Workers only decode; the shuffling uses the job's generator."""
    return torch.Generator().manual_seed(0)


class TaskData(abc.ABC):
    """The examples of one task (a subset of the source's classes), labels 0..k-1.

    Attributes:
        classes: the source's class indices of the task (label i is ``classes[i]``).
    """

    classes: list[int]

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of examples (raises :class:`DataError` for a stream)."""

    @abc.abstractmethod
    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
                ) -> Iterator[Batch]:
        """One pass over the examples: ``(inputs, labels)`` batches, shuffled by ``generator``."""

    @property
    def size(self) -> int | None:
        """Number of examples, or None when unknown (a stream)."""
        return len(self)

    def tensors(self) -> Batch | None:
        """All inputs and labels as tensors when they are in memory, else None."""
        return None


class InMemoryTask(TaskData):
    """Examples held as one tensor; batches are index slices (no workers, no copies)."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]) -> None:
        self.inputs, self.labels, self.classes = inputs, labels, list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self) -> Batch:
        return self.inputs, self.labels

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
                ) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.inputs[idx], self.labels[idx]


class MemoryMapTask(TaskData):
    """Examples of a uint8 memory map (a split decoded once): rows ``keep`` of ``mmap``."""

    def __init__(self, mmap: np.ndarray, keep: np.ndarray, labels: torch.Tensor, classes: Sequence[int]) -> None:
        self.mmap, self.keep, self.labels, self.classes = mmap, keep, labels, list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
                ) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            pos = order[start : start + batch_size].numpy()
            rows = np.empty((len(pos), *self.mmap.shape[1:]), dtype=self.mmap.dtype)
            stored = self.keep[pos]
            for i in np.argsort(stored, kind="stable"):  # read in file order (sequential on a disk),
                rows[i] = self.mmap[stored[i]]  # each row copied once into its shuffled place
            yield torch.from_numpy(rows), self.labels[torch.from_numpy(pos)]


class _Rows(torch.utils.data.Dataset):
    """Rows of a ``datasets.Dataset`` turned into (tensor, task label) in loader workers."""

    def __init__(self, source: DataSource, ds: Any, remap: dict[int, int]) -> None:
        self.source, self.ds, self.remap = source, ds, remap

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.ds[int(i)]
        return self.source.to_tensor(row["input"]), self.remap[int(row["label"])]


class RowsTask(TaskData):
    """Examples decoded from ``datasets`` rows by DataLoader worker processes."""

    def __init__(self, source: DataSource, ds: Any, labels: torch.Tensor, classes: Sequence[int],
                 workers: int) -> None:
        self.classes, self.labels, self.workers = list(classes), labels, workers
        self.rows = _Rows(source, ds, {c: i for i, c in enumerate(self.classes)})

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
                ) -> Iterator[Batch]:
        # the order is drawn up front, exactly as the other backends draw it (RandomSampler
        # would draw a second, unused permutation at the end of each epoch)
        sampler = torch.randperm(len(self.rows), generator=generator).tolist() if shuffle else None
        yield from torch.utils.data.DataLoader(
            self.rows, batch_size=batch_size, sampler=sampler, num_workers=self.workers,
            pin_memory=torch.cuda.is_available(), generator=_loader_generator(),
        )


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


class StreamTask(TaskData):
    """Examples of a streaming source, read afresh (and shuffled by a buffer) every pass."""

    def __init__(self, source: DataSource, ds: Any, classes: Sequence[int], workers: int) -> None:
        self.classes, self.workers = list(classes), workers
        self.stream = _StreamRows(source, ds, {c: i for i, c in enumerate(self.classes)})

    def __len__(self) -> int:
        raise DataError("a streaming data source has no known length: set train.steps, not train.epochs")

    @property
    def size(self) -> None:
        return None

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
                ) -> Iterator[Batch]:
        self.stream.seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if shuffle else None
        yield from torch.utils.data.DataLoader(
            self.stream, batch_size=batch_size, num_workers=self.workers, pin_memory=torch.cuda.is_available(),
            generator=_loader_generator(),
        )


# --------------------------------------------------------------------------- loading


@dataclass
class SplitTensors:
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


def labels_of(ds: Any) -> np.ndarray:
    """The ``label`` column of a ``datasets.Dataset`` as int64."""
    return np.asarray(ds.with_format("numpy")["label"][:], dtype=np.int64)


def load_split_tensors(source: DataSource, split: Split, ds: Any = None) -> SplitTensors:
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
    except Exception as exc:
        raise DataError(f"could not read split {split!r} of the data source: {exc}") from exc
    return SplitTensors(inputs, torch.from_numpy(labels_of(ds)))


def _estimate_bytes(ds: Any, input_shape: Sequence[int]) -> float:
    """Rough size of a split as uint8 tensors."""
    return float(len(ds)) * float(np.prod(input_shape))


def open_task(
    source: DataSource,
    split: Split,
    classes: Sequence[int],
    loader: Loader,
    memory: dict[str, SplitTensors | None],
) -> TaskData:
    """The examples of ``classes`` in ``split``, held the best way the settings allow.

    Args:
        source: the data source.
        split: ``train`` or ``eval``.
        classes: the source's class indices of the task.
        loader: the config's ``loader:`` settings.
        memory: per-process cache of whole splits held in memory (None: too large).

    Raises:
        DataError: the split has no example of the task's classes, or cannot be read.
    """
    classes = list(classes)
    remap = np.full(max(max(classes) + 1, 1), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    ds = None
    if split not in memory:
        ds = source.load(split)
        if not hasattr(ds, "__len__"):  # an IterableDataset: stream it, every pass
            return StreamTask(source, ds, classes, loader.workers)
        fits = _estimate_bytes(ds, source.input_shape()) <= loader.in_memory_max_gb * 1e9
        memory[split] = load_split_tensors(source, split, ds) if fits else None
    held = memory[split]
    if held is not None:
        labels = held.labels.numpy()
        keep = np.nonzero(np.isin(labels, classes))[0]
        task: TaskData = InMemoryTask(held.inputs[torch.from_numpy(keep)],
                                      torch.from_numpy(remap[labels[keep]]), classes)
    elif loader.decode_cache:
        mmap, labels = decoded_split(source, split, Path(loader.cache_dir).expanduser(), loader.workers)
        keep = np.nonzero(np.isin(labels, classes))[0]
        task = MemoryMapTask(mmap, keep, torch.from_numpy(remap[labels[keep]]), classes)
    else:
        ds = source.load(split) if ds is None else ds
        labels = labels_of(ds)
        keep = np.nonzero(np.isin(labels, classes))[0]
        task = RowsTask(source, ds.select(keep), torch.from_numpy(remap[labels[keep]]), classes, loader.workers)
    if len(task) == 0:
        raise DataError(f"split {split!r} has no examples of the task's {len(classes)} classes")
    return task


def decoded_split(source: DataSource, split: Split, root: Path, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A split decoded once into a uint8 memory-mapped array (and its labels).

    The first call decodes every example with ``source.to_tensor`` (in ``workers``
    processes) into ``root/decoded/<hash of the source and split>``; later calls, in any
    run or process, map the file, so no epoch decodes an image again. Built with
    :func:`transferbench.files.cached_dir`: atomically, one builder at a time, a damaged
    copy moved aside and rebuilt.
    """
    key = content_hash({"source": f"{type(source).__module__}.{type(source).__qualname__}",
                        "params": source.params.model_dump(mode="json"), "split": split})

    def build(tmp: Path) -> None:
        ds = source.load(split)
        labels = labels_of(ds)
        out = np.lib.format.open_memmap(tmp / "inputs.npy", mode="w+", dtype=np.uint8,
                                        shape=(len(labels), *source.input_shape()))
        identity = {int(c.index): int(c.index) for c in source.classes()}
        loader = torch.utils.data.DataLoader(_Rows(source, ds, identity), batch_size=256, num_workers=workers,
                                             generator=torch.Generator().manual_seed(0))
        at = 0
        for x, _ in loader:
            if x.dtype != torch.uint8:
                raise DataError("loader.decode_cache needs a source whose inputs are uint8 images")
            out[at : at + len(x)] = x.numpy()
            at += len(x)
        out.flush()
        del out
        np.save(tmp / "labels.npy", labels)

    def whole(folder: Path) -> bool:
        try:
            inputs = np.load(folder / "inputs.npy", mmap_mode="r")
            labels = np.load(folder / "labels.npy")
        except (OSError, ValueError):
            return False
        return inputs.shape == (len(labels), *source.input_shape())

    try:
        folder = cached_dir(Path(root).expanduser() / "decoded" / key, build, valid=whole)
    except OSError as exc:
        raise DataError(f"loader.decode_cache: cannot write under {root}: {exc.strerror or exc} "
                        "(set loader.cache_dir to a writable folder)") from None
    return np.load(folder / "inputs.npy", mmap_mode="r"), np.load(folder / "labels.npy")


# --------------------------------------------------------------------------- bad data


def _describe(value: Any, index: int) -> str:
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"example {index}"


class _Probe(torch.utils.data.Dataset):
    """Decodes every row and returns what went wrong (or "") instead of the tensor."""

    def __init__(self, source: DataSource, ds: Any) -> None:
        self.source, self.ds = source, ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> str:
        value = self.ds[int(i)]["input"]
        try:
            self.source.to_tensor(value)
        except Exception as exc:  # noqa: BLE001 - every kind of failure is what we look for
            return f"{_describe(value, int(i))}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return ""


def scan_bad_examples(source: DataSource, split: Split, workers: int = 0) -> list[str]:
    """Every example of ``split`` that the source cannot turn into a tensor, described."""
    ds = source.load(split)
    if not hasattr(ds, "__len__"):
        return []  # a stream cannot be scanned up front
    loader = torch.utils.data.DataLoader(_Probe(source, ds), batch_size=64, num_workers=workers,
                                         collate_fn=list, generator=torch.Generator().manual_seed(0))
    return [problem for batch in loader for problem in batch if problem]


def bad_data_error(source: DataSource, exc: DataError, console: Any, workers: int = 0) -> DataError:
    """The error that stops a run on unreadable data, naming every bad example of both splits."""
    console.print("a data problem stopped the run; looking for every unreadable example ...")
    lines = []
    try:
        for split in ("train", "eval"):
            lines += [f"  {split}: {problem}" for problem in scan_bad_examples(source, split, workers)]
    except Exception as scan_exc:  # noqa: BLE001 - the first error still says what is wrong
        lines.append(f"  (the data could not be scanned: {scan_exc})")
    shown = lines[:50] + ([f"  ... and {len(lines) - 50} more"] if len(lines) > 50 else [])
    found = f"{len(lines)} unreadable examples:\n" + "\n".join(shown) if lines else "no other unreadable example"
    return DataError(f"{exc}\n{found}\nFix or remove them and rerun: finished networks are kept.")
