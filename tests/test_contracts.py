"""Contract tests: every registered plugin of every kind honours its interface.

New plugins (built-in or installed) are picked up automatically; each is exercised with its
own ``example_params(workdir)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferbench import (
    Architecture,
    ClassInfo,
    DataSource,
    Estimator,
    Halves,
    JobRecord,
    LayerFeatures,
    TaskSplit,
    TransferProtocol,
)
from transferbench.plugins import PluginHost

REGISTRY = PluginHost().registry()


def _names(kind: str) -> list[str]:
    return REGISTRY.names(kind)


def _make(kind: str, name: str, workdir):
    factory = REGISTRY.get(kind, name).factory
    missing = factory.missing_requirements()
    if missing:  # an optional extra that is not installed here
        pytest.skip(f"{kind} {name!r} needs {', '.join(missing)}: {factory.install_hint}")
    params = factory.Params.model_validate(factory.example_params(workdir))
    return factory(params)


def test_no_builtin_plugin_failed_to_load():
    assert [f for f in REGISTRY.failures if f.origin == "built-in"] == []


# --------------------------------------------------------------------------- data sources


@pytest.fixture(scope="module", params=_names("data_source"))
def source(request, tmp_path_factory) -> DataSource:
    return _make("data_source", request.param, tmp_path_factory.mktemp(request.param))


def test_data_source_classes_are_indexed_in_order(source):
    classes = list(source.classes())
    assert len(classes) >= 2
    assert [c.index for c in classes] == list(range(len(classes)))
    assert all(isinstance(c, ClassInfo) and c.id and c.name for c in classes)
    assert len({c.id for c in classes}) == len(classes), "class ids must be unique"


@pytest.mark.parametrize("split", ["train", "eval"])
def test_data_source_rows_have_input_and_valid_label(source, split):
    source.check()
    ds = source.load(split)
    assert {"input", "label"} <= set(ds.column_names)
    row = next(iter(ds))
    x = source.to_tensor(row["input"])
    assert tuple(x.shape) == tuple(source.input_shape())
    assert x.dtype in (torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64)
    labels = np.asarray(ds.with_format("numpy")["label"]) if hasattr(ds, "__len__") else None
    if labels is not None:
        assert labels.min() >= 0 and labels.max() < len(source.classes())
    norm = source.normalization()
    if norm is not None:
        mean, std = norm
        assert len(mean) == len(std) == x.shape[0] and all(s > 0 for s in std)


# --------------------------------------------------------------------------- splits


def _classes_for(split_name: str) -> list[ClassInfo]:
    # ImageNet-style ids so that wnid-based splits work; 20 classes, two superclasses
    from transferbench.imagenet import IMAGENET_WNIDS, classes_for_wnids

    return list(classes_for_wnids(IMAGENET_WNIDS[390:410]))


@pytest.mark.parametrize("name", _names("split"))
def test_split_gives_disjoint_deterministic_halves(name, tmp_path):
    split: TaskSplit = _make("split", name, tmp_path)
    classes = _classes_for(name)
    state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    halves = split.split(classes, 0)
    assert isinstance(halves, Halves)
    assert halves.A and halves.B and not set(halves.A) & set(halves.B)
    assert set(halves.A) | set(halves.B) <= set(range(len(classes)))
    assert list(halves.A) == sorted(halves.A) and list(halves.B) == sorted(halves.B)
    assert split.split(classes, 0) == halves
    assert np.array_equal(np.random.get_state()[1], state[1]), "must not touch numpy's global RNG"
    assert torch.equal(torch.random.get_rng_state(), torch_state), "must not touch torch's global RNG"


# --------------------------------------------------------------------------- protocols


@pytest.mark.parametrize("name", _names("protocol"))
@pytest.mark.parametrize("n", [1, 3, 7])
def test_protocol_gives_one_action_per_layer(name, n, tmp_path):
    proto: TransferProtocol = _make("protocol", name, tmp_path)
    actions = proto.actions(n, 8)
    assert len(actions) == 8
    assert actions[-1].copy is False, "the classifier is never copied"
    assert actions[-1].train, "the classifier always trains"
    assert all(not a.copy for a in actions[n:]), "layers above n are re-initialised"
    if proto.needs_source:
        assert all(a.copy for a in actions[:n]), "layers 1..n are copied"
    else:
        assert not any(a.copy for a in actions)
    assert all(a.lr_mult >= 0 for a in actions)


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("name", _names("architecture"))
def test_architecture_builds_and_names_its_layers(name, tmp_path):
    arch: Architecture = _make("architecture", name, tmp_path)
    shape = tuple(arch.example_input_shape)
    torch.manual_seed(0)
    model = arch.build(5, shape)
    layers = list(arch.layers(model))
    assert len(layers) >= 2
    assert len({line.name for line in layers}) == len(layers)
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    state = model.state_dict()
    for layer in layers:
        for m in layer.modules:
            assert m in modules or m in state, f"layer {layer.name} names unknown module {m!r}"
        owned = [p for p in params if any(p == m or p.startswith(m + ".") for m in layer.modules)]
        assert owned, f"layer {layer.name} owns no parameters"
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape[0] == 2 and out.shape[1] >= 5
    for pname, (lr_m, wd_m) in arch.param_multipliers(model).items():
        assert pname in params and lr_m >= 0 and wd_m >= 0
    torch.manual_seed(0)
    again = arch.build(5, shape)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


# --------------------------------------------------------------------------- executors


class FileRunner:
    """A picklable runner that logs starts and ends to a file, so remote executors can use it.

    It implements the public JobRunner contract and nothing more.
    """

    device = "cpu"
    threads = 1

    def __init__(self, log) -> None:
        self.log = str(log)

    def _lines(self) -> list[str]:
        try:
            with open(self.log) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def finished(self, job):
        return JobRecord(job_id=job.id, status="ok", top1=0.5) if f"end:{job.id}" in self._lines() else None

    def record_failure(self, job, error):
        return JobRecord(job_id=job.id, status="failed", error=error)

    def __call__(self, job, progress=None):
        with open(self.log, "a") as f:
            f.write(f"start:{job.id}\n")
        if progress is not None:
            progress(1, 1, {"loss": 0.0})
        with open(self.log, "a") as f:
            f.write(f"end:{job.id}\n")
        return JobRecord(job_id=job.id, status="ok", top1=0.5)


@pytest.mark.parametrize("name", _names("executor"))
def test_executor_runs_every_job_after_its_dependency(name, tmp_path):
    from transferbench import Events, Job

    executor = _make("executor", name, tmp_path)

    def job(jid, dep=None):
        return Job(jid, "transfer" if dep else "base", "B", "A" if dep else None, 1 if dep else 0, (0, 1), 0, dep)

    # "e" waits for two jobs (an estimator on baseA's features with baseB as its reference)
    two = Job("e", "estimate", "B", "A", 1, (0, 1), 0, "a", after=("d",))
    jobs = [job("a"), job("b", "a"), job("c"), job("d", "b"), two]
    runner = FileRunner(tmp_path / "log.txt")

    class Recorder(Events):
        def __init__(self):
            self.finished = []

        def job_finished(self, job, record):
            self.finished.append((job.id, record.status))

    events = Recorder()
    executor.run(jobs, runner, events)
    lines = runner._lines()
    assert sorted(line for line in lines if line.startswith("end:")) == ["end:a", "end:b", "end:c", "end:d", "end:e"]
    assert lines.index("end:a") < lines.index("start:b")
    assert lines.index("end:b") < lines.index("start:d")
    assert lines.index("end:a") < lines.index("start:e") and lines.index("end:d") < lines.index("start:e")
    assert sorted(events.finished) == [("a", "ok"), ("b", "ok"), ("c", "ok"), ("d", "ok"), ("e", "ok")]


# --------------------------------------------------------------------------- estimators


def _layer_features(informative: bool, seed: int = 0) -> LayerFeatures:
    """Features whose labels follow well separated clusters (with a rotated copy as the
    reference network's), or noise with unrelated labels and an unrelated reference."""
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
    return LayerFeatures(x, y, xe, ye, k, 2, ref, seed)


@pytest.mark.parametrize("name", _names("estimator"))
def test_estimator_scores_informative_features_above_noise(name, tmp_path):
    estimator: Estimator = _make("estimator", name, tmp_path)
    good, bad = _layer_features(True), _layer_features(False)
    before = good.train.clone()
    high, low = estimator.score(good), estimator.score(bad)
    assert isinstance(high, float) and np.isfinite(high) and np.isfinite(low)
    assert high > low, "higher must mean more transferable"
    assert estimator.score(good) == high, "deterministic for the same features"
    assert torch.equal(good.train, before), "must not change the features it is given"
    cost = estimator.cost_flops(200, 100, 12, 5)
    assert cost is None or cost > 0
