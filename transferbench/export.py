"""``transferbench export``: a trained network of a run as a standalone weights file.

The output of one run becomes the source of the next (``source: {checkpoint: FILE}``,
docs/your-data.md). :func:`export_network` picks one network of a run directory by job id
and/or by experiment, treatment, n and split seed, and writes, each atomically:

* ``FILE.safetensors``: the network's weights, byte for byte its checkpoint in the run (so
  its SHA-256, which names it in the next run's job ids, is the one the run recorded);
* ``FILE.json``: what it is: the architecture config (name and params), the input shape and
  normalisation, the classes it was trained on, its layers, the job and cells it came from,
  its accuracy;
* with ``init=True``, ``FILE.init.safetensors``: its initial weights, recomputed exactly
  from the job's seed (what ``reinit`` with ``reset: initial`` resets a layer to; give it
  as ``init:`` beside ``checkpoint:``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__
from .config import Augment, PluginRef, read_yaml
from .errors import ConfigError, RunDirError, TransferbenchError
from .files import atomic_copy, atomic_target, atomic_write_json, sha256_file
from .network import initial_state, input_shape
from .plugins import get_registry
from .records import RecordError
from .resolve import instantiate
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

    def matches(self, job_id: str, cell: Mapping[str, Any] | None) -> bool:
        if self.job is not None and not job_id.startswith(self.job):
            return False
        wanted = {"experiment": self.experiment, "treatment": self.treatment, "n": self.n, "split_seed": self.seed}
        if cell is None:
            return all(v is None for v in wanted.values())
        return all(v is None or cell.get(k) == v for k, v in wanted.items())

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


def _cell_text(cell: Mapping[str, Any]) -> str:
    return (f"--experiment {cell['experiment']} --treatment {cell['treatment']} --n {cell['n']} "
            f"--seed {cell['split_seed']}")


def _pick(plan: Mapping[str, Any], sel: Selection) -> tuple[str, list[Mapping[str, Any]]]:
    """The one network the selection names, and its cells.

    Raises:
        ConfigError: no network, or several, match.
    """
    jobs = {jid: j for jid, j in plan.get("jobs", {}).items() if j.get("kind") != "estimate"}
    cells: dict[str, list[Mapping[str, Any]]] = {}
    for cell in plan.get("cells", []):
        cells.setdefault(str(cell["job_id"]), []).append(cell)
    found = {jid: [c for c in cells.get(jid, []) if sel.matches(jid, c)] for jid in jobs}
    found = {jid: cs for jid, cs in found.items() if cs or (not cells.get(jid) and sel.matches(jid, None))}
    if not found:
        have = sorted({f"{c['experiment']}/{c['treatment']}" for cs in cells.values() for c in cs})
        raise ConfigError([("export", f"no network of the run matches {sel.describe()}; it has "
                            f"{', '.join(have[:12])}{' ...' if len(have) > 12 else ''}")])
    if len(found) > 1:
        lines = [f"{jid[:12]} ({_cell_text(cs[0]) if cs else jobs[jid].get('kind')})" for jid, cs in found.items()]
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


def _info(plan: Mapping[str, Any], job_id: str, cells: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
          shape: Sequence[int], classes: list[dict[str, Any]], record: Any) -> dict[str, Any]:
    job = plan["jobs"][job_id]
    return {
        "format": EXPORT_FORMAT,
        "transferbench_version": __version__,
        "architecture": config["architecture"],
        "input_shape": list(shape),
        "num_classes": job.get("num_classes"),
        "classes": classes,
        "layers": plan.get("layer_names", []),
        "data": config["data"],
        "job": {"id": job_id, **job},
        "cells": [dict(c) for c in cells],
        "run": {"name": plan.get("name"), "config_hash": plan.get("config_hash")},
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
    job = plan["jobs"][job_id]
    classes = _classes(data, cells, config, job)
    atomic_copy(checkpoint, weights)
    sha = sha256_file(weights)
    doc = _info(plan, job_id, cells, config, shape, classes, record)
    doc.update(architecture={"name": config["architecture"]["name"], **arch.params.model_dump(mode="json")},
               normalization=_normalization(data, arch), sha256=sha)
    if init:
        doc.update(_write_init(arch, job, shape, init_path, weights))
    atomic_write_json(info_path, doc)
    return Exported(job_id, weights, info_path, init_path if init else None, sha)


def _classes(data: Any, cells: Sequence[Mapping[str, Any]], config: Mapping[str, Any], job: Mapping[str, Any]
             ) -> list[dict[str, Any]]:
    """The classes the network was trained on, in label order (label i is the i-th), from the
    run's split; empty when they cannot be told without the data."""
    try:
        everything = list(data.classes())
        indices = None
        name = cells[0]["experiment"] if cells else None
        exp = next((e for e in config.get("experiments", []) if e.get("name") == name), None)
        if exp is not None and job.get("target") in ("A", "B", "all"):
            problems: list[tuple[str, str]] = []
            split = instantiate(get_registry(), "split", PluginRef.model_validate(exp["split"]), "split", problems)
            if split is not None:
                indices = split.split(everything, int(cells[0]["split_seed"]))[job["target"]]
    except (TransferbenchError, KeyError, TypeError, ValueError):
        return []
    if indices is None or len(indices) != job.get("num_classes"):
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


def _write_init(arch: Any, job: Mapping[str, Any], shape: Sequence[int], path: Path, weights: Path) -> dict[str, Any]:
    """Recompute the network's initial weights from its seed and write them beside it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    state = initial_state(arch, int(job["num_classes"]), shape, int(job["seed"]))
    with safe_open(str(weights), "pt") as f:
        trained = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if {k: tuple(v.shape) for k, v in state.items()} != trained:
        raise RunDirError("the architecture as the run's config.yaml builds it now does not match the trained "
                          "network's tensors, so its initial weights cannot be recomputed")
    with atomic_target(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    return {"init": path.name, "init_sha256": sha256_file(path)}
