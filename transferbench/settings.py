"""A pydantic model's settings, read from the model itself so that what the CLI shows cannot
drift from what the code accepts: each key's type, default, constraints and description
(``transferbench plugins -v`` / ``plugins NAME``), an example YAML block, and the message
for an unknown key, which lists the valid keys and the close matches ("did you mean ...?").
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["Setting", "example_yaml", "settings", "type_text", "unknown_key_message", "valid_keys", "yaml_value"]


@dataclass(frozen=True)
class Setting:
    """One config key of a model.

    Attributes:
        name: the key.
        type: the accepted values, YAML-style (``int | null``, ``"auto" | bool``).
        required: whether the key must be given.
        default: the default as YAML text (``256``, ``null``, ``[0]``); ``""`` when required.
        constraints: bounds such as ``>= 1``, ``< 1``, ``at least 1 item``.
        description: the field's description (``""`` when it has none).
    """

    name: str
    type: str
    required: bool
    default: str
    constraints: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _literal(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else yaml_value(value)


def type_text(tp: Any) -> str:
    """An annotation as a YAML user reads it: ``int | null``, ``list[int | str]``, ``mapping``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(_literal(a) for a in args)
    if origin in (list, set, frozenset, Sequence, typing.Sequence) or (origin is tuple and args[-1:] == (...,)):
        return f"list[{type_text(args[0])}]" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is dict or tp is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """A value as it would be written in a YAML config (flow style, one line)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _constraints(field: FieldInfo) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for meta in field.metadata:
        for attr, op in words.items():
            if getattr(meta, attr, None) is not None:
                parts.append(f"{op} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None):
            parts.append(f"at least {meta.min_length} item{'s' if meta.min_length > 1 else ''}")
        if getattr(meta, "max_length", None) is not None:
            parts.append(f"at most {meta.max_length} items")
        if getattr(meta, "pattern", None):
            parts.append(f"matches {meta.pattern}")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    if field.default_factory is not None:
        try:
            # pydantic types the factory as maybe taking the validated data; ours take nothing
            return yaml_value(field.default_factory())  # type: ignore[call-arg]
        except Exception:  # noqa: BLE001 - a factory that needs arguments: say so
            return "(computed)"
    return yaml_value(field.default)


def settings(model: type[BaseModel]) -> list[Setting]:
    """Every key of ``model``, in declaration order."""
    return [Setting(name, type_text(f.annotation), f.is_required(), _default(f), _constraints(f),
                    " ".join((f.description or "").split()))
            for name, f in model.model_fields.items()]


# --------------------------------------------------------------------------- example YAML

#: Where each plugin kind sits in a config: the lines before the plugin's own mapping and
#: the indentation of its keys. ``{name}`` is the plugin's name.
_PLACES: dict[str, tuple[str, int]] = {
    "data_source": ("data:\n  name: {name}", 2),
    "architecture": ("architecture:\n  name: {name}", 2),
    "executor": ("executor:\n  name: {name}", 2),
    "observer": ("observers:\n  - name: {name}", 4),
    "split": ("experiments:\n  - name: my-experiment\n    treatments: [AnB, AnB+]\n    split:\n"
              "      name: {name}\n      seeds: [0]  # the engine's own key: one A/B split per seed", 6),
    "protocol": ("experiments:\n  - name: my-experiment\n    split: random\n    treatments:\n"
                 "      - name: my-treatment\n        source: A\n        target: B\n        protocol:\n"
                 "          name: {name}", 10),
    "estimator": ("experiments:\n  - name: my-experiment\n    split: random\n    treatments: [AnB]\n"
                  "    estimators:\n      - name: {name}", 8),
    "data_transform": ("experiments:\n  - name: my-experiment\n    split: random\n    treatments: [AnB+]\n"
                       "    transforms:\n      - name: {name}\n        halves: [B]  # the engine's own key: the "
                       "halves whose networks see changed examples\n        examples: [train, eval]  # the "
                       "engine's own key: which examples change", 8),
    "evaluator": ("experiments:\n  - name: my-experiment\n    split: random\n    treatments: [AnB+, {{name: AnB+r1, "
                  "source: A, target: B, protocol: finetune, replica: 1}}]\n    evaluators:\n      - name: {name}\n"
                  "        label: my-label  # the engine's own key: the name its results go by\n        networks: "
                  "[AnB+, AnB+r1]  # the engine's own key: the treatments it reads", 8),
}


def example_yaml(kind: str, name: str, model: type[BaseModel]) -> str:
    """A config fragment using plugin ``name`` of ``kind`` with every one of its keys at its
    default (required keys as ``<type>`` placeholders), each with its description."""
    if kind == "check":  # nothing to configure: every report runs every registered check
        return f"# {name}: a validity check; every report (and the end of every run) runs it, nothing to configure\n"
    if kind == "findings":  # chosen on the command line, with its defaults
        keys = "; ".join(f"{s.name}: {s.default}" for s in settings(model))
        return (f"# {name}: a paper's findings, judged by `transferbench report RUN_DIR --compare {name}` (or "
                f"--compare all), nothing to configure" + (f" (its settings keep their defaults: {keys})" if keys
                                                          else "") + "\n")
    head, indent = _PLACES.get(kind, (f"{kind}:\n  name: {{name}}", 2))
    lines = [head.format(name=name)]
    for s in settings(model):
        value = f"<{s.type}>" if s.required else s.default
        if s.required and ":" in value or value.startswith("<") and "#" in value:
            value = f"'{value}'"
        note = "; ".join(p for p in ("required" if s.required else "", s.description) if p)
        lines.append(" " * indent + f"{s.name}: {value}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- unknown keys


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in typing.get_args(tp) for m in _models_in(a)]


def valid_keys(model: type[BaseModel] | None, loc: Sequence[str | int] = ()) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (key path parts) inside ``model``."""
    current: list[type[BaseModel]] = [model] if model is not None else []
    for part in loc:
        if isinstance(part, int) or str(part).isdigit():
            continue  # a list item: the same models
        nxt: list[type[BaseModel]] = []
        for m in current:
            field = m.model_fields.get(str(part))
            if field is not None:
                nxt.extend(_models_in(field.annotation))
        current = nxt
    keys: set[str] = set()
    for m in current:
        keys.update(m.model_fields)
    return sorted(keys)


def unknown_key_message(key: str, valid: Sequence[str]) -> str:
    """``unknown key``, with the close matches and the valid keys when they are known."""
    msg = "unknown key"
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    if close:
        msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if valid:
        msg += f" (valid keys: {', '.join(valid)})"
    return msg
