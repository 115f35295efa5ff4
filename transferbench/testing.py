"""The plugin contract tests, for plugin authors: ``from transferbench.testing import check_split``.

Every built-in plugin passes these checks (transferbench's own ``tests/test_contracts.py``
runs them over every registered plugin); a third-party package runs them in its own tests,
against an installed transferbench, without a checkout::

    from transferbench.testing import check_split
    from my_package.plugin import MySplit

    def test_my_split_honours_the_contract(tmp_path):
        check_split(MySplit, tmp_path)

Each ``check_*`` function takes a plugin class (built from its ``example_params(workdir)``)
or an instance, and raises :class:`ContractError` (an ``AssertionError``, so pytest shows
it as a failed test) naming the broken rule. A class whose optional ``requires`` are not
installed is skipped under pytest (:class:`RequirementsMissing` elsewhere).

:func:`check_plugin` picks the check by the plugin's kind; :func:`registered_plugins` lists
every registered plugin, for one parametrized test over all of them; :func:`check_registers`
checks that a plugin module registers a class through its hook. pytest is not needed to
import this module.
"""

from __future__ import annotations

import json
import math
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .analysis import build_grids
from .claims import Finding, PaperFindings
from .estimator import Estimator, LayerFeatures
from .evaluator import EvalInputs, Evaluation, Evaluator
from .executor import Events, Executor, ProgressFn
from .findings import FindingResult, judge
from .interfaces import (
    Architecture,
    ClassInfo,
    DataSource,
    DataTransform,
    Halves,
    Plugin,
    Split,
    TaskSplit,
    TransferProtocol,
)
from .jobs import Job
from .observers import Observer, ReportInfo, RunInfo, Scalar
from .plugins import KINDS, PluginHost, Registry
from .records import HistoryPoint, JobRecord
from .results import ResultRow, RunResults
from .validity import CheckResult, RunView, ValidityCheck

__all__ = [
    "ContractError",
    "CHECKS",
    "FileRunner",
    "RequirementsMissing",
    "build",
    "check_architecture",
    "check_data_source",
    "check_data_transform",
    "check_estimator",
    "check_evaluator",
    "check_finding",
    "check_executor",
    "check_observer",
    "check_plugin",
    "check_protocol",
    "check_registers",
    "check_split",
    "check_validity_check",
    "contract_classes",
    "example_eval_inputs",
    "example_features",
    "example_results",
    "registered_plugins",
]


class ContractError(AssertionError):
    """A plugin broke its interface's contract; the message names the rule."""


class RequirementsMissing(Exception):
    """A plugin's optional requirements (``requires``) are not installed (outside pytest)."""


def _expect(condition: Any, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _numpy_state() -> bytes:
    """numpy's global RNG state, comparable with ``==``."""
    return repr(np.random.get_state(legacy=False)).encode()


def _skip(reason: str) -> None:
    try:
        import pytest
    except ImportError:  # not under pytest
        raise RequirementsMissing(reason) from None
    pytest.skip(reason)


def _workdir(workdir: str | Path | None) -> Path:
    return Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="transferbench-contract-"))


def build(plugin: type[Plugin] | Plugin, workdir: str | Path | None = None, base: type[Plugin] = Plugin) -> Any:
    """An instance of ``plugin``: itself if it already is one, else the class built from its
    validated ``example_params(workdir)`` (a fresh temporary folder when ``workdir`` is None).

    Skips (under pytest) when the class's ``requires`` are not installed.
    """
    if not isinstance(plugin, type):
        _expect(isinstance(plugin, base), f"{plugin!r} is not a {base.__name__}")
        return plugin
    _expect(issubclass(plugin, base), f"{plugin.__name__} is not a subclass of {base.__name__}")
    missing = plugin.missing_requirements()
    if missing:
        _skip(f"{plugin.__name__} needs {', '.join(missing)}: {plugin.install_hint}")
    params = plugin.Params.model_validate(plugin.example_params(_workdir(workdir)))
    return plugin(params)


# --------------------------------------------------------------------------- data sources


def check_data_source(source: type[DataSource] | DataSource, workdir: str | Path | None = None) -> None:
    """Classes indexed in order with unique ids; each split has ``input`` and a valid
    ``label``; ``to_tensor`` gives ``input_shape()``; ``normalization()`` fits the channels."""
    src: DataSource = build(source, workdir, DataSource)
    classes = list(src.classes())
    _expect(len(classes) >= 2, f"classes() gave {len(classes)} classes; a split needs at least 2")
    _expect([c.index for c in classes] == list(range(len(classes))), "classes()[i].index must be i")
    _expect(all(isinstance(c, ClassInfo) and c.id and c.name for c in classes),
            "every class must be a ClassInfo with an id and a name")
    _expect(len({c.id for c in classes}) == len(classes), "class ids must be unique")
    src.check()
    splits: tuple[Split, ...] = ("train", "eval")
    for split in splits:
        _check_rows(src, split, len(classes))


