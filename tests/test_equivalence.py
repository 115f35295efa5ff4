"""The same configs give the same numbers as the code that wrote tests/data/golden_records.json.

The golden records were written by transferbench 0.1 before the core was reshaped (see
tests/golden.py); every accuracy and every evaluation of every network must match.
"""

from __future__ import annotations

import json

import pytest

from tests.golden import GOLDEN, GRIDS, platform, run_grid


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_grid_gives_the_golden_records(name, tmp_path, fake_plugins):
    data = json.loads(GOLDEN.read_text())
    if data["platform"] != platform():
        pytest.skip(f"golden records were written on {data['platform']}, this is {platform()}")
    golden = data["grids"][name]
    cells = run_grid(name, tmp_path)
    assert [(c["experiment"], c["split_seed"], c["treatment"], c["n"]) for c in cells] == [
        (c["experiment"], c["split_seed"], c["treatment"], c["n"]) for c in golden]
    for got, want in zip(cells, golden):
        where = f"{got['experiment']} seed {got['split_seed']} {got['treatment']} n={got['n']}"
        history, want_history = got.pop("history"), want.pop("history")
        assert got == want, where
        assert [(h["step"], h["epoch"], h["top1"], h["top5"]) for h in history] == [
            (h["step"], h["epoch"], h["top1"], h["top5"]) for h in want_history], where
        assert [h["train_loss"] for h in history] == pytest.approx(
            [h["train_loss"] for h in want_history], rel=1e-6), where
