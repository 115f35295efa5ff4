"""``transferbench export``: a trained network of a run as a standalone weights file.

The output of one run becomes the source of the next (``source: {checkpoint: FILE}``,
docs/your-data.md). :func:`export_network` picks one network of a run directory by job id
and/or by experiment, treatment, n and split seed, and writes, each atomically:

* ``FILE.safetensors``: the network's weights, byte for byte its checkpoint in the run (so
  its SHA-256, which names it in the next run's job ids, is the one the run recorded);
* ``FILE.json``: what it is: the architecture config (name and params), the input shape and
  normalisation, the classes it was trained on, its layers, the job and cells it came from,
  its accuracy;
* with ``init=True``, ``FILE.init.safetensors``: the weights it started training from,
  recomputed exactly (what ``reinit`` with ``reset: initial`` resets a layer to; give it as
  ``init:`` beside ``checkpoint:``). For a base network, its initialisation from its seed;
  for a transferred one, the state its job built before training: layers 1..n as its
  protocol copied them from its source (the source's checkpoint or weights file, or the
  source's own initial weights), its own initialisation elsewhere. What cannot be rebuilt
  exactly (the source's weights gone or changed, the job no longer in the run's config,
  layers it kept frozen that do not come out equal) is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .config import Augment, PluginRef, load_config, read_yaml
from .errors import ConfigError, RunDirError, TransferbenchError
from .files import atomic_copy, atomic_target, atomic_write_json, sha256_file
from .network import build_target, initial_state, input_shape, under
from .planfile import CellEntry, JobEntry, PlanFile
from .plugins import get_registry
from .records import RecordError
from .resolve import instantiate, resolve
from .sources import SourceFileError, load_state
from .store import RunStore

__all__ = ["Exported", "Selection", "export_network"]

#: The JSON written beside an exported network.
EXPORT_FORMAT = 1


@dataclass(frozen=True)
class Selection:
    """Which network of a run to export; every field left None matches anything."""

    job: str | None = None
    experiment: str | None = None
    treatment: str | None = None
    n: int | None = None
    seed: int | None = None

    def matches(self, job_id: str, cell: CellEntry | None) -> bool:
        if self.job is not None and not job_id.startswith(self.job):
            return False
        wanted = {"experiment": self.experiment, "treatment": self.treatment, "n": self.n, "split_seed": self.seed}
        if cell is None:
            return all(v is None for v in wanted.values())
        return all(v is None or getattr(cell, k) == v for k, v in wanted.items())

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.__dict__.items() if v is not None]
        return ", ".join(parts) or "no selection"


@dataclass(frozen=True)
class Exported:
    """What :func:`export_network` wrote."""

    job_id: str
    weights: Path
    info: Path
    init: Path | None
    sha256: str


def _cell_text(cell: CellEntry) -> str:
    return f"--experiment {cell.experiment} --treatment {cell.treatment} --n {cell.n} --seed {cell.split_seed}"


def _pick(plan: PlanFile, sel: Selection) -> tuple[str, list[CellEntry]]:
    """The one network the selection names, and its cells.

    Raises:
        ConfigError: no network, or several, match.
    """
    jobs = {jid: j for jid, j in plan.jobs.items() if j.kind != "estimate"}
    cells: dict[str, list[CellEntry]] = {}
    for cell in plan.cells:
        cells.setdefault(cell.job_id, []).append(cell)
    found = {jid: [c for c in cells.get(jid, []) if sel.matches(jid, c)] for jid in jobs}
    found = {jid: cs for jid, cs in found.items() if cs or (not cells.get(jid) and sel.matches(jid, None))}
    if not found:
        have = sorted({f"{c.experiment}/{c.treatment}" for cs in cells.values() for c in cs})
        raise ConfigError([("export", f"no network of the run matches {sel.describe()}; it has "
                            f"{', '.join(have[:12])}{' ...' if len(have) > 12 else ''}")])
    if len(found) > 1:
        lines = [f"{jid[:12]} ({_cell_text(cs[0]) if cs else jobs[jid].kind})" for jid, cs in found.items()]
        shown = "; ".join(lines[:8]) + (f"; and {len(lines) - 8} more" if len(lines) > 8 else "")
        raise ConfigError([("export", f"{len(found)} networks match {sel.describe()}: {shown}. Name one: add "
                            "--n, --seed or --job ID")])
    jid = next(iter(found))
    return jid, found[jid] or cells.get(jid, [])


def _rerun(store: RunStore) -> str:
    """The command that repairs the run directory: its own resolved config, into itself."""
    return f"transferbench run {store.root / 'config.yaml'} --out {store.root}"


def _checkpoint(store: RunStore, job_id: str) -> tuple[Path, Any]:
    """The network's checkpoint, verified against its record.

    Raises:
        RunDirError: the network did not train well, or its weights were not kept or are
            missing or damaged; the message says which command repairs it.
    """
    try:
        record = store.read_record(job_id)
    except RecordError as exc:
        raise RunDirError(f"the record of network {job_id} is damaged ({exc}); `{_rerun(store)}` moves it aside "
                          "and trains the network again") from None
    if record is None or not record.ok:
        why = "has not trained yet" if record is None else f"failed ({record.error})"
        raise RunDirError(f"network {job_id} {why}: nothing to export; `{_rerun(store)}` trains it")
    problem = store.checkpoint_problem(job_id, record.checkpoint_sha256)
    if problem == "missing" and record.checkpoint_sha256 is None:
        raise RunDirError(
            f"the weights of network {job_id} were not kept: output.checkpoints 'sources' (the default) keeps "
            f"only networks others copy from; `{_rerun(store)} --set output.checkpoints=all` trains again the "
            "networks whose weights were not kept, and keeps them")
    if problem is not None:
        raise RunDirError(f"the checkpoint of network {job_id} is {problem} (its record says it was kept); "
                          f"`{_rerun(store)}` trains the network again (to the same weights on this machine)")
    return store.checkpoint_path(job_id), record


def _components(run_dir: Path) -> tuple[dict[str, Any], Any, Any]:
    """The run's resolved config and its data and architecture plugins."""
    config = read_yaml(run_dir / "config.yaml")
    problems: list[tuple[str, str]] = []
    registry = get_registry()
    data = instantiate(registry, "data_source", PluginRef.model_validate(config["data"]), "data", problems)
    arch = instantiate(registry, "architecture", PluginRef.model_validate(config["architecture"]), "architecture",
                       problems)
    if problems:
        raise ConfigError(problems, source=str(run_dir / "config.yaml"))
    return config, data, arch


