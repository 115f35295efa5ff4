"""The plugin manager: built-in plugins, entry-point discovery and the name registries.

Names are resolved here, at the edge; the engine itself only receives plugin instances.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .claims import PaperFindings
from .errors import PluginError
from .estimator import Estimator
from .evaluator import Evaluator
from .executor import Executor
from .interfaces import Architecture, DataSource, DataTransform, Plugin, TaskSplit, TransferProtocol
from .observers import Observer
from .validity import ValidityCheck

ENTRY_POINT_GROUP = "transferbench"

#: The built-in plugins (plugins/ in the repository); each is written like a third-party
#: plugin, importing only the top-level ``transferbench`` package.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "transferbench_plugins.local_executor",
    "transferbench_plugins.protocols",
    "transferbench_plugins.splits",
    "transferbench_plugins.caffenet",
    "transferbench_plugins.synthetic",
    "transferbench_plugins.hf",
    "transferbench_plugins.imagefolder",
    "transferbench_plugins.timm_arch",
    "transferbench_plugins.ray_executor",
    "transferbench_plugins.signals",
    "transferbench_plugins.tensorboard_observer",
    "transferbench_plugins.mlflow_observer",
    "transferbench_plugins.estimators",
    "transferbench_plugins.validity_checks",
    "transferbench_plugins.yosinski2014",
    "transferbench_plugins.transforms",
    "transferbench_plugins.shifts",
    "transferbench_plugins.zhang2019",
    "transferbench_plugins.neyshabur2020",
    "transferbench_plugins.raghu2019",
    "transferbench_plugins.lee2022",
    "transferbench_plugins.kumar2022",
    "transferbench_plugins.evaluators",
    "transferbench_plugins.scratch",
)

#: Set to a comma-separated list of entry-point names to load only those third-party
#: plugins, or to an empty string to load none (the built-ins are always loaded).
ALLOWLIST_ENV = "TRANSFERBENCH_PLUGINS"


#: kind -> (hook name, the interface its plugins implement)
KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "architecture": ("register_architectures", Architecture),
    "split": ("register_splits", TaskSplit),
    "protocol": ("register_protocols", TransferProtocol),
    "data_source": ("register_data_sources", DataSource),
    "executor": ("register_executors", Executor),
    "observer": ("register_observers", Observer),
    "estimator": ("register_estimators", Estimator),
    "check": ("register_checks", ValidityCheck),
    "findings": ("register_findings", PaperFindings),
    "data_transform": ("register_data_transforms", DataTransform),
    "evaluator": ("register_evaluators", Evaluator),
}


@dataclass(frozen=True)
class Entry:
    """A registered factory and where it came from."""

    kind: str
    name: str
    factory: type[Plugin]
    plugin: str  # the plugin module / entry point that registered it
    origin: str  # "built-in" or "package <dist> <version>"

    @property
    def description(self) -> str:
        doc = getattr(self.factory, "description", "") or (self.factory.__doc__ or "")
        return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass
class LoadFailure:
    """A plugin that could not be imported or registered."""

    plugin: str
    origin: str
    error: str


@dataclass
class Registry:
    """All registered factories, by kind and name, plus the plugins that failed."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[LoadFailure] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> origin

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises an error listing the known ones."""
        known = self.entries[kind]
        if name not in known:
            listing = ", ".join(sorted(known)) or "none"
            hint = ""
            broken = [f.plugin for f in self.failures]
            if broken:
                hint = f" (plugins that failed to load: {', '.join(broken)})"
            raise PluginError(f"unknown {kind.replace('_', ' ')} {name!r}; known: {listing}{hint}")
        return known[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def __iter__(self) -> Iterator[Entry]:
        for kind in KINDS:
            yield from self.entries[kind].values()


class PluginHost:
    """Owns the pluggy manager and turns hook calls into a :class:`Registry`."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager("transferbench")
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[str, str] = {}
        self.failures: list[LoadFailure] = []
        for module_name in DEFAULT_PLUGINS:
            self._register_module(module_name, module_name, "built-in")
        if load_entry_points:
            self._load_entry_points()
        self.pm.check_pending()  # cannot fail: register() refuses plugins with unknown hooks

    def _register_module(self, plugin_name: str, module_name: str, origin: str) -> None:
        try:
            module = importlib.import_module(module_name)
            self.register(module, plugin_name, origin)
        except Exception as exc:  # noqa: BLE001 - reported by name, others still load
            self.failures.append(LoadFailure(plugin_name, origin, f"{type(exc).__name__}: {exc}"))

    def _load_entry_points(self) -> None:
        allow = os.environ.get(ALLOWLIST_ENV)
        allowed = None if allow is None else {a.strip() for a in allow.split(",") if a.strip()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = getattr(ep, "dist", None)
            origin = f"package {dist.name} {dist.version}" if dist else "entry point"
            try:
                obj = ep.load()
                self.register(obj, ep.name, origin)
            except Exception as exc:  # noqa: BLE001
                self.failures.append(LoadFailure(ep.name, origin, f"{type(exc).__name__}: {exc}"))

    def register(self, plugin: object, name: str | None = None, origin: str = "runtime") -> str:
        """Register a plugin object (module, class or instance with hookimpls)."""
        if isinstance(plugin, types.ModuleType):
            name = name or plugin.__name__
        name = name or type(plugin).__name__
        if self.pm.has_plugin(name):
            raise PluginError(f"a plugin named {name!r} is already registered")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # a hook with the wrong arguments
            raise PluginError(f"plugin {name!r}: {exc}") from None
        unknown = self._unknown_hooks(plugin)
        if unknown:
            self.pm.unregister(name=name)
            raise PluginError(f"plugin {name!r} implements hooks transferbench does not have: {'; '.join(unknown)}")
        self._origins[name] = origin
        return name

    def _unknown_hooks(self, plugin: object) -> list[str]:
        """Each ``@hookimpl`` of ``plugin`` whose name no hook has (a misspelling), with a suggestion."""
        known = [name for name in dir(hookspecs) if name.startswith("register_")]
        out = []
        for attr in dir(plugin):
            if self.pm.parse_hookimpl_opts(plugin, attr) is None:
                continue
            caller = getattr(self.pm.hook, attr, None)
            if caller is None or caller.spec is None:
                near = difflib.get_close_matches(attr, known, n=1)
                out.append(f"{attr}" + (f" (did you mean {near[0]}?)" if near else ""))
        return out

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._origins.pop(name, None)

    def registry(self) -> Registry:
        """Call every registration hook and collect the results."""
        reg = Registry(failures=list(self.failures), plugins=dict(self._origins))
        for kind, (hook_name, base) in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = impl.plugin_name
                origin = self._origins.get(plugin_name, "runtime")

                def register(name: str, factory: type, _p=plugin_name, _o=origin, _k=kind, _b=base) -> None:
                    if not isinstance(factory, type) or not issubclass(factory, _b):
                        raise PluginError(
                            f"plugin {_p!r} registered {_k} {name!r} as {factory!r}, "
                            f"which is not a subclass of {_b.__name__}"
                        )
                    known = reg.entries[_k]
                    if name in known:
                        raise PluginError(
                            f"{_k.replace('_', ' ')} {name!r} is registered twice: by plugin "
                            f"{known[name].plugin!r} ({known[name].origin}) and by plugin "
                            f"{_p!r} ({_o}); uninstall one or set {ALLOWLIST_ENV}"
                        )
                    known[name] = Entry(_k, name, factory, _p, _o)

                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    reg.failures.append(
                        LoadFailure(plugin_name, origin, f"{hook_name}: {type(exc).__name__}: {exc}")
                    )
        return reg


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, created on first use."""
    global _host
    if _host is None:
        _host = PluginHost()
    return _host


def get_registry() -> Registry:
    """A registry built from the process-wide host (cheap: hooks only register classes)."""
    return get_host().registry()

