"""Turn the names in a config into plugin instances (the edge where names are resolved).

Every problem is collected with the key path it concerns, so ``transferbench validate``
reports all of them at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .components import Components
from .config import Config, PluginRef, format_validation_error
from .errors import ConfigError, PluginError
from .estimator import Estimator
from .evaluator import Evaluator
from .interfaces import Plugin, TaskSplit, TransferProtocol
from .plugins import Registry, get_registry

# config keys the engine consumes itself, by plugin kind, not passed to the plugin (a split's
# seeds); under any other kind the same key is the plugin's own, and refused when unknown
_ENGINE_KEYS: dict[str, set[str]] = {"split": {"seeds"}, "data_transform": {"halves", "examples"},
                                     "evaluator": {"label", "networks"}}


def instantiate(
    registry: Registry, kind: str, ref: PluginRef, path: str, problems: list[tuple[str, str]]
) -> Any:
    """Build one plugin from its reference; on failure append problems and return None."""
    try:
        entry = registry.get(kind, ref.name)
    except PluginError as exc:
        problems.append((f"{path}.name", str(exc)))
        return None
    engine = _ENGINE_KEYS.get(kind, set())
    params = {k: v for k, v in ref.params.items() if k not in engine}
    factory: type[Plugin] = entry.factory
    missing = factory.missing_requirements()
    if missing:
        hint = f": {factory.install_hint}" if factory.install_hint else ""
        problems.append((f"{path}.name", f"{kind.replace('_', ' ')} {ref.name!r} needs {', '.join(missing)}, "
                         f"which is not installed{hint}"))
        return None
    try:
        validated = factory.Params.model_validate(params)
    except ValidationError as exc:
        engine_keys = ["name", *sorted(engine)]
        problems.extend(format_validation_error(exc, prefix=path, model=factory.Params, also_valid=engine_keys))
        return None
    try:
        return factory(validated)
    except ConfigError as exc:
        problems.extend((f"{path}{'.' + p if p else ''}", m) for p, m in exc.problems)
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure, reported at its key
        problems.append((path, f"{ref.name}: {type(exc).__name__}: {exc}"))
    return None


def resolve(config: Config, registry: Registry | None = None) -> Components:
    """Instantiate every plugin a config names, or raise one ConfigError listing all problems."""
    registry = registry or get_registry()
    problems: list[tuple[str, str]] = []
    data = instantiate(registry, "data_source", config.data, "data", problems)
    arch = instantiate(registry, "architecture", config.architecture, "architecture", problems)
    executor = instantiate(registry, "executor", config.executor, "executor", problems)
    splits: dict[str, TaskSplit] = {}
    protocols: dict[tuple[str, str], TransferProtocol] = {}
    estimators: dict[tuple[str, str], Estimator] = {}
    for i, exp in enumerate(config.experiments):
        split = instantiate(registry, "split", exp.split, f"experiments.{i}.split", problems)
        if split is not None:
            splits[exp.name] = split
        for j, treatment in enumerate(exp.treatments):
            path = f"experiments.{i}.treatments.{j}.protocol"
            proto = instantiate(registry, "protocol", treatment.protocol, path, problems)
            if proto is None:
                continue
            if proto.needs_source and treatment.source is None:
                problems.append(
                    (f"experiments.{i}.treatments.{j}.source",
                     f"protocol {treatment.protocol.name!r} copies layers, so the treatment needs "
                     "a source: a half (A or B), or a weights file (X, or {checkpoint: path})")
                )
            if proto.evaluate_only and treatment.half and treatment.target != treatment.half:
                problems.append(
                    (f"experiments.{i}.treatments.{j}.target",
                     f"protocol {treatment.protocol.name!r} evaluates the source network as it is, classifier "
                     f"included, without training: its target must be the source's own half ({treatment.half})")
                )
            if proto.keeps_classifier and not proto.evaluate_only and treatment.half \
                    and treatment.target != treatment.half:
                problems.append(
                    (f"experiments.{i}.treatments.{j}.target",
                     f"protocol {treatment.protocol.name!r} keeps the source's classifier: its target must be "
                     f"the source's own half ({treatment.half}); for other classes use a protocol that trains "
                     "a new classifier (surgical_head)")
                )
            protocols[(exp.name, treatment.name)] = proto
        for j, ref in enumerate(exp.estimators):
            est = instantiate(registry, "estimator", ref, f"experiments.{i}.estimators.{j}", problems)
            if est is not None:
                estimators[(exp.name, ref.name)] = est
    evaluators = _evaluators(registry, config, problems)
    observers = [instantiate(registry, "observer", ref, f"observers.{i}", problems)
                 for i, ref in enumerate(config.observers)]
    transforms = {exp.name: [instantiate(registry, "data_transform", ref, f"experiments.{i}.transforms.{j}", problems)
                             for j, ref in enumerate(exp.transforms)] for i, exp in enumerate(config.experiments)}
    if problems:
        raise ConfigError(problems)
    return Components(data=data, architecture=arch, splits=splits, protocols=protocols, executor=executor,
                      observers=observers, estimators=estimators, evaluators=evaluators,
                      transforms={name: ts for name, ts in transforms.items() if ts})


def _evaluators(registry: Registry, config: Config, problems: list[tuple[str, str]]
                ) -> dict[tuple[str, str], Evaluator]:
    """Every experiment's evaluators by (experiment, label), each reading as many networks as it names."""
    evaluators: dict[tuple[str, str], Evaluator] = {}
    for i, exp in enumerate(config.experiments):
        for j, ref in enumerate(exp.evaluators):
            ev = instantiate(registry, "evaluator", ref, f"experiments.{i}.evaluators.{j}", problems)
            if ev is None:
                continue
            if len(ref.networks) != ev.arity:
                problems.append((f"experiments.{i}.evaluators.{j}.networks",
                                 f"evaluator {ref.name!r} reads {ev.arity} networks; {len(ref.networks)} are named"))
            evaluators[(exp.name, ref.label)] = ev
    return evaluators