def _paths(out: Path) -> tuple[Path, Path, Path]:
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    stem = out.name[: -len(".safetensors")]
    return out, out.with_name(stem + ".json"), out.with_name(stem + ".init.safetensors")


def _info(plan: PlanFile, job_id: str, cells: Sequence[CellEntry], config: Mapping[str, Any],
          shape: Sequence[int], classes: list[dict[str, Any]], record: Any) -> dict[str, Any]:
    job = plan.jobs[job_id]
    return {
        "format": EXPORT_FORMAT,
        "transferbench_version": __version__,
        "architecture": config["architecture"],
        "input_shape": list(shape),
        "num_classes": job.num_classes,
        "classes": classes,
        "layers": list(plan.layer_names),
        "data": config["data"],
        "job": {"id": job_id, **job.model_dump(mode="json", exclude_unset=True)},
        "cells": [c.model_dump(mode="json", exclude_unset=True) for c in cells],
        "run": {"name": plan.name, "config_hash": plan.config_hash},
        "top1": record.top1,
        "top1_best_k": record.top1_best_k,
    }


def export_network(run_dir: Path, out: Path, selection: Selection, *, init: bool = False,
                   force: bool = False) -> Exported:
    """Write one trained network of ``run_dir`` as ``out`` (.safetensors), with its JSON beside it.

    Raises:
        RunDirError: not a run directory, or the network has no usable weights.
        ConfigError: the selection names no network or several; ``out`` exists (without ``force``).
    """
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    plan = store.read_plan()
    if plan is None:
        raise RunDirError(f"{run_dir} is not a run directory: it has no plan.json")
    job_id, cells = _pick(plan, selection)
    checkpoint, record = _checkpoint(store, job_id)
    weights, info_path, init_path = _paths(out)
    existing = [p for p in (weights, info_path, *([init_path] if init else [])) if p.exists()]
    if existing and not force:
        raise ConfigError([("--out", f"{existing[0]} exists; choose another --out, or --force to replace it")])
    config, data, arch = _components(run_dir)
    shape = input_shape(Augment.model_validate(config.get("train", {}).get("augment", {})), data)
    job = plan.jobs[job_id]
    classes = _classes(data, cells, config, job)
    start = _starting_state(store, job_id, job, arch, shape, checkpoint) if init else None  # refused: nothing written
    atomic_copy(checkpoint, weights)
    sha = sha256_file(weights)
    doc = _info(plan, job_id, cells, config, shape, classes, record)
    doc.update(architecture={"name": config["architecture"]["name"], **arch.params.model_dump(mode="json")},
               normalization=_normalization(data, arch), sha256=sha)
    if start is not None:
        doc.update(_write_init(start, init_path))
    atomic_write_json(info_path, doc)
    return Exported(job_id, weights, info_path, init_path if init else None, sha)


