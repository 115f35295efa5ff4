"""External sources: weights files that transferred networks copy their layers from.

A treatment's source may be a file instead of a base network of the run
(``source: {checkpoint: weights.safetensors}``, the ``X`` of ``XnB``). This module reads such
files without running any code (safetensors; a ``.pth``/``.bin`` state dict only through
``torch.load(weights_only=True)``), identifies them by the SHA-256 of their bytes (never by
their path: a moved file keeps its job ids, a changed one makes new jobs), and maps their
tensors onto an architecture's layers by name, saying exactly which tensors are missing,
unexpected or of the wrong shape. The classifier (layer L) is never copied, so a head for
another number of classes is expected to differ and is only mentioned.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import CheckpointSource, Experiment
from .files import sha256_file
from .interfaces import Architecture, Layer, TransferProtocol
from .jobs import ExternalSource, SourceFile
from .network import build_meta, under
from .reading import ProtocolReading

__all__ = [
    "SourceFileError",
    "SourceMapping",
    "SourcePlanner",
    "load_state",
    "map_source",
    "read_source",
]

#: Suffixes read as safetensors; the others named here go through torch.load(weights_only=True).
SAFETENSORS = (".safetensors",)
TORCH_FILES = (".pth", ".pt", ".bin", ".ckpt")

#: Where a training script's checkpoint usually keeps the network's own state dict.
_NESTED = ("state_dict", "model_state_dict", "model", "module", "net", "network")

#: How many names a message lists before "and N more".
_SHOW = 6


class SourceFileError(ValueError):
    """A weights file is missing, unreadable, not weights, or changed since it was planned."""


# --------------------------------------------------------------------------- reading

_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """The file's SHA-256, hashed once per process while its size and time stamp hold."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _resolve(path: str | Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    if not p.exists():
        raise SourceFileError(f"no such file: {p}" + ("" if p.is_absolute() else f" (relative to {Path.cwd()})"))
    if not p.is_file():
        raise SourceFileError(f"{p} is not a file")
    return p.absolute()


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() in SAFETENSORS


def _tensors_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in what ``torch.load`` returned: the object itself, or the usual nested entry."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for key in _NESTED:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return {str(k): v for k, v in inner.items()}
        shown = ", ".join(str(k) for k in list(obj)[:_SHOW])
        raise SourceFileError(f"{path} holds no state dict of tensors (its top-level keys: {shown}); save "
                              "model.state_dict() itself, e.g. with safetensors.torch.save_file")
    raise SourceFileError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of tensor names "
                          "to tensors); save model.state_dict(), not the model")


def _parse(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a file's bytes: no code runs (safetensors, or torch's weights-only unpickler)."""
    if _is_safetensors(path):
        from safetensors.torch import load

        try:
            return load(data)
        except Exception as exc:  # noqa: BLE001 - any failure means not a safetensors file
            raise SourceFileError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if path.suffix.lower() not in TORCH_FILES:
        raise SourceFileError(f"{path}: unknown kind of weights file; use .safetensors, or a state dict saved "
                              f"by torch.save as one of {', '.join(TORCH_FILES)}")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SourceFileError(
            f"{path} holds Python objects besides tensors, and transferbench loads weights only (never "
            f"code: torch.load(weights_only=True) refused it: {str(exc).splitlines()[0]}); save "
            "model.state_dict() with safetensors.torch.save_file instead") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise SourceFileError(f"{path} is not a readable torch file ({type(exc).__name__}: {exc})") from None
    return _tensors_of(obj, path)


def _strip(tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if not prefix:
        return dict(tensors)
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape; for safetensors read from the header alone."""
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - any failure means not a safetensors file
            raise SourceFileError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return {k: tuple(v.shape) for k, v in _parse(path.read_bytes(), path).items()}


