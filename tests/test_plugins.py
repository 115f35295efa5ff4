"""The plugin system: built-ins, entry-point discovery, clashes, broken plugins, unknown names."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transferbench import hookimpl, plugins
from transferbench.errors import PluginError
from transferbench.plugins import PluginHost

REPO = Path(__file__).resolve().parents[1]


def make_dist(site: Path, dist: str, module: str, source: str, ep_name: str | None = None) -> None:
    """Write an installed distribution (module + dist-info with an entry point) into ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[transferbench]\n{ep_name or dist} = {module}\n")


GOOD_PLUGIN = """
from transferbench import Halves, TaskSplit, hookimpl

class FirstThree(TaskSplit):
    \"\"\"the first three classes against the rest\"\"\"
    def split(self, classes, seed):
        idx = [c.index for c in classes]
        return Halves(tuple(idx[:3]), tuple(idx[3:]))

@hookimpl
def register_splits(register):
    register("first_three", FirstThree)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def test_builtins_are_registered():
    reg = PluginHost(load_entry_points=False).registry()
    assert {"frozen", "finetune", "random_frozen"} <= set(reg.names("protocol"))
    assert {"random", "manmade_natural", "superclass"} <= set(reg.names("split"))
    assert "local" in reg.names("executor")
    assert all(e.origin == "built-in" for e in reg)


def test_third_party_plugin_is_discovered_through_its_entry_point(site):
    make_dist(site, "tb_firstthree", "tb_firstthree_mod", GOOD_PLUGIN)
    reg = PluginHost().registry()
    entry = reg.get("split", "first_three")
    assert entry.origin == "package tb_firstthree 0.1"
    assert entry.description == "the first three classes against the rest"


def test_allowlist_env_limits_third_party_plugins(site, monkeypatch):
    make_dist(site, "tb_firstthree", "tb_firstthree_mod", GOOD_PLUGIN)
    monkeypatch.setenv(plugins.ALLOWLIST_ENV, "")
    assert "first_three" not in PluginHost().registry().names("split")


def test_broken_plugin_is_reported_by_name_without_hiding_others(site):
    make_dist(site, "tb_firstthree", "tb_firstthree_mod", GOOD_PLUGIN)
    make_dist(site, "tb_broken", "tb_broken_mod", "import does_not_exist_anywhere\n")
    reg = PluginHost().registry()
    assert "first_three" in reg.names("split")
    (failure,) = [f for f in reg.failures if f.plugin == "tb_broken"]
    assert "does_not_exist_anywhere" in failure.error
    assert failure.origin == "package tb_broken 0.1"


def test_duplicate_name_is_refused_naming_both_plugins(site):
    make_dist(site, "tb_clash", "tb_clash_mod", GOOD_PLUGIN.replace("first_three", "random"))
    with pytest.raises(PluginError) as err:
        PluginHost().registry()
    msg = str(err.value)
    assert "'random' is registered twice" in msg
    assert "transferbench_plugins.splits" in msg and "tb_clash" in msg


TYPO_PLUGIN = """
    from transferbench import hookimpl
    @hookimpl
    def register_split(register):
        pass
"""

WRONG_ARGS_PLUGIN = """
    from transferbench import hookimpl
    @hookimpl
    def register_splits(add):
        pass
"""


@pytest.mark.parametrize("source", [TYPO_PLUGIN, WRONG_ARGS_PLUGIN], ids=["misspelt-hook", "wrong-arguments"])
def test_a_plugin_with_a_bad_hook_is_listed_as_broken_and_skipped(site, source):
    make_dist(site, "tb_firstthree", "tb_firstthree_mod", GOOD_PLUGIN)
    make_dist(site, "tb_typo", "tb_typo_mod", source)
    host = PluginHost()  # no exception: every other plugin still loads
    reg = host.registry()
    assert "first_three" in reg.names("split") and "random" in reg.names("split")
    (failure,) = [f for f in reg.failures if f.plugin == "tb_typo"]
    assert failure.origin == "package tb_typo 0.1"
    if source is TYPO_PLUGIN:
        assert "register_split" in failure.error and "did you mean register_splits?" in failure.error
    assert not host.pm.has_plugin("tb_typo")


def test_cli_commands_work_beside_a_plugin_with_a_misspelt_hook(site):
    make_dist(site, "tb_typo", "tb_typo_mod", TYPO_PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "transferbench.cli", "plugins"], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "failed to load plugin tb_typo" in proc.stdout and "register_split" in proc.stdout


def test_registering_something_that_is_not_a_plugin_class_is_refused():
    host = PluginHost(load_entry_points=False)

    class Bad:
        @hookimpl
        def register_splits(self, register):
            register("oops", dict)

    host.register(Bad(), "bad")
    with pytest.raises(PluginError, match="not a subclass of TaskSplit"):
        host.registry()


def test_unknown_name_lists_the_known_ones():
    reg = PluginHost(load_entry_points=False).registry()
    with pytest.raises(PluginError) as err:
        reg.get("split", "randon")
    assert "unknown split 'randon'" in str(err.value)
    assert "manmade_natural, random, superclass" in str(err.value)


def test_cli_plugins_lists_a_third_party_package(site):
    make_dist(site, "tb_firstthree", "tb_firstthree_mod", GOOD_PLUGIN)
    make_dist(site, "tb_broken", "tb_broken_mod", "raise RuntimeError('boom at import')\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "transferbench.cli", "plugins"], capture_output=True,
                         text=True, env=env, cwd=REPO, check=True).stdout
    assert "tb_firstthree" in out and "package tb_firstthree 0.1" in out and "first_three" in out
    assert "failed to load plugin tb_broken" in out and "boom at import" in out
    assert "transferbench_plugins.caffenet" in out