def _check_rows(src: DataSource, split: Split, num_classes: int) -> None:
    ds = src.load(split)
    _expect({"input", "label"} <= set(ds.column_names or ()),
            f"load({split!r}) must have columns input and label, has {ds.column_names}")
    row = next(iter(ds))
    x = src.to_tensor(row["input"])
    _expect(tuple(x.shape) == tuple(src.input_shape()),
            f"to_tensor gave shape {tuple(x.shape)} but input_shape() is {tuple(src.input_shape())}")
    _expect(x.dtype in (torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64),
            f"to_tensor must give uint8 or float, gave {x.dtype}")
    if hasattr(ds, "__len__"):
        labels = np.asarray(ds.with_format("numpy")["label"])
        _expect(labels.min() >= 0 and labels.max() < num_classes,
                f"load({split!r}) has labels outside 0..{num_classes - 1}")
    norm = src.normalization()
    if norm is not None:
        mean, std = norm
        _expect(len(mean) == len(std) == x.shape[0], "normalization() needs one mean and std per channel")
        _expect(all(s > 0 for s in std), "normalization() std values must be positive")


# --------------------------------------------------------------------------- splits


def example_classes() -> list[ClassInfo]:
    """The classes :func:`check_split` splits by default: 20 ImageNet classes (wnid ids)
    of two superclasses, man-made and natural."""
    from .imagenet import IMAGENET_WNIDS, classes_for_wnids

    return list(classes_for_wnids(IMAGENET_WNIDS[390:410]))


def check_split(split: type[TaskSplit] | TaskSplit, workdir: str | Path | None = None,
                classes: Sequence[ClassInfo] | None = None) -> None:
    """Disjoint, non-empty, sorted, deterministic halves, without touching numpy's or torch's
    global random state (on :func:`example_classes` unless ``classes`` are given)."""
    s: TaskSplit = build(split, workdir, TaskSplit)
    classes = list(classes) if classes is not None else example_classes()
    state, torch_state = _numpy_state(), torch.random.get_rng_state()
    halves = s.split(classes, 0)
    _expect(isinstance(halves, Halves), f"split() must return Halves, returned {type(halves).__name__}")
    _expect(halves.A and halves.B, "both halves must be non-empty")
    _expect(not set(halves.A) & set(halves.B), "the halves must be disjoint")
    _expect(set(halves.A) | set(halves.B) <= set(range(len(classes))), "halves must hold class indices")
    _expect(list(halves.A) == sorted(halves.A) and list(halves.B) == sorted(halves.B), "halves must be sorted")
    _expect(s.split(classes, 0) == halves, "split() must be deterministic for a seed")
    _expect(_numpy_state() == state, "split() must not touch numpy's global RNG")
    _expect(torch.equal(torch.random.get_rng_state(), torch_state), "split() must not touch torch's global RNG")


# --------------------------------------------------------------------------- protocols


def check_protocol(protocol: type[TransferProtocol] | TransferProtocol, workdir: str | Path | None = None,
                   num_layers: int = 8) -> None:
    """One action per layer for every n; multipliers >= 0; ``from_init`` and ``meanvar`` only on
    copied layers, never both.

    For ``n_meaning == "depth"``: layers 1..n copied (when ``needs_source``), the rest
    re-initialised. For ``"layer"``: every layer but n and the classifier gets one same
    action (copied, when ``needs_source``), and layer n another. The classifier is neither
    copied nor frozen, except by an ``evaluate_only`` protocol, which trains nothing and
    copies the classifier (it evaluates the source's own task), and by one that
    ``keeps_classifier`` (it copies it). A layer's ``start`` lies in [0, 1), and only a layer
    that trains has one above 0."""
    proto: TransferProtocol = build(protocol, workdir, TransferProtocol)
    _expect(proto.n_meaning in ("depth", "layer"), f"n_meaning must be 'depth' or 'layer', not {proto.n_meaning!r}")
    for n in range(1, num_layers):
        actions = proto.actions(n, num_layers)
        _expect(len(actions) == num_layers, f"n={n}: {len(actions)} actions for {num_layers} layers")
        _expect(all(a.lr_mult >= 0 for a in actions), "lr_mult must be >= 0")
        _expect(all(a.copy or not a.from_init for a in actions), f"n={n}: from_init needs copy")
        _expect(all(a.copy or not a.meanvar for a in actions), f"n={n}: meanvar needs copy")
        _expect(not any(a.meanvar and a.from_init for a in actions), f"n={n}: meanvar and from_init exclude each other")
        if proto.evaluate_only:
            _expect(not any(a.train for a in actions), f"n={n}: an evaluate_only protocol trains nothing")
            _expect(actions[-1].copy or not proto.needs_source, "an evaluate_only protocol copies the classifier")
        elif proto.keeps_classifier:
            _expect(actions[-1].copy and not actions[-1].from_init,
                    "a protocol with keeps_classifier copies the source's trained classifier")
        else:
            _expect(actions[-1].copy is False, "the classifier is never copied (unless keeps_classifier)")
            _expect(actions[-1].train, "the classifier always trains")
        _expect(all(0.0 <= a.start < 1.0 for a in actions), f"n={n}: start must be in [0, 1)")
        _expect(all(a.train or a.start == 0.0 for a in actions), f"n={n}: start is for layers that train")
        if not proto.needs_source:
            _expect(not any(a.copy for a in actions), "a protocol with needs_source=False copies nothing")
        if proto.n_meaning == "layer":
            rest = [a for i, a in enumerate(actions[:-1], start=1) if i != n]
            _expect(all(a == rest[0] for a in rest), f"n={n}: every layer but n and the classifier is treated alike")
            _expect(not rest or actions[n - 1] != rest[0], f"n={n}: layer n is treated unlike the others")
            if proto.needs_source:
                _expect(all(a.copy for a in rest), f"n={n}: the layers other than n are copied")
        else:
            _expect(all(not a.copy for a in actions[n:-1]), f"n={n}: layers above n are re-initialised")
            if proto.needs_source:
                _expect(all(a.copy for a in actions[:n]), f"n={n}: layers 1..n are copied")


