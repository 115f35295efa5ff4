"""Expand a config into a graph of training jobs, each identified by a content hash.

A job is one network to train. Cells map the paper's vocabulary (experiment, split seed,
treatment, n) onto jobs; several cells may share one job, which is then trained once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .components import Components
from .config import Config, Experiment, Treatment
from .errors import ConfigError, TransferbenchError
from .estimator import Estimator
from .fingerprint import ESTIMATION_ENTRY, code_fingerprint
from .hashing import content_hash
from .interfaces import ClassInfo, Halves, TransferProtocol
from .jobs import Cell, EstimateCell, EvaluationCell, ExternalSource, Job, TaskTransform
from .network import build_meta, input_shape
from .planfile import CellEntry, JobEntry, PlanFile, merge_plans
from .reading import ProtocolReading
from .sources import SourcePlanner

__all__ = ["Plan", "build_plan", "layer_names", "merge_plan_json", "result_spec"]

#: 2: job ids from what a job computes (data by content, validated plugin params), seeds from
#: the job's role, code fingerprints per job.
PLAN_FORMAT = 2

#: Version of the layer-n feature definition (transferbench.features); hashed into estimator jobs.
#: 2: the inputs go through the architecture's normalisation, as in training (1 used the data
#: source's own mean and std: Caffe-scale networks saw inputs ~58x too small), so every estimate
#: of a format-1 run is recomputed.
FEATURES_FORMAT = 2


@dataclass
class Plan:
    """The job graph of a config. ``jobs`` is in dependency order (sources first).

    ``estimates`` are the estimator points (``experiments[].estimators``); an
    ``estimate_only`` plan holds the base networks and estimators alone.
    """

    name: str
    config_hash: str
    layer_names: list[str]
    jobs: dict[str, Job]
    cells: list[Cell]
    halves: dict[tuple[str, int], Halves]
    estimates: list[EstimateCell] = field(default_factory=list)
    estimate_only: bool = False
    expected_input_std: float | None = None
    notes: list[str] = field(default_factory=list)
    exchangeable: dict[str, bool] = field(default_factory=dict)
    ood_id: str | None = None  # the data source's OOD split (DataSource.ood_id): what an ood_top1 must match
    evaluations: list[EvaluationCell] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)

    def dependents(self, job_id: str) -> list[Job]:
        return [j for j in self.jobs.values() if job_id in j.dependencies]

    def keeps_checkpoint(self, job_id: str, policy: str) -> bool:
        """Whether a trained network's weights are kept under ``output.checkpoints`` =
        ``policy``: every network with ``all``, the ones other jobs read with ``sources``;
        never an estimator's job (it trains no network). The runner, the audit of ``run`` and
        ``check``, and ``export`` all ask this one question."""
        job = self.jobs.get(job_id)
        if job is None or job.kind == "estimate":
            return False
        if any(job_id in e.job_ids for e in self.evaluations):
            return True  # an evaluator reads it after training, whatever the policy says
        return policy == "all" or (policy == "sources" and bool(self.dependents(job_id)))

    def without_transfers(self) -> Plan:
        """The base networks and estimator jobs alone (``run --estimate-only``).

        Raises:
            ConfigError: the plan has no estimator to run.
        """
        if not self.estimates:
            raise ConfigError([("experiments", "--estimate-only needs `estimators:` on an experiment "
                                "(e.g. estimators: [linear, knn, logme, cka])")])
        jobs = {jid: j for jid, j in self.jobs.items() if j.kind != "transfer"}
        return replace(self, jobs=jobs, cells=[c for c in self.cells if c.job_id in jobs], estimate_only=True,
                       evaluations=[e for e in self.evaluations if all(j in jobs for j in e.job_ids)])

    @property
    def cohorts(self) -> dict[str, list[str]]:
        """Cohort id -> the ids of its member jobs, in plan order (empty with cohorts off)."""
        out: dict[str, list[str]] = {}
        for job in self.jobs.values():
            if job.cohort:
                out.setdefault(job.cohort, []).append(job.id)
        return out

    def cells_of(self, job_id: str) -> list[Cell]:
        return [c for c in self.cells if c.job_id == job_id]

    def to_file(self) -> PlanFile:
        """The plan as ``plan.json`` holds it."""
        return PlanFile.model_validate(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "name": self.name,
            "config_hash": self.config_hash,
            "num_layers": self.num_layers,
            "layer_names": self.layer_names,
            "expected_input_std": self.expected_input_std,
            "exchangeable": self.exchangeable,
            "jobs": {jid: job.summary() for jid, job in self.jobs.items()},
            "cells": [c.__dict__ for c in self.cells],
            **({"estimates": [e.__dict__ for e in self.estimates]} if self.estimates else {}),
            **({"estimate_only": True} if self.estimate_only else {}),
            **({"ood_id": self.ood_id} if self.ood_id else {}),
        }


def result_spec(config: Config, components: Components) -> dict[str, Any]:
    """What determines every job's result: the data by content (not where it lies), the
    architecture and its validated params, the solver, the evaluation and the seed. Where and
    how fast a job runs is left out; which code runs it is the job's fingerprint."""
    return {
        "format": PLAN_FORMAT,
        "seed": config.seed,
        "data": {"name": config.data.name, **components.data.identity()},
        "architecture": {"name": config.architecture.name,
                         **components.architecture.params.model_dump(mode="json")},
        "train": config.train.model_dump(mode="json"),
        "eval": config.eval.model_dump(mode="json"),
        "amp": config.performance.amp,
        **({"channels_last": True} if config.performance.channels_last else {}),  # absent: the ids of before
    }


