"""The jobs of a plan: the contract between the planner and everything that runs a plan.

A :class:`Job` is one network to train (or one estimator to run on a trained network), named
by a content hash; a :class:`Cell` (or :class:`EstimateCell`) is a place in the paper's tables
that a job fills; :class:`ExternalSource` and :class:`SourceFile` are the weights files a job
may copy its layers from. A job carries its protocol's reading
(:class:`~transferbench.reading.ProtocolReading`), made once by the planner. This module sits
below the planner, the runner, the executors and the observers, and imports nothing of theirs:
whoever runs or watches jobs needs only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import TransferbenchError
from .interfaces import DataTransform, TransferProtocol
from .reading import ProtocolReading

if TYPE_CHECKING:  # the estimator contract is not training code: editing it retrains no network
    from .estimator import Estimator

__all__ = ["Cell", "EstimateCell", "EvaluationCell", "ExternalSource", "Job", "SourceFile", "TaskTransform"]


@dataclass(frozen=True)
class TaskTransform:
    """A data transform a job's examples go through (``experiments[].transforms``).

    Attributes:
        spec: the transform's name and settings (in the job's id).
        on: the examples it changes: ``train``, ``eval`` or both.
        transform: the plugin instance (not part of equality).
    """

    spec: dict[str, Any]
    on: tuple[str, ...]
    transform: DataTransform = field(compare=False, repr=False)

    def identity(self) -> dict[str, Any]:
        """What enters the job's id."""
        return {**self.spec, "examples": sorted(self.on)}


@dataclass(frozen=True)
class SourceFile:
    """A weights file as planned: where it lies, what it holds (by content) and its tensors.

    Attributes:
        path: the absolute path it was read from (not part of any identity).
        sha256: SHA-256 of the file's bytes.
        shapes: tensor name (after ``strip_prefix``) -> shape.
        strip_prefix: the prefix removed from the file's names.
    """

    path: str
    sha256: str
    shapes: dict[str, tuple[int, ...]] = field(compare=False, repr=False)
    strip_prefix: str = ""


@dataclass(frozen=True)
class ExternalSource:
    """The file a transferred network copies from, and the file of its initial weights when
    the protocol resets layers to them (``reinit``)."""

    file: SourceFile
    init: SourceFile | None = None
    key: str = field(default="", compare=False)

    def identity(self) -> dict[str, Any]:
        """What enters the job's id and seed: the contents, never the paths."""
        out: dict[str, Any] = {"checkpoint_sha256": self.file.sha256}
        if self.file.strip_prefix:
            out["strip_prefix"] = self.file.strip_prefix
        if self.init is not None:
            out["init_sha256"] = self.init.sha256
        return out

    def summary(self) -> dict[str, Any]:
        """For plan.json: the file and its hash (the path is for people; the hash is the identity)."""
        out = {"file": self.file.path, "sha256": self.file.sha256}
        if self.init is not None:
            out.update(init=self.init.path, init_sha256=self.init.sha256)
        return out