def read_source(path: str | Path, strip_prefix: str = "") -> SourceFile:
    """Read a weights file's tensor names and shapes and hash its bytes (nothing is downloaded).

    Raises:
        SourceFileError: the file is missing, unreadable or holds no tensors.
    """
    p = _resolve(path)
    shapes = _strip(_shapes(p), strip_prefix)
    if not shapes:
        raise SourceFileError(f"{p} holds no tensors")
    return SourceFile(str(p), _sha256(p), shapes, strip_prefix)


_LOADED: OrderedDict[tuple[str, str, int, int], dict[str, torch.Tensor]] = OrderedDict()


def load_state(source: SourceFile) -> dict[str, torch.Tensor]:
    """The file's tensors (names after ``strip_prefix``), verified against the planned SHA-256.

    The bytes are read once, hashed and parsed from memory, so the weights used are exactly
    the ones hashed. The last two files loaded stay in memory for the next jobs.

    Raises:
        SourceFileError: the file is gone or its content changed since the plan.
    """
    path = Path(source.path)
    try:
        st = path.stat()
        key = (source.sha256, str(path), st.st_size, st.st_mtime_ns)  # a file touched since is read again
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFileError(f"cannot read the source weights {path} ({exc.strerror or exc}): put the file "
                              "back and rerun the command") from None
    import hashlib

    now = hashlib.sha256(data).hexdigest()
    if now != source.sha256:
        raise SourceFileError(
            f"the source weights {path} changed since the run was planned (SHA-256 {source.sha256[:12]}... then, "
            f"{now[:12]}... now): to finish this run, put back the file it was planned with and rerun the "
            "command; to measure the new file, run the command into another --out")
    state = _strip(_parse(data, path), source.strip_prefix)
    _LOADED[key] = state
    while len(_LOADED) > 2:
        _LOADED.popitem(last=False)
    return state


# --------------------------------------------------------------------------- mapping


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


