"""The out-of-distribution evaluation split (synthetic's ``ood`` setting, a record's
``ood_top1``, ``Grid.ood``) and the findings of Lee et al. (2022) and Kumar et al. (2022) on
hand-made results, each for every verdict it can give, and their contract."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from transferbench import hookimpl, judge, testing
from transferbench.analysis import build_grids
from transferbench.results import ResultRow, RunResults
from transferbench_plugins.kumar2022 import (
    FineTuningAboveProbeId,
    FineTuningBelowProbeOod,
    Kumar2022,
    LpFtBeatsFineTuningOod,
    LpFtMatchesFineTuningId,
)
from transferbench_plugins.lee2022 import (
    MARGIN,
    FirstBlockForInputShift,
    LastBlockForOutputShift,
    Lee2022,
    SurgicalMatchesInput,
    SurgicalMatchesOutput,
)
from transferbench_plugins.synthetic import OodParams, SyntheticDataSource, SyntheticParams, hue_rotation

# --------------------------------------------------------------------------- the OOD split


def _synthetic(tmp_path, **ood) -> SyntheticDataSource:
    return SyntheticDataSource(SyntheticParams(num_classes=4, image_size=16, train_per_class=4, eval_per_class=6,
                                               cache_dir=str(tmp_path), ood=OodParams(**ood) if ood else None))


def test_a_third_of_the_colour_wheel_moves_red_to_green_to_blue():
    rgb = np.eye(3, dtype=np.float32)
    assert np.allclose(rgb @ hue_rotation(1 / 3).T, np.roll(rgb, 1, axis=1), atol=1e-6)
    grey = np.full((1, 3), 0.4, dtype=np.float32)
    assert np.allclose(grey @ hue_rotation(0.25).T, grey, atol=1e-6)  # greys stay grey


def test_the_ood_split_has_the_same_classes_in_other_colours():
    from transferbench_plugins.synthetic import render_split

    p = SyntheticParams(num_classes=4, image_size=16, train_per_class=4, eval_per_class=6)
    eval_x, eval_y = render_split(p, "eval")
    same, labels = render_split(p.model_copy(update={"ood": OodParams(rotation=0.0, hue_shift=0.0)}), "ood")
    other, _ = render_split(p.model_copy(update={"ood": OodParams(rotation=0.0, hue_shift=1 / 3)}), "ood")
    assert np.array_equal(labels, eval_y)  # the same classes, as many of each
    assert not np.array_equal(same, eval_x)  # its own draw of them, not the eval images
    # one stream, the same poses: only the colours moved, red into green, green into blue
    mean = {name: x.astype(np.float32).mean(axis=(0, 2, 3)) for name, x in (("same", same), ("other", other))}
    assert np.allclose(mean["other"], np.roll(mean["same"], 1), atol=4.0)  # per-channel means rotate
    assert not np.allclose(mean["other"], mean["same"], atol=4.0)


def test_the_ood_split_turns_the_poses_and_is_seeded():
    from transferbench_plugins.synthetic import (
        _instances,
        _make_bank,
        _make_classes,
        _make_styles,
        render_split,
    )

    p = SyntheticParams(num_classes=4, image_size=16, eval_per_class=6, jitter=0.0, distractors=0,
                        ood=OodParams(rotation=30.0))
    assert np.array_equal(render_split(p, "ood")[0], render_split(p, "ood")[0])  # seeded: the same images
    bank = _make_bank(0)
    styles = _make_styles(0, 2, bank)
    classes = _make_classes(p, bank, styles)
    labels = np.repeat(np.arange(4), 6)
    upright = _instances(p, labels, np.random.default_rng(5), bank, styles, classes)
    turned = _instances(p, labels, np.random.default_rng(5), bank, styles, classes, np.radians(30.0))
    # no jitter: every class part's angle is its class's own, turned by 30 degrees either way
    assert np.allclose(np.abs(turned.angle - upright.angle), np.radians(30.0), atol=1e-5)
    assert np.allclose(upright.angle, classes.angle[labels], atol=1e-5)


def test_ood_enters_no_job_id_nor_the_cache_of_the_other_splits(tmp_path):
    with_ood, without = _synthetic(tmp_path, rotation=30.0), _synthetic(tmp_path)
    assert with_ood.identity() == without.identity() and with_ood.cache_folder() == without.cache_folder()
    assert with_ood.has_ood() and not without.has_ood()
    from transferbench import DataError

    with pytest.raises(DataError, match="ood"):
        without.load("ood")


def test_an_hf_dataset_names_its_ood_split_without_changing_job_ids(tmp_path):
    from transferbench import DataError
    from transferbench_plugins.hf import HFImages, HFImagesParams

    params = HFImages.example_params(tmp_path)
    plain = HFImages(HFImagesParams(**params))
    shifted = HFImages(HFImagesParams(**params, ood_split=params.get("eval_split", "validation")))
    assert shifted.has_ood() and not plain.has_ood() and shifted.identity() == plain.identity()
    assert len(shifted.load("ood")) == len(plain.load("eval"))
    with pytest.raises(DataError, match="ood_split"):  # what check() reads too, before anything trains
        HFImages(HFImagesParams(**params, ood_split="cifar10_1")).load("ood")


class _ShiftedBlobs:
    """A plugin module: blobs whose OOD split is the eval split moved off its centres."""

    @staticmethod
    def module() -> types.ModuleType:
        from tests.fakes import Blobs

        class OodBlobs(Blobs):
            def has_ood(self) -> bool:
                return True

            def load(self, split):
                if split != "ood":
                    return self._make(split)
                import datasets

                ds = self._make("eval")
                return datasets.Dataset.from_dict({"input": np.asarray(ds["input"], dtype=np.float32) + 3.0,
                                                   "label": ds["label"]})

        mod = types.ModuleType("ood_blobs_plugin")

        @hookimpl
        def register_data_sources(register):
            register("ood_blobs", OodBlobs)

        mod.register_data_sources = register_data_sources  # type: ignore[attr-defined]
        return mod


def test_a_record_carries_both_accuracies_and_the_same_job_id(tmp_path, fake_plugins):
    from rich.console import Console

    from transferbench.api import run

    from .conftest import tiny_config

    mod = _ShiftedBlobs.module()
    sys.modules[mod.__name__] = mod
    name = fake_plugins.register(mod, "ood_blobs_plugin")
    try:
        exp = {"name": "parity", "split": {"name": "parity", "seeds": [0]}, "bases": ["B"], "treatments": []}
        quiet = Console(quiet=True)
        shifted = run(tiny_config(data={"name": "ood_blobs"}, experiments=[exp]), out=tmp_path / "ood", console=quiet)
        plain = run(tiny_config(experiments=[exp]), out=tmp_path / "plain", console=quiet)
    finally:
        fake_plugins.unregister(name)
        del sys.modules[mod.__name__]
    (rec,) = shifted.results.records.values()
    (ref,) = plain.results.records.values()
    assert rec.top1 is not None and rec.ood_top1 is not None and rec.ood_top1 < rec.top1
    assert ref.ood_top1 is None and '"ood_top1"' not in ref.to_json()  # absent, as before
    assert rec.top1 == ref.top1 and rec.history == ref.history  # one more evaluation of the same training
    grid = build_grids(shifted.results)[0]
    assert grid.ood is not None and grid.ood.metric == "ood_top1"
    assert grid.ood.get("baseB", 0).mean == pytest.approx(rec.ood_top1)  # type: ignore[union-attr]
    assert build_grids(plain.results)[0].ood is None
    assert rec.ood_id is not None and shifted.results.ood_stale == 0


def test_an_ood_accuracy_of_another_ood_split_is_not_read(tmp_path):
    """The job id leaves the OOD settings out, so a reused network's ood_top1 may come from
    another split: read only when its record's ood_id is the plan's, and counted otherwise."""
    import json

    from transferbench.records import JobRecord
    from transferbench.results import read_results
    from transferbench.store import RunStore

    plan = {"format": 2, "name": "x", "config_hash": "0" * 16, "num_layers": 2, "layer_names": ["h1", "out"],
            "jobs": {"j": {"kind": "base", "target": "B", "num_classes": 2}}, "ood_id": "new",
            "cells": [{"experiment": "e", "split": "s", "split_seed": 0, "treatment": "baseB", "n": 0, "job_id": "j"}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    store = RunStore(tmp_path)
    for ood_id, expected, stale in (("new", 0.4, 0), ("old", None, 1), (None, None, 1)):
        store.write_record(JobRecord(job_id="j", status="ok", top1=0.9, ood_top1=0.4, ood_id=ood_id))
        results = read_results(tmp_path)
        assert results.rows[0].ood_top1 == expected and results.rows[0].top1 == 0.9
        assert results.ood_stale == stale


# --------------------------------------------------------------------------- hand-made rows


def _row(experiment: str, seed: int, treatment: str, protocol: str | None, n: int, top1: float,
         ood: float | None = None, target: str = "all", classes: int = 10) -> ResultRow:
    return ResultRow(experiment, "random", seed, treatment, n, f"{experiment}-{treatment}-{n}-{seed}", "ok",
                     top1=top1, top5=1.0, top1_best_k=top1, kind="transfer", source="X" if target == "all" else "A",
                     target=target, protocol=protocol, num_classes=classes, ood_top1=ood)


def _grids(rows: list[ResultRow]):
    return build_grids(RunResults("hand-made", "0" * 16, 8, tuple(f"l{i}" for i in range(1, 9)), tuple(rows)))


def _lee(corrupt: dict[str, list[float]] | None = None, relabel: dict[str, list[float]] | None = None) -> dict:
    """Per experiment: ``first`` (surgical n=1), ``last`` (surgical n=7), ``ft`` (finetune n=7), per seed."""
    rows = []
    for experiment, cells in (("corrupt", corrupt), ("relabel", relabel)):
        for key, values in (cells or {}).items():
            treatment, protocol, n = {"first": ("surgical", "surgical", 1), "last": ("surgical", "surgical", 7),
                                      "ft": ("XnB+", "finetune", 7)}[key]
            rows += [_row(experiment, s, treatment, protocol, n, v) for s, v in enumerate(values)]
    grids = _grids(rows)
    return {f.name: judge(f, grids, (), margin=f.margin, resamples=20) for f in Lee2022().findings()}


HIGH, LOW, FT = [0.80, 0.81, 0.79, 0.80], [0.50, 0.52, 0.49, 0.51], [0.80, 0.80, 0.81, 0.80]
NOISY = [0.30, 0.95, 0.55, 0.90]


def test_lee2022_honours_the_findings_contract(tmp_path):
    testing.check_finding(Lee2022, tmp_path)


@pytest.mark.parametrize("finding, experiment, first_high", [
    (FirstBlockForInputShift.name, "corrupt", True), (LastBlockForOutputShift.name, "relabel", False)])
def test_the_block_order_for_every_verdict(finding, experiment, first_high):
    def verdict(first, last, ft=FT):
        return _lee(**{experiment: {"first": first, "last": last, "ft": ft}})[finding]

    good, bad = (HIGH, LOW) if first_high else (LOW, HIGH)
    assert verdict(good, bad).verdict == "reproduced"
    assert verdict(bad, good).verdict == "contradicted"
    assert verdict(NOISY, [0.6] * 4).verdict == "inconclusive"
    assert verdict(good, bad, ft=[0.8, 0.8]).verdict == "not determined"  # the scale in two units only
    other = "relabel" if experiment == "corrupt" else "corrupt"
    assert "not in this run" in _lee(**{other: {"first": HIGH, "last": LOW, "ft": FT}})[finding].run


@pytest.mark.parametrize("finding, experiment, key", [
    (SurgicalMatchesInput.name, "corrupt", "first"), (SurgicalMatchesOutput.name, "relabel", "last")])
def test_matching_fine_tuning_is_non_inferiority_within_the_margin(finding, experiment, key):
    other = "last" if key == "first" else "first"

    def result(values):
        return _lee(**{experiment: {key: values, other: [0.5] * 4, "ft": FT}})[finding]

    # 2 points below fine-tuning, well within 5% of a headroom of 0.7: not inferior
    within = result([v - 0.02 for v in FT])
    assert within.verdict == "reproduced" and MARGIN == 0.05
    assert "margin 5%" in within.run
    assert result(HIGH).verdict == "reproduced"  # equal (or better) holds too: "matches or beats"
    assert result(LOW).verdict == "contradicted"  # 30 points below: beyond the margin
    assert result([0.80, 0.60, 0.79, 0.70]).verdict == "inconclusive"
    assert result([0.8, 0.8, 0.8]).verdict == "reproduced"  # three units suffice
    assert _lee(**{experiment: {key: HIGH, "ft": FT}})[finding].verdict == "not determined"  # one end only


def _kumar(probe: list[tuple[float, float]], ft: list[tuple[float, float]], lpft: list[tuple[float, float]],
           ood: bool = True) -> dict:
    """Per seed, (ID, OOD) top-1 of the linear probe (AnB), fine-tuning (AnB+) and LP-FT at n=7."""
    rows = []
    for treatment, protocol, values in (("AnB", "frozen", probe), ("AnB+", "finetune", ft), ("lpft", "lp_ft", lpft)):
        rows += [_row("lpft", s, treatment, protocol, 7, i, o if ood else None, target="B")
                 for s, (i, o) in enumerate(values)]
    grids = _grids(rows)
    return {f.name: judge(f, grids, (), margin=f.margin, resamples=20) for f in Kumar2022().findings()}


def _pairs(ids: list[float], oods: list[float]) -> list[tuple[float, float]]:
    return list(zip(ids, oods, strict=True))


def test_kumar2022_honours_the_findings_contract(tmp_path):
    testing.check_finding(Kumar2022, tmp_path)


def test_lp_ft_beats_fine_tuning_ood_for_every_verdict():
    name = LpFtBeatsFineTuningOod.name
    ft = _pairs(FT, LOW)
    assert _kumar(ft, ft, _pairs(FT, HIGH))[name].verdict == "reproduced"
    assert _kumar(ft, _pairs(FT, HIGH), _pairs(FT, LOW))[name].verdict == "contradicted"
    assert _kumar(ft, ft, _pairs(FT, NOISY))[name].verdict == "inconclusive"
    missing = _kumar(ft, ft, _pairs(FT, HIGH), ood=False)[name]
    assert missing.verdict == "not determined" and "not in this run" in missing.run  # no OOD split evaluated
    assert _kumar(ft, _pairs(FT, HIGH), _pairs(FT, LOW))[name].effect_points == 10.0


def test_lp_ft_matches_fine_tuning_id_within_its_margin():
    name = LpFtMatchesFineTuningId.name
    ft = _pairs(FT, LOW)
    held = _kumar(ft, ft, _pairs([v + 0.005 for v in FT], LOW))[name]
    assert held.verdict == "reproduced" and held.equivalence == "holds" and held.margin == 0.05
    assert _kumar(ft, ft, _pairs(LOW, LOW))[name].equivalence == "fails"
    assert _kumar(ft, ft, _pairs(NOISY, LOW))[name].verdict == "inconclusive"
    assert _kumar(ft, ft, _pairs(FT, LOW), ood=False)[name].verdict == "reproduced"  # ID needs no OOD split
    assert _kumar(ft[:2], ft[:2], ft[:2])[name].verdict == "not determined"  # two units


def test_the_probe_against_fine_tuning_in_and_out_of_distribution():
    below, above = FineTuningBelowProbeOod.name, FineTuningAboveProbeId.name
    paper = _kumar(_pairs(LOW, HIGH), _pairs(FT, LOW), _pairs(FT, HIGH))  # the paper's picture
    assert paper[below].verdict == "reproduced" and paper[above].verdict == "reproduced"
    other = _kumar(_pairs(HIGH, LOW), _pairs(LOW, HIGH), _pairs(FT, HIGH))
    assert other[below].verdict == "contradicted" and other[above].verdict == "contradicted"
    noisy = _kumar(_pairs(NOISY, NOISY), _pairs(FT, [0.6] * 4), _pairs(FT, HIGH))
    assert noisy[below].verdict == "inconclusive" and noisy[above].verdict == "inconclusive"
    assert _kumar(_pairs(LOW, HIGH), _pairs(FT, LOW), _pairs(FT, HIGH), ood=False)[below].verdict == "not determined"
