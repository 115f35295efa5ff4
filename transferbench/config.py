"""The experiment config: pydantic models loaded from YAML, with ``--set`` overrides.

A config names plugins as ``{name: ..., <the plugin's own keys>}`` (or just the name when
the defaults do). The models here check the structure; :func:`transferbench.resolve.resolve`
then checks each plugin's own keys against its ``Params`` model.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError
from .settings import unknown_key_message, valid_keys

Half = Literal["A", "B", "all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(items: list[Any], what: str) -> list[Any]:
    """Refuse two items with the same ``name`` (tables and records are keyed by it)."""
    names = [item.name for item in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
    return items


class PluginRef(BaseModel):
    """A plugin by name plus its own parameters (every other key)."""

    model_config = ConfigDict(extra="allow")

    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def params(self) -> dict[str, Any]:
        """The plugin's own keys (everything but ``name``)."""
        return dict(self.model_extra or {})

    def spec(self) -> dict[str, Any]:
        """Name and params as plain data (hashed into job ids)."""
        return {"name": self.name, **self.params}


class SplitRef(PluginRef):
    """A task split plugin plus the seeds to run it with."""

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)


class TransformRef(PluginRef):
    """A data transform plugin, the halves whose networks it applies to, and on which examples."""

    halves: list[Half] = Field(
        default_factory=lambda: list[Half](["B"]), min_length=1,
        description="the halves whose networks see transformed examples (the target half B, by default): "
        "their base networks and every network trained on them; networks of other halves are unchanged")
    examples: list[Literal["train", "eval"]] = Field(
        default_factory=lambda: list[Literal["train", "eval"]](["train", "eval"]), min_length=1,
        description="which examples are transformed: train, eval or both")


_TREATMENT = re.compile(r"^(?P<source>[ABX])n(?P<target>[AB])(?P<plus>\+?)$")


class CheckpointSource(_Strict):
    """A weights file the copied layers come from, instead of a base network of the run
    (docs/your-data.md). Its content, not its path, enters the job ids."""

    checkpoint: str = Field(
        description="a weights file: .safetensors (any architecture; timm's own files too), or a "
        ".pth/.bin state dict read with torch.load(weights_only=True); never downloaded")
    strip_prefix: str = Field(
        "", description="a prefix to remove from the file's tensor names (e.g. 'module.' of a "
        "DistributedDataParallel checkpoint) before they are matched to the architecture's")
    init: str | None = Field(
        None, description="the network's initial weights (written by `transferbench export --init`): "
        "needed by protocols that reset a layer to its initial weights (reinit, reinit_eval)")


#: A named source's name: not a half (A, B), not the single file (X), usable in file names.
_SOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")


class NamedSource(CheckpointSource):
    """One of several weights files of an experiment (``sources:``), named so that its
    treatments, estimates and results are kept apart from the others' (docs/estimators.md)."""

    name: str = Field(description="what treatments call it (source: NAME) and what tables key it by")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if value in ("A", "B", "X", "all") or not _SOURCE_NAME.match(value):
            raise ValueError(f"source name {value!r}: use a letter then letters, digits, - or _ (at most 40), "
                             "other than A, B, X and all (the halves and the single source file)")
        return value


