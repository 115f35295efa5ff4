"""Findings as a plugin kind (``register_findings``): resolved by name, compared with by
``report --compare NAME | paper | all``, and checked by ``transferbench.testing.check_finding``."""

from __future__ import annotations

import pytest

from transferbench import Contrast, Finding, PaperFindings, hookimpl, plugins, testing
from transferbench.cli import main
from transferbench.errors import ResultsError
from transferbench.runreport import compared_papers, read_report

from .test_validity import paper_like


class Always(Finding):
    """A finding that reads the random-halves experiment's base networks (a value per unit)."""

    name = "bases above chance"
    claim = "base networks learn (a paraphrase)"
    source = "a made-up effect for the test"
    effect = 0.5

    def locate(self, grids):
        found = [g for g in grids if g.get("baseB", 0) is not None]
        return (found[0],) if found else None

    def contrast(self, grids, like=None):
        base = grids[0].get("baseB", 0)
        values = tuple(v - 0.1 for v in base.by_unit.values())  # chance is 1/10
        return Contrast((values,), 1.0, base.count, "baseB - chance")


class Demo(PaperFindings):
    description = "a demonstration paper"
    paper = "Nobody (2026), A test"
    shape = "base networks"

    def findings(self):
        return (Always(),)


class Plugin:
    @hookimpl
    def register_findings(self, register):
        register("demo_paper", Demo)


@pytest.fixture
def demo():
    host = plugins.get_host()
    name = host.register(Plugin(), "demo-findings", origin="test")
    yield
    host.unregister(name)


def test_yosinski_is_a_registered_findings_plugin_and_passes_its_contract(tmp_path):
    entry = plugins.get_registry().get("findings", "yosinski2014")
    assert entry.origin == "built-in"
    testing.check_finding(entry.factory, tmp_path)
    assert list(compared_papers("paper")) == ["yosinski2014"] == list(compared_papers("yosinski2014"))


def test_compare_paper_and_its_plugin_name_give_the_same_scorecard(tmp_path):
    root = paper_like(tmp_path)
    by_alias = read_report(root, compare="paper").scorecard
    by_name = read_report(root, compare="yosinski2014").scorecard
    assert by_alias == by_name and {f.paper for f in by_name} == {"yosinski2014"}
    assert len(by_name) == 6


def test_a_third_party_findings_plugin_is_judged_and_listed(demo, tmp_path, capsys):
    root = paper_like(tmp_path)
    card = read_report(root, compare="demo_paper").scorecard
    assert [(f.paper, f.name, f.verdict) for f in card] == [("demo_paper", "bases above chance", "reproduced")]
    every = read_report(root, compare="all").scorecard
    assert [f.paper for f in every][:6] == ["yosinski2014"] * 6 and "demo_paper" in {f.paper for f in every}
    assert main(["report", str(root), "--compare", "all", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "Reproduction scorecard: demo_paper (1 findings: 1 reproduced)" in out and "All papers:" in out
    assert main(["plugins"]) == 0 and "demo_paper" in capsys.readouterr().out
    followups = (root / "scorecard_followups_top1.csv").read_text()
    assert "demo_paper,bases above chance" in followups and "yosinski2014" not in followups
    assert "yosinski2014" in (root / "scorecard_top1.csv").read_text()


def test_an_unknown_comparison_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ResultsError, match="unknown comparison 'nope'.*yosinski2014"):
        compared_papers("nope")
    root = paper_like(tmp_path)
    assert main(["report", str(root), "--compare", "nope", "--no-plots"]) == 2
    assert "unknown comparison" in capsys.readouterr().err


def test_check_finding_fails_on_a_broken_plugin(tmp_path):
    class Nameless(Always):
        name = ""

    class NoEffect(Always):
        effect = float("nan")

    class Broken(Demo):
        def findings(self):
            return (Nameless(),)

    class Unstated(Demo):
        def findings(self):
            return (NoEffect(),)

    class Twice(Demo):
        def findings(self):
            return (Always(), Always())

    with pytest.raises(testing.ContractError, match="needs a name"):
        testing.check_finding(Broken, tmp_path)
    with pytest.raises(testing.ContractError, match="must be finite"):
        testing.check_finding(Unstated, tmp_path)
    with pytest.raises(testing.ContractError, match="unique"):
        testing.check_finding(Twice, tmp_path)
    testing.check_finding(Demo, tmp_path)
