"""The paper's own per-network results as a reference run.

``data/paper_results.csv`` holds one row per network of Yosinski et al. (2014), recomputed
from the published Caffe training logs (``top1_best10_mean``: the notebook's metric, the mean
of the 10 best of 450 evaluations; ``top1_final``: the last evaluation). :func:`load_paper`
turns it into the same :class:`~transferbench.results.RunResults` a run directory gives, so
every analysis, table and plot runs unchanged on it.

Naming, so that the paper lines up with a run:

* ``random`` experiment: random halves, ``split_seed`` 0..3, 500 classes each. The CSV's
  ``selffer AnA`` networks become ``AnA`` (pooled into BnB, as in the paper),
  ``transfer BnA`` becomes ``BnA`` (pooled into AnB), ``transfer+``/``selffer+`` get a ``+``.
* ``manmade_natural`` experiment: half A = natural (449 classes), half B = man-made (551),
  so ``AnB`` = natural -> man-made and ``BnA`` = man-made -> natural.
* ``random_weights`` experiment: ``random`` (layers 1..n frozen at random init, 1,000
  classes) with its base, the full 1,000-class network, as ``baseall``.
* The reduced-data networks (not a transfer experiment) are left out of the rows; see
  :func:`reduced_data`.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from typing import Any

from .results import ResultRow, RunResults, check_metric

__all__ = ["HALF_NAMES", "PAPER_METRIC", "PAPER_NAME", "load_paper", "reduced_data"]

PAPER_NAME = "yosinski2014"

#: The metric the paper's tables use (mean of the 10 best evaluations).
PAPER_METRIC = "top1_best_k"

#: What the halves are, where they mean something.
HALF_NAMES: dict[str, dict[str, str]] = {
    "manmade_natural": {"A": "natural", "B": "man-made", "all": "all 1000"},
    "random_weights": {"all": "all 1000"},
}

_LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")

# (CSV experiment, CSV treatment) -> (experiment, treatment, kind, source, target, protocol)
_MAP: dict[tuple[str, str], tuple[str, str, str, str | None, str, str | None]] = {
    ("random_split", "baseA"): ("random", "baseA", "base", None, "A", None),
    ("random_split", "baseB"): ("random", "baseB", "base", None, "B", None),
    ("random_split", "selffer AnA"): ("random", "AnA", "transfer", "A", "A", "frozen"),
    ("random_split", "selffer+ AnA"): ("random", "AnA+", "transfer", "A", "A", "finetune"),
    ("random_split", "transfer AnB"): ("random", "AnB", "transfer", "A", "B", "frozen"),
    ("random_split", "transfer BnA"): ("random", "BnA", "transfer", "B", "A", "frozen"),
    ("random_split", "transfer+ AnB"): ("random", "AnB+", "transfer", "A", "B", "finetune"),
    ("manmade_natural", "base_natural"): ("manmade_natural", "baseA", "base", None, "A", None),
    ("manmade_natural", "base_manmade"): ("manmade_natural", "baseB", "base", None, "B", None),
    ("manmade_natural", "transfer natural->manmade"): (
        "manmade_natural", "AnB", "transfer", "A", "B", "frozen"),
    ("manmade_natural", "transfer manmade->natural"): (
        "manmade_natural", "BnA", "transfer", "B", "A", "frozen"),
    ("full_1000", "base"): ("random_weights", "baseall", "base", None, "all", None),
    ("random_weights", "random frozen 1..n"): (
        "random_weights", "random", "transfer", None, "all", "random_frozen"),
}

_NUM_CLASSES = {("random", "A"): 500, ("random", "B"): 500, ("manmade_natural", "A"): 449,
                ("manmade_natural", "B"): 551}
_SPLITS = {"random": "random", "manmade_natural": "manmade_natural", "random_weights": "all"}
# Experiments in the order the paper presents them.
_ORDER = ("random", "manmade_natural", "random_weights")


def _read_csv() -> list[dict[str, Any]]:
    text = resources.files("transferbench").joinpath("data/paper_results.csv").read_text("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def load_paper() -> RunResults:
    """The paper's networks as result rows (status ``ok``, ``best_k`` 10, 8 layers)."""
    rows = []
    for rec in _read_csv():
        key = (rec["experiment"], rec["treatment"])
        if key not in _MAP:
            continue
        experiment, treatment, kind, source, target, protocol = _MAP[key]
        seed = int(rec["split"]) if rec["split"].isdigit() else 0
        rows.append(
            ResultRow(
                experiment=experiment,
                split=_SPLITS[experiment],
                split_seed=seed,
                treatment=treatment,
                n=int(rec["n"]),
                job_id=rec["network"],
                status="ok",
                top1=float(rec["top1_final"]),
                top1_best_k=float(rec["top1_best10_mean"]),
                best_k=10,
                config_hash=PAPER_NAME,
                kind=kind,
                source=source,
                target=target,
                protocol=protocol,
                num_classes=_NUM_CLASSES.get((experiment, target), 1000),
            )
        )
    rows.sort(key=lambda r: (_ORDER.index(r.experiment), r.n, r.treatment, r.split_seed))
    return RunResults(
        name=PAPER_NAME,
        config_hash=PAPER_NAME,
        num_layers=len(_LAYER_NAMES),
        layer_names=_LAYER_NAMES,
        rows=tuple(rows),
    )


def reduced_data(metric: str = PAPER_METRIC) -> dict[int, float]:
    """The paper's reduced-data networks (1,000 classes): images per class -> top-1."""
    column = "top1_best10_mean" if check_metric(metric) == "top1_best_k" else "top1_final"
    out = {}
    for rec in _read_csv():
        if rec["experiment"] == "reduced_data":
            out[int(rec["treatment"].split()[0])] = float(rec[column])
    return dict(sorted(out.items()))