class Treatment(_Strict):
    """One way of building a network from another: which half the copied layers come from,
    which half it is trained on, and with which protocol.

    In a config, the paper's names are shorthands: ``AnB`` = (source A, target B, protocol
    ``frozen``) and ``AnB+`` = the same with protocol ``finetune``; likewise BnB, AnA, BnA.
    """

    name: str
    source: Literal["A", "B", "X"] | CheckpointSource | str | None = Field(
        None, description="A or B (a base network of the run), X (the experiment's source: file), the name "
        "of one of the experiment's sources:, an inline {checkpoint: ...}, or none (random weights)")
    target: Half = "B"
    protocol: PluginRef = Field(default_factory=lambda: PluginRef(name="frozen"))
    replica: int = Field(
        0, ge=0, description="another copy of the same network: the same source, its own seed and data order "
        "(0: the network itself; 1, 2, ...: independent replicas, e.g. two fine-tuned networks of one source "
        "for an evaluator that compares them); a replica never joins a cohort")

    @property
    def half(self) -> str | None:
        """The half whose base network the copied layers come from (None: a file, or none)."""
        return self.source if self.source in ("A", "B") else None

    @property
    def external(self) -> bool:
        """Whether the copied layers come from a weights file (``X``, a named source, or ``{checkpoint: ...}``)."""
        return self.source is not None and self.source not in ("A", "B")

    @property
    def source_name(self) -> str | None:
        """The name of the named source (``sources:``) the layers come from, else None."""
        return self.source if isinstance(self.source, str) and self.source not in ("A", "B", "X") else None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            m = _TREATMENT.match(value)
            if not m:
                raise ValueError(
                    f"unknown treatment {value!r}: use the paper's names (AnB, AnB+, BnB, BnB+, "
                    "AnA, BnA, ...), XnB / XnB+ (from the experiment's `source:` file) or a mapping "
                    "with name, source, target and protocol"
                )
            protocol = "finetune" if m["plus"] else "frozen"
            return {"name": value, "source": m["source"], "target": m["target"], "protocol": protocol}
        return value


class EvaluatorRef(PluginRef):
    """An evaluator plugin, the name its results go by and the networks it reads."""

    label: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$",
                       description="the name its results go by (findings read `<label>.<quantity>`); unique in "
                       "the experiment")
    networks: list[str] = Field(
        min_length=1, description="the treatments it reads, by name (a base network as baseA / baseB), as many "
        "as the evaluator's arity; evaluated in every split seed and at every n of the experiment")


