"""Everything that can be checked before the first network trains, checked at once.

``validate`` and ``run`` call :func:`environment_problems`; ``run`` also calls
:func:`check_data`. Problems come back with the config key that fixes them, so a bad device,
an unwritable folder or missing data is one message (exit code 2), never a traceback or a
failed record per network.
"""

from __future__ import annotations

import os
from pathlib import Path

from .components import Components
from .config import Config
from .devices import device_problem
from .errors import DataError

__all__ = ["check_data", "environment_problems", "folder_problem"]


def folder_problem(path: str | Path) -> str | None:
    """Why a folder cannot be created or written at ``path`` (without creating it), or None."""
    p = Path(os.path.expandvars(os.path.expanduser(str(path)))).absolute()
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                return f"{part} is a file, not a folder" if part != p else f"{p} is a file, not a folder"
            if not os.access(part, os.W_OK | os.X_OK):
                return f"{part} is not writable" + ("" if part == p else f" (so {p} cannot be created)")
            return None
    return f"no part of {p} exists"


def environment_problems(config: Config, components: Components, run_dir: Path | None) -> list[tuple[str, str]]:
    """(key, problem) for the device and every folder the run will write."""
    problems = []
    problem = device_problem(config.device, here=components.executor.runs_here)
    if problem:
        problems.append(("device", problem))
    folders = [("output.dir", run_dir or config.run_dir()), ("output.shared_cache", config.output.shared_cache)]
    if config.loader.decode_cache:
        folders.append(("loader.cache_dir", config.loader.cache_dir))
    for key, folder in folders:
        if folder is not None and (problem := folder_problem(folder)):
            problems.append((key, problem))
    return problems


def check_data(config: Config, components: Components) -> None:
    """The data source's own check, with the way to point the config at the data.

    Raises:
        DataError: the data is not where the config says.
    """
    try:
        components.data.check()
    except DataError as exc:
        raise DataError(
            f"{exc}\nNothing was trained. Point the config at your copy without editing it, e.g. "
            f"--set data.<key>=<path> (data source {config.data.name!r}); docs/paper-experiment.md "
            "shows a local ILSVRC-2012 tree and a Hugging Face copy (data.name=hf, data.path=<hub id or folder>)."
        ) from None