def layer_names(config: Config, components: Components, num_classes: int) -> list[str]:
    """Names of the architecture's layers 1..L, from a structure-only build."""
    shape = input_shape(config.train.augment, components.data)
    try:
        model = build_meta(components.architecture, num_classes, shape)
    except ConfigError as exc:  # the architecture's own problem: report it at its key
        raise ConfigError([(f"architecture.{p}" if p else "architecture", m) for p, m in exc.problems]) from None
    return [layer.name for layer in components.architecture.layers(model)]


def _check_halves(halves: Halves, classes: Sequence[ClassInfo], where: str) -> None:
    a, b = set(halves.A), set(halves.B)
    valid = set(range(len(classes)))
    if not a or not b:
        raise ConfigError([(where, "split produced an empty half")])
    if a & b:
        raise ConfigError([(where, f"halves overlap in {len(a & b)} classes (e.g. {sorted(a & b)[:5]})")])
    if not (a | b) <= valid:
        raise ConfigError([(where, "split returned class indices the data source does not have")])


def _transformed(transforms: Sequence[TaskTransform]) -> dict[str, Any]:
    """What a job's transforms add to its id: nothing without any (older ids stay as they were)."""
    return {"transforms": [t.identity() for t in transforms]} if transforms else {}


def _task_transforms(exp: Experiment, components: Components) -> dict[str, tuple[TaskTransform, ...]]:
    """Half -> the transforms its networks' examples go through, in the config's order."""
    plugins = components.transforms.get(exp.name, [])
    out: dict[str, tuple[TaskTransform, ...]] = {}
    for ref, plugin in zip(exp.transforms, plugins, strict=True):
        change = TaskTransform({"name": ref.name, **plugin.params.model_dump(mode="json")}, tuple(ref.examples), plugin)
        for half in ref.halves:
            out[half] = (*out.get(half, ()), change)
    return out


def _transform_problems(i: int, exp: Experiment, components: Components) -> list[tuple[str, str]]:
    """Each transform that cannot take the data source's examples, at its key."""
    shape = tuple(components.data.input_shape())
    out = []
    for j, plugin in enumerate(components.transforms.get(exp.name, [])):
        why = plugin.check_shape(shape)
        if why:
            out.append((f"experiments.{i}.transforms.{j}", why))
    return out


