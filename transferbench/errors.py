"""Errors the CLI reports as a short message with exit code 2 (no traceback)."""

from __future__ import annotations


class TransferbenchError(Exception):
    """Base of the errors caused by the user's input rather than by a bug."""


class ConfigError(TransferbenchError):
    """The config is invalid. ``problems`` holds one ``(key path, message)`` per problem."""

    def __init__(self, problems: list[tuple[str, str]] | str, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = problems
        self.source = source
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        head = f"invalid config{f' {source}' if source else ''}"
        super().__init__(head + ":\n  " + "\n  ".join(lines))


class PluginError(TransferbenchError):
    """A plugin name is unknown, registered twice, or a plugin failed to load."""


class DataError(TransferbenchError):
    """The data a config names is missing or malformed."""


class RunDirError(TransferbenchError):
    """The run directory is locked by another run or holds a different experiment."""
