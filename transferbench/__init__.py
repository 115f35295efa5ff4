"""transferbench: how transferable are the features of each layer of a network?

Everything a plugin or a notebook needs is exported here; the submodules are the engine's
own and may change. A plugin imports from ``transferbench`` only:

* the plugin interfaces: :class:`Architecture`, :class:`TaskSplit`, :class:`TransferProtocol`,
  :class:`DataSource`, :class:`DataTransform` (with :class:`Plugin`, :class:`NoParams`, :class:`Layer`,
  :class:`LayerAction`, :class:`ClassInfo`, :class:`Halves`) and the ``hookimpl`` marker;
* the executor contract: :class:`Executor`, :class:`JobRunner`, :class:`Events`, :class:`Job`,
  :class:`JobRecord`;
* run observers (experiment trackers): :class:`Observer`, :class:`RunInfo`, :class:`ReportInfo`;
* the estimator contract: :class:`Estimator` and the :class:`LayerFeatures` it scores;
* validity checks: :class:`ValidityCheck`, the :class:`RunView` it reads, the
  :class:`CheckResult` it returns, and the statistics it may use (:class:`Grid`,
  :class:`Stat`, :func:`diff`, :class:`Difference`, and over independent units
  :func:`over_units`, :func:`paired`, :func:`verdict`, :func:`equivalence`, :data:`MIN_UNITS`);
* findings (a paper's claims, judged by ``report --compare``): :class:`PaperFindings` (the
  plugin kind), the :class:`Finding` it hands over, the :class:`Contrast` a finding computes
  (with :func:`headroom` and :func:`unit_values` for the shared scale) and what
  :func:`judge` returns (:class:`FindingResult`); :class:`Yosinski2014` is the paper's six;
* the errors (:class:`ConfigError`, :class:`DataError`, ...);
* helpers for data sources: the :mod:`~transferbench.imagenet` class metadata, the
  :mod:`~transferbench.images` decoding helpers and :func:`cached_dir` (a cache folder
  built once, atomically, under a lock).

For notebooks: :func:`run` and :func:`load_run` (see docs/python-api.md). For a plugin's own
tests: the contract checks in :mod:`transferbench.testing` (docs/writing-plugins.md).
"""

from . import imagenet, images
from ._version import __version__
from .analysis import Difference, Grid, Stat, diff
from .api import Run, load_run, prepare, run
from .claims import Contrast, Finding, PaperFindings
from .errors import (
    ConfigError,
    DataError,
    PluginError,
    ResultsError,
    RunDirError,
    TrainingFailed,
    TransferbenchError,
)
from .estimator import Estimator, LayerFeatures
from .evaluator import EvalInputs, Evaluation, Evaluator
from .executor import CohortProgressFn, Events, Executor, JobRunner, ProgressFn, cohort_units
from .files import cached_dir
from .findings import FindingResult, headroom, judge, unit_values
from .hookspecs import hookimpl
from .interfaces import (
    Architecture,
    ClassInfo,
    DataSource,
    DataTransform,
    Halves,
    Layer,
    LayerAction,
    NoParams,
    Plugin,
    TaskSplit,
    TransferProtocol,
)
from .jobs import Job
from .observers import Observer, ReportInfo, RunInfo
from .records import HistoryPoint, JobRecord
from .scorecard import Yosinski2014
from .stats import MIN_UNITS, equivalence, over_units, paired, verdict
from .validity import CheckResult, RunView, ValidityCheck

__all__ = [
    "MIN_UNITS",
    "Architecture",
    "CheckResult",
    "ClassInfo",
    "ConfigError",
    "Contrast",
    "DataError",
    "DataSource",
    "DataTransform",
    "Difference",
    "Estimator",
    "EvalInputs",
    "Evaluation",
    "Evaluator",
    "Events",
    "Executor",
    "Finding",
    "FindingResult",
    "Grid",
    "Halves",
    "HistoryPoint",
    "Job",
    "JobRecord",
    "JobRunner",
    "Layer",
    "LayerAction",
    "LayerFeatures",
    "NoParams",
    "Observer",
    "PaperFindings",
    "Plugin",
    "PluginError",
    "ProgressFn",
    "ReportInfo",
    "ResultsError",
    "Run",
    "RunDirError",
    "RunInfo",
    "RunView",
    "Stat",
    "TaskSplit",
    "TrainingFailed",
    "TransferProtocol",
    "TransferbenchError",
    "ValidityCheck",
    "Yosinski2014",
    "__version__",
    "cached_dir",
    "diff",
    "equivalence",
    "headroom",
    "hookimpl",
    "imagenet",
    "images",
    "judge",
    "load_run",
    "over_units",
    "paired",
    "prepare",
    "run",
    "unit_values",
    "verdict",
    "CohortProgressFn",
    "cohort_units",
]