@dataclass(frozen=True)
class Job:
    """One network to train, or one estimator to run on a trained network.

    Attributes:
        id: content hash of everything that determines the result.
        kind: ``base`` (trained from scratch), ``transfer``, or ``estimate`` (an estimator
            scores layer n of the ``source`` half's base network on the ``target`` half).
        target: the half trained on (``A``, ``B`` or ``all``).
        source: the half the copied layers come from, if any.
        n: layers 1..n are transferred (0 for base networks).
        classes: the source's class indices of the target task (label i = classes[i]).
        seed: torch seed of this job, derived from the experiment's seed and the job's role
            (kind, classes, source, protocol, n): never from paths or hyper-parameters.
        depends_on: id of the job whose trained weights are copied, if any.
        protocol_spec: the protocol's name and params, or None for base networks.
        protocol: the protocol instance (not part of equality).
        fingerprint: id of the code that trains it (see :mod:`transferbench.fingerprint`).
        after: ids of further jobs that must finish first (an estimator's reference
            network); :attr:`dependencies` lists them with ``depends_on``.
        estimator_spec: the estimator's name and params (estimate jobs).
        estimator: the estimator instance (not part of equality).
        data_seed: seed of the training data order (shuffling, augmentation) when the job
            shares it with a cohort; None: the job's own order (``seed + 1``).
        cohort: id of the cohort whose members share this job's training set and data
            order (executors with ``cohorts`` on train them in lockstep), or None.
        external: the weights file the copied layers come from (``source`` is then ``X``);
            its content hash is in the id, its path is not.
        reading: what the protocol does to each layer at n, read once by the planner (not
            part of equality: it follows from ``protocol`` and ``n``); see :meth:`read_protocol`.
        transforms: the data transforms its task's examples go through, in order (their specs
            are in the id).
    """

    id: str
    kind: str
    target: str
    source: str | None
    n: int
    classes: tuple[int, ...]
    seed: int
    depends_on: str | None = None
    protocol_spec: dict[str, Any] | None = None
    protocol: TransferProtocol | None = field(default=None, compare=False, repr=False)
    fingerprint: str = field(default="", compare=False)
    after: tuple[str, ...] = ()
    estimator_spec: dict[str, Any] | None = None
    estimator: Estimator | None = field(default=None, compare=False, repr=False)
    data_seed: int | None = None
    cohort: str | None = None
    external: ExternalSource | None = field(default=None, compare=False, repr=False)
    reading: ProtocolReading | None = field(default=None, compare=False, repr=False)
    transforms: tuple[TaskTransform, ...] = ()

    @property
    def stream_seed(self) -> int:
        """Seed of the generator that orders (and augments) the job's training batches."""
        return self.seed + 1 if self.data_seed is None else self.data_seed

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def read_protocol(self, num_layers: int) -> ProtocolReading:
        """What the job's protocol does to each of the network's ``num_layers`` layers: the
        reading the planner made, or, for a job made by hand without one, read now.

        Raises:
            TransferbenchError: the planned reading is for another number of layers.
        """
        if self.reading is None:
            return ProtocolReading.of(self.protocol, self.n, num_layers)
        if self.reading.num_layers != num_layers:
            raise TransferbenchError(f"job {self.id} was planned for {self.reading.num_layers} layers; "
                                     f"its network has {num_layers}")
        return self.reading

    @property
    def dependencies(self) -> tuple[str, ...]:
        """Every job that must finish before this one: ``depends_on``, then ``after``."""
        return ((self.depends_on,) if self.depends_on else ()) + self.after

    def summary(self) -> dict[str, Any]:
        if self.kind == "estimate":
            assert self.estimator_spec is not None
            return {"kind": self.kind, "target": self.target, "source": self.source, "n": self.n,
                    "estimator": self.estimator_spec["name"], "depends_on": self.depends_on,
                    "after": list(self.after), "num_classes": self.num_classes, "seed": self.seed}
        return {
            "kind": self.kind,
            "target": self.target,
            "source": self.source,
            "n": self.n,
            "protocol": self.protocol_spec["name"] if self.protocol_spec else None,
            "depends_on": self.depends_on,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            **({"cohort": self.cohort, "data_seed": self.data_seed} if self.cohort else {}),
            **({"source_checkpoint": self.external.summary()} if self.external else {}),
        }


@dataclass(frozen=True)
class Cell:
    """A place in the paper's tables, filled by one job."""

    experiment: str
    split: str
    split_seed: int
    treatment: str
    n: int
    job_id: str


@dataclass(frozen=True)
class EstimateCell:
    """A point of an estimator's curve: ``estimator`` on layer n of the ``source`` half's base
    network, on the ``target`` half's examples; filled by one estimate job."""

    experiment: str
    split: str
    split_seed: int
    source: str
    target: str
    n: int
    estimator: str
    job_id: str


@dataclass(frozen=True)
class EvaluationCell:
    """One evaluation of a plan: the evaluator ``label`` of ``experiment`` on the networks of
    one split seed at one n (``experiments[].evaluators``), run after they are trained.

    Attributes:
        evaluator: the evaluator plugin's name.
        spec: its name and validated settings (part of the evaluation's key).
        treatments: the treatments read, in the config's order.
        job_ids: the networks filling them, in the same order.
        target: the half they are trained on (every one the same).
        n: the layer (0 when every network read is a base network).
    """

    experiment: str
    split_seed: int
    label: str
    evaluator: str
    spec: dict[str, Any]
    treatments: tuple[str, ...]
    job_ids: tuple[str, ...]
    target: str
    n: int