class _Builder:
    """Collects a plan's jobs (each once, by content hash) and the cells they fill."""

    def __init__(self, base_spec: dict[str, Any], components: Components,
                 features: dict[str, Any] | None = None, cohorts: bool = False, num_layers: int = 0,
                 batched: str = "off") -> None:
        self.base_spec = base_spec
        self.cohorts = cohorts
        self.batched = batched
        self.num_layers = num_layers
        self.seed = base_spec["seed"]
        self.components = components
        self.features = features or {}
        self.jobs: dict[str, Job] = {}
        self.cells: list[Cell] = []
        self.estimates: list[EstimateCell] = []
        self.evaluations: list[EvaluationCell] = []
        self.roles: dict[str, dict[str, Any]] = {}  # job id -> its role (what seeds it)
        self.readings: dict[tuple[int, int], ProtocolReading] = {}

    def read(self, protocol: TransferProtocol | None, n: int) -> ProtocolReading:
        """``protocol`` read at ``n`` (None: a base network), once per plan: every job and
        check of the plan gets this one reading."""
        key = (id(protocol), n)  # the protocol instances live as long as the builder
        if key not in self.readings:
            self.readings[key] = ProtocolReading.of(protocol, n, self.num_layers)
        return self.readings[key]

    def _add(self, job: Job, role: dict[str, Any]) -> Job:
        self.roles.setdefault(job.id, role)
        return self.jobs.setdefault(job.id, job)

    def _fingerprint(self, protocol: TransferProtocol | None, transforms: Sequence[TaskTransform] = ()) -> str:
        c = self.components
        return code_fingerprint([c.data, c.architecture] + ([protocol] if protocol else [])
                                + [t.transform for t in transforms])["id"]

    def base(self, task: tuple[int, ...], half: str, replicate: int,
             transforms: tuple[TaskTransform, ...] = ()) -> Job:
        # the split seed is the replicate: a split that gives the same halves for every seed
        # (one superclass against another) still gets independently initialised networks
        role = {"seed": self.seed, "replicate": replicate, "kind": "base", "classes": list(task),
                **_transformed(transforms)}
        jid = content_hash({**self.base_spec, **role})
        return self._add(Job(jid, "base", half, None, 0, task, _seed(role),
                             fingerprint=self._fingerprint(None, transforms), reading=self.read(None, 0),
                             transforms=transforms), role)

    def transfer(self, treatment: Treatment, protocol: TransferProtocol, task: tuple[int, ...],
                 source: Job | None, n: int, replicate: int, external: ExternalSource | None = None,
                 transforms: tuple[TaskTransform, ...] = ()) -> Job:
        """A transferred network; its source is a base network, a weights file (``external``:
        its content hash stands where a base network's role and id stand) or none."""
        protocol_spec = {"name": treatment.protocol.name, **protocol.params.model_dump(mode="json")}
        if type(protocol).revision:  # the protocol's meaning changed under its name: new networks
            protocol_spec["revision"] = type(protocol).revision
        origin = external.identity() if external else None
        role = {"seed": self.seed, "replicate": replicate, "kind": "transfer", "classes": list(task),
                "protocol": protocol_spec, "n": n, "source": self.roles[source.id] if source else origin,
                **_transformed(transforms), **({"replica": treatment.replica} if treatment.replica else {})}
        reading = self.read(protocol, n)
        # a replica is the same network trained again with its own seed and data order: never
        # in a cohort, whose members share one
        order = {} if treatment.replica else self._cohort_order(task, replicate, reading)
        jid = content_hash({**self.base_spec, **role, "source": source.id if source else origin, **order})
        cohort = {}
        if order:  # members share one stream of batches: the same examples, transformed alike
            cohort = {"data_seed": order["data_order"]["cohort"],
                      "cohort": content_hash({**self.base_spec, **order, "classes": list(task),
                                              "replicate": replicate, **_transformed(transforms)})}
        origin_name = (treatment.source_name or "X") if external else treatment.half  # a named file keeps its name
        job = Job(jid, "transfer", treatment.target, origin_name, n, task, _seed(role),
                  source.id if source else None, treatment.protocol.spec(), protocol,
                  self._fingerprint(protocol, transforms), external=external, reading=reading, transforms=transforms,
                  **cohort)
        return self._add(job, role)

    def _cohort_order(self, task: tuple[int, ...], replicate: int, reading: ProtocolReading) -> dict[str, Any]:
        """With cohorts on, the data order every transferred network of ``task`` (in one
        replicate) shares: one stream of batches for the cohort. It enters their ids, so a
        cohort's network is never mistaken for the same network trained on its own order. Base
        networks keep their own, and so do networks that are only evaluated or that reset
        layers to their source's initial weights (they train alone: ``reading.joins_cohort``)."""
        if not self.cohorts or not reading.joins_cohort:
            return {}
        role = {"seed": self.seed, "replicate": replicate, "kind": "cohort", "classes": list(task)}
        order: dict[str, Any] = {"data_order": {"cohort": _seed(role)}}
        if self.batched != "off" and all(reading.trained):
            # a member that may be batched (it trains every layer) computes the same function
            # up to the batched kernels' rounding, not bit for bit: another network (another id)
            order["batched"] = self.batched
        return order

    def estimate(self, name: str, estimator: Estimator, task: tuple[int, ...], source: Job | ExternalSource,
                 reference: Job, n: int, source_name: str = "X") -> Job:
        """``estimator`` on layer n of ``source`` (a base network, or a weights file, ``X`` or a
        named source: its content hash stands where the network's role and id do), on ``task``
        (the ``reference``'s task)."""
        spec = {"name": name, **estimator.params.model_dump(mode="json")}
        ref = reference.id if estimator.needs_reference else None
        if isinstance(source, ExternalSource):
            file, src_id, half = source, None, source_name
            origin: tuple[Any, Any] = (file.identity(), file.identity())
        else:
            file, src_id, half = None, source.id, source.target
            origin = (self.roles[source.id], source.id)
        role = {"seed": self.seed, "kind": "estimate", "classes": list(task), "estimator": spec, "n": n,
                "features": self.features, "source": origin[0],
                "reference": self.roles[reference.id] if ref else None}
        jid = content_hash({**self.base_spec, **role, "source": origin[1], "reference": ref})
        c = self.components
        fingerprint = code_fingerprint([c.data, c.architecture, estimator], entry=ESTIMATION_ENTRY)["id"]
        job = Job(jid, "estimate", reference.target, half, n, task, _seed(role), src_id, fingerprint=fingerprint,
                  after=(ref,) if ref and ref != src_id else (),
                  estimator_spec=spec, estimator=estimator, external=file)
        return self._add(job, role)

    def estimators(self, exp: Experiment, seed: int, halves: Halves, layers: list[int], bases: dict[str, Job],
                   components: Components, externals: dict[str, ExternalSource] | None = None) -> None:
        """Every estimator of ``exp`` on every (source, target) pair its treatments transfer
        between, and on each target's own base (the pair depth cannot tell apart); a weights
        file is the source ``X`` (the first file a target's treatments copy from), a named one
        (``sources:``) its name, each scored apart."""
        pairs: set[tuple[str, str]] = {(t.half, t.target) for t in exp.treatments if t.half and t.target in ("A", "B")
                                       and components.protocols[(exp.name, t.name)].needs_source}
        files: dict[tuple[str, str], ExternalSource] = {}
        for t in exp.treatments:
            if t.name in (externals or {}) and t.target in ("A", "B"):
                files.setdefault((t.source_name or "X", t.target), (externals or {})[t.name])
        pairs |= {(tgt, tgt) for _, tgt in pairs} | {(tgt, tgt) for _, tgt in files}
        for half in sorted({h for pair in pairs for h in pair} - set(bases)):
            bases[half] = self.base(halves[half], half, seed)
        sources: list[tuple[str, str, Job | ExternalSource]] = [(s, t, bases[s]) for s, t in sorted(pairs)]
        sources += [(name, tgt, file) for (name, tgt), file in sorted(files.items())]
        for src, tgt, network in sources:
            for n in layers:
                for ref in exp.estimators:
                    est = components.estimators[(exp.name, ref.name)]
                    job = self.estimate(ref.name, est, halves[tgt], network, bases[tgt], n, src)
                    self.estimates.append(EstimateCell(exp.name, exp.split.name, seed, src, tgt, n, ref.name, job.id))

    def split_seed(self, exp: Experiment, seed: int, halves: Halves, layers: list[int],
                   components: Components, externals: dict[str, ExternalSource] | None = None) -> None:
        """The bases, transferred networks and estimators of one experiment at one split seed;
        ``externals``: treatment -> its weights file."""
        protocols = components.protocols
        sources: set[str] = {h for t in exp.treatments if (h := t.half)}
        targets: set[str] = {t.target for t in exp.treatments}
        needed: list[str] = list(exp.bases or ()) or sorted(targets | sources)
        changes = _task_transforms(exp, components)
        bases = {half: self.base(halves[half], half, seed, changes.get(half, ()))
                 for half in sorted(set(needed) | sources)}
        for half in needed:
            self.cells.append(Cell(exp.name, exp.split.name, seed, f"base{half}", 0, bases[half].id))
        for t in exp.treatments:
            proto = protocols[(exp.name, t.name)]
            source = bases[t.half] if (t.half and proto.needs_source) else None
            external = (externals or {}).get(t.name) if proto.needs_source else None
            for n in layers:
                job = self.transfer(t, proto, halves[t.target], source, n, seed, external,
                                    changes.get(t.target, ()))
                self.cells.append(Cell(exp.name, exp.split.name, seed, t.name, n, job.id))
        if exp.estimators:
            self.estimators(exp, seed, halves, layers, bases, components, externals)
        if exp.evaluators:
            self.evaluators(exp, seed, layers, bases, components)

    def evaluators(self, exp: Experiment, seed: int, layers: list[int], bases: dict[str, Job],
                   components: Components) -> None:
        """Every evaluator of ``exp`` on its networks of split seed ``seed``, at every n of the
        experiment (once, at n = 0, when it reads base networks only)."""
        at = {(c.treatment, c.n): c.job_id for c in self.cells if c.experiment == exp.name and c.split_seed == seed}
        for ref in exp.evaluators:
            ev = components.evaluators[(exp.name, ref.label)]
            spec = {"name": ref.name, **ev.params.model_dump(mode="json")}
            only_bases = all(name.startswith("base") and name not in {t.name for t in exp.treatments}
                             for name in ref.networks)
            for n in ([0] if only_bases else layers):
                ids = []
                for name in ref.networks:
                    jid = at.get((name, n)) or at.get((name, 0))
                    if jid is None and name.startswith("base") and name[4:] in bases:
                        jid = bases[name[4:]].id
                    if jid is None:
                        raise ConfigError([(f"experiments.{exp.name}.evaluators", f"{ref.label}: no network "
                                            f"{name} at n={n} (a base network is named baseA, baseB)")])
                    ids.append(jid)
                targets = {self.jobs[j].target for j in ids}
                if len(targets) != 1 or any(self.jobs[j].transforms != self.jobs[ids[0]].transforms for j in ids):
                    raise ConfigError([(f"experiments.{exp.name}.evaluators", f"{ref.label}: the networks "
                                        f"{', '.join(ref.networks)} are not trained on one task (one half, the same "
                                        "data transforms)")])
                self.evaluations.append(EvaluationCell(exp.name, seed, ref.label, ref.name, spec,
                                                       tuple(ref.networks), tuple(ids), targets.pop(), n))