def raw_plugin_problems(raw: dict[str, Any], registry: Registry | None = None) -> list[tuple[str, str]]:
    """Check plugin names and params in a raw config whose structure is invalid, so that
    ``validate`` reports those problems too instead of stopping at the first layer."""
    registry = registry or get_registry()
    problems: list[tuple[str, str]] = []
    refs: list[tuple[str, str, Any]] = [
        ("data_source", "data", raw.get("data")),
        ("architecture", "architecture", raw.get("architecture")),
        ("executor", "executor", raw.get("executor", "local")),
    ]
    observers = raw.get("observers")
    for i, ref in enumerate(observers if isinstance(observers, list) else []):
        refs.append(("observer", f"observers.{i}", ref))
    experiments = raw.get("experiments")
    for i, exp in enumerate(experiments if isinstance(experiments, list) else []):
        if not isinstance(exp, dict):
            continue
        refs.append(("split", f"experiments.{i}.split", exp.get("split")))
        treatments = exp.get("treatments")
        for j, t in enumerate(treatments if isinstance(treatments, list) else []):
            if isinstance(t, dict) and "protocol" in t:
                refs.append(("protocol", f"experiments.{i}.treatments.{j}.protocol", t["protocol"]))
        estimators = exp.get("estimators")
        for j, e in enumerate(estimators if isinstance(estimators, list) else []):
            refs.append(("estimator", f"experiments.{i}.estimators.{j}", e))
        transforms = exp.get("transforms")
        for j, e in enumerate(transforms if isinstance(transforms, list) else []):
            refs.append(("data_transform", f"experiments.{i}.transforms.{j}", e))
        evaluators = exp.get("evaluators")
        for j, e in enumerate(evaluators if isinstance(evaluators, list) else []):
            refs.append(("evaluator", f"experiments.{i}.evaluators.{j}", e))
    for kind, path, value in refs:
        if value is None:
            continue
        try:
            ref = PluginRef.model_validate(value)
        except ValidationError:
            continue  # already reported by the structural check
        instantiate(registry, kind, ref, path, problems)
    return problems
