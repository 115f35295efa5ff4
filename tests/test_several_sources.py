"""Several named weights files on one experiment (``sources:``): each source its own cells,
estimates and results; the single ``source:`` keeps its job ids; config errors at their key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import tiny_config
from transferbench.config import parse_config
from transferbench.errors import ConfigError
from transferbench.plan import build_plan
from transferbench.resolve import resolve


def _file(path: Path, offset: float) -> str:
    """A deterministic weights file for the fake MLP (no RNG: its bytes, so its SHA-256, are fixed)."""
    from tests.fakes import MLP

    with torch.random.fork_rng(devices=[]):
        shapes = {k: v.shape for k, v in MLP().build(4, (12,)).state_dict().items()}
    state = {k: (torch.arange(torch.Size(s).numel(), dtype=torch.float32).reshape(s) / 1000 + offset).contiguous()
             for k, s in shapes.items()}
    save_file(state, str(path))
    return str(path)


def _plan(experiment: dict):
    config = parse_config(tiny_config(experiments=[experiment]))
    components = resolve(config)
    return build_plan(config, components)


def _two(tmp_path: Path, **extra) -> dict:
    return {"name": "x", "split": {"name": "parity", "seeds": [0]},
            "sources": [{"name": "good", "checkpoint": _file(tmp_path / "a.safetensors", 0.0)},
                        {"name": "weak", "checkpoint": _file(tmp_path / "b.safetensors", 0.5)}],
            "treatments": ["XnB", "XnB+", "BnB"], "estimators": ["knn", "leep"], **extra}


#: The jobs of the single-source experiment below as transferbench 0.4 planned them, before
#: `sources:` existed (kind, source, target, n, protocol or estimator, id): the same config keeps them.
SINGLE_SOURCE_IDS = [
    'base None B 0 None 17fe9712e0f81011',
    'estimate B B 1 knn 0775dd9539304479',
    'estimate B B 2 knn b77917300b1f0af5',
    'estimate B B 3 knn ebe1a628416a65ec',
    'estimate X B 1 knn b2a9ad09a9dac754',
    'estimate X B 2 knn d87de43ac00ca22b',
    'estimate X B 3 knn d810dd4a99616f59',
    'transfer X B 1 finetune 5783a435a55d2383',
    'transfer X B 1 frozen f648a3d3e2580cdc',
    'transfer X B 2 finetune 726ac013321782ce',
    'transfer X B 2 frozen 2c34f11cd94b7f2c',
    'transfer X B 3 finetune 69c647b7382c8a7e',
    'transfer X B 3 frozen 0d8defb131fcf85f',
]


def test_a_single_source_config_keeps_its_job_ids(fake_plugins, tmp_path):
    exp = {"name": "x", "split": {"name": "parity", "seeds": [0]},
           "source": {"checkpoint": _file(tmp_path / "a.safetensors", 0.0)},
           "treatments": ["XnB", "XnB+"], "estimators": ["knn"]}
    plan = _plan(exp)
    ids = sorted(f"{j.kind} {j.source} {j.target} {j.n} {(j.protocol_spec or j.estimator_spec or {}).get('name')} "
                 f"{j.id}" for j in plan.jobs.values())
    assert ids == SINGLE_SOURCE_IDS
    assert {e.source for e in plan.estimates} == {"X", "B"}


def test_each_named_source_gets_its_own_cells_estimates_and_jobs(fake_plugins, tmp_path):
    plan = _plan(_two(tmp_path))
    treatments = {c.treatment for c in plan.cells}
    assert treatments == {"baseB", "BnB", "XnB@good", "XnB+@good", "XnB@weak", "XnB+@weak"}
    by_name = {name: [plan.jobs[c.job_id] for c in plan.cells if c.treatment == f"XnB@{name}"]
               for name in ("good", "weak")}
    assert {j.source for j in by_name["good"]} == {"good"} and {j.source for j in by_name["weak"]} == {"weak"}
    assert not {j.id for j in by_name["good"]} & {j.id for j in by_name["weak"]}
    shas = {name: {j.external.file.sha256 for j in jobs} for name, jobs in by_name.items()}
    assert len(shas["good"]) == len(shas["weak"]) == 1 and shas["good"] != shas["weak"]
    sources = {(e.source, e.target, e.split_seed, e.estimator) for e in plan.estimates}
    assert {s for s, *_ in sources} == {"good", "weak", "B"}
    for name in ("good", "weak"):  # every estimator, every seed, every layer, per source
        mine = [e for e in plan.estimates if e.source == name]
        assert len(mine) == 2 * 3  # estimators x layers
        assert {plan.jobs[e.job_id].external.file.sha256 for e in mine} == shas[name]
    # the same file as the single source X gives the same networks: the name is not in the ids
    single = _plan({"name": "x", "split": {"name": "parity", "seeds": [0]},
                    "source": {"checkpoint": str(tmp_path / "a.safetensors")},
                    "treatments": ["XnB", "XnB+", "BnB"], "estimators": ["knn", "leep"]})
    good = {(c.split_seed, c.treatment.split("@")[0], c.n): c.job_id for c in plan.cells if "good" in c.treatment}
    assert good == {(c.split_seed, c.treatment, c.n): c.job_id for c in single.cells if c.treatment.startswith("X")}


def test_a_treatment_may_name_a_source(fake_plugins, tmp_path):
    exp = _two(tmp_path, treatments=[{"name": "g", "source": "good", "protocol": "finetune"},
                                     {"name": "w", "source": "weak"}])
    plan = _plan(exp)
    assert {plan.jobs[c.job_id].source for c in plan.cells if c.treatment in ("g", "w")} == {"good", "weak"}


@pytest.mark.parametrize("change, key, words", [
    ({"sources": [{"name": "good", "checkpoint": "a.safetensors"}, {"name": "good", "checkpoint": "b.safetensors"}]},
     "experiments.0", "source names must be unique; repeated: good"),
    ({"treatments": [{"name": "t", "source": "nosuch"}]}, "experiments.0", "'nosuch', which is not one of"),
    ({"treatments": ["XnB", {"name": "t", "source": "X"}]}, "experiments.0", "with sources:, name one of them"),
    ({"source": {"checkpoint": "a.safetensors"}}, "experiments.0", "either source: (one weights file, X) or sources:"),
    ({"treatments": [{"name": "t", "source": "good"}]}, "experiments.0", "sources: weak not used"),
    ({"sources": [{"name": "A", "checkpoint": "a.safetensors"}]}, "experiments.0.sources.0.name", "other than A, B, X"),
])
def test_bad_sources_are_config_errors(fake_plugins, tmp_path, change, key, words):
    exp = {"name": "x", "split": {"name": "parity"}, "treatments": ["XnB"],
           "sources": [{"name": "good", "checkpoint": "a.safetensors"},
                       {"name": "weak", "checkpoint": "b.safetensors"}], **change}
    with pytest.raises(ConfigError) as err:
        parse_config(tiny_config(experiments=[exp]))
    assert any(k == key and words in m for k, m in err.value.problems), err.value.problems


def test_two_names_for_one_file_are_refused(fake_plugins, tmp_path):
    path = _file(tmp_path / "a.safetensors", 0.0)
    exp = {"name": "x", "split": {"name": "parity"}, "treatments": ["XnB"],
           "sources": [{"name": "good", "checkpoint": path}, {"name": "same", "checkpoint": path}]}
    with pytest.raises(ConfigError) as err:
        _plan(exp)
    assert any(k == "experiments.0.sources.1.checkpoint" and "same content" in m for k, m in err.value.problems)


def test_a_bad_sources_config_exits_2_without_a_traceback(tiny_config_file, tmp_path, capsys):
    from transferbench.cli import main

    exp = {"name": "x", "split": {"name": "parity"}, "treatments": [{"name": "t", "source": "nosuch"}],
           "sources": [{"name": "good", "checkpoint": "a.safetensors"}]}
    assert main(["validate", str(tiny_config_file(experiments=[exp]))]) == 2
    err = capsys.readouterr()
    assert "nosuch" in err.out + err.err and "Traceback" not in err.out + err.err


def test_leep_and_nce_read_a_file_s_own_classifier(fake_plugins, tmp_path):
    """A weights file keeps its own head for the source outputs (its class count read off the
    head's tensors); a file without a head falls back to the target's class count."""
    from tests.fakes import MLP
    from transferbench.runner import _file_classes

    arch = MLP()
    state = arch.build(10, (12,)).state_dict()
    assert _file_classes(arch, 4, (12,), state) == 10
    headless = {k: v for k, v in state.items() if not k.startswith("out.")}
    assert _file_classes(arch, 4, (12,), headless) == 4


def test_recommend_refuses_a_target_with_two_weights_files(fake_plugins, tmp_path):
    """A recommend target has one source: two named files must not be read as one ("X")."""
    from transferbench.advise import read_sweep_plan
    from transferbench.api import prepare
    from transferbench.errors import ConfigError

    exp = _two(tmp_path, treatments=["XnB", "XnB+"], estimators=[], bases=["B"])
    with pytest.raises(ConfigError, match="one source half into one target half"):
        read_sweep_plan(prepare(tiny_config(experiments=[exp])))