def build_plan(config: Config, components: Components, classes: Sequence[ClassInfo] | None = None) -> Plan:
    """Expand ``config`` into jobs and cells.

    Raises:
        ConfigError: for layers n outside 1..L-1, a bad split, or a treatment whose halves
            the split doesn't provide.
    """
    classes = list(classes if classes is not None else components.data.classes())
    if not classes:
        raise TransferbenchError("the data source has no classes")
    base_spec = result_spec(config, components)
    names = layer_names(config, components, max(2, len(classes) // 2))
    num_layers = len(names)
    if num_layers < 2:
        raise ConfigError([("architecture", f"needs at least 2 layers to transfer, has {num_layers}")])

    builder = _Builder(base_spec, components, {"format": FEATURES_FORMAT, **config.estimation.model_dump(mode="json")},
                       cohorts=bool(getattr(components.executor, "cohorts", False)), num_layers=num_layers,
                       batched=config.performance.batched)
    files = SourcePlanner(components.architecture, input_shape(config.train.augment, components.data), num_layers,
                          [c.id for c in classes])
    all_halves: dict[tuple[str, int], Halves] = {}
    problems: list[tuple[str, str]] = files.problems
    for i, exp in enumerate(config.experiments):
        layers = list(range(1, num_layers)) if exp.layers == "all" else sorted(set(exp.layers))
        bad = [n for n in layers if not 1 <= n <= num_layers - 1]
        if bad:
            problems.append((f"experiments.{i}.layers", f"n must be in 1..{num_layers - 1} for this "
                             f"architecture ({', '.join(names)}); got {bad}"))
            continue
        if exp.estimators and not any((t.half or t.external) and t.target in ("A", "B") and components.protocols[
                (exp.name, t.name)].needs_source for t in exp.treatments):
            problems.append((f"experiments.{i}.estimators", "estimators score layer n of a base network on a "
                             "target half: the experiment needs a treatment that copies layers from a source half "
                             "or a weights file"))
            continue
        problems += _transform_problems(i, exp, components)
        externals = files.externals(i, exp, components.protocols, layers, builder.read)
        for seed in exp.split.seeds:
            halves = components.splits[exp.name].split(classes, seed)
            _check_halves(halves, classes, f"experiments.{i}.split")
            all_halves[(exp.name, seed)] = halves
            builder.split_seed(exp, seed, halves, layers, components, externals)
    files.check_jobs(builder.jobs.values())
    if config.output.checkpoints == "none" and any(j.depends_on for j in builder.jobs.values()):
        problems.append(("output.checkpoints", "'none' keeps no weights, but transfer treatments copy "
                         "layers from base networks: use 'sources' (the default) or 'all'"))
    if problems:
        raise ConfigError(problems)
    # bases first, then the estimators (a proxy of the whole curve early), then the transfers
    rank = {"base": 0, "estimate": 1}
    ordered = dict(sorted(builder.jobs.items(), key=lambda kv: rank.get(kv[1].kind, 2)))
    exchangeable = {exp.name: type(components.splits[exp.name]).exchangeable for exp in config.experiments}
    return Plan(config.name, content_hash(base_spec), names, ordered, builder.cells, all_halves,
                estimates=builder.estimates, expected_input_std=components.architecture.expected_input_std(),
                exchangeable=exchangeable, notes=files.notes, ood_id=components.data.ood_id(),
                evaluations=builder.evaluations)


def _seed(role: dict[str, Any]) -> int:
    """A job's torch seed: from the experiment's seed and the job's role alone."""
    return int(content_hash(role)[:8], 16)


def merge_plan_json(old: PlanFile | None, new: Plan,
                    finished: Callable[[str], bool] | None = None) -> tuple[PlanFile, list[str]]:
    """The plan.json of a run directory that ``new`` continues (:func:`transferbench.planfile.merge_plans`),
    naming a changed weights file when that is why a finished cell would be refilled.

    Raises:
        RunDirError: a finished cell of the old plan is filled by another network now.
    """
    return merge_plans(old, new.to_file(), finished, _changed_file)


def _changed_file(cell: CellEntry, old_job: JobEntry | None, new_job: JobEntry | None) -> str:
    """The refusal's reason when a cell's network changed because its weights file did: the
    file, its content then and now, and the two ways forward; empty otherwise."""
    before = old_job.source_checkpoint if old_job is not None else None
    now = new_job.source_checkpoint if new_job is not None else None
    if not isinstance(before, dict) or not isinstance(now, dict):
        return ""
    for path, sha in (("file", "sha256"), ("init", "init_sha256")):
        if before.get(sha) == now.get(sha):
            continue
        was, new_sha = str(before.get(sha) or "none")[:12], str(now.get(sha) or "none")[:12]
        if before.get(path) == now.get(path):
            what = f"the weights file {now.get(path)} changed: its SHA-256 was {was}... when these networks trained, " \
                   f"it is {new_sha}... now"
        else:
            what = f"its weights file is now {now.get(path)} (SHA-256 {new_sha}...), the networks here were " \
                   f"trained from {before.get(path)} (SHA-256 {was}...)"
        return (f"{what}). To finish this run, put back the file it was planned with (SHA-256 {was}...) and "
                "rerun; to measure the new file, run it into another --out (the networks of the old one stay "
                "here, reported)")
    return ""