# --------------------------------------------------------------------------- architectures


def check_architecture(arch: type[Architecture] | Architecture, workdir: str | Path | None = None,
                       input_shape: Sequence[int] | None = None, num_classes: int = 5) -> None:
    """Built for ``example_input_shape``: at least two layers with unique names that name
    real modules and own parameters, a forward pass, valid multipliers, deterministic init."""
    a: Architecture = build(arch, workdir, Architecture)
    shape = tuple(input_shape or a.example_input_shape)
    torch.manual_seed(0)
    model = a.build(num_classes, shape)
    layers = list(a.layers(model))
    _expect(len(layers) >= 2, "an architecture needs at least two layers (features and classifier)")
    _expect(len({layer.name for layer in layers}) == len(layers), "layer names must be unique")
    modules, params, state = dict(model.named_modules()), dict(model.named_parameters()), model.state_dict()
    for layer in layers:
        for m in layer.modules:
            _expect(m in modules or m in state, f"layer {layer.name} names unknown module {m!r}")
        owned = [p for p in params if any(p == m or p.startswith(m + ".") for m in layer.modules)]
        _expect(owned, f"layer {layer.name} owns no parameters")
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    _expect(out.shape[0] == 2 and out.shape[1] >= num_classes,
            f"the output for 2 examples and {num_classes} classes has shape {tuple(out.shape)}")
    for pname, (lr_m, wd_m) in a.param_multipliers(model).items():
        _expect(pname in params, f"param_multipliers names unknown parameter {pname!r}")
        _expect(lr_m >= 0 and wd_m >= 0, f"multipliers of {pname!r} must be >= 0")
    torch.manual_seed(0)
    again = a.build(num_classes, shape)
    same = all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), again.state_dict().values()))
    _expect(same, "build() must initialise deterministically from torch's seed")
    _check_prefixes(a, model, shape, len(layers))


def _check_prefixes(a: Architecture, model: nn.Module, shape: tuple[int, ...], num_layers: int) -> None:
    """Where ``split_at`` cuts the network, ``suffix(prefix(x)) == model(x)`` and
    ``prefix_outputs`` gives each prefix's output."""
    model.eval()
    x = torch.randn(2, *shape)
    ns = [n for n in range(1, num_layers) if a.split_at(model, n) is not None]
    with torch.no_grad():
        whole = model(x)
        outputs = a.prefix_outputs(model, x, ns) if ns else {}
        for n in ns:
            parts = a.split_at(model, n)
            if parts is None:
                raise ContractError(f"split_at({n}) cut the network once and not again")
            prefix, suffix = parts
            alone = prefix(x)
            _expect(torch.allclose(suffix(alone), whole, atol=1e-5), f"split_at({n}): suffix(prefix(x)) != model(x)")
            _expect(outputs is not None and torch.allclose(outputs[n], alone, atol=1e-6),
                    f"prefix_outputs differs from split_at({n})'s prefix")


# --------------------------------------------------------------------------- executors


