"""Docs that must match the code: every config key is documented."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from transferbench import config as c

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _keys(model: type[BaseModel], prefix: str) -> list[str]:
    return [prefix + k for k in model.model_fields]


def test_every_config_key_is_in_docs_configuration():
    text = (DOCS / "configuration.md").read_text()
    keys = (
        _keys(c.Config, "") + _keys(c.Train, "train.") + _keys(c.Schedule, "train.schedule.")
        + _keys(c.Augment, "train.augment.") + _keys(c.Eval, "eval.") + _keys(c.Loader, "loader.")
        + _keys(c.Performance, "performance.") + _keys(c.Output, "output.")
        + _keys(c.Experiment, "experiments[].") + _keys(c.Treatment, "experiments[].treatments[].")
        + ["experiments[].split.seeds"]
    )
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"undocumented config keys: {missing}"


def test_readme_starts_with_the_two_commands():
    readme = (DOCS.parent / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "transferbench run configs/quickstart.yaml" in block
    assert "pytest" in block
    assert "python -m pytest -q" in block
    ci = (DOCS.parent / ".ci" / "run").read_text()
    assert "README.md" in ci and 'eval "$setup"' in ci and 'eval "$tests"' in ci, "CI runs the README's commands"


def test_every_module_is_in_the_design_map():
    """docs/design.md's module map names every module of the package (it drifts otherwise)."""
    package = Path(c.__file__).parent
    design = (package.parent / "docs" / "design.md").read_text()
    missing = [p.name for p in sorted(package.glob("*.py")) if f"`{p.name}`" not in design]
    assert missing == [], f"docs/design.md's module map lacks {missing}"