def _classes(data: Any, cells: Sequence[CellEntry], config: Mapping[str, Any], job: JobEntry
             ) -> list[dict[str, Any]]:
    """The classes the network was trained on, in label order (label i is the i-th), from the
    run's split; empty when they cannot be told without the data."""
    try:
        everything = list(data.classes())
        indices = None
        name = cells[0].experiment if cells else None
        exp = next((e for e in config.get("experiments", []) if e.get("name") == name), None)
        if exp is not None and job.target in ("A", "B", "all"):
            problems: list[tuple[str, str]] = []
            split = instantiate(get_registry(), "split", PluginRef.model_validate(exp["split"]), "split", problems)
            if split is not None:
                indices = split.split(everything, cells[0].split_seed)[job.target]
    except (TransferbenchError, KeyError, TypeError, ValueError):
        return []
    if indices is None or len(indices) != job.num_classes:
        return []
    return [{"label": i, "index": everything[k].index, "id": everything[k].id, "name": everything[k].name}
            for i, k in enumerate(indices)]


def _normalization(data: Any, arch: Any) -> dict[str, list[float]] | None:
    """The per-channel mean and std its image inputs were normalised with (on the [0, 1] scale):
    images of a next task should reach the network the same way (an image source's mean/std)."""
    try:
        norm = arch.input_normalization(data.normalization())
    except TransferbenchError:
        return None
    return None if norm is None else {"mean": [float(x) for x in norm[0]], "std": [float(x) for x in norm[1]]}


def _starting_state(store: RunStore, job_id: str, job: JobEntry, arch: Any, shape: Sequence[int],
                    checkpoint: Path) -> dict[str, Any]:
    """The weights the network started training from, rebuilt exactly (see the module docstring).

    Raises:
        RunDirError: they cannot be rebuilt exactly; the message says why and what would help.
    """
    if job.kind != "transfer":  # a base network: its initialisation, from its seed alone
        if job.num_classes is None or job.seed is None:
            raise RunDirError(f"the starting weights of network {job_id} cannot be rebuilt: plan.json gives no "
                              "class count or seed for it")
        state = initial_state(arch, job.num_classes, shape, job.seed)
    else:
        state = _transferred_start(store, job_id, job, arch, shape)
    _same_tensors(state, checkpoint)
    return state


