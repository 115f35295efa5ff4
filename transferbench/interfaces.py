"""The public contract between the transferbench engine and its plugins: the parts of an experiment.

Four kinds of plugin supply the named parts of an experiment (a fifth, the executor that
runs the jobs, is defined in :mod:`transferbench.executor`):

* :class:`Architecture` builds a network for ``k`` classes and names its transferable
  layers in order (layer 1..L), so the engine can copy, freeze or re-initialise
  "the first n layers" of any network.
* :class:`TaskSplit` divides the classes of a data source into two disjoint halves A and B,
  deterministically for a seed.
* :class:`TransferProtocol` says, for a given n, what happens to each layer of a freshly
  built target network: copied from the source or kept at its own initialisation, frozen or
  trained, and with which learning-rate multiplier.
* :class:`DataSource` yields a Hugging Face ``datasets.Dataset`` (or iterable one) with an
  ``input`` column and an integer ``label`` column, for a ``train`` and an ``eval`` split,
  plus the metadata of its classes.

Every plugin class declares a pydantic model ``Params`` for its own configuration keys;
the engine validates a config's keys against it and passes the validated instance to the
constructor. The engine only ever sees instances of these classes, never plugin names.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

__all__ = [
    "Architecture",
    "ClassInfo",
    "DataSource",
    "DataTransform",
    "Halves",
    "Layer",
    "LayerAction",
    "NoParams",
    "Plugin",
    "TaskSplit",
    "TransferProtocol",
]

#: A data source's splits: training examples, held-out examples, and (from a source whose
#: :meth:`DataSource.has_ood` is true) held-out examples of the same classes drawn
#: differently: the out-of-distribution evaluation split.
Split = Literal["train", "eval", "ood"]


class NoParams(BaseModel):
    """Parameters of a plugin that takes none. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


#: A plugin's params model (its pydantic ``Params``).
P = TypeVar("P", bound=BaseModel)


