"""The fingerprint of the code that trains a network: what a record was produced by.

A job id says *what* a network computes (data, architecture, solver, seeds); the fingerprint
says *which code* computed it: the transferbench modules on the training path, the source
files of the plugins the job uses, and the versions of torch, timm, numpy and Python. Source files are
digested as code (their syntax tree without docstrings and comments: editing prose retrains
nothing), and imports made for type hints only (``if TYPE_CHECKING:``) are not followed. A run
reuses a finished network (on resume, or from a shared cache) only when its fingerprint
matches, unless the config opts in with ``output.reuse_across_code``; ``report`` flags
tables whose networks were trained by different code.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import platform
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._version import __version__
from .hashing import content_hash

__all__ = ["ESTIMATION_ENTRY", "REPORTING_MODULES", "TRAINING_ENTRY", "code_fingerprint", "source_digest",
           "training_modules"]

#: The module whose imports, followed transitively, make up "the code that trains".
TRAINING_ENTRY = "runner"

#: The module of estimator jobs (docs/estimators.md): left out of the networks' code (a change
#: to the estimators retrains no network), and the entry of the estimator jobs' own code.
ESTIMATION_ENTRY = "estimation"

#: Modules that read and report results: never part of the code that trains (a test checks
#: that the training path imports none of them, so editing a statistic retrains nothing).
REPORTING_MODULES: frozenset[str] = frozenset({
    "analysis", "convergence", "estimator_report", "jsonout", "observing", "paperdata", "plots", "recommend",
    "regret", "report", "report_files", "results", "runreport", "scorecard", "source_ranking", "validation",
})

_PACKAGE = Path(__file__).resolve().parent


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Ids of every node under an ``if TYPE_CHECKING:`` block (imports for type hints only:
    they never run, so they are not part of the code that trains)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _local_imports(path: Path) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            names.update(a.name for a in node.names)
    return {n for n in names if (_PACKAGE / f"{n}.py").is_file()}


@lru_cache(maxsize=4)
def training_modules(entry: str = TRAINING_ENTRY) -> tuple[str, ...]:
    """The transferbench modules the training path imports, transitively (sorted); from
    ``ESTIMATION_ENTRY``, those of the estimator jobs. The training path does not follow the
    runner into the estimation modules."""
    skip = {ESTIMATION_ENTRY} if entry != ESTIMATION_ENTRY else set()
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        todo.extend(_local_imports(_PACKAGE / f"{name}.py") - seen)
    return tuple(sorted(seen))


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """The tree with every module, class and function docstring removed (comments are not
    in the tree at all): what the code does, without its prose."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(text: str) -> str:
    """The digest of Python source as code: its syntax tree without docstrings, comments,
    blank lines or formatting, so editing prose changes nothing (and editing code does)."""
    tree = _without_docstrings(ast.parse(text))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:16]


def _file_digest(path: str | Path) -> str:
    path = Path(path)
    if path.suffix == ".py":
        try:
            return source_digest(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):  # not parseable here: its bytes are what we have
            pass
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@lru_cache(maxsize=4)
def _core_digest(entry: str = TRAINING_ENTRY) -> str:
    return content_hash({m: _file_digest(_PACKAGE / f"{m}.py") for m in training_modules(entry)})


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _plugin_digests(plugins: Iterable[Any]) -> dict[str, str]:
    out = {}
    for obj in plugins:
        module = sys.modules.get(type(obj).__module__)
        path = getattr(module, "__file__", None)
        if path and Path(path).is_file():
            out[type(obj).__module__] = _file_digest(path)
    return dict(sorted(out.items()))


def code_fingerprint(plugins: Iterable[Any], entry: str = TRAINING_ENTRY) -> dict[str, Any]:
    """The fingerprint of the code that trains a network with these plugin instances (or,
    with ``entry=ESTIMATION_ENTRY``, that runs an estimator job with them).

    Returns:
        ``{"id": short hash of the rest, "transferbench": version, "core": digest of the
        training modules, "plugins": {module: digest}, "versions": {torch, timm, numpy,
        python}}``.
    """
    import torch

    detail = {
        "transferbench": __version__,
        "core": _core_digest(entry),
        "plugins": _plugin_digests(plugins),
        "versions": {"torch": torch.__version__, "timm": _version("timm"), "numpy": _version("numpy"),
                     "python": platform.python_version()},
    }
    return {"id": content_hash(detail), **detail}