def _transferred_start(store: RunStore, job_id: str, job: JobEntry, arch: Any, shape: Sequence[int]
                       ) -> dict[str, Any]:
    """What build_target gave a transferred network's job before it trained, rebuilt from the
    run's config (for its protocol) and its source's weights."""
    from .plan import build_plan  # the planner only for a transferred network's start

    why = f"the starting weights of transferred network {job_id} cannot be rebuilt"
    for name, sha in (("file", "sha256"), ("init", "init_sha256")):  # a weights file: still the one it copied?
        files = job.source_checkpoint or {}
        path = Path(files[name]) if files.get(name) else None
        now = sha256_file(path) if path is not None and path.is_file() else "missing"
        if path is not None and now != files.get(sha):
            raise RunDirError(f"{why}: its source weights {path} changed since it trained (SHA-256 "
                              f"{str(files.get(sha))[:12]}... then, {now[:12]}{'...' if now != 'missing' else ''} "
                              "now); put that file back to export them")
    try:
        config = load_config(store.root / "config.yaml")
        plan = build_plan(config, resolve(config))
    except TransferbenchError as exc:
        raise RunDirError(f"{why}: the run's config.yaml does not resolve here ({str(exc).splitlines()[-1].strip()})"
                          ) from None
    full = plan.jobs.get(job_id)
    if full is None or full.protocol is None:
        raise RunDirError(f"{why}: it is not a job of the run's config.yaml any more (its experiment was run with "
                          "an earlier config), so its protocol is not at hand")
    source, start = _copied_from(store, plan, full, why), _source_initial(plan, full, arch, shape, why)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(full.seed)  # as training does, right before the build
        target = build_target(arch, full, shape, source, start)
    state = {k: v.detach() for k, v in target.model.state_dict().items()}
    _check_frozen(store, job_id, target, state, why)
    return state


def _copied_from(store: RunStore, plan: Any, job: Any, why: str) -> dict[str, Any] | None:
    """The source weights the job copied: its weights file (as hashed) or its source's checkpoint."""
    if job.external is not None:
        try:
            return load_state(job.external.file)
        except SourceFileError as exc:
            raise RunDirError(f"{why}: {exc}") from None
    if job.depends_on is None:
        return None
    record = store.read_record(job.depends_on)
    sha = record.checkpoint_sha256 if record is not None else None
    problem = store.checkpoint_problem(job.depends_on, sha) if record is not None and record.ok else "not trained"
    if problem is not None:
        raise RunDirError(f"{why}: the checkpoint of its source network {job.depends_on} is {problem}; "
                          f"`{_rerun(store)}` trains it again (to the same weights on this machine)")
    return store.load_checkpoint(job.depends_on)


def _source_initial(plan: Any, job: Any, arch: Any, shape: Sequence[int], why: str) -> dict[str, Any] | None:
    """The source's own initial weights, when the protocol resets layers to them."""
    if not job.read_protocol(plan.num_layers).resets:
        return None
    if job.external is not None:
        if job.external.init is None:
            raise RunDirError(f"{why}: its protocol resets layers to the source file's initial weights, and the "
                              "config gives no init file")
        try:
            return load_state(job.external.init)
        except SourceFileError as exc:
            raise RunDirError(f"{why}: {exc}") from None
    source = plan.jobs[job.depends_on]
    return initial_state(arch, source.num_classes, shape, source.seed)


def _check_frozen(store: RunStore, job_id: str, target: Any, state: Mapping[str, Any], why: str) -> None:
    """Layers the network never trained hold, in its checkpoint, exactly the rebuilt weights."""
    trained = store.load_checkpoint(job_id)
    frozen = [m for layer, trained in zip(target.layers, target.reading.trained) if not trained for m in layer.modules]
    for key in (k for k in state if under(k, frozen)):
        if key not in trained or not torch.equal(trained[key], state[key].to(trained[key].dtype)):
            raise RunDirError(f"{why} exactly: {key}, which it never trained, differs from its checkpoint's (the "
                              "code that builds or copies it changed since it trained)")


def _same_tensors(state: Mapping[str, Any], checkpoint: Path) -> None:
    """The rebuilt weights have the trained network's tensors (names and shapes)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        trained = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if {k: tuple(v.shape) for k, v in state.items()} != trained:
        raise RunDirError("the architecture as the run's config.yaml builds it now does not match the trained "
                          "network's tensors, so its initial weights cannot be recomputed")


def _write_init(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Write the network's starting weights beside it."""
    from safetensors.torch import save_file

    with atomic_target(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    return {"init": path.name, "init_sha256": sha256_file(path)}
