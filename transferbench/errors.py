"""The errors of transferbench.

Errors caused by the user's input (a bad config, an unknown plugin, missing data, a busy or
foreign run directory) derive from :class:`TransferbenchError`; the CLI prints them as a
short message and exits with code 2, without a traceback. :class:`TrainingFailed` is a
network's own failure (a NaN loss, say): it is recorded in the job's record and the rest
of the grid goes on.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "PluginError",
    "ResultsError",
    "RunDirError",
    "TrainingFailed",
    "TransferbenchError",
]


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
    """The run directory is locked by another run, holds a different experiment, or is damaged."""


class ResultsError(TransferbenchError):
    """A report was asked for something the results cannot give (unknown metric, ...)."""


class TrainingFailed(TransferbenchError):
    """A job failed for a reason of its own (NaN loss, say): recorded, not raised further."""
