"""plan.json is read through one typed model: every malformed field is a message naming it
(exit code 2), never a traceback, whichever command reads it."""

from __future__ import annotations

import json

import pytest

from tests.test_analysis import write_run
from transferbench.cli import main
from transferbench.errors import RunDirError
from transferbench.planfile import PlanFile, merge_plans


def _damage(run_dir, change):
    plan = json.loads((run_dir / "plan.json").read_text())
    change(plan)
    (run_dir / "plan.json").write_text(json.dumps(plan))


@pytest.mark.parametrize("change, words", [
    (lambda p: p["cells"][0].update(split_seed="zero"), "cells.0.split_seed"),
    (lambda p: p["cells"].append("a string among the cells"), "cells.30"),
    (lambda p: p["cells"][1].pop("job_id"), "cells.1.job_id"),
    (lambda p: p.update(cells={"not": "a list"}), "cells"),
    (lambda p: next(iter(p["jobs"].values())).update(n=-1), "jobs."),
    (lambda p: p.update(layer_names="l1"), "layer_names"),
])
@pytest.mark.parametrize("command", [["report", "--no-plots"], ["report", "--json", "--no-plots"], ["check"],
                                     ["export", "--out", "x.safetensors", "--n", "0"]])
def test_a_malformed_plan_is_a_message_naming_the_field(tmp_path, capsys, change, words, command):
    run = write_run(tmp_path / "run")
    _damage(run, change)
    code = main([command[0], str(run), *command[1:]])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert words in out + err and "plan.json" in out + err and "damaged" in out + err
    assert code == (1 if command[0] == "check" else 2)  # check reports a damaged file with exit 1


def test_the_typed_plan_round_trips_older_files_unchanged(tmp_path):
    run = write_run(tmp_path / "run")
    raw = json.loads((run / "plan.json").read_text())
    plan = PlanFile.from_json((run / "plan.json").read_bytes())
    assert plan.to_json() == raw and plan.format == 1 and plan.layers == 4
    with pytest.raises(RunDirError, match="not valid JSON"):
        PlanFile.from_json(b"{nope")


def test_merging_keeps_old_cells_and_refuses_to_hide_a_finished_one(tmp_path):
    old = PlanFile.from_json((write_run(tmp_path / "a")).joinpath("plan.json").read_bytes())
    new = old.model_copy(deep=True)
    new.cells = [c for c in new.cells if c.n != 3]
    merged, only_old = merge_plans(old, new)
    assert len(merged.cells) == len(old.cells) and only_old == []
    clash = old.model_copy(deep=True)
    clash.cells[0] = clash.cells[0].model_copy(update={"job_id": "another"})
    with pytest.raises(RunDirError, match="now names a different network"):
        merge_plans(old, clash, finished=lambda job_id: True)
    merged, _ = merge_plans(old, clash, finished=lambda job_id: False)  # unfinished: the new plan's
    assert merged.cells[0].job_id == "another"
