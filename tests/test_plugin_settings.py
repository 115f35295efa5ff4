"""Every setting of every plugin can be found from the CLI: ``plugins -v`` and ``plugins NAME``
print each key's type, default and description (read from the plugin's ``Params`` model, so
they cannot drift) with an example config block; ``validate`` lists the valid keys beside an
unknown one, with "did you mean ...?" for near misses."""

from __future__ import annotations

from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from transferbench.cli import main
from transferbench.plugins import PluginHost
from transferbench.settings import example_yaml, settings, type_text, unknown_key_message, valid_keys

REGISTRY = PluginHost(load_entry_points=False).registry()
BUILTINS = [e for e in REGISTRY if e.origin == "built-in"]


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: f"{e.kind}:{e.name}")
def test_builtin_settings_are_described_and_do_not_shadow_engine_keys(entry):
    names = [s.name for s in settings(entry.factory.Params)]
    assert "name" not in names, "`name` names the plugin in a config, so a setting called name is unreachable"
    if entry.kind == "split":
        assert "seeds" not in names
    undescribed = [s.name for s in settings(entry.factory.Params) if not s.description]
    assert undescribed == [], f"{entry.name}: settings without a description: {undescribed}"
    assert entry.description


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: f"{e.kind}:{e.name}")
def test_example_block_is_yaml_with_every_key(entry):
    text = example_yaml(entry.kind, entry.name, entry.factory.Params)
    parsed = yaml.safe_load(text)
    if entry.kind == "check":  # not configured: every report runs every check
        assert parsed is None and "every report" in text
        return
    if entry.kind == "findings":  # not configured: chosen by report --compare
        assert parsed is None and f"--compare {entry.name}" in text
        return
    node = {"data_source": lambda d: d["data"], "architecture": lambda d: d["architecture"],
            "executor": lambda d: d["executor"], "observer": lambda d: d["observers"][0],
            "split": lambda d: d["experiments"][0]["split"],
            "protocol": lambda d: d["experiments"][0]["treatments"][0]["protocol"],
            "estimator": lambda d: d["experiments"][0]["estimators"][0],
            "data_transform": lambda d: d["experiments"][0]["transforms"][0],
            "evaluator": lambda d: d["experiments"][0]["evaluators"][0]}[entry.kind](parsed)
    assert node["name"] == entry.name
    fields = settings(entry.factory.Params)
    assert {s.name for s in fields} <= set(node)
    if not any(s.required for s in fields):  # the defaults themselves validate
        params = {k: v for k, v in node.items() if k not in ("name", "seeds", "halves", "examples", "label",
                                                              "networks")}
        entry.factory.Params.model_validate(params)


def test_plugins_name_prints_every_setting_with_type_default_and_description(capsys):
    assert main(["plugins", "hf"]) == 0
    out = capsys.readouterr().out
    resize = next(line for line in out.splitlines() if line.startswith("resize "))
    assert "int | null" in resize and " 256 " in resize and "null keeps the stored size" in resize
    path = next(line for line in out.splitlines() if line.startswith("path "))
    assert "required" in path
    assert "data:\n      name: hf\n      resize: 256" in out


def test_plugins_verbose_finds_every_key_of_every_builtin_plugin(capsys):
    assert main(["plugins", "-v"]) == 0
    out = capsys.readouterr().out
    for entry in BUILTINS:
        assert f"{entry.kind.replace('_', ' ')} {entry.name}: " in out
        for s in settings(entry.factory.Params):
            assert f"{s.name}: " in out, f"{entry.name}.{s.name} missing from plugins -v"


def test_plugins_name_shows_what_an_extra_needs(capsys, monkeypatch):
    from transferbench_plugins.mlflow_observer import MLflowObserver

    monkeypatch.setattr(MLflowObserver, "requires", ("surely_not_installed_xyz",))
    assert main(["plugins", "mlflow"]) == 0
    out = capsys.readouterr().out
    assert "needs surely_not_installed_xyz (not installed: surely_not_installed_xyz; pip install " in out