class FileRunner:
    """A picklable :class:`~transferbench.JobRunner` that logs starts and ends to a file, so
    that executors running jobs in other processes can be checked. It trains nothing."""

    device = "cpu"
    threads = 1

    def __init__(self, log: str | Path) -> None:
        self.log = str(log)

    def lines(self) -> list[str]:
        """``start:<id>`` and ``end:<id>`` in the order they happened."""
        try:
            with open(self.log) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def finished(self, job: Job) -> JobRecord | None:
        return JobRecord(job_id=job.id, status="ok", top1=0.5) if f"end:{job.id}" in self.lines() else None

    def record_failure(self, job: Job, error: str) -> JobRecord:
        return JobRecord(job_id=job.id, status="failed", error=error)

    def __call__(self, job: Job, progress: Callable[[int, int, dict[str, float]], None] | None = None) -> JobRecord:
        with open(self.log, "a") as f:
            f.write(f"start:{job.id}\n")
        if progress is not None:
            progress(1, 1, {"loss": 0.0, "top1": math.nan})
        with open(self.log, "a") as f:
            f.write(f"end:{job.id}\n")
        return JobRecord(job_id=job.id, status="ok", top1=0.5)

    def run_cohort(self, jobs: Sequence[Job], progress: Callable[[Job, int, int, dict[str, float]], None] | None = None
                   ) -> list[JobRecord]:
        """Logs ``cohort:<id>+<id>...``, then runs each member."""
        with open(self.log, "a") as f:
            f.write(f"cohort:{'+'.join(job.id for job in jobs)}\n")

        def of(job: Job) -> ProgressFn | None:
            if progress is None:
                return None
            return lambda s, t, i: progress(job, s, t, i)

        return [self(job, of(job)) for job in jobs]


def _job(jid: str, dep: str | None = None, n: int = 1, cohort: str | None = None) -> Job:
    return Job(jid, "transfer" if dep else "base", "B", "A" if dep else None, n if dep else 0, (0, 1), 0, dep,
               {"name": "frozen"} if dep else None, data_seed=7 if cohort else None, cohort=cohort)


class _Recorder(Events):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[tuple[str, str]] = []

    def job_started(self, job: Job) -> None:
        self.started.append(job.id)

    def job_finished(self, job: Job, record: JobRecord) -> None:
        self.finished.append((job.id, record.status))


def check_executor(executor: type[Executor] | Executor, workdir: str | Path | None = None) -> None:
    """Every job run once, each after the job it depends on, each start and end reported; with
    ``cohorts`` on, each cohort handed to ``runner.run_cohort`` once, after its sources."""
    workdir = _workdir(workdir)
    ex: Executor = build(executor, workdir, Executor)
    # "e" waits for two jobs (an estimator on a's features with d as its reference network)
    two = Job("e", "estimate", "B", "A", 1, (0, 1), 0, "a", after=("d",))
    jobs = [_job("a"), _job("b", "a"), _job("c"), _job("d", "b"), two]
    runner = FileRunner(workdir / "executor-log.txt")
    events = _Recorder()
    ex.run(jobs, runner, events)
    lines = runner.lines()
    ends = sorted(line for line in lines if line.startswith("end:"))
    _expect(ends == ["end:a", "end:b", "end:c", "end:d", "end:e"], f"every job must run once; ran {ends}")
    _expect(lines.index("end:a") < lines.index("start:b"), "b started before a, the job it copies from, ended")
    _expect(lines.index("end:b") < lines.index("start:d"), "d started before b, the job it copies from, ended")
    _expect(lines.index("end:a") < lines.index("start:e") and lines.index("end:d") < lines.index("start:e"),
            "e started before both jobs it depends on (job.dependencies) ended")
    _expect(sorted(events.finished) == [(j, "ok") for j in "abcde"], f"job_finished reports: {events.finished}")
    _expect(sorted(events.started) == list("abcde"), f"job_started reports: {events.started}")
    if ex.cohorts:
        _check_cohorts(ex, workdir)


def _check_cohorts(ex: Executor, workdir: Path) -> None:
    """An executor that trains cohorts hands each cohort to ``runner.run_cohort`` once, after
    the jobs its members depend on, and reports every member."""
    jobs = [_job("a"), _job("p"), _job("b", "a", 1, "k"), _job("c", "p", 2, "k"), _job("d", "b")]
    runner = FileRunner(workdir / "executor-cohort-log.txt")
    events = _Recorder()
    ex.run(jobs, runner, events)
    lines = runner.lines()
    ends = sorted(line for line in lines if line.startswith("end:"))
    _expect(ends == ["end:a", "end:b", "end:c", "end:d", "end:p"], f"every job must run once; ran {ends}")
    _expect(lines.count("cohort:b+c") == 1, f"the cohort (b, c) must be trained by one runner.run_cohort: {lines}")
    _expect(lines.index("end:a") < lines.index("cohort:b+c") and lines.index("end:p") < lines.index("cohort:b+c"),
            "the cohort started before the jobs its members copy from ended")
    _expect(lines.index("end:b") < lines.index("start:d"), "d started before b, the cohort member it copies from")
    _expect(sorted(events.finished) == [(j, "ok") for j in "abcdp"], f"job_finished reports: {events.finished}")
    _expect(sorted(events.started) == list("abcdp"), f"job_started reports: {events.started}")


