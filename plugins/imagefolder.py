"""A local folder of images, one sub-folder per class: an ILSVRC-2012 tree or any other.

Layouts understood under ``root``::

    train/<class>/*.JPEG          the training split, one folder per class
    val/<class>/*.JPEG            an eval split sorted into class folders, or
    val/*.JPEG + a label file     the flat ILSVRC-2012 validation folder

Class names are the folder names of the training split, sorted. When every name is an
ImageNet-1k WordNet id (``imagenet: auto``), names and man-made / natural superclasses
come from the ImageNet metadata, ids are the wnids and the split plugins map them onto
ImageNet's own class indices; ``classes()[i].index == i`` still counts only the classes
present in the tree.

Label files for a flat eval folder (``val_labels``, relative to ``root`` or absolute; when
unset, ``LOC_val_solution.csv``, ``val.txt``, ``val_labels.txt`` or
``imagenet_2012_validation_synset_labels.txt`` in the eval folder or ``root`` is used):

* Kaggle's ``LOC_val_solution.csv``: ``ImageId,PredictionString``, the wnid first in
  ``PredictionString``.
* ``<file name> <label>`` per line (space, tab or comma), the extension optional. The label
  is a class id (a wnid or folder name) or an integer: in ImageNet mode the 0-based index in
  sorted-wnid order (Caffe's ``val.txt`` from ``get_ilsvrc_aux.sh``), otherwise the 0-based
  index into this tree's sorted class folders (a label equal to a folder name is that
  folder, so trees with numbered folders work too).
* one wnid per line for the image files in sorted name order (TensorFlow's
  ``imagenet_2012_validation_synset_labels.txt``).

The devkit's ``ILSVRC2012_validation_ground_truth.txt`` (one integer per line) is refused:
its integers are ``ILSVRC2012_ID``s 1..1000 in the devkit's own synset order (``meta.mat``),
not sorted wnids, and that table is not shipped here. Use one of the forms above instead.

The dataset of a split holds file paths (``input``, a string) and labels, so building it is
one directory walk; :meth:`ImageFolder.to_tensor` decodes, converts to RGB and resizes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from transferbench import ClassInfo, DataError, DataSource, hookimpl, imagenet, images

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "ImageFolderParams",
    "read_val_labels",
]

#: File name endings read as images (compared lower-cased).
IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
)

#: Label files looked for, in this order, when ``val_labels`` is unset.
_LABEL_FILE_NAMES = (
    "LOC_val_solution.csv",
    "val.txt",
    "val_labels.txt",
    "imagenet_2012_validation_synset_labels.txt",
)

Triple = tuple[float, float, float]


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _stem(name: str) -> str:
    """A file's key in a label file: its base name without an image extension."""
    base = os.path.basename(name.strip())
    return base[: -len(os.path.splitext(base)[1])] if _is_image(base) else base


# --------------------------------------------------------------------------- label files


