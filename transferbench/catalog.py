"""What ``transferbench plugins`` shows: every registered plugin, and for each name its
settings (from its ``Params`` model, see :mod:`transferbench.settings`) and an example config
block; as rich tables or as JSON (docs/json-output.md)."""

from __future__ import annotations

import difflib
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .errors import PluginError
from .plugins import KINDS, Entry, Registry
from .settings import example_yaml, settings

__all__ = ["entry_info", "find_entries", "plugins_json", "print_entry", "print_plugins"]

PLUGINS_FORMAT = "transferbench.plugins/1"


def entry_info(entry: Entry) -> dict[str, Any]:
    """One registered name as plain data: where it comes from, what it needs, its settings."""
    factory = entry.factory
    return {
        "kind": entry.kind,
        "name": entry.name,
        "plugin": entry.plugin,
        "origin": entry.origin,
        "description": entry.description,
        "requires": list(factory.requires),
        "missing": factory.missing_requirements(),
        "install_hint": factory.install_hint,
        "settings": [s.to_dict() for s in settings(factory.Params)],
        "example": example_yaml(entry.kind, entry.name, factory.Params),
    }


def find_entries(registry: Registry, name: str) -> list[Entry]:
    """Every registered plugin called ``name`` (of any kind); none is a PluginError with close matches."""
    found = [e for e in registry if e.name == name]
    if not found:
        known = sorted({e.name for e in registry})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise PluginError(f"no plugin registers the name {name!r}{hint} (known: {', '.join(known)})")
    return found


def plugins_json(registry: Registry, name: str | None = None) -> dict[str, Any]:
    """The ``transferbench plugins --json`` document (every name, or those called ``name``)."""
    entries = find_entries(registry, name) if name else list(registry)
    plugins = []
    for plugin, origin in registry.plugins.items():
        registers: dict[str, list[str]] = {}
        for e in registry:
            if e.plugin == plugin:
                registers.setdefault(e.kind, []).append(e.name)
        plugins.append({"plugin": plugin, "origin": origin, "registers": {k: sorted(v) for k, v in registers.items()}})
    return {
        "format": PLUGINS_FORMAT,
        "kinds": list(KINDS),
        "plugins": plugins if name is None else [p for p in plugins if p["plugin"] in {e.plugin for e in entries}],
        "entries": [entry_info(e) for e in entries],
        "failures": [{"plugin": f.plugin, "origin": f.origin, "error": f.error} for f in registry.failures],
    }


def print_plugins(console: Console, registry: Registry) -> None:
    """The table of plugins: where each comes from and what it registers."""
    table = Table(title="transferbench plugins", title_justify="left")
    table.add_column("plugin", style="bold", overflow="fold")
    table.add_column("from", overflow="fold")
    table.add_column("registers", overflow="fold")
    for plugin, origin in registry.plugins.items():
        kinds: dict[str, list[str]] = {}
        for e in registry:
            if e.plugin == plugin:
                kinds.setdefault(e.kind.replace("_", " "), []).append(e.name)
        what = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in kinds.items()) or "(nothing)"
        table.add_row(escape(plugin), escape(origin), escape(what))
    console.print(table)


def print_entry(console: Console, entry: Entry) -> None:
    """One name in full: description, origin, requirements, every setting, an example block."""
    info = entry_info(entry)
    kind = entry.kind.replace("_", " ")
    console.print(Text.assemble((f"{kind} {entry.name}", "bold"), f": {info['description']}" if
                                info["description"] else ""))
    console.print(Text(f"  from plugin {entry.plugin} ({entry.origin})"))
    if info["requires"]:
        state = (f"not installed: {', '.join(info['missing'])}; {info['install_hint']}" if info["missing"]
                 else "installed")
        console.print(Text(f"  needs {', '.join(info['requires'])} ({state})"))
    if info["settings"]:
        table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2, 0, 0))
        for col in ("key", "type", "default", "description"):
            table.add_column(col, style="bold" if col == "key" else None, overflow="fold")
        for s in info["settings"]:
            default = "required" if s["required"] else s["default"]
            desc = "; ".join(p for p in (s["description"], s["constraints"]) if p)
            table.add_row(escape(s["name"]), escape(s["type"]), escape(default), escape(desc))
        console.print(table)
    else:
        console.print(Text("  no settings"))
    console.print(Text("  example:", style="dim"))
    for line in info["example"].splitlines():
        console.print(Text("    " + line), soft_wrap=True)
    console.print()