# --------------------------------------------------------------------------- estimators


def example_features(informative: bool, seed: int = 0) -> LayerFeatures:
    """Layer features for :func:`check_estimator`: labels that follow well separated clusters
    (with a rotated copy as the reference network's features, and source logits over 7 source
    classes that mostly predict the label), or noise with unrelated labels, an unrelated
    reference and unrelated source logits."""
    g = torch.Generator().manual_seed(seed)
    k, d = 5, 12
    centres = torch.randn(k, d, generator=g) * 4

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % k
        x = centres[y] + torch.randn(n, d, generator=g) if informative else torch.randn(n, d, generator=g)
        return x, y

    (x, y), (xe, ye) = split(200), split(100)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    if informative:
        ref = LayerFeatures(x @ q, y, xe @ q, ye, k, 2)
    else:
        ref = LayerFeatures(torch.randn(200, d, generator=g), y, torch.randn(100, d, generator=g), ye, k, 2)
    def logits(labels: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(len(labels), 7, generator=g)
        return noise + 4 * torch.nn.functional.one_hot(labels, 7) if informative else noise

    return LayerFeatures(x, y, xe, ye, k, 2, ref, seed, logits(y), logits(ye))


def check_estimator(estimator: type[Estimator] | Estimator, workdir: str | Path | None = None) -> None:
    """Informative features score higher than noise (higher = more transferable), the same
    features the same score, the features left unchanged, a positive cost estimate or None."""
    est: Estimator = build(estimator, workdir, Estimator)
    good, bad = example_features(True), example_features(False)
    before = good.train.clone()
    high, low = est.score(good), est.score(bad)
    _expect(isinstance(high, float) and math.isfinite(high) and math.isfinite(low),
            f"scores must be finite floats, got {high!r} and {low!r}")
    _expect(high > low, f"informative features scored {high:.4g}, noise {low:.4g}: higher must mean more transferable")
    _expect(est.score(good) == high, "the same features must give the same score")
    _expect(torch.equal(good.train, before), "score() must not change the features it is given")
    cost = est.cost_flops(200, 100, 12, 5)
    _expect(cost is None or cost > 0, f"cost_flops must be positive or None, got {cost!r}")


# --------------------------------------------------------------------------- evaluators


def example_eval_inputs(classes: int = 3, seed: int = 0) -> EvalInputs:
    """Made-up inputs for :func:`check_evaluator`: 24 held-out and 24 training examples of 8
    features, ``classes`` classes, in two batches each."""
    gen = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(24, 8, generator=gen), torch.randn(24, 8, generator=gen)
    y, yt = torch.arange(24) % classes, torch.arange(24) % classes

    def batches(inputs: torch.Tensor, labels: torch.Tensor) -> Callable[[], list[tuple[torch.Tensor, torch.Tensor]]]:
        return lambda: [(inputs[:12], labels[:12]), (inputs[12:], labels[12:])]

    return EvalInputs(batches(x, y), batches(xt, yt), classes, torch.device("cpu"), seed)


def _example_networks(count: int, classes: int = 3) -> list[nn.Module]:
    nets: list[nn.Module] = []
    for i in range(count):
        torch.manual_seed(100 + i)
        nets.append(nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, classes)).eval())
    return nets


def check_evaluator(evaluator: type[Evaluator] | Evaluator, workdir: str | Path | None = None) -> None:
    """On ``arity`` small made-up networks (with BatchNorm) and made-up inputs: an
    :class:`Evaluation` with one finite number for each of ``quantities`` (declared, unique)
    and JSON-serialisable details, the networks left unchanged, and the same numbers again
    for the same networks, inputs and seed."""
    ev: Evaluator = build(evaluator, workdir, Evaluator)
    _expect(ev.arity >= 1, f"arity must be at least 1, got {ev.arity}")
    _expect(bool(ev.quantities) and len(set(ev.quantities)) == len(ev.quantities),
            f"an evaluator declares its quantities, each once: {ev.quantities!r}")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    nets = _example_networks(ev.arity)
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    inputs = example_eval_inputs()
    torch.set_rng_state(state)
    got = ev.evaluate(nets, inputs)
    _expect(isinstance(got, Evaluation), f"evaluate() returned {got!r}, not an Evaluation")
    _expect(set(got.values) == set(ev.quantities), f"evaluate() returned {sorted(got.values)}, its quantities are "
            f"{sorted(ev.quantities)}")
    _expect(all(isinstance(v, float) and math.isfinite(v) for v in got.values.values()),
            f"every value must be a finite float: {got.values}")
    try:
        json.dumps(got.details)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"details must be plain JSON data: {exc}") from None
    for net, was in zip(nets, before):
        _expect(all(torch.equal(v, was[k]) for k, v in net.state_dict().items()),
                "evaluate() must not change the networks it is given")
    torch.set_rng_state(state)
    _expect(ev.evaluate(nets, inputs).values == got.values, "the same networks and inputs must give the same values")


