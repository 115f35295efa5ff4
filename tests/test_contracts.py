"""Contract tests: every registered plugin of every kind honours its interface.

The checks themselves are public (``transferbench.testing``), so third-party packages run
the same ones; this file runs them over every registered plugin, built-in or installed,
each built from its own ``example_params(workdir)``. Plugins whose optional extra is not
installed are skipped, saying which.
"""

from __future__ import annotations

import pytest

from transferbench import testing
from transferbench.plugins import KINDS, PluginHost

REGISTRY = PluginHost().registry()
PLUGINS = testing.registered_plugins(REGISTRY)


def test_no_builtin_plugin_failed_to_load():
    assert [f for f in REGISTRY.failures if f.origin == "built-in"] == []


def test_every_kind_has_a_check_and_a_builtin_plugin():
    assert set(testing.CHECKS) == set(KINDS)
    assert {kind for kind, _, _ in PLUGINS} == set(KINDS)


CASES = [pytest.param(kind, name, cls, id=f"{kind}:{name}", marks=[pytest.mark.extras] if cls.requires else [])
         for kind, name, cls in PLUGINS]


@pytest.mark.parametrize("kind,name,cls", CASES)
def test_plugin_honours_its_contract(kind, name, cls, tmp_path):
    assert testing.kind_of(cls) == kind
    testing.check_plugin(cls, tmp_path)


# --------------------------------------------------------------------------- the checks can fail


def test_a_broken_split_fails_with_the_rule_it_breaks(tmp_path):
    from transferbench import Halves, TaskSplit

    class Overlapping(TaskSplit):
        def split(self, classes, seed):
            return Halves(A=(0, 1), B=(1, 2))

    class GlobalRng(TaskSplit):
        def split(self, classes, seed):
            import numpy as np

            np.random.seed(seed)
            return Halves(A=(0,), B=(1,))

    with pytest.raises(testing.ContractError, match="disjoint"):
        testing.check_split(Overlapping, tmp_path)
    with pytest.raises(testing.ContractError, match="numpy's global RNG"):
        testing.check_split(GlobalRng(), tmp_path)


def test_an_executor_that_ignores_dependencies_fails(tmp_path):
    from transferbench import Executor

    class Backwards(Executor):
        def run(self, jobs, runner, events=None):
            for job in reversed(list(jobs)):
                events.job_started(job)
                events.job_finished(job, runner(job))

    with pytest.raises(testing.ContractError, match="copies from"):
        testing.check_executor(Backwards, tmp_path)


def test_a_plugin_with_a_missing_requirement_is_skipped(tmp_path):
    from transferbench import Halves, TaskSplit

    class NeedsNothingThere(TaskSplit):
        requires = ("surely_not_an_installed_module_xyz",)
        install_hint = "pip install it"

        def split(self, classes, seed):
            return Halves(A=(0,), B=(1,))

    with pytest.raises(pytest.skip.Exception, match="surely_not_an_installed_module_xyz: pip install it"):
        testing.check_split(NeedsNothingThere, tmp_path)


def test_check_registers_reads_a_module_s_hooks():
    import types

    from transferbench import Halves, TaskSplit, hookimpl

    class Mine(TaskSplit):
        def split(self, classes, seed):
            return Halves(A=(0,), B=(1,))

    module = types.ModuleType("my_plugin")

    @hookimpl
    def register_splits(register):
        register("mine", Mine)

    module.register_splits = register_splits
    assert testing.check_registers(module, "split", "mine", Mine) is Mine
    with pytest.raises(testing.ContractError, match="registers no 'other'"):
        testing.check_registers(module, "split", "other")
    with pytest.raises(testing.ContractError, match="not a protocol"):
        testing.check_registers(module, "protocol", "mine")