def read_val_labels(path: Path) -> dict[str, str] | list[str]:
    """Parse a validation label file.

    Returns:
        ``{file stem: label}`` for the Kaggle CSV and ``<file> <label>`` forms, or a list
        of labels (one per image in sorted file-name order) for the one-per-line form.
        Labels are strings: a class id or a decimal integer.

    Raises:
        DataError: the file is unreadable, empty, malformed, or the devkit's integer form.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"cannot read the validation label file {path}: {exc}") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"the validation label file {path} is empty")

    header = [h.strip() for h in lines[0].split(",")]
    if "ImageId" in header and "PredictionString" in header:  # Kaggle's LOC_val_solution.csv
        rows = csv.DictReader(io.StringIO("\n".join(lines)))
        out: dict[str, str] = {}
        for row in rows:
            pred = (row.get("PredictionString") or "").split()
            if not pred:
                raise DataError(f"{path}: no label for {row.get('ImageId')!r}")
            out[_stem(row["ImageId"])] = pred[0]
        return out

    rows_tokens = [re.split(r"[,\s]+", line) for line in lines]
    widths = {len(t) for t in rows_tokens}
    if widths == {1}:
        labels = [t[0] for t in rows_tokens]
        if all(lab.isdigit() for lab in labels):
            raise DataError(
                f"{path} holds one integer per line, like the devkit's "
                "ILSVRC2012_validation_ground_truth.txt, whose ILSVRC2012_IDs (1..1000) follow "
                "the devkit's own synset order, not sorted wnids. Give a file of "
                "'<file name> <wnid>' lines, Caffe's val.txt ('<file name> <0-based sorted-wnid "
                "index>'), Kaggle's LOC_val_solution.csv, or one wnid per line instead."
            )
        return labels
    if widths == {2}:
        return {_stem(name): label for name, label in rows_tokens}
    raise DataError(
        f"{path}: expected '<file name> <label>' or one label per line, "
        f"found lines with {sorted(widths)} fields"
    )


# --------------------------------------------------------------------------- the source


class ImageFolderParams(images.ImageSourceParams):
    root: str = Field(description="folder holding the split folders")
    train_dir: str = Field("train", description="training split folder, relative to root")
    eval_dir: str = Field("val", description="eval split folder, relative to root")
    val_labels: str | None = Field(
        None,
        description="label file of a flat eval folder, relative to root or absolute; "
        "unset: looked for by its usual names",
    )


class ImageFolder(DataSource[ImageFolderParams]):
    """Class-per-folder images on disk (an ILSVRC-2012 tree or any other)."""

    description = "a local folder tree: train/<class>/*.JPEG, val/<class>/ or flat val/ + labels"
    Params = ImageFolderParams

    def __init__(self, params: ImageFolderParams | None = None) -> None:
        super().__init__(params)
        self.params: ImageFolderParams
        self._classes: list[ClassInfo] | None = None
        self._imagenet = False  # whether classes() used the ImageNet metadata
        self._shape: tuple[int, ...] | None = None
        # split -> its datasets.Dataset (1.28M paths for ImageNet), kept out of pickles.
        self._datasets: dict[str, Any] = {}
        self._size_checked = False  # whether the stored image size was compared with resize

    def __getstate__(self) -> dict[str, Any]:
        # Loader workers only need to_tensor; don't ship 1.28M paths to each of them.
        state = self.__dict__.copy()
        state["_datasets"] = {}
        return state

    # ------------------------------------------------------------------ paths

    @property
    def root(self) -> Path:
        return Path(self.params.root).expanduser()

    def _split_dir(self, split: str) -> Path:
        return self.root / (self.params.train_dir if split == "train" else self.params.eval_dir)

    def _require_dir(self, path: Path, what: str) -> None:
        if not self.root.is_dir():
            raise DataError(
                f"imagefolder: root {str(self.root)!r} is not a folder. Set the data source's "
                "'root' to the folder holding the split folders (e.g. ILSVRC2012 with "
                "train/<wnid>/*.JPEG and val/)."
            )
        if not path.is_dir():
            key = "train_dir" if what == "training" else "eval_dir"
            raise DataError(
                f"imagefolder: no {what} folder {str(path)!r}; set '{key}' to its name "
                f"relative to root {str(self.root)!r}."
            )

    # ------------------------------------------------------------------ classes

    def _class_names(self) -> list[str]:
        train = self._split_dir("train")
        self._require_dir(train, "training")
        names = sorted(_subdirs(train))
        if not names:
            raise DataError(
                f"imagefolder: the training folder {str(train)!r} has no class sub-folders "
                "(expected train/<class>/<images>)."
            )
        return names

    def classes(self) -> list[ClassInfo]:
        if self._classes is None:
            if self.params.imagenet is True and not self._split_dir("train").is_dir():
                # The config declares the ImageNet-1k label space: its classes are known
                # without the images, so `plan` and `splits` work on a machine without the
                # data; `check()` (before any training) still insists on the tree.
                self._imagenet = True
                self._classes = list(imagenet.imagenet_classes())
                return self._classes
            names = self._class_names()
            mode = self.params.imagenet
            if mode == "auto":
                known = imagenet.wnid_to_index()
                self._imagenet = all(n in known for n in names)
            else:
                self._imagenet = mode
            if self._imagenet:
                self._classes = imagenet.classes_for_wnids(names)  # DataError names non-wnid folders
            else:
                self._classes = [ClassInfo(index=i, id=n, name=n) for i, n in enumerate(names)]
        return self._classes

    # ------------------------------------------------------------------ listings

    def _dataset(self, split: str) -> Any:
        """The split's ``input`` (path) / ``label`` dataset, built once per instance."""
        import datasets

        if split not in ("train", "eval"):
            raise ValueError(f"unknown split {split!r}")
        if split not in self._datasets:
            index = {c.id: c.index for c in self.classes()}
            folder = self._split_dir(split)
            self._require_dir(folder, "training" if split == "train" else "eval")
            if split == "eval" and not _subdirs(folder):
                paths, labels = self._flat_listing(folder, index)
            else:
                paths, labels = _folder_listing(folder, index)
            if not paths:
                raise DataError(f"imagefolder: no images found under {str(folder)!r}")
            features = datasets.Features(
                {"input": datasets.Value("string"), "label": datasets.Value("int64")}
            )
            self._datasets[split] = datasets.Dataset.from_dict(
                {"input": paths, "label": labels}, features=features
            )
        return self._datasets[split]

    def _label_file(self, folder: Path) -> Path:
        if self.params.val_labels is not None:
            path = Path(self.params.val_labels).expanduser()
            path = path if path.is_absolute() else self.root / path
            if not path.is_file():
                raise DataError(f"imagefolder: val_labels file {str(path)!r} does not exist")
            return path
        for place in (folder, self.root):
            for name in _LABEL_FILE_NAMES:
                if (place / name).is_file():
                    return place / name
        raise DataError(
            f"imagefolder: the eval folder {str(folder)!r} holds images but no class folders, "
            "and no label file was found. Set 'val_labels' to Kaggle's LOC_val_solution.csv, "
            "a file of '<file name> <wnid>' lines, Caffe's val.txt, or sort the images into "
            "val/<class>/ folders."
        )

    def _flat_listing(self, folder: Path, index: dict[str, int]) -> tuple[list[str], list[int]]:
        label_path = self._label_file(folder)
        raw = read_val_labels(label_path)
        files = sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
        if isinstance(raw, list):
            if len(raw) != len(files):
                raise DataError(
                    f"imagefolder: {label_path} has {len(raw)} labels, one per line, but "
                    f"{str(folder)!r} holds {len(files)} images"
                )
            pairs = list(zip(files, raw))
        else:
            missing = [f for f in files if _stem(f) not in raw]
            if missing:
                raise DataError(
                    f"imagefolder: {len(missing)} images in {str(folder)!r} have no label in "
                    f"{label_path}, e.g. {missing[:3]}"
                )
            pairs = [(f, raw[_stem(f)]) for f in files]

        # An integer label is ImageNet's sorted-wnid index in ImageNet mode (Caffe's val.txt),
        # else a position among this tree's classes; a label equal to a class id wins.
        by_int = [c.id for c in (imagenet.imagenet_classes() if self._imagenet else self.classes())]
        paths: list[str] = []
        labels: list[int] = []
        dropped: set[str] = set()
        for name, label in pairs:
            cls_id: str | None = label
            if label not in index and label.isdigit():
                cls_id = by_int[int(label)] if int(label) < len(by_int) else None
            if cls_id not in index:
                dropped.add(label)
                continue
            paths.append(str(folder / name))
            labels.append(index[cls_id])
        if dropped:
            warnings.warn(
                f"imagefolder: {len(pairs) - len(paths)} eval images of {len(dropped)} labels "
                f"that are not training classes were left out (e.g. {sorted(dropped)[:3]})",
                stacklevel=2,
            )
        return paths, labels

    # ------------------------------------------------------------------ DataSource API

    location_params = ("root", "val_labels")

    def identity(self) -> dict[str, Any]:
        """The params that shape the inputs, and each split's file names (relative to root)
        and labels: the same tree elsewhere, or moved, keeps its job ids."""
        out = super().identity()
        try:
            root = str(self.root)
            for split in ("train", "eval"):
                ds = self._dataset(split)
                digest = hashlib.sha256()
                for path, label in zip(ds["input"], ds["label"]):
                    digest.update(f"{os.path.relpath(path, root)}\t{label}\n".encode())
                out[f"{split}_files"] = f"{len(ds)}:{digest.hexdigest()[:16]}"
        except DataError:
            out["files"] = "not at hand"  # plan/splits without the data: ids of this machine only
        return out

    def load(self, split: str) -> Any:
        ds = self._dataset(split)
        if split == "train":
            self._check_size(ds)
        return ds

    def _check_size(self, ds: Any) -> None:
        """Warn once when ``resize`` upsamples the stored images a lot (8x8 to 256x256)."""
        if self._size_checked or self.params.resize is None:
            return
        self._size_checked = True
        step = max(1, len(ds) // 8)  # a few images spread over the classes
        try:
            sizes = [images.image_size(ds[i]["input"]) for i in range(0, len(ds), step)[:8]]
        except Exception:  # noqa: BLE001 - only advice: never fail a run for it
            return
        images.warn_if_upsampled("imagefolder", repr(str(self.root)), sizes, self.params.resize)

    def to_tensor(self, value: Any) -> torch.Tensor:
        return images.decode_image(value, self.params.resize)

    def input_shape(self) -> tuple[int, ...]:
        if self.params.resize is not None:
            return (3, self.params.resize, self.params.resize)
        if self._shape is None:
            first = self._dataset("train")[0]["input"]
            self._shape = tuple(images.decode_image(first, None).shape)
        return self._shape

    def normalization(self) -> tuple[Sequence[float], Sequence[float]]:
        return images.imagenet_normalization(self.params)

    def check(self) -> None:
        self._class_names()  # the tree must exist, whatever classes() could say without it
        classes = self.classes()
        train = self._split_dir("train")
        empty = [c.id for c in classes if not _has_image(train / c.id)]
        if empty:
            raise DataError(
                f"imagefolder: {len(empty)} class folders under {str(train)!r} hold no images "
                f"(e.g. {empty[:3]}); remove them or add images"
            )
        self._dataset("eval")  # small (50k for ImageNet); checks labels and class names
        self._check_size(self._dataset("train"))

    # ------------------------------------------------------------------ contract tests

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """A tiny ILSVRC-style tree: 3 wnids, train folders and a flat val + Kaggle CSV."""
        root = Path(workdir) / "ilsvrc"
        wnids = ("n01440764", "n02979186", "n07720875")  # natural, man-made, natural
        rng = np.random.default_rng(0)
        for k, wnid in enumerate(wnids):
            (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
            for j in range(3):
                path = root / "train" / wnid / f"{wnid}_{j}.JPEG"
                _write_jpeg(path, rng, (20 + 3 * j, 20 + k), gray=j == 1)
        (root / "val").mkdir(parents=True, exist_ok=True)
        rows = ["ImageId,PredictionString"]
        for j, wnid in enumerate(wnids * 2):
            stem = f"ILSVRC2012_val_{j + 1:08d}"
            _write_jpeg(root / "val" / f"{stem}.JPEG", rng, (24, 18 + j), gray=j % 2 == 1)
            rows.append(f"{stem},{wnid} 1 2 10 12")
        (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
        return {"root": str(root), "resize": 16}


def _write_jpeg(path: Path, rng: np.random.Generator, hw: tuple[int, int], gray: bool) -> None:
    from PIL import Image

    img = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    (img.convert("L") if gray else img).save(path, "JPEG")


def _subdirs(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``."""
    with os.scandir(folder) as it:
        return [e.name for e in it if e.is_dir() and not e.name.startswith(".")]


def _has_image(folder: Path) -> bool:
    # Stops at the first image, so checking 1,000 ImageNet folders reads little.
    with os.scandir(folder) as it:
        return any(e.is_file() and _is_image(e.name) for e in it)


def _folder_listing(folder: Path, index: dict[str, int]) -> tuple[list[str], list[int]]:
    """Paths and labels of ``folder/<class>/<image>``, sorted by class then file name."""
    paths: list[str] = []
    labels: list[int] = []
    unknown: list[str] = []
    for name in sorted(_subdirs(folder)):
        if name not in index:
            unknown.append(name)
            continue
        with os.scandir(folder / name) as it:
            files = sorted(e.path for e in it if e.is_file() and _is_image(e.name))
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    if unknown:
        warnings.warn(
            f"imagefolder: {len(unknown)} class folders in {str(folder)!r} are not training "
            f"classes and were left out (e.g. {unknown[:3]})",
            stacklevel=3,
        )
    return paths, labels


@hookimpl
def register_data_sources(register) -> None:
    register("imagefolder", ImageFolder)