# --------------------------------------------------------------------------- observers


def example_run(run_dir: str | Path) -> tuple[RunInfo, list[Job], list[JobRecord], ReportInfo]:
    """A small made-up run for :func:`check_observer`: two base networks and one transfer,
    one of them failed, with their records and a report (files written under ``run_dir``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    jobs = [_job("base-a"), _job("base-b"), _job("anb-2", "base-a", 2)]
    labels = {"base-a": "baseA (exp, seed 0)", "base-b": "baseB (exp, seed 0)", "anb-2": "AnB n=2 (exp, seed 0)"}
    networks: dict[str, dict[str, Any]] = {
        j.id: {"label": labels[j.id], "experiment": "exp", "treatment": labels[j.id].split()[0], "split_seed": 0,
               "n": j.n, "kind": j.kind, "target": j.target, "source": j.source,
               "protocol": j.protocol_spec["name"] if j.protocol_spec else None, "num_classes": j.num_classes,
               "seed": j.seed, "depends_on": j.depends_on, "cells": 1} for j in jobs}
    config = {"name": "contract", "data": {"name": "blobs"}, "architecture": {"name": "mlp", "widths": [4, 4]},
              "train": {"lr": 0.1, "epochs": 2}, "eval": {"best_k": 1}}
    info = RunInfo("contract", run_dir, config, "0" * 64, ("h1", "h2", "out"), tuple(jobs),
                   tuple(j.id for j in jobs), networks)
    history = [HistoryPoint(step=s, epoch=s / 4, top1=0.25 * s, top5=1.0, train_loss=1.0 / s) for s in (1, 2, 4)]
    records = [JobRecord(job_id="base-a", status="ok", top1=1.0, top5=1.0, top1_best_k=1.0, best_k=1,
                         history=history, train_time_s=0.5, steps=4, num_classes=2),
               JobRecord(job_id="base-b", status="failed", error="loss is NaN"),
               JobRecord(job_id="anb-2", status="ok", top1=0.5, top5=1.0, top1_best_k=0.5, best_k=1,
                         history=history[:2], train_time_s=0.25, steps=2, num_classes=2)]
    table = run_dir / "results_top1.csv"
    table.write_text("experiment,split,split_seed,n,metric,baseA,AnB\nexp,s,0,0,top1,1.0,\nexp,s,0,2,top1,,0.5\n")
    cells: tuple[dict[str, Scalar], ...] = (
             {"experiment": "exp", "treatment": "baseA", "n": 0, "layer": "", "count": 1, "mean": 1.0,
              "std": None, "ci95_low": None, "ci95_high": None},
             {"experiment": "exp", "treatment": "AnB", "n": 2, "layer": "h2", "count": 1, "mean": 0.5,
              "std": None, "ci95_low": None, "ci95_high": None})
    return info, jobs, records, ReportInfo(run_dir, (table,), "top1", cells)


def check_observer(observer: type[Observer] | Observer, workdir: str | Path | None = None) -> None:
    """Every event of :func:`example_run` (a failed job and NaN in progress included) is
    taken without an error, then :meth:`~transferbench.Observer.close`. What the observer
    wrote is for its own tests to read back."""
    workdir = _workdir(workdir)
    obs: Observer = build(observer, workdir, Observer)
    info, jobs, records, report = example_run(workdir / "run")
    obs.run_started(info)
    for job, record in zip(jobs, records):
        obs.job_started(job)
        for step in (1, 2, 3, 4):
            top1 = math.nan if step < 2 else 0.5
            obs.job_progress(job, step, 4, {"loss": 1.0 / step, "top1": top1})
        obs.job_finished(job, record)
    obs.report_written(report)
    obs.close()
    json.dumps([r.model_dump(mode="json") for r in records])  # the records themselves are sound


# --------------------------------------------------------------------------- by kind


# --------------------------------------------------------------------------- validity checks


def example_results() -> RunResults:
    """A small made-up run for :func:`check_validity_check`: three split seeds of baseB and
    BnB, BnB+, AnB, AnB+ at n = 1 and 2 (10 classes), one failed and one pending network."""
    rows = []
    for seed in range(3):
        for treatment, n, top1 in [("baseB", 0, 0.80), ("BnB", 1, 0.79), ("BnB", 2, 0.77), ("BnB+", 1, 0.80),
                                   ("BnB+", 2, 0.81), ("AnB", 1, 0.78), ("AnB", 2, 0.70), ("AnB+", 1, 0.82),
                                   ("AnB+", 2, 0.81)]:
            base = treatment == "baseB"
            rows.append(ResultRow("exp", "random", seed, treatment, n, f"{treatment}-{n}-{seed}", "ok",
                                  top1=top1 + 0.01 * seed, top5=1.0, kind="base" if base else "transfer",
                                  source=None if base else treatment[0], target="B", num_classes=10))
    rows.append(ResultRow("exp", "random", 3, "AnB", 2, "AnB-2-3", "failed", error="loss is NaN", kind="transfer",
                          source="A", target="B", num_classes=10))
    rows.append(ResultRow("exp", "random", 3, "BnB", 2, "BnB-2-3", "pending", kind="transfer", source="B",
                          target="B", num_classes=10))
    return RunResults("contract", "0" * 16, 3, ("l1", "l2", "out"), tuple(rows))


def check_validity_check(check: type[ValidityCheck] | ValidityCheck, workdir: str | Path | None = None) -> None:
    """On a small made-up run and on an empty one: a list of :class:`CheckResult`, each ``pass``
    or ``warn`` with a message, each warning with a remedy, and no error."""
    chk: ValidityCheck = build(check, workdir, ValidityCheck)
    chk.name = chk.name or "contract"
    empty = RunResults("empty", "0" * 16, 3, ("l1", "l2", "out"), ())
    for results in (example_results(), empty):
        found = chk.check(RunView(results, build_grids(results), records=results.records.get))
        _expect(isinstance(found, list), f"check() must return a list, got {type(found).__name__}")
        for r in found:
            _expect(isinstance(r, CheckResult), f"check() returned {r!r}, not a CheckResult")
            _expect(r.status in ("pass", "warn"), f"status must be pass or warn, got {r.status!r}")
            _expect(bool(r.message), "every result needs a message")
            _expect(r.status == "pass" or bool(r.remedy), f"a warning needs a remedy: {r.message}")


# --------------------------------------------------------------------------- data transforms


def check_data_transform(transform: type[DataTransform] | DataTransform, workdir: str | Path | None = None,
                         shape: tuple[int, ...] = (3, 32, 32), classes: int = 5) -> None:
    """On a made-up batch of ``shape`` images (uint8 and float): the inputs' shape and dtype
    kept, labels in ``0..classes-1``, neither argument changed in place, the same output every
    time, and each example's output independent of the batch (a batch gives what its two
    halves give, in any order), with no global RNG touched."""
    t: DataTransform = build(transform, workdir, DataTransform)
    _expect(t.check_shape(shape) is None, f"example_params must suit {shape} images: {t.check_shape(shape)}")
    gen = torch.Generator().manual_seed(0)
    for inputs in (torch.randint(0, 256, (6, *shape), generator=gen, dtype=torch.uint8),
                   torch.rand((6, *shape), generator=gen)):
        labels = torch.arange(6) % classes
        before_x, before_y = inputs.clone(), labels.clone()
        state = torch.get_rng_state()
        x, y = t.apply(inputs, labels, classes)
        _expect(torch.equal(torch.get_rng_state(), state), "apply() must not use torch's global RNG (seed a "
                "torch.Generator from the settings)")
        _expect(torch.equal(inputs, before_x) and torch.equal(labels, before_y), "apply() changed its arguments "
                "in place")
        _expect(x.shape == inputs.shape and x.dtype == inputs.dtype,
                f"apply() must keep the inputs' shape and dtype: {tuple(inputs.shape)} {inputs.dtype} became "
                f"{tuple(x.shape)} {x.dtype}")
        _expect(y.shape == labels.shape and bool(((y >= 0) & (y < classes)).all()), "labels must stay in "
                "0..classes-1, one per example")
        again = t.apply(inputs.clone(), labels.clone(), classes)
        _expect(torch.equal(again[0], x) and torch.equal(again[1], y), "apply() must give the same output every "
                "time (seed any randomness from the settings)")
        order = torch.tensor([5, 3, 1, 4, 2, 0])
        halves = [t.apply(inputs[order[:3]], labels[order[:3]], classes),
                  t.apply(inputs[order[3:]], labels[order[3:]], classes)]
        _expect(torch.equal(torch.cat([h[0] for h in halves]), x[order])
                and torch.equal(torch.cat([h[1] for h in halves]), y[order]),
                "each example's output must depend on that example alone, not on the batch or its order")


# --------------------------------------------------------------------------- findings

_VERDICTS = ("reproduced", "contradicted", "inconclusive", "not determined")


def _check_claim(f: Finding, where: str) -> None:
    _expect(isinstance(f, Finding), f"{where}: {f!r} is not a Finding")
    _expect(bool(f.name) and bool(f.claim) and bool(f.source),
            f"{where}: every finding needs a name, the paper's claim and the source of its effect ({f!r})")
    _expect(f.kind in ("effect", "equivalence"), f"{where} {f.name!r}: kind must be effect or equivalence")
    _expect(f.effect is None or math.isfinite(f.effect), f"{where} {f.name!r}: a stated effect must be finite")
    _expect(f.margin is None or f.margin > 0, f"{where} {f.name!r}: a control's margin must be above 0")


def check_finding(plugin: type[PaperFindings] | PaperFindings, workdir: str | Path | None = None) -> None:
    """A findings plugin names its paper and the experiments it needs; each finding has a name
    (unique), the paper's claim and the source of its effect (a stated effect finite, a margin
    above 0; a finding without an effect is judged on its direction); judged on a small made-up
    run and on an empty one, every finding gives a :class:`FindingResult` with one of the four
    verdicts, and on the empty run "not determined"."""
    p: PaperFindings = build(plugin, workdir, PaperFindings)
    _expect(bool(p.paper) and bool(p.shape), "a findings plugin needs `paper` (the citation) and `shape` "
            "(the experiments its findings need)")
    found = list(p.findings())
    _expect(bool(found), "findings() returned no finding")
    names = [f.name for f in found]
    _expect(len(set(names)) == len(names), f"finding names must be unique: {names}")
    reference = p.reference("top1", None)
    for f in found:
        _check_claim(f, "finding")
        for part in f.parts():
            _check_claim(part, f"part of {f.name!r}")
    empty = RunResults("empty", "0" * 16, 3, ("l1", "l2", "out"), ())
    for results in (example_results(), empty):
        grids = build_grids(results)
        for f in found:
            margin = f.margin or p.default_margin(reference) or 0.01
            r = judge(f, grids, reference, margin=margin if f.kind == "equivalence" else None, resamples=20)
            _expect(isinstance(r, FindingResult), f"judging {f.name!r} gave {r!r}, not a FindingResult")
            _expect(r.verdict in _VERDICTS, f"{f.name!r}: unknown verdict {r.verdict!r}")
            _expect(results is not empty or r.verdict == "not determined",
                    f"{f.name!r} has a verdict on a run without networks: {r.verdict}")


CHECKS: dict[str, Callable[..., None]] = {
    "data_source": check_data_source,
    "split": check_split,
    "protocol": check_protocol,
    "architecture": check_architecture,
    "executor": check_executor,
    "observer": check_observer,
    "estimator": check_estimator,
    "check": check_validity_check,
    "findings": check_finding,
    "data_transform": check_data_transform,
    "evaluator": check_evaluator,
}


def kind_of(plugin: type[Plugin] | Plugin) -> str:
    """The plugin kind (``split``, ``observer``, ...) of a plugin class or instance."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    for kind, (_, base) in KINDS.items():
        if issubclass(cls, base):
            return kind
    raise ContractError(f"{cls.__name__} implements none of the plugin interfaces")


