"""The public API is the whole contract: plugins import only ``transferbench``, the core has no
import cycles, every exported name is documented, and functions stay short enough to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import transferbench

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "transferbench"
PLUGIN_TREES = [REPO / "plugins", REPO / "examples" / "transferbench-classlist" / "src"]
MAX_FUNCTION_LINES = 60


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "build" not in p.parts)


def _imports(tree: ast.AST, skip_type_checking: bool = True) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (in functions too), except under TYPE_CHECKING."""
    skipped: set[int] = set()
    if skip_type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


@pytest.mark.parametrize("path", _sources(*PLUGIN_TREES), ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_import_only_the_public_api(path):
    public = set(transferbench.__all__)
    bad = []
    for node in _imports(ast.parse(path.read_text()), skip_type_checking=False):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.startswith("transferbench.")
                    or a.name.startswith("transferbench_plugins")]
        elif node.level == 0 and node.module and node.module.split(".")[0] == "transferbench_plugins":
            bad.append(f"from {node.module} import ... (plugins must not import each other)")
        elif node.level == 0 and node.module and node.module.startswith("transferbench."):
            bad.append(f"from {node.module} import ... (a private module)")
        elif node.level == 0 and node.module == "transferbench":
            bad += [f"transferbench.{a.name} (not in transferbench.__all__)"
                    for a in node.names if a.name not in public]
    assert not bad, f"{path.relative_to(REPO)} imports what is not public API: {bad}"


def _core_graph() -> dict[str, set[str]]:
    """Every import between the core's modules, type-only ones (``if TYPE_CHECKING:``) included."""
    modules = {p.stem if p.stem != "__init__" else "__init__": p for p in CORE.glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in _imports(ast.parse(path.read_text()), skip_type_checking=False):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    graph[name].add(node.module.split(".")[0])
                else:  # from . import x: a submodule, or a name of the package itself
                    graph[name].update(a.name if a.name in modules else "__init__" for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = node.module.split(".")
                if parts[0] == "transferbench":
                    graph[name].add(parts[1] if len(parts) > 1 else "__init__")
    return graph


def test_the_core_has_no_import_cycle():
    graph = _core_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle in transferbench/: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_cycle_check_can_fail(monkeypatch):
    import tests.test_public_api as me

    monkeypatch.setattr(me, "_core_graph", lambda: {"a": {"b"}, "b": {"c"}, "c": {"a"}})
    with pytest.raises(pytest.fail.Exception, match="a -> b -> c -> a"):
        test_the_core_has_no_import_cycle()


def _module_imports(path: Path, modules: set[str], type_only: bool) -> set[str]:
    """The transferbench modules ``path`` imports: all of them, or (``type_only=False``) those
    imported at run time (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in _imports(tree, skip_type_checking=not type_only):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names if a.name in modules)
    return out - {path.stem}


def _design_rows() -> list[tuple[str, set[str] | None]]:
    """docs/design.md's module map: (module, what it may import; None for anything), in order."""
    text = (REPO / "docs" / "design.md").read_text()
    start = text.index("## Module map")
    section = text[start:text.index("\n## ", start + 1)]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `") and line.count("|") >= 4:
            cells = [c.strip() for c in line.strip("|").split("|")]
            module = cells[0].strip("`").removesuffix(".py")
            allowed = cells[-1]
            rows.append((module, None if allowed == "*" else set(re.findall(r"`([\w_]+)`", allowed))))
    return rows


def test_every_module_imports_only_what_its_design_row_allows():
    """The "may import" column of docs/design.md is a rule: every import (type-only ones too)
    is named in the module's row, and run-time imports point only to rows above it."""
    modules = {p.stem for p in CORE.glob("*.py")}
    rows = _design_rows()
    listed = [m for m, _ in rows]
    assert sorted(listed) == sorted(modules), f"rows for {sorted(set(listed) ^ modules)} are missing or extra"
    bad = []
    for i, (module, allowed) in enumerate(rows):
        if allowed is None:
            continue
        path = CORE / f"{module}.py"
        extra = _module_imports(path, modules, type_only=True) - allowed
        if extra:
            bad.append(f"{module} imports {sorted(extra)}, which its row does not allow")
        below = _module_imports(path, modules, type_only=False) - set(listed[:i])
        if below:
            bad.append(f"{module} imports {sorted(below)} at run time, listed below it")
    assert not bad, "; ".join(bad)


def test_the_design_rule_can_fail(monkeypatch):
    import tests.test_public_api as me

    rows = me._design_rows()
    trainer = next(i for i, (m, _) in enumerate(rows) if m == "trainer")
    monkeypatch.setattr(me, "_design_rows", lambda: [(m, (a - {"jobdata"}) if m == "trainer" else a)
                                                    for m, a in rows])
    with pytest.raises(AssertionError, match="trainer imports \\['jobdata'\\]"):
        test_every_module_imports_only_what_its_design_row_allows()
    moved = rows[:trainer] + rows[trainer + 1:] + [rows[trainer]]  # trainer first, its imports after it
    monkeypatch.setattr(me, "_design_rows", lambda: [moved[-1], *moved[:-1]])
    with pytest.raises(AssertionError, match="at run time, listed below it"):
        test_every_module_imports_only_what_its_design_row_allows()


def test_the_training_path_holds_no_reporting_module():
    """Editing a report statistic must retrain nothing: the fingerprint's training modules
    import none of the modules that read and report results."""
    from transferbench.fingerprint import ESTIMATION_ENTRY, REPORTING_MODULES, training_modules

    for entry in ("runner", ESTIMATION_ENTRY):
        found = set(training_modules(entry))
        assert {"trainer", "runner"} & found or entry != "runner"
        assert not found & (REPORTING_MODULES | {"validity", "plan", "resolve", "plugins", "report"}), \
            f"{entry} reaches {sorted(found & REPORTING_MODULES)}"
    assert REPORTING_MODULES <= {p.stem for p in CORE.glob("*.py")}


def test_editing_prose_leaves_every_fingerprint_unchanged(tmp_path, monkeypatch):
    """A docstring or comment edit in a training module changes no job's fingerprint; a code
    edit does."""
    import shutil

    from transferbench import fingerprint as fp

    copy = tmp_path / "transferbench"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))

    def core_digest() -> str:
        fp._core_digest.cache_clear()
        fp.training_modules.cache_clear()
        monkeypatch.setattr(fp, "_PACKAGE", copy)
        try:
            return fp._core_digest()
        finally:
            monkeypatch.setattr(fp, "_PACKAGE", CORE)
            fp._core_digest.cache_clear()
            fp.training_modules.cache_clear()

    before = core_digest()
    trainer = copy / "trainer.py"
    text = trainer.read_text()
    prose = text.replace('"""Train and evaluate one job.', '"""Train, then evaluate, one job (edited prose).', 1)
    prose = prose.replace("\ndef make_optimizer(", "\n# a new comment\n\n\ndef make_optimizer(", 1)
    assert prose != text
    trainer.write_text(prose)
    assert core_digest() == before
    trainer.write_text(prose.replace("return counts[0] / counts[2], counts[1] / counts[2]",
                                     "return counts[1] / counts[2], counts[0] / counts[2]", 1))
    assert core_digest() != before
    assert fp.source_digest("x = 1  # one\n") == fp.source_digest('"""Doc."""\nx = 1\n')
    assert fp.source_digest("x = 1\n") != fp.source_digest("x = 2\n")


