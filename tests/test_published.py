"""Scoring a ranking against a published ground-truth table (transferbench.published and
`transferbench estimators score`), on a table small enough to work by hand."""

from __future__ import annotations

import json

import pytest

from transferbench.cli import main
from transferbench.published import read_table, score_against

# three targets, three sources; every target ranks s1 > s2 > s3, ImageNet ranks them the other way
TABLE = """# a hand-made table
target,source,finetuned,imagenet_top1
t1,s1,0.9,70
t1,s2,0.8,80
t1,s3,0.7,90
t2,s1,0.6,70
t2,s2,0.5,80
t2,s3,0.4,90
t3,s1,0.3,70
t3,s2,0.2,80
t3,s3,0.1,90
"""
# est: right on t1, reversed on t2, (1, 3, 2) on t3
SCORES = """target,source,est,oracle
t1,s1,3,0.9
t1,s2,2,0.8
t1,s3,1,0.7
t2,s1,1,0.6
t2,s2,2,0.5
t2,s3,3,0.4
t3,s1,1,0.3
t3,s2,3,0.2
t3,s3,2,0.1
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "table.csv").write_text(TABLE)
    (tmp_path / "scores.csv").write_text(SCORES)
    return tmp_path


def test_scores_baselines_and_verdicts_by_hand(files):
    from transferbench.published import read_scores

    report = score_against(read_table(str(files / "table.csv")), read_scores(str(files / "scores.csv")),
                           random_draws=50)
    rows = {r.name: r for r in report.rows}
    est = rows["est"]
    # t3 by hand: weighted tau by y's ranks -6/11, by x's ranks -2/11; their mean -4/11
    assert est.per_target == {"t1": pytest.approx(1.0), "t2": pytest.approx(-1.0), "t3": pytest.approx(-4 / 11)}
    assert est.weighted_tau.value == pytest.approx(-4 / 33)
    assert est.regret == pytest.approx((0.0 + 0.2 + 0.1) / 3)  # t2 picks s3 (.4 of .6), t3 picks s2 (.2 of .3)
    assert rows["imagenet_top1"].weighted_tau.value == pytest.approx(-1.0)
    assert rows["static"].weighted_tau.value == pytest.approx(1.0)  # s1 is best on the other targets too
    assert report.strongest == "static" and report.sources == 3 and report.targets == ["t1", "t2", "t3"]
    # est - static per target: 0, -2, -15/11; a resample of t1 three times (1/27 = 3.7% of them) gives 0,
    # so the interval reaches 0: not determined, though every other resample is below
    assert est.difference.value == pytest.approx((0 - 2 - 15 / 11) / 3)
    assert est.difference.ci_high == pytest.approx(0.0) and est.beats == "not determined"
    # equal to the strongest baseline on every target: never "beats"
    assert rows["oracle"].difference.value == pytest.approx(0.0) and rows["oracle"].beats == "not determined"
    assert rows["static"].beats == "" and rows["static"].kind == "baseline" and est.kind == "estimator"


def test_the_shipped_table_and_its_provenance():
    from importlib import resources

    table = read_table("agostinelli2022")
    assert len(table.targets) == 9 and len(table.columns["finetuned"]) == 9 * 19
    assert table.scores == ["gbc", "leep", "nleep", "logme", "hscore"]
    assert table.columns["imagenet_top1"][("cifar10", "resnet50")] == 74.9
    note = resources.files("transferbench").joinpath("data/agostinelli2022_architectures.md").read_text("utf-8")
    assert "CC BY 4.0" in note and "arXiv:2204.01403" in note and "google-research" in note


def test_the_command_prints_every_target_and_refuses_bad_input(files, capsys):
    assert main(["estimators", "score", str(files / "scores.csv"), "--against", str(files / "table.csv"),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in doc["rows"]] == ["est", "oracle", "imagenet_top1", "static"]
    (files / "bad.csv").write_text("target,source,est\nt1,s1,high\n")
    assert main(["estimators", "score", str(files / "bad.csv"), "--against", str(files / "table.csv")]) == 2
    assert "not a number" in capsys.readouterr().err
    assert main(["estimators", "score", "--against", "nosuchtable"]) == 2
    assert main(["estimators", "score", "--against", str(files / "table.csv"), "--truth", "frozen"]) == 2
