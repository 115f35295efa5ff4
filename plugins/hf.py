"""Any Hugging Face image-classification dataset, from the Hub or from a local copy.

``path`` is one of:

* a folder written by ``DatasetDict.save_to_disk`` (it holds ``dataset_dict.json``);
* a folder of data files (parquet, arrow, ...) whose names or sub-folders name the splits
  (``train-00000-of-00004.parquet``, ``validation/...``), read with ``load_dataset(path)``;
* a Hub id such as ``ILSVRC/imagenet-1k`` (gated: accept its terms and set ``HF_TOKEN``).
  Offline, set ``HF_HUB_OFFLINE=1`` to use a copy already in the Hugging Face cache.

Class names come from the label column's ``ClassLabel`` feature (a string label column is
also accepted: its sorted distinct values become the classes). With ``imagenet: auto`` the
ImageNet-1k metadata labels the classes when their names are ImageNet wnids, or when there
are 1,000 of them named like ImageNet's in sorted-wnid order (as ``ILSVRC/imagenet-1k``), so
ids, names and man-made / natural groups match timm's class order.

``load(split)`` keeps the image and label columns only, renamed to ``input`` and ``label``;
images stay encoded (``{"bytes", "path"}``) until :meth:`HFImages.to_tensor` decodes them in
a loader worker. Rows with a negative label (unlabelled test images) are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from transferbench import ClassInfo, DataError, DataSource, hookimpl, imagenet, images

__all__ = ["HFImages", "HFImagesParams"]

# owner/name or a bare legacy name; a path that exists locally is never read as a Hub id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

#: Share of class names that must match ImageNet's, position by position, for a 1,000-class
#: dataset to be read as ImageNet in sorted-wnid order (tolerates small spelling changes).
_IMAGENET_NAME_MATCH = 0.9

Kind = Literal["disk", "files", "hub"]


class HFImagesParams(images.ImageSourceParams):
    path: str = Field(description="Hub id, save_to_disk folder, or folder of data files")
    # Not `name`: that key of the config's `data:` mapping names the plugin itself.
    config_name: str | None = Field(
        None, description="the dataset's configuration (load_dataset's second argument), e.g. 'plain_text'"
    )
    train_split: str = Field("train", description="the dataset's split used for training")
    eval_split: str = Field("validation", description="the dataset's split used for evaluation")
    ood_split: str | None = Field(
        None, description="a split of the same dataset holding the same classes drawn differently (e.g. CIFAR-10.1 "
        "saved beside CIFAR-10's train and test): the out-of-distribution evaluation split, every trained network "
        "also evaluated on it (its record's ood_top1); it changes no training, so it enters no job id")
    image_column: str = Field("image", description="column holding the images")
    label_column: str = Field("label", description="column holding the class labels (a ClassLabel or strings)")
    superclass_column: str | None = Field(
        None, description="column giving each example's superclass (e.g. coarse_label)"
    )
    streaming: bool = Field(False, description="stream instead of downloading / converting")
    cache_dir: str | None = Field(None, description="datasets' cache folder")

    @model_validator(mode="after")
    def _consistent(self) -> HFImagesParams:
        if self.superclass_column is not None and self.streaming:
            raise ValueError(
                "superclass_column reads the whole training split's labels, which streaming "
                "cannot do up front; set streaming: false"
            )
        cols = [self.image_column, self.label_column, self.superclass_column]
        if len({c for c in cols if c is not None}) != sum(c is not None for c in cols):
            raise ValueError("image_column, label_column and superclass_column must differ")
        return self


class HFImages(DataSource[HFImagesParams]):
    """A Hugging Face image-classification dataset (Hub id or local copy)."""

    description = "a Hugging Face image dataset: Hub id, save_to_disk folder or parquet files"
    Params = HFImagesParams

    def __init__(self, params: HFImagesParams | None = None) -> None:
        super().__init__(params)
        self.params: HFImagesParams
        self._classes: list[ClassInfo] | None = None
        self._names: list[str] | None = None  # label names in label order
        self._shape: tuple[int, ...] | None = None
        self._hub_checked = False
        self._disk: Any = None  # the DatasetDict of a save_to_disk folder, memory-mapped
        self._size_checked = False  # whether the stored image size was compared with resize

    def __getstate__(self) -> dict[str, Any]:
        # Loader workers call to_tensor only; they need the params, not open datasets.
        state = self.__dict__.copy()
        state["_disk"] = None
        return state

    # ------------------------------------------------------------------ where the data is

    def _kind(self) -> Kind:
        path = Path(self.params.path).expanduser()
        if path.exists():
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                return "disk"
            return "files"
        if _HUB_ID.match(self.params.path):
            return "hub"
        raise DataError(
            f"hf: {self.params.path!r} is neither an existing path nor a Hub dataset id. "
            "Set the data source's 'path' to a save_to_disk folder, a folder of parquet files "
            "(train-*.parquet, validation-*.parquet), or a Hub id like ILSVRC/imagenet-1k "
            "(with HF_TOKEN set for gated datasets)."
        )

    def _location(self) -> str:
        """``path`` as datasets should get it: a Hub id, or a local path with ``~`` expanded."""
        if self._kind() == "hub":
            return self.params.path
        return str(Path(self.params.path).expanduser())

    def _hf_split(self, split: str) -> str:
        if split == "ood" and self.params.ood_split is not None:
            return self.params.ood_split
        if split not in ("train", "eval"):
            raise ValueError(f"unknown split {split!r}")
        return self.params.train_split if split == "train" else self.params.eval_split

    def has_ood(self) -> bool:
        return self.params.ood_split is not None

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn the many ways datasets / the Hub fail into a DataError that says what to do."""
        try:
            yield
        except DataError:
            raise
        except Exception as exc:
            raise DataError(self._advice(exc)) from exc

    def _advice(self, exc: BaseException) -> str:
        head = f"hf: cannot read {self.params.path!r}: {type(exc).__name__}: {exc}"
        if self._kind() != "hub":
            return head
        return (
            f"{head}\nFor a Hub dataset: check the id, accept its terms on the Hub if it is "
            "gated and set HF_TOKEN; offline, set HF_HUB_OFFLINE=1 to use a cached copy, or "
            "point 'path' at a local copy (a save_to_disk folder or a folder of parquet files)."
        )

    def _probe_hub(self) -> None:
        """Fail in a second, not after minutes of retries, when the Hub is out of reach."""
        import datasets
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        if self._hub_checked or datasets.config.HF_HUB_OFFLINE:
            return
        repo = self.params.path
        try:
            HfApi().dataset_info(repo, timeout=10)
        except GatedRepoError:
            pass  # the loader reports it with the token advice if no token grants access
        except RepositoryNotFoundError as exc:
            raise DataError(
                f"hf: no dataset {repo!r} on the Hugging Face Hub (or it is private: set "
                "HF_TOKEN). For a local copy, set 'path' to an existing folder."
            ) from exc
        except Exception as exc:
            raise DataError(
                f"hf: {repo!r} is not a local folder and the Hugging Face Hub is out of reach "
                f"({type(exc).__name__}: {exc}). Point 'path' at a local copy (a save_to_disk "
                "folder or a folder of parquet files), or set HF_HUB_OFFLINE=1 if the dataset "
                "is already in your Hugging Face cache."
            ) from exc
        self._hub_checked = True

    def _raw_split(self, split: str, streaming: bool | None = None) -> Any:
        """One split as stored: all columns, images still decoding to PIL."""
        import datasets

        streaming = self.params.streaming if streaming is None else streaming
        name = self._hf_split(split)
        kind = self._kind()
        if kind == "hub":
            self._probe_hub()
        with self._reading():
            if kind == "disk":
                if self._disk is None:
                    self._disk = datasets.load_from_disk(self._location())
                if not isinstance(self._disk, datasets.DatasetDict):
                    raise DataError(
                        f"hf: {self.params.path!r} holds one Dataset without splits; save a "
                        "DatasetDict({'train': ..., 'validation': ...}) instead"
                    )
                if name not in self._disk:
                    raise DataError(
                        f"hf: no split {name!r} in {self.params.path!r}; it has "
                        f"{sorted(self._disk)} (set train_split / eval_split / ood_split)"
                    )
                ds = self._disk[name]
                return ds.to_iterable_dataset() if streaming else ds
            return datasets.load_dataset(
                self._location(),
                self.params.config_name,
                split=name,
                streaming=streaming,
                cache_dir=self.params.cache_dir,
            )

    def _features(self) -> Any:
        """The training split's features, without downloading its data where possible."""
        import datasets

        if self._kind() == "disk":
            return self._raw_split("train").features
        if self._kind() == "hub":
            self._probe_hub()
        with self._reading():
            builder = datasets.load_dataset_builder(
                self._location(), self.params.config_name,
                cache_dir=self.params.cache_dir,
            )
        if builder.info.features is not None:
            return builder.info.features
        # Packaged builders (parquet, ...) learn their features from the first data file,
        # which a streaming dataset reads without preparing the whole split.
        features = self._raw_split("train", streaming=True).features
        if features is None:
            raise DataError(f"hf: cannot tell the columns of {self.params.path!r}")
        return features

    # ------------------------------------------------------------------ classes

    def classes(self) -> list[ClassInfo]:
        if self._classes is None:
            names = self._class_names()
            classes = self._imagenet_classes(names)
            if classes is None:
                classes = [ClassInfo(index=i, id=n, name=n) for i, n in enumerate(names)]
            if self.params.superclass_column is not None:
                supers = self._superclasses(len(names))
                classes = [
                    ClassInfo(c.index, c.id, c.name, supers.get(c.index)) for c in classes
                ]
            self._classes = classes
        return self._classes

    def _class_names(self) -> list[str]:
        if self._names is None:
            self._names = self._read_class_names()
        return self._names

    def _read_class_names(self) -> list[str]:
        import datasets

        features = self._features()
        col = self.params.label_column
        _require_columns(features, [self.params.image_column, col], self.params.path)
        feature = features[col]
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            if self.params.streaming:
                raise DataError(
                    f"hf: the label column {col!r} holds strings, not a ClassLabel; its classes "
                    "can only be listed without streaming (set streaming: false)"
                )
            with self._reading():
                return sorted(self._raw_split("train").unique(col))
        raise DataError(
            f"hf: the label column {col!r} of {self.params.path!r} is {feature}, not a "
            "ClassLabel, so it names no classes; cast it first, e.g. "
            "ds.cast_column(col, ClassLabel(names=[...]))"
        )

    def _imagenet_classes(self, names: list[str]) -> list[ClassInfo] | None:
        """ImageNet-labelled classes, or None when this is not (taken as) ImageNet."""
        mode = self.params.imagenet
        if mode is False:
            return None
        known = imagenet.wnid_to_index()
        if names and all(n in known for n in names):
            return imagenet.classes_for_wnids(names)
        if len(names) == imagenet.NUM_IMAGENET_CLASSES and (mode is True or _named_like_imagenet(names)):
            return list(imagenet.imagenet_classes())
        if mode is True:
            raise DataError(
                f"hf: imagenet: true, but the {len(names)} class names of {self.params.path!r} "
                "are neither ImageNet wnids nor the 1,000 ImageNet classes; set imagenet: auto"
            )
        return None

    def _superclasses(self, num_classes: int) -> dict[int, str]:
        """The superclass of each class index, read from the training split's columns."""
        import datasets

        col = self.params.superclass_column
        label_col = self.params.label_column
        ds = self._raw_split("train")
        _require_columns(ds.features, [col], self.params.path)
        feature = ds.features[col]
        with self._reading():
            table = ds.select_columns([label_col, col]).with_format("numpy")[:]
        if isinstance(ds.features[label_col], datasets.ClassLabel):
            labels = table[label_col].tolist()
        else:
            index = {n: i for i, n in enumerate(self._class_names())}
            labels = [index[v] for v in table[label_col].tolist()]
        named = isinstance(feature, datasets.ClassLabel)
        found: dict[int, set[str]] = {}
        for label, sup in zip(labels, table[col].tolist()):
            if label >= 0:
                found.setdefault(label, set()).add(feature.int2str(sup) if named else str(sup))
        clashes = {k: v for k, v in found.items() if len(v) > 1}
        if clashes:
            k, v = next(iter(clashes.items()))
            raise DataError(
                f"hf: {len(clashes)} classes have more than one value in {col!r}, "
                f"e.g. class {k} has {sorted(v)}"
            )
        return {k: next(iter(v)) for k, v in found.items() if k < num_classes}

    # ------------------------------------------------------------------ DataSource API

    location_params = ("path", "cache_dir")

    def identity(self) -> dict[str, Any]:
        """The params that shape the inputs, plus the data by content: a Hub id as it is,
        a save_to_disk copy by the datasets fingerprints of its splits, a folder of data
        files by their names and sizes; never a local path."""
        out = super().identity()
        out.pop("ood_split", None)  # one more evaluation of the same networks: no job id changes
        try:
            kind = self._kind()
            if kind == "hub":
                out["path"] = self.params.path
            elif kind == "disk":
                out["content"] = {s: self._raw_split(s, streaming=False)._fingerprint for s in ("train", "eval")}
            else:
                root = Path(self.params.path).expanduser()
                out["content"] = sorted((str(p.relative_to(root)), p.stat().st_size)
                                        for p in root.rglob("*") if p.is_file())
        except DataError:
            out["content"] = "not at hand"
        return out

    def load(self, split: str) -> Any:
        import datasets

        p = self.params
        ds = self._raw_split(split)
        features = ds.features
        if features is not None:
            _require_columns(features, [p.image_column, p.label_column], p.path)
        with self._reading():
            ds = ds.select_columns([p.image_column, p.label_column])
            if features is not None and isinstance(features[p.image_column], datasets.Image):
                # Keep images encoded; to_tensor decodes them in the loader workers.
                ds = ds.cast_column(p.image_column, datasets.Image(decode=False))
            if features is not None and not isinstance(
                features[p.label_column], datasets.ClassLabel
            ):
                # String labels: classes() lists their sorted distinct values, so casting to a
                # ClassLabel of those names gives each row its class index.
                names = self._class_names()
                ds = ds.cast_column(p.label_column, datasets.ClassLabel(names=names))
            renames = {p.image_column: "input", p.label_column: "label"}
            ds = ds.rename_columns({k: v for k, v in renames.items() if k != v})
            if _may_hold_negative_labels(ds):
                ds = ds.filter(lambda y: y >= 0, input_columns="label")
        if split == "train" and isinstance(ds, datasets.Dataset):
            self._check_size(ds)  # cheap here: the first rows of a memory-mapped table
        return ds

    def _check_size(self, rows: Any) -> None:
        """Warn once when ``resize`` upsamples the stored images a lot (8x8 to 256x256)."""
        if self._size_checked or self.params.resize is None:
            return
        self._size_checked = True
        try:
            sample = [r for _, r in zip(range(8), iter(rows))]
            column = "input" if sample and "input" in sample[0] else self.params.image_column
            sizes = [images.image_size(r[column]) for r in sample]
        except Exception:  # noqa: BLE001 - only advice: never fail a run for it
            return
        images.warn_if_upsampled("hf", repr(self.params.path), sizes, self.params.resize)

    def to_tensor(self, value: Any) -> torch.Tensor:
        return images.decode_image(value, self.params.resize)

    def input_shape(self) -> tuple[int, ...]:
        if self.params.resize is not None:
            return (3, self.params.resize, self.params.resize)
        if self._shape is None:
            first = next(iter(self.load("train")))
            self._shape = tuple(images.decode_image(first["input"], None).shape)
        return self._shape

    def normalization(self) -> tuple[Sequence[float], Sequence[float]]:
        return images.imagenet_normalization(self.params)

    def check(self) -> None:
        if not self.classes():
            raise DataError(f"hf: {self.params.path!r} has no classes")
        for split in ("train", "eval", *(("ood",) if self.has_ood() else ())):
            raw = self._raw_split(split, streaming=self._kind() != "disk")
            features = raw.features
            if features is not None:
                _require_columns(
                    features, [self.params.image_column, self.params.label_column], self.params.path
                )
            if split == "train" and not (self._kind() == "hub" and _offline()):
                self._check_size(raw)  # streaming: reads the first rows only

    # ------------------------------------------------------------------ contract tests

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """A tiny save_to_disk DatasetDict with custom column names and a superclass."""
        import datasets
        import numpy as np

        rng = np.random.default_rng(0)
        features = datasets.Features(
            {
                "img": datasets.Image(),
                "fine": datasets.ClassLabel(names=["apple", "oak", "bus", "train"]),
                "coarse": datasets.ClassLabel(names=["natural", "vehicle"]),
            }
        )

        def split(n: int) -> datasets.Dataset:
            fine = [i % 4 for i in range(n)]
            images = [rng.integers(0, 256, (12 + i % 3, 10, 3), dtype=np.uint8) for i in range(n)]
            return datasets.Dataset.from_dict(
                {"img": images, "fine": fine, "coarse": [f // 2 for f in fine]},
                features=features,
            )

        path = Path(workdir) / "hf_tiny"
        datasets.DatasetDict({"train": split(8), "validation": split(4)}).save_to_disk(str(path))
        return {
            "path": str(path),
            "image_column": "img",
            "label_column": "fine",
            "superclass_column": "coarse",
            "resize": 16,
        }


def _offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def _require_columns(features: Any, columns: list[str | None], path: str) -> None:
    missing = [c for c in columns if c is not None and c not in features]
    if missing:
        raise DataError(
            f"hf: {path!r} has no column {missing[0]!r}; its columns are {sorted(features)} "
            "(set image_column / label_column / superclass_column)"
        )


def _named_like_imagenet(names: Sequence[str]) -> bool:
    """Whether 1,000 names match ImageNet's class names in sorted-wnid order."""

    def key(s: str) -> str:
        return s.split(",")[0].strip().lower()

    ref = imagenet.imagenet_classes()
    hits = sum(key(a) == key(b.name) for a, b in zip(names, ref))
    return hits >= _IMAGENET_NAME_MATCH * imagenet.NUM_IMAGENET_CLASSES


def _may_hold_negative_labels(ds: Any) -> bool:
    """True unless a (non-streaming) dataset's label column is known to be non-negative."""
    import datasets
    import pyarrow.compute as pc

    if not isinstance(ds, datasets.Dataset):
        return True  # streaming: the filter is lazy and costs little
    if len(ds) == 0:
        return False
    low = pc.min(ds.data.column("label")).as_py()
    return low is not None and low < 0


@hookimpl
def register_data_sources(register) -> None:
    register("hf", HFImages)