def test_plugins_unknown_name_suggests_close_ones(capsys):
    assert main(["plugins", "caffenet_scaeld"]) == 2
    assert "did you mean 'caffenet_scaled'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the pieces


class _Inner(BaseModel):
    depth: int = 1


class _Model(BaseModel):
    size: int | None = Field(256, ge=1, description="a size")
    mode: Literal["auto"] | bool = "auto"
    pair: tuple[float, float] | None = None
    items: list[int | str] = Field(default_factory=lambda: [0])
    inner: _Inner = Field(default_factory=_Inner)
    needed: str


def test_settings_read_the_model():
    got = {s.name: s for s in settings(_Model)}
    assert (got["size"].type, got["size"].default, got["size"].constraints) == ("int | null", "256", ">= 1")
    assert got["mode"].type == '"auto" | bool' and got["mode"].default == "auto"
    assert got["pair"].type == "[float, float] | null" and got["pair"].default == "null"
    assert got["items"].type == "list[int | str]" and got["items"].default == "[0]"
    assert got["inner"].type == "mapping" and got["inner"].default == "{depth: 1}"
    assert got["needed"].required and got["needed"].default == ""
    assert type_text(dict[str, int]) == "mapping"


def test_unknown_key_lists_valid_keys_and_close_matches():
    assert valid_keys(_Model, ["inner"]) == ["depth"]
    msg = unknown_key_message("sise", valid_keys(_Model))
    assert msg.startswith("unknown key; did you mean 'size'?") and "(valid keys: inner, items, mode" in msg
    assert unknown_key_message("zzz", ["a", "b"]) == "unknown key (valid keys: a, b)"


def test_validate_names_valid_keys_for_config_and_plugin_keys(tiny_config_file, capsys):
    path = tiny_config_file()
    sets = ["train.schedule.kindd=step", "data.dimm=3", "experiments.0.split.seed=1", "evall={}"]
    assert main(["validate", str(path), *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert "train.schedule.kindd: unknown key; did you mean 'kind'? (valid keys: gamma, kind, step_every)" in err
    assert "data.dimm: unknown key; did you mean 'dim'?" in err and "name, noise" in err
    assert "experiments.0.split.seed: unknown key; did you mean 'seeds'?" in err
    assert "evall: unknown key; did you mean 'eval'?" in err and "observers" in err


@pytest.mark.parametrize("section", ["data", "architecture", "executor"])
def test_a_split_only_key_elsewhere_is_refused_not_dropped(section, fake_plugins):
    """``seeds:`` belongs to a split; under another plugin it is an unknown key, named at its path."""
    from tests.conftest import tiny_config
    from transferbench.api import prepare
    from transferbench.errors import ConfigError

    cfg = tiny_config()
    cfg[section] = {"name": {"data": "blobs", "architecture": "mlp", "executor": "local"}[section], "seeds": [0, 1]}
    with pytest.raises(ConfigError, match=rf"{section}\.seeds: unknown key"):
        prepare(cfg)


def test_a_split_only_key_under_an_observer_is_refused(fake_plugins):
    from tests.conftest import tiny_config
    from transferbench import Observer, hookimpl
    from transferbench import plugins as host
    from transferbench.api import prepare
    from transferbench.errors import ConfigError

    class Quiet(Observer):
        """Watches nothing."""

    class Module:
        @staticmethod
        @hookimpl
        def register_observers(register):
            register("quiet", Quiet)

    name = host.get_host().register(Module, "test_quiet_observer", origin="test")
    try:
        prepare(tiny_config(observers=["quiet"]))  # valid without the key
        with pytest.raises(ConfigError, match=r"observers\.0\.seeds: unknown key"):
            prepare(tiny_config(observers=[{"name": "quiet", "seeds": [1]}]))
    finally:
        host.get_host().unregister(name)