def check_plugin(plugin: type[Plugin] | Plugin, workdir: str | Path | None = None) -> None:
    """The contract check of the plugin's kind (``check_split`` for a split, ...)."""
    kind = kind_of(plugin)
    check = CHECKS.get(kind)
    if check is None:
        raise ContractError(f"no contract check for plugins of kind {kind!r}")
    check(plugin, workdir)


def registered_plugins(registry: Registry | None = None, origin: str | None = None) -> list[tuple[str, str, type]]:
    """``(kind, name, class)`` of every registered plugin (built-in and installed packages,
    or those whose origin starts with ``origin``), for ``pytest.mark.parametrize``."""
    registry = registry or PluginHost().registry()
    return [(e.kind, e.name, e.factory) for e in registry
            if origin is None or e.origin.startswith(origin)]


def contract_classes(module: types.ModuleType | object) -> dict[str, tuple[str, type]]:
    """What a plugin module registers through its hooks: ``{name: (kind, class)}``, read
    without loading any other plugin."""
    host = PluginHost(load_entry_points=False)
    if host.pm.is_registered(module):  # a built-in plugin module
        return {e.name: (e.kind, e.factory) for e in host.registry() if e.plugin == host.pm.get_name(module)}
    plugin_name = host.register(module, "transferbench-testing-subject", origin="test")
    return {e.name: (e.kind, e.factory) for e in host.registry() if e.plugin == plugin_name}


def check_registers(module: types.ModuleType | object, kind: str, name: str, cls: type | None = None) -> type:
    """Check that ``module``'s hooks register ``name`` as a plugin of ``kind`` (and as
    ``cls``, when given); return the registered class."""
    found = contract_classes(module)
    _expect(name in found, f"{getattr(module, '__name__', module)!r} registers no {name!r}; it registers "
            f"{sorted(found) or 'nothing'}")
    got_kind, got_cls = found[name]
    _expect(got_kind == kind, f"{name!r} is registered as a {got_kind}, not a {kind}")
    _expect(cls is None or got_cls is cls, f"{name!r} is registered as {got_cls!r}, not {cls!r}")
    return got_cls