class Experiment(_Strict):
    """One split (with its seeds), the treatments to run on it and the layers n to test."""

    name: str
    split: SplitRef
    treatments: list[Treatment] = Field(default_factory=list)
    layers: list[int] | Literal["all"] = "all"
    bases: list[Half] | None = Field(
        None,
        description="base networks to train (default: every half a treatment trains on or copies from)",
    )
    estimators: list[PluginRef] = Field(
        default_factory=list,
        description="cheap estimators of transferability to run on layer n of the base networks "
        "(linear, knn, logme, cka; docs/estimators.md)",
    )

    transforms: list[TransformRef] = Field(
        default_factory=list,
        description="data transforms (block_shuffle, ...; `transferbench plugins`) applied, in order, to the "
        "examples of the networks trained on some halves (docs/configuration.md)")

    evaluators: list[EvaluatorRef] = Field(
        default_factory=list,
        description="measurements of the trained networks made after training (loss_barrier, ...; "
        "`transferbench plugins`): their checkpoints are kept whatever output.checkpoints says")

    source: CheckpointSource | None = Field(
        None, description="a weights file (X) that treatments with source X (XnB, XnB+) copy layers from "
        "(refused when no treatment does)")
    sources: list[NamedSource] = Field(
        default_factory=list,
        description="several named weights files; XnB / XnB+ then stand for one treatment per source "
        "(XnB@NAME), and a treatment may name one (source: NAME). Not with source:")

    @model_validator(mode="before")
    @classmethod
    def _one_treatment_per_source(cls, value: Any) -> Any:
        """With ``sources:``, the shorthand XnB (XnB+, XnA, ...) becomes one treatment per
        source, ``XnB@NAME``: each source gets its own cells."""
        if not isinstance(value, dict) or not isinstance(value.get("sources"), list) or value.get("source"):
            return value
        names = [s.get("name") for s in value["sources"] if isinstance(s, dict) and isinstance(s.get("name"), str)]
        treatments = value.get("treatments")
        if not names or len(set(names)) < len(names) or not isinstance(treatments, list):  # refused below
            return value
        out: list[Any] = []
        for t in treatments:
            m = _TREATMENT.match(t) if isinstance(t, str) else None
            if m and m["source"] == "X":
                protocol = "finetune" if m["plus"] else "frozen"
                out += [{"name": f"{t}@{name}", "source": name, "target": m["target"], "protocol": protocol}
                        for name in names]
            else:
                out.append(t)
        return {**value, "treatments": out}

    @field_validator("treatments")
    @classmethod
    def _unique_names(cls, value: list[Treatment]) -> list[Treatment]:
        return _unique(value, "treatment")

    @model_validator(mode="after")
    def _something_to_train(self) -> Experiment:
        if not self.treatments and not self.bases:
            raise ValueError("an experiment needs treatments (or, to train base networks only, "
                             "bases: [A], [B] or [all])")
        if self.source is not None and self.sources:
            raise ValueError("give either source: (one weights file, X) or sources: (several, named), not both")
        _unique(self.sources, "source")
        names = [s.name for s in self.sources]
        for j, t in enumerate(self.treatments):
            if t.source == "X" and self.source is None:
                raise ValueError(
                    f"treatment {t.name!r} (treatments.{j}) copies from X, the experiment's weights file: "
                    + (f"with sources:, name one of them instead (source: {names[0]}), or write XnB / XnB+ "
                       "for one treatment per source" if names else
                       "set the experiment's source: {checkpoint: path/to/weights.safetensors}"))
            if t.source_name is not None and t.source_name not in names:
                raise ValueError(
                    f"treatment {t.name!r} (treatments.{j}) copies from {t.source_name!r}, which is not one of "
                    f"the experiment's sources ({', '.join(names) or 'it has none'}): use A, B, X or the name "
                    "of an entry of sources:")
        unused = [n for n in names if not any(t.source_name == n for t in self.treatments)]
        if unused:
            raise ValueError(f"sources: {', '.join(unused)} not used: no treatment copies from "
                             f"{'it' if len(unused) == 1 else 'them'}. Add XnB / XnB+ (one treatment per source) "
                             "or a treatment with source: NAME, or remove the entry")
        if self.transforms and self.estimators:
            raise ValueError("estimators read the untransformed examples: an experiment with transforms cannot "
                             "have estimators yet (put them in an experiment of their own)")
        if self.source is not None and not any(t.source == "X" for t in self.treatments):
            # a file given but never read: the user meant to measure it, and would not be
            raise ValueError(
                "source: the weights file is not used: no treatment copies from X. Add XnB / XnB+ "
                "(or a treatment with source: X) to the treatments, or remove source:")
        return self

    @field_validator("evaluators")
    @classmethod
    def _unique_labels(cls, value: list[EvaluatorRef]) -> list[EvaluatorRef]:
        labels = [e.label for e in value]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"evaluator labels must be unique; repeated: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _evaluated_networks_exist(self) -> Experiment:
        known = {t.name for t in self.treatments} | {f"base{h}" for h in ("A", "B", "all")}
        for j, ref in enumerate(self.evaluators):
            unknown = [n for n in ref.networks if n not in known]
            if unknown:
                raise ValueError(f"evaluators.{j} ({ref.label}) reads {', '.join(unknown)}: not a treatment of this "
                                 f"experiment (treatments: {', '.join(sorted(t.name for t in self.treatments))}; "
                                 "base networks: baseA, baseB)")
        return self

    @field_validator("estimators")
    @classmethod
    def _unique_estimators(cls, value: list[PluginRef]) -> list[PluginRef]:
        return _unique(value, "estimator")


class Schedule(_Strict):
    """Learning-rate schedule. ``step`` multiplies by ``gamma`` every ``step_every`` units of
    the training length (epochs when ``train.epochs`` is set, steps when ``train.steps`` is)."""

    kind: Literal["constant", "step", "cosine"] = "constant"
    step_every: float | None = Field(None, gt=0)
    gamma: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _needs_step(self) -> Schedule:
        if self.kind == "step" and self.step_every is None:
            raise ValueError("schedule kind 'step' needs step_every")
        return self


class Augment(_Strict):
    """Batch augmentation done by the engine (on the device): the paper's random crops and
    mirroring. ``crop`` is the output size: a random crop for training, the centre crop for
    evaluation. ``pad`` pads each side before a random crop (the usual small-image recipe)."""

    crop: int | None = Field(None, gt=0)
    pad: int = Field(0, ge=0)
    mirror: bool = False

    @property
    def active(self) -> bool:
        """Whether training inputs are random (so frozen features can't be cached)."""
        return self.mirror or self.pad > 0 or self.crop is not None