class Plugin(Generic[P]):
    """Common base of every plugin class, generic over its params model.

    ``class Mine(TaskSplit[MineParams])`` with ``Params = MineParams`` gives ``self.params``
    the type ``MineParams``, so a type checker knows every setting the plugin reads.

    Attributes:
        Params: pydantic model of the plugin's own config keys (``extra="forbid"`` is
            recommended so a misspelt key is reported, not ignored).
        params: the validated settings, an instance of ``Params``.
        description: one line shown by ``transferbench plugins``.
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    description: ClassVar[str] = ""
    #: Python packages the plugin needs beyond transferbench's own (an optional extra); a
    #: config that names the plugin without them is refused with ``install_hint``, and the
    #: contract tests skip it.
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    params: P

    def __init__(self, params: P | None = None) -> None:
        # the registry validates a config's keys with ``Params`` and passes the instance in
        self.params = params if params is not None else cast(P, self.Params())

    @classmethod
    def missing_requirements(cls) -> list[str]:
        """The packages of :attr:`requires` that are not installed (found without importing them)."""
        missing = []
        for name in cls.requires:
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(name)
        return missing

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        """Small, fast parameters for the contract tests.

        A plugin that needs files (a dataset on disk, say) may create them in ``workdir``.
        The default is the plugin's defaults.
        """
        return {}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ClassInfo:
    """One class of a data source.

    Attributes:
        index: position in the source's class list; the ``label`` column uses it.
        id: a stable identifier (the WordNet id for ImageNet).
        name: a human-readable name.
        superclass: the group the class belongs to, where the source knows one
            (man-made / natural, CIFAR-100's coarse label, ...).
    """

    index: int
    id: str
    name: str
    superclass: str | None = None


class DataSource(Plugin[P], abc.ABC):
    """A labelled dataset with a train and an eval split.

    ``load(split)`` returns a ``datasets.Dataset`` (or ``IterableDataset``) with a column
    ``input`` (an array, a PIL image, anything :meth:`to_tensor` understands) and an integer
    column ``label`` indexing :meth:`classes`. The engine selects the examples of a task's
    classes, remaps labels to 0..k-1, batches, augments and normalises.
    """

    @abc.abstractmethod
    def classes(self) -> Sequence[ClassInfo]:
        """All classes, in label order (``classes()[i].index == i``). Must not need the data."""

    @abc.abstractmethod
    def load(self, split: Split) -> Any:
        """The ``datasets.Dataset`` (or ``IterableDataset``) of one split."""

    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example as :meth:`to_tensor` returns it, e.g. ``(3, 32, 32)``."""

    def to_tensor(self, value: Any) -> torch.Tensor:
        """Turn one ``input`` value into a tensor (uint8 or float). Called in loader workers."""
        return torch.as_tensor(value)

    def normalization(self) -> tuple[Sequence[float], Sequence[float]] | None:
        """Per-channel (mean, std) applied to float inputs after augmentation, or None.

        uint8 inputs are scaled to [0, 1] first. The paper subtracts the mean image; a
        per-channel mean is the usual stand-in.
        """
        return None

    def has_ood(self) -> bool:
        """Whether ``load("ood")`` gives an out-of-distribution evaluation split: the same
        classes (same labels) drawn differently (other poses, colours, backgrounds). When it
        does, every trained network is also evaluated on it once, at the end (the record's
        ``ood_top1``). It changes no training: a source's OOD settings stay out of its
        :meth:`identity`, so they change no job id. None by default."""
        return False

    def ood_id(self) -> str | None:
        """A short hash of what the OOD split is (None: the source has none), recorded beside
        each ``ood_top1`` and in ``plan.json``: the job id leaves the OOD settings out, so a
        finished network is reused when they change, and the report uses an ``ood_top1`` only
        when its ``ood_id`` is the plan's. By default the params without
        :attr:`location_params` (the OOD settings included, which :meth:`identity` leaves out)."""
        if not self.has_ood():
            return None
        data = {k: v for k, v in self.params.model_dump(mode="json").items() if k not in self.location_params}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def check(self) -> None:
        """Raise :class:`transferbench.errors.DataError` with a helpful message when the
        data is not where the config says. Called before any work starts."""

    #: Params that say where the data lies, not what it is (a folder, a cache): left out of
    #: :meth:`identity`, so a moved or copied data set keeps its job ids.
    location_params: ClassVar[tuple[str, ...]] = ()

    def identity(self) -> dict[str, Any]:
        """What the data *is*, for job ids: the params without :attr:`location_params`.

        A source whose location params point at data adds what identifies that data by
        content (file names and sizes, a dataset fingerprint), never its path.
        """
        data = self.params.model_dump(mode="json")
        return {k: v for k, v in data.items() if k not in self.location_params}


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Halves:
    """The two disjoint class sets of a split, as sorted tuples of class indices."""

    A: tuple[int, ...]
    B: tuple[int, ...]

    def __getitem__(self, half: str) -> tuple[int, ...]:
        if half == "A":
            return self.A
        if half == "B":
            return self.B
        if half == "all":
            return tuple(sorted(set(self.A) | set(self.B)))
        raise KeyError(half)


class TaskSplit(Plugin[P], abc.ABC):
    """Divides a source's classes into two disjoint halves A and B.

    Attributes:
        exchangeable: whether A and B are drawn alike (random halves), so that AnA measures
            what BnB does and the report may pool mirror-image treatments as the paper did;
            False for a split by meaning (man-made / natural, one superclass against another).
    """

    exchangeable: ClassVar[bool] = True

    @abc.abstractmethod
    def split(self, classes: Sequence[ClassInfo], seed: int) -> Halves:
        """Return the halves for ``seed``. Must be deterministic and must not touch global RNGs."""


# --------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class Layer:
    """One transferable layer of a network.

    Attributes:
        name: e.g. ``conv1``.
        modules: state-dict key prefixes of this layer: module names (as in
            ``model.named_modules()``), or the names of parameters a parent module owns
            directly (a ViT's ``cls_token``). Copying the layer copies every state-dict
            entry under these prefixes; freezing it stops gradients for their parameters.
    """

    name: str
    modules: tuple[str, ...]


class Architecture(Plugin[P], abc.ABC):
    """Builds networks and names their transferable layers 1..L (L is the classifier)."""

    #: An input shape the architecture works with, for the contract tests and ``layers``.
    example_input_shape: ClassVar[tuple[int, ...]] = (3, 32, 32)

    @abc.abstractmethod
    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """A freshly initialised network for ``num_classes`` classes.

        The engine seeds torch's RNG before calling, so the architecture's own
        initialisation is what "re-initialised" means in a transfer experiment.
        """

    @abc.abstractmethod
    def layers(self, model: nn.Module) -> Sequence[Layer]:
        """The transferable layers of ``model`` in order, from input (1) to classifier (L)."""

    def expected_input_std(self) -> float | None:
        """The standard deviation of network inputs its initialisation is designed for (1.0
        for inputs normalised to unit variance; about 58 for Caffe's mean-subtracted 0-255
        pixels), or None when it does not matter. Every record stores the measured value,
        and the report flags networks whose inputs were far off."""
        return None

    def input_normalization(
        self, data: tuple[Sequence[float], Sequence[float]] | None
    ) -> tuple[Sequence[float], Sequence[float]] | None:
        """The per-channel (mean, std) applied to image inputs on the [0, 1] scale.

        The default is the data source's own. An architecture whose initialisation expects
        another input scale (Caffe's 0-255 pixels) returns it here, so the scale belongs to
        the network and cannot be lost by swapping the data config.
        """
        return data

    def param_multipliers(self, model: nn.Module) -> dict[str, tuple[float, float]]:
        """Per-parameter (learning-rate, weight-decay) multipliers, by parameter name.

        Parameters not listed get (1, 1). Caffe's reference net uses (2, 0) for biases.
        """
        return {}

    def split_at(self, model: nn.Module, n: int) -> tuple[nn.Module, nn.Module] | None:
        """Optionally split ``model`` into ``(prefix, suffix)`` within its first ``n`` layers.

        ``suffix(prefix(x))`` must equal ``model(x)``; both must share ``model``'s modules
        (no copies); ``prefix`` must hold only layers 1..m for some m <= n and be
        deterministic in training mode (so where dropout sits between frozen layers, m stops
        before it). The engine then computes the prefix once per frozen job and trains
        only through the suffix. Returning None (the default) keeps the plain path.
        """
        return None

    def prefix_outputs(self, model: nn.Module, x: torch.Tensor, ns: Sequence[int]
                       ) -> dict[int, torch.Tensor] | None:
        """What the prefix of ``split_at(model, n)`` computes on ``x``, for every n in ``ns``.

        Networks whose frozen layers 1..n were copied from the same source compute the same
        prefix, so a cohort computes it once per batch for all of them. The default runs each
        prefix on its own; an architecture whose prefixes nest overrides it to run the deepest
        once and keep the shallower outputs on the way (the values must be the same). None
        when ``split_at`` gives None for one of ``ns``.
        """
        out: dict[int, torch.Tensor] = {}
        for n in ns:
            split = self.split_at(model, n)
            if split is None:
                return None
            out[n] = split[0](x)
        return out


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class LayerAction:
    """What happens to one layer of the target network before and during training.

    Attributes:
        copy: load the layer's weights from the source network (else keep the fresh init).
        train: let the layer learn (else freeze it: no gradient, no weight decay).
        lr_mult: learning-rate multiplier on top of the architecture's own multipliers.
        from_init: with ``copy``, load the source network's *initial* weights (as they were
            before it trained) instead of its trained ones: resetting a layer to its
            initialisation (``reinit``). A source trained in the run has them recomputed
            exactly from its seed; a weights file needs its ``init`` file.
        start: with ``train``, the fraction of the training steps the layer waits, frozen,
            before it starts to learn (0: from the first step). LP-FT's linear probe (Kumar et
            al. 2022) holds the copied layers while the new ones train, then tunes them all.
        meanvar: with ``copy``, do not load the source's weights: draw each of the layer's
            parameter tensors i.i.d. from a normal with that tensor's mean and standard
            deviation in the source's trained weights (Raghu et al. 2019's "Mean Var Init").
            The draw comes from the job's seed; buffers (normalisation statistics) keep the
            fresh initialisation.
    """

    copy: bool
    train: bool
    lr_mult: float = 1.0
    from_init: bool = False
    start: float = 0.0
    meanvar: bool = False


class TransferProtocol(Plugin[P], abc.ABC):
    """Maps "transfer the first n layers" (or "treat layer n") onto per-layer actions."""

    #: Whether the protocol copies from a trained source network. A protocol that does not
    #: (random weights) makes jobs that depend on no base network.
    needs_source: ClassVar[bool] = True

    #: What n means: ``"depth"``, layers 1..n are transferred (the paper's protocols);
    #: ``"layer"``, n names the one layer the protocol treats unlike the others (surgical
    #: fine-tuning of layer n, re-initialising layer n). The contract checks follow it.
    n_meaning: ClassVar[Literal["depth", "layer"]] = "depth"

    #: True: the job trains nothing; it evaluates the network its actions build (every
    #: layer copied or reset, the classifier included), so its target must be the source's
    #: own task. The record has ``steps == 0`` and an empty history.
    evaluate_only: ClassVar[bool] = False

    #: True: the protocol copies the source's classifier (layer L) and keeps it, so the
    #: target must be the source's own task (its classes, in its label order).
    keeps_classifier: ClassVar[bool] = False

    #: Raised when what the protocol does changes under the same name (0.4's ``surgical``
    #: keeps the source's classifier; 0.3's trained a new one). From 1 on it enters the
    #: ids of the networks the protocol makes, so a network trained under the old meaning
    #: is never taken for one of the new.
    revision: ClassVar[int] = 0

    @abc.abstractmethod
    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        """One action per layer 1..num_layers for transferring the first ``n`` layers."""


# --------------------------------------------------------------------------- data transforms


class DataTransform(Plugin[P], abc.ABC):
    """Changes the examples of a task (the ``data_transform`` plugin kind): block-shuffled
    images, corruptions, new labels.

    A config applies it to the networks an experiment trains on some halves
    (``experiments[].transforms``), on their training and/or evaluation examples. Its name and
    settings enter those networks' job ids, so a changed transform retrains them; their source
    networks (trained on other halves) are unchanged.

    The contract (``transferbench.testing.check_data_transform``): :meth:`apply` is a function
    of each example alone and the plugin's settings (the same example gives the same output in
    any batch, in any order, every time), keeps the inputs' shape and dtype, returns labels in
    ``0..classes-1``, and changes neither argument in place. Randomness comes from a seed in
    the settings, never from a global generator.
    """

    @abc.abstractmethod
    def apply(self, inputs: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of a task's examples as the data source gives them (``N x C x H x W`` for
        images, before augmentation and normalisation) and its labels (``0..classes-1``);
        returns the changed batch."""

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        """Why the transform cannot take examples of ``shape`` (one example's, as the data
        source gives it), in one line; None when it can (the default). The planner asks
        before anything trains, so a bad setting is a config error, not a failed network."""
        return None