@dataclass(frozen=True)
class SourceMapping:
    """How a weights file's tensors map onto an architecture's layers.

    Attributes:
        missing: (tensor, layer) the copied layers need and the file lacks.
        mismatched: (tensor, layer, file shape, architecture shape) of copied layers.
        unexpected: tensors of the file the architecture does not have at all.
        head: tensors of the classifier (layer L) in the file: never copied (unless the
            protocol evaluates the source as it is), so a different shape is expected.
        head_layer: the classifier's name.
        copied: how many tensors the copied layers take from the file.
        hint: a likely fix (a prefix to strip), when the names are off by one.
    """

    missing: list[tuple[str, str]]
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]
    unexpected: list[str]
    head: list[str]
    head_layer: str
    copied: int
    hint: str = ""

    @property
    def ok(self) -> bool:
        """Whether every tensor the copied layers need is in the file with the right shape."""
        return not self.missing and not self.mismatched

    def problem(self) -> str:
        """The mismatch in words (empty when :attr:`ok`)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} tensors the copied layers need are missing from the file: "
                         + _names([f"{k} ({layer})" for k, layer in self.missing]))
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} have the wrong shape: " + _names(
                [f"{k} ({layer}): file {list(a)} vs architecture {list(b)}" for k, layer, a, b in self.mismatched]))
        if self.unexpected and parts:
            parts.append(f"{len(self.unexpected)} tensors of the file are not in the architecture: "
                         + _names(self.unexpected))
        if self.hint:
            parts.append(self.hint)
        return "; ".join(parts)

    def notes(self) -> list[str]:
        """What is fine but worth saying: the head left out, tensors the architecture lacks."""
        out = []
        if self.head:
            out.append(f"the file's classifier ({self.head_layer}: {_names(self.head)}) is not copied; "
                       "the transferred networks train a new one")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} tensors of the file are not in the architecture and are "
                       f"ignored: {_names(self.unexpected)}")
        return out


def _prefix_hint(file_keys: Sequence[str], model_keys: Sequence[str]) -> str:
    """'set strip_prefix' when the file's names are the architecture's with a prefix in front."""
    model = set(model_keys)
    counts: dict[str, int] = {}
    for key in file_keys:
        parts = key.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in model:
                prefix = ".".join(parts[:i]) + "."
                counts[prefix] = counts.get(prefix, 0) + 1
                break
    if not counts:
        return ""
    prefix, hits = max(counts.items(), key=lambda kv: kv[1])
    if hits < max(1, len(model) // 2):
        return ""
    return f"the file's names carry the prefix {prefix!r}: set strip_prefix: {prefix!r} beside checkpoint"


def map_source(source: SourceFile, model_shapes: Mapping[str, tuple[int, ...]], layers: Sequence[Layer],
               copied: Sequence[bool]) -> SourceMapping:
    """Map the file's tensors onto the architecture's state-dict entries, by name.

    Args:
        source: the file.
        model_shapes: the architecture's state-dict entries and their shapes (a meta build).
        layers: its layers 1..L.
        copied: for each layer, whether some job copies it from the file.
    """
    file_shapes = source.shapes
    missing: list[tuple[str, str]] = []
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = []
    count = 0
    for layer, copy in zip(layers, copied):
        if not copy:
            continue
        for key in (k for k in model_shapes if under(k, layer.modules)):
            if key not in file_shapes:
                missing.append((key, layer.name))
            elif tuple(file_shapes[key]) != tuple(model_shapes[key]):
                mismatched.append((key, layer.name, tuple(file_shapes[key]), tuple(model_shapes[key])))
            else:
                count += 1
    head = layers[-1]
    head_keys = [k for k in file_shapes if under(k, head.modules)] if not copied[-1] else []
    unexpected = [k for k in file_shapes if k not in model_shapes]
    hint = _prefix_hint(unexpected, list(model_shapes)) if missing else ""
    return SourceMapping(missing, mismatched, unexpected, head_keys, head.name, count, hint)


# --------------------------------------------------------------------------- planning


class SourcePlanner:
    """Reads the weights files a config names and checks them against the architecture, for
    :func:`transferbench.plan.build_plan`: every problem at its config key, before anything
    trains, and notes for what is fine but worth saying (the head left out)."""

    def __init__(self, arch: Architecture, shape: Sequence[int], num_layers: int,
                 class_ids: Sequence[str] = ()) -> None:
        self.arch, self.shape, self.num_layers = arch, tuple(shape), num_layers
        self.class_ids = list(class_ids)
        self.problems: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self._files: dict[tuple[str, str], SourceFile | None] = {}
        self._models: dict[int, tuple[dict[str, tuple[int, ...]], list[Layer]]] = {}

    def _read(self, path: str, prefix: str, key: str) -> SourceFile | None:
        if (path, prefix) not in self._files:
            try:
                self._files[(path, prefix)] = read_source(path, prefix)
            except SourceFileError as exc:
                self._files[(path, prefix)] = None
                self.problems.append((key, str(exc)))
        return self._files[(path, prefix)]

    def externals(self, i: int, exp: Experiment, protocols: Mapping[tuple[str, str], TransferProtocol],
                  layers: Sequence[int], read: Callable[[TransferProtocol, int], ProtocolReading]
                  ) -> dict[str, ExternalSource]:
        """Treatment name -> its weights file, for the treatments of experiment ``i`` that copy
        from one (``read``: the plan's reading of a protocol at n)."""
        out: dict[str, ExternalSource] = {}
        for j, t in enumerate(exp.treatments):
            proto = protocols.get((exp.name, t.name))
            if not t.external or proto is None or not proto.needs_source:
                continue
            ref: CheckpointSource | None
            if isinstance(t.source, CheckpointSource):
                ref, key = t.source, f"experiments.{i}.treatments.{j}.source"
            elif t.source_name is not None:  # one of several named files (sources:)
                k = [s.name for s in exp.sources].index(t.source_name)
                ref, key = exp.sources[k], f"experiments.{i}.sources.{k}"
            else:
                ref, key = exp.source, f"experiments.{i}.source"
            assert ref is not None  # the config refuses X without the experiment's source
            file = self._read(ref.checkpoint, ref.strip_prefix, f"{key}.checkpoint")
            init = None
            if any(read(proto, n).resets for n in layers):
                if ref.init is None:
                    self.problems.append((f"{key}.init", f"protocol {t.protocol.name!r} resets layers to the "
                                          "network's initial weights: give them as init: <file> beside "
                                          "checkpoint (`transferbench export --init` writes it), or use reset: random"))
                    continue
                init = self._read(ref.init, ref.strip_prefix, f"{key}.init")
                if init is None:
                    continue
            if file is not None:
                out[t.name] = ExternalSource(file, init, key)
        self._distinct_sources(i, exp)
        return out

    def _distinct_sources(self, i: int, exp: Experiment) -> None:
        """Two named sources with the same bytes would be one network under two names (their
        jobs, ids and results would be one): refused."""
        seen: dict[str, str] = {}
        for k, ref in enumerate(exp.sources):
            file = self._files.get((ref.checkpoint, ref.strip_prefix))
            if file is None:
                continue
            if file.sha256 in seen:
                self.problems.append((f"experiments.{i}.sources.{k}.checkpoint",
                                      f"source {ref.name!r} has the same content (SHA-256 {file.sha256[:12]}...) as "
                                      f"source {seen[file.sha256]!r}: two names for one network; remove one"))
            else:
                seen[file.sha256] = ref.name

    def _model(self, num_classes: int) -> tuple[dict[str, tuple[int, ...]], list[Layer]]:
        if num_classes not in self._models:
            model = build_meta(self.arch, num_classes, self.shape)
            shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            self._models[num_classes] = (shapes, list(self.arch.layers(model)))
        return self._models[num_classes]

    def check_jobs(self, jobs: Any) -> None:
        """Map each file onto the layers its jobs copy (from the file, or from its init file)."""
        wanted: dict[tuple[str, int, str], tuple[SourceFile, list[bool]]] = {}
        for job in jobs:
            ext: ExternalSource | None = getattr(job, "external", None)
            if ext is None or job.protocol is None:
                continue
            reading = job.read_protocol(self.num_layers)
            for which, file, flags in (("checkpoint", ext.file, reading.reads_source),
                                       ("init", ext.init, reading.reset)):
                if file is None or not any(flags):
                    continue
                entry = wanted.setdefault((ext.key, job.num_classes, which), (file, [False] * len(flags)))
                entry[1][:] = [x or y for x, y in zip(entry[1], flags)]
            if reading.copied[-1] or reading.reset[-1]:
                self._same_classes(ext, job.classes)
        for (key, num_classes, which), (file, copied) in wanted.items():
            shapes, layers = self._model(num_classes)
            mapping = map_source(file, shapes, layers, copied)
            where = f"{key}.{which}"
            if not mapping.ok:
                self.problems.append((where, f"{Path(file.path).name} does not fit the layers copied from it: "
                                      + mapping.problem()))
            for note in mapping.notes() if which == "checkpoint" else []:
                self._note(f"{where} ({Path(file.path).name}): {note}")

    def _note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def _same_classes(self, ext: ExternalSource, classes: Sequence[int]) -> None:
        """A protocol that keeps the file's classifier needs the file's classes: checked against
        the JSON ``transferbench export`` writes beside it, when there is one."""
        sidecar = Path(ext.file.path).with_suffix(".json")
        where = f"{ext.key}.checkpoint"
        try:
            import json

            ids = [c["id"] for c in json.loads(sidecar.read_text())["classes"]]
        except (OSError, ValueError, KeyError, TypeError):
            self._note(f"{where}: the classifier is kept as it is, so the file must have been trained on "
                       "the target's classes in label order (no JSON beside it says which)")
            return
        mine = [self.class_ids[i] for i in classes] if self.class_ids else []
        if ids and mine and ids != mine and not any(p[0] == where for p in self.problems):
            self.problems.append((where, f"the classifier is kept as it is, but {sidecar.name} says the file was "
                                  f"trained on other classes ({_names(ids)}) than the target's ({_names(mine)})"))