class Train(_Strict):
    """Training hyper-parameters (the same solver trains base and transferred networks)."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(256, gt=0)
    epochs: float | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    schedule: Schedule = Field(default_factory=Schedule)
    augment: Augment = Field(default_factory=Augment)
    label_smoothing: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _one_length(self) -> Train:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("set exactly one of train.epochs and train.steps")
        return self


class Eval(_Strict):
    """Evaluation on the held-out split of the target classes."""

    every: float | None = Field(
        None,
        gt=0,
        description="evaluate every this many epochs or steps (the unit of the training length); "
        "default: once an epoch (train.epochs) or 20 times a run (train.steps)",
    )
    best_k: int = Field(10, gt=0, description="the paper's metric: mean of the k best evaluations")
    batch_size: int | None = Field(None, gt=0)


class Performance(_Strict):
    """Speed switches. ``amp`` and ``channels_last`` change the floating-point operations (so
    the numbers, slightly), so they enter job ids, and so does ``batched`` (when not off) for
    the members of cohorts; ``deterministic`` picks reproducible kernels and enters no id (like
    the thread count: docs/performance.md); the others give the same numbers."""

    cache_frozen: bool = Field(
        True,
        description="compute what frozen layers 1..n output once per job and train only the "
        "layers above (same results; needs deterministic inputs, i.e. no augmentation)",
    )
    cache_frozen_max_gb: float = Field(4.0, ge=0, description="skip the cache above this size")
    amp: Literal["off", "bf16"] = Field("off", description="bf16 autocast on CUDA")
    channels_last: bool = Field(
        False,
        description="channels-last memory format for image networks and inputs (CPU and CUDA): often much "
        "faster; it changes the order of floating-point operations, so it enters job ids like amp",
    )
    compile: bool = Field(False, description="torch.compile the model")
    batched: Literal["auto", "on", "off"] = Field(
        "off",
        description="train the same-shaped members of a cohort (executor cohorts: true) as one "
        "batched computation (equal to one-by-one training within float tolerance, not bit for bit, "
        "so on or auto enters the cohort members' job ids); auto: on CUDA devices only",
    )
    deterministic: bool = Field(
        False,
        description="deterministic kernels: torch.use_deterministic_algorithms, cuDNN deterministic "
        "with its benchmark off, CUBLAS_WORKSPACE_CONFIG=:4096:8 (same bits run after run on one GPU; "
        "often slower; an operation with no deterministic kernel fails); enters no job id",
    )

    @field_validator("amp", "batched", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML 1.1 reads unquoted on/off/yes/no as booleans: `batched: on` arrives as True
        if value is False:
            return "off"
        if value is True:
            if info.field_name == "batched":
                return "on"
            raise ValueError("unquoted on/yes/true reads as true in YAML: write amp: bf16 (or off)")
        return value


class Output(_Strict):
    """Where results go."""

    dir: str = "runs/{name}"
    checkpoints: Literal["sources", "all", "none"] = Field(
        "sources",
        description="which trained networks keep their weights: the sources transferred "
        "networks copy from, all, or none (only for configs without transfer)",
    )
    shared_cache: str | None = Field(
        None,
        description="a folder shared by runs: a network already trained there (same content "
        "hash, same code) is copied instead of trained again, and what a run trains is added",
    )
    reuse_across_code: bool = Field(
        False,
        description="keep (and take from the shared cache) networks trained by other code "
        "(another transferbench, plugin, torch or timm version); off: they are retrained",
    )
    cohort_checkpoint_minutes: float = Field(
        10.0,
        ge=0,
        description="a cohort (executor cohorts: true) saves a joint checkpoint of its members at "
        "the end of an epoch at most this often, and an interrupted cohort resumes from it",
    )


class Loader(_Strict):
    """How examples reach the trainer (the ``loader:`` key)."""

    workers: int = Field(0, ge=0, description="DataLoader worker processes for sources not held in memory")
    in_memory_max_gb: float = Field(
        4.0, ge=0, description="hold a split in memory as one tensor when it is smaller than this"
    )
    decode_cache: bool = Field(
        False,
        description="decode a split too large for memory once into a uint8 memory-mapped "
        "file under cache_dir, so no epoch decodes images again",
    )
    cache_dir: str = Field(
        default_factory=lambda: os.environ.get("TRANSFERBENCH_CACHE", "~/.cache/transferbench"),
        description="where decode_cache writes (default: $TRANSFERBENCH_CACHE or ~/.cache/transferbench)",
    )


class Estimation(_Strict):
    """How estimator jobs compute the features of layer n (the ``estimation:`` key).

    Every setting enters the estimator jobs' hashes (not the networks')."""

    max_train: int = Field(
        10_000, ge=2, description="training examples of the target half the features are computed on "
        "(a fixed random subset when there are more)")
    max_eval: int = Field(5_000, ge=2, description="held-out examples of the target half, likewise")
    max_features: int = Field(
        4096, ge=1, description="numbers per example: a larger layer output is average-pooled down "
        "to at most this (docs/estimators.md)")


class Config(_Strict):
    """A whole transferbench experiment."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                      description="letters, digits, _ . -; not starting with a dot (it names the run directory)")
    seed: int = 0
    data: PluginRef
    architecture: PluginRef
    experiments: list[Experiment] = Field(min_length=1)
    train: Train
    eval: Eval = Field(default_factory=Eval)
    loader: Loader = Field(default_factory=Loader)
    performance: Performance = Field(default_factory=Performance)
    estimation: Estimation = Field(default_factory=Estimation)
    output: Output = Field(default_factory=Output)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps ...")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads of every job, wherever it runs (default: the executor's; "
        "local: torch's own with one worker, cores / workers with more). Sums depend on it, job ids do not")
    executor: PluginRef = Field(default_factory=lambda: PluginRef(name="local"))
    observers: list[PluginRef] = Field(
        default_factory=list,
        description="run observers (experiment trackers): names or {name: ..., <keys>}; never hashed",
    )

    @field_validator("experiments")
    @classmethod
    def _unique_experiments(cls, value: list[Experiment]) -> list[Experiment]:
        return _unique(value, "experiment")

    @field_validator("executor", mode="before")
    @classmethod
    def _local_by_default(cls, value: Any) -> Any:
        """``--set executor.cohorts=true`` on a config without ``executor:`` sets the default's keys."""
        return {"name": "local", **value} if isinstance(value, dict) and "name" not in value else value

    def run_dir(self) -> Path:
        return Path(self.output.dir.format(name=self.name))


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen and key != "<<":
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice in one mapping (first on line {seen[key]}); "
                "YAML would silently keep only the last one", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(text: str) -> Any:
    """Parse YAML safely, refusing duplicate keys.

    Raises:
        yaml.YAMLError: not YAML, a key given twice, or nested too deeply to parse.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply (thousands of levels of lists or mappings)") from None


def _parse_value(text: str, key: str) -> Any:
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    check_size(value, f"--set {key}")
    return value


#: The most values (mappings, lists and scalars, each counted as often as YAML aliases
#: repeat it) a config may expand to. A real config has hundreds; nested aliases (a
#: "billion laughs") make a few lines expand to billions, which validation, hashing and
#: writing the config would each walk.
MAX_CONFIG_VALUES = 100_000


def check_size(raw: Any, where: str = "", source: str | None = None) -> None:
    """Refuse a raw config that expands to more than :data:`MAX_CONFIG_VALUES` values, or
    that contains itself (an alias inside its own anchor). Each shared node is visited once,
    so the check itself costs the size of the text, not of the expansion.

    Raises:
        ConfigError: naming the key under which the expansion happens.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any, path: str) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError([(path, "a YAML alias refers to a node that contains it: the config would be "
                                "infinite")], source=source)
        open_nodes.add(key)
        children = node.items() if isinstance(node, dict) else enumerate(node)
        total = 1 + sum(size(v, f"{path}.{k}" if path else str(k)) for k, v in children)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    total = size(raw, where)
    if total > MAX_CONFIG_VALUES:
        node, path = raw, where
        while isinstance(node, dict) and node:  # down the keys to the one that holds the expansion
            k, child = max(node.items(), key=lambda kv: size(kv[1], ""))
            node, path = child, f"{path}.{k}" if path else str(k)
        raise ConfigError([(path, f"expands to {total:,} values, more than the {MAX_CONFIG_VALUES:,} a config may "
                            "hold: YAML aliases (*name) that repeat anchors (&name) which repeat others multiply "
                            "(a \"billion laughs\"); write the values out, or refer to each anchor once")],
                          source=source)