def test_every_public_name_is_documented():
    docs = "\n".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    missing = [name for name in transferbench.__all__ if not name.startswith("_") and f"`{name}" not in docs
               and f"transferbench.{name}" not in docs]
    assert not missing, f"exported but not in docs/: {missing}"


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring does not count
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def test_no_long_functions_in_the_core():
    long = []
    for path in _sources(CORE):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_FUNCTION_LINES:
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                if not above.startswith("# long:"):  # a reason, written above the def
                    long.append(f"{path.name}:{node.name} ({_body_lines(node)} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without a '# long:' reason: {long}"


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch):
    import re

    text = (REPO / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/python-api.md has no example"
    monkeypatch.chdir(tmp_path)  # the example writes runs/notebook
    exec(compile("\n".join(blocks), "docs/python-api.md", "exec"), {})
    assert (tmp_path / "runs" / "notebook" / "plan.json").is_file()


def test_a_run_directory_of_version_0_1_still_loads_and_reports(tmp_path):
    """tests/data/run-v0.1 was written by transferbench 0.1 (ok and failed records)."""
    import shutil

    from rich.console import Console

    from transferbench.report import run_report
    from transferbench.store import RunStore

    run_dir = tmp_path / "run"
    shutil.copytree(REPO / "tests" / "data" / "run-v0.1", run_dir)
    run = transferbench.load_run(run_dir)
    statuses = set(run.rows.status)
    assert statuses == {"ok", "failed"}
    assert run.rows[run.rows.status == "ok"].top1.between(0, 1).all()
    store = RunStore(run_dir)
    for path in (run_dir / "records").glob("*.json"):
        record = store.read_record(path.stem)
        assert record is not None and record.job_id == path.stem  # every old record validates
    console = Console(record=True, width=120)
    run_report(run_dir, console=console, plots=False)
    assert "derived metrics" in console.export_text()
