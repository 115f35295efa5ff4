"""`plan`'s cost model against hand-computed numbers on a small config.

The network is the fakes' MLP (input D -> 16 -> 16 -> 16 -> K), whose FLOPs per example are
two per multiply-add of each linear layer: f1 = 2*D*16, f2 = f3 = 2*16*16, f4 = 2*16*K. Every
expectation below is written from those, the steps, the batch and the evaluation counts.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_config
from transferbench.cli import main
from transferbench.cohort_cost import RATES_FORMAT, Rates, estimate_cohorts
from transferbench.config import parse_config
from transferbench.plan import build_plan
from transferbench.resolve import resolve

STEPS, BATCH, EVALS = 10, 8, 2


def _config(tmp_path, **changes):
    cfg = tiny_config(
        data={"name": "synthetic", "num_classes": 4, "image_size": 8, "train_per_class": 6, "eval_per_class": 3,
              "cache_dir": str(tmp_path / "synthetic")},
        experiments=[{"name": "e", "split": {"name": "parity", "seeds": [0]}, "treatments": ["AnB"],
                      "layers": [1, 2, 3]}],
        train={"lr": 0.1, "batch_size": BATCH, "steps": STEPS},
        eval={"every": STEPS // EVALS, "best_k": 1},
        executor={"name": "local", "cohorts": True},
        performance={"cache_frozen": False},
    )
    cfg.update(changes)
    config = parse_config(cfg)
    components = resolve(config)
    return config, components, build_plan(config, components)


def test_the_three_ways_of_running_a_plan_match_the_hand_count(fake_plugins, tmp_path):
    config, components, plan = _config(tmp_path)
    d, k = 3 * 8 * 8, 2  # an 8x8 RGB image; 4 classes, 2 per half
    f = [2 * d * 16, 2 * 16 * 16, 2 * 16 * 16, 2 * 16 * k]
    full = sum(f)
    prefix = [0, f[0], f[0] + f[1], f[0] + f[1] + f[2]]  # layers 1..n
    t = STEPS * BATCH  # training images of every network
    e = 2 * 3 * EVALS  # 2 classes x 3 eval images, EVALS times
    base = t * 3 * full + e * full
    anb = {n: t * (full + 2 * (full - prefix[n])) + e * full for n in (1, 2, 3)}
    assert sorted((j.kind, j.n) for j in plan.jobs.values()) == [("base", 0)] * 2 + [("transfer", n) for n in (1, 2, 3)]

    rates = Rates(tflops=1e-7, decode=50.0, read=400.0)  # 0.1 MFLOP/s: compute binds even a tiny net
    cost = estimate_cohorts(config, components, plan, rates)
    assert cost is not None and cost.store_allowed
    solo_flop = 2 * base + sum(anb.values())
    # one cohort of the three AnB (one source, frozen prefixes 1, 2, 3): the deepest prefix
    # once per batch, the shallower ones come for free
    cohort_flop = solo_flop - t * (prefix[1] + prefix[2])
    assert cost.decoding.flop == pytest.approx(solo_flop) and cost.solo.flop == pytest.approx(solo_flop)
    assert cost.cohorts.flop == pytest.approx(cohort_flop)
    assert (cost.decoding.units, cost.solo.units, cost.cohorts.units) == (5, 5, 3)

    hour, per_s = 3600.0, 1e5
    # decoding every batch: each network decodes its own t + e images
    assert cost.decoding.images == 5 * (t + e) and not cost.decoding.store
    assert cost.decoding.decode_hours == pytest.approx(5 * (t + e) / 50 / hour)
    solo_units = [base, base, *anb.values()]
    assert cost.decoding.hours == pytest.approx(sum(max(u / per_s, (t + e) / 50) for u in solo_units) / hour)
    # without cohorts (the store): the data decoded once (4 classes x (6 + 3) images), then read
    assert cost.solo.store and cost.solo.decode_images == 4 * 9
    assert cost.solo.read_hours == pytest.approx(5 * (t + e) / 400 / hour)
    once = 4 * 9 / 50
    assert cost.solo.hours == pytest.approx((once + sum(max(u / per_s, (t + e) / 400) for u in solo_units)) / hour)
    # with cohorts: the two bases alone and one stream for the cohort
    cohort_units = [base, base, cohort_flop - 2 * base]
    assert cost.cohorts.images == 3 * (t + e)
    assert cost.cohorts.hours == pytest.approx((once + sum(max(u / per_s, (t + e) / 400) for u in cohort_units))
                                               / hour)
    assert cost.decoding.binds == "compute" and cost.cohorts.binds == "compute"  # 0.1 MFLOP/s binds
    slow_disk = estimate_cohorts(config, components, plan, Rates(tflops=1.0, decode=50.0, read=0.01))
    assert slow_disk is not None and slow_disk.solo.binds == "disk read" and slow_disk.decoding.binds == "decode"


def test_a_shared_prefix_ends_where_the_architecture_s_deterministic_prefix_ends(fake_plugins, tmp_path,
                                                                              monkeypatch):
    """The members of one source share only the prefix `split_at` gives (CaffeNet stops
    before fc6's dropout: AnB at n = 7 runs its own fc7); a cut at 1 shares layer 1 alone."""
    from tests.fakes import MLP, _Named

    monkeypatch.setattr(MLP, "split_at", lambda self, model, n: (_Named.view(model, model.names[:1]),
                                                                  _Named.view(model, model.names[1:])))
    config, components, plan = _config(tmp_path)
    f1 = 2 * (3 * 8 * 8) * 16
    cost = estimate_cohorts(config, components, plan, Rates(1.0, 50.0, 400.0))
    assert cost is not None
    # three members each computing the shared layer 1: two of those are saved, nothing more
    assert cost.solo.flop - cost.cohorts.flop == pytest.approx(STEPS * BATCH * 2 * f1)


def test_the_estimators_are_compared_with_retraining_as_it_runs(fake_plugins, tmp_path):
    """The retraining the estimators stand in for counts no backward pass through frozen layers."""
    from transferbench.compute import network_work
    from transferbench.estimator_cost import estimate_estimators

    config, components, plan = _config(tmp_path, experiments=[
        {"name": "e", "split": {"name": "parity", "seeds": [0]}, "treatments": ["AnB"], "layers": [1, 2, 3],
         "estimators": ["linear"]}])
    cost = estimate_estimators(config, components, plan, 1.0)
    d, k = 3 * 8 * 8, 2
    full = 2 * d * 16 + 2 * 2 * 16 * 16 + 2 * 16 * k
    prefix = {1: 2 * d * 16, 2: 2 * d * 16 + 512, 3: 2 * d * 16 + 1024}
    t, e = STEPS * BATCH, 2 * 3 * EVALS
    assert cost is not None and cost.retraining_flop == pytest.approx(
        sum(t * (full + 2 * (full - prefix[n])) + e * full for n in (1, 2, 3)))
    work = network_work(config, components, plan)
    assert work is not None and len(work) == 5


def test_plan_reads_a_rates_file_in_place_of_the_assumed_rates(fake_plugins, tmp_path, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(executor={"name": "local", "cohorts": True})))
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"format": RATES_FORMAT, "device": "a test", "train_tflops": 7.0,
                                 "decode_images_per_s": 123.0, "store_images_per_s": 4567.0}))
    assert main(["plan", str(path), "--json", "--measured", str(rates)]) == 0
    doc = json.loads(capsys.readouterr().out)["cohorts"]
    assert doc["tflops"] == 7.0 and doc["decode_rate"] == 123.0 and doc["rates"].startswith("measured")
    assert doc["read_rate"] is None and doc["store_allowed"] is False  # blobs are vectors: no uint8 store
    assert main(["plan", str(path), "-q", "--measured", str(rates)]) == 0
    assert "at 7 TFLOP/s" in capsys.readouterr().out
    rates.write_text(json.dumps({"format": "other"}))
    assert main(["plan", str(path), "-q", "--measured", str(rates)]) == 2
    assert "not a rates file" in capsys.readouterr().err