def non_finite_values(node: Any, path: str = "", seen: set[int] | None = None) -> list[tuple[str, str]]:
    """(key path, message) for every infinite or NaN number in a raw config (YAML's .inf, .nan);
    a node that YAML aliases repeat is looked at once, under the first path that reaches it."""
    if isinstance(node, float) and not math.isfinite(node):
        return [(path, f"{node} is not a finite number")]
    if not isinstance(node, (dict, list)):
        return []
    seen = set() if seen is None else seen
    if id(node) in seen:
        return []
    seen.add(id(node))
    items = node.items() if isinstance(node, dict) else enumerate(node)
    out: list[tuple[str, str]] = []
    for key, value in items:
        out += non_finite_values(value, f"{path}.{key}" if path else str(key), seen)
    return out


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override in place (value parsed as YAML).

    List items are addressed by index: ``experiments.0.layers=[1,4,7]``.
    """
    if "=" not in assignment:
        raise ConfigError([("--set", f"expected key.path=value, got {assignment!r}")])
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError([("--set", f"bad key path {key!r}")])
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError([(where, f"no list item {part!r} (--set {assignment})")])
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
            if isinstance(node, str) and i + 1 < len(parts):
                # `data: synthetic` then `--set data.num_classes=10`: expand the shorthand
                parent = _walk(raw, parts[: i + 1][:-1])
                node = parent[part] = {"name": node}
        else:
            raise ConfigError([(where, f"cannot set {key!r}: {where} is not a mapping")])
    last = parts[-1]
    value = _parse_value(text, key.strip())
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError([(key, f"no list item {last!r}")])
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError([(key, "parent is not a mapping")])


def _walk(node: Any, parts: list[str]) -> Any:
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely; a missing or malformed file is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([("", f"config file not found: {p}")])
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"not UTF-8 text (byte {exc.start}): save the config as UTF-8")],
                          source=str(p)) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read the config: {exc.strerror or exc}")], source=str(p)) from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"not valid YAML: {exc}")], source=str(p)) from None
    if not isinstance(raw, dict):
        raise ConfigError([("", "the top level must be a mapping")], source=str(p))
    check_size(raw, source=str(p))
    return raw


def format_validation_error(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None, also_valid: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """One (key path, message) per pydantic error. Given the validated ``model``, an unknown
    key's message lists the valid keys there (plus ``also_valid`` at the top level), with
    "did you mean ...?" for near misses."""
    problems = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"] if not str(x).startswith("function-")]
        path = ".".join(([prefix] if prefix else []) + loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            valid = valid_keys(model, loc[:-1]) + (list(also_valid) if len(loc) == 1 else [])
            msg = unknown_key_message(loc[-1], sorted(set(valid))) if model is not None else "unknown key"
        problems.append((path, msg))
    return problems


def parse_config(raw: dict[str, Any], overrides: Sequence[str] = (), source: str | None = None) -> Config:
    """Validate a raw mapping (after applying overrides) into a :class:`Config`.

    Raises:
        ConfigError: every problem, each with its key path; a config that expands beyond
            :data:`MAX_CONFIG_VALUES` values is refused before anything walks it.
    """
    check_size(raw, source=source)  # before deepcopy and the rest: each walks the expansion
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        apply_override(raw, assignment)
    check_size(raw, source=source)
    bad = non_finite_values(raw)
    if bad:
        raise ConfigError(bad, source=source)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model=Config), source=source) from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load, override and validate a YAML config file."""
    return parse_config(read_yaml(path), overrides, source=str(path))


def dump_config(config: Config) -> str:
    """The resolved config as YAML (written into every run directory)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=False), sort_keys=False)
