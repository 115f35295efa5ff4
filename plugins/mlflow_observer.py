"""The ``mlflow`` run observer: one MLflow run per network, plus one for the final report.

Needs the MLflow client (``pip install 'transferbench[mlflow]'``, which installs
``mlflow-skinny``; the ``mlflow ui`` server comes with the full ``mlflow`` package). By
default it logs to a local file store inside the run directory, ``file:<run dir>/mlruns``,
and nothing leaves the machine; ``tracking_uri`` points it elsewhere (``sqlite:///mlflow.db``,
``http://host:5000``).

In the MLflow experiment named like the config (``experiment`` overrides it), each network
trained becomes a run named by its cell (``AnB n=3 (random, seed 0)``) with

* tags ``transferbench.job_id``, ``transferbench.run_dir``, ``transferbench.config_hash``,
  ``transferbench.kind`` (``network``);
* parameters: the network's description (experiment, treatment, n, split seed, protocol,
  ...) and the config's ``data``, ``architecture``, ``train`` and ``eval`` keys;
* metrics per step: ``train_loss_running`` while it trains, and ``top1``, ``top5``,
  ``train_loss``, ``epoch`` at each evaluation; ``final_top1``, ``final_top5``,
  ``top1_best_k``, ``train_time_s`` at the end;
* the artifact ``record.json`` (the network's record); the run ends FINISHED, or FAILED for
  a network that failed.

When the results table is written, a run ``report`` (``transferbench.kind`` = ``report``)
gets one metric per treatment, ``<experiment>/<treatment>/<metric>`` with step n, and the
report's files as artifacts. MLflow's file store must be allowed explicitly since MLflow 3
(``MLFLOW_ALLOW_FILE_STORE=true``); this observer sets it for ``file:`` URIs unless it is set.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Job, JobRecord, Observer, ReportInfo, RunInfo, hookimpl

INSTALL_HINT = "pip install 'transferbench[mlflow]' (or: pip install mlflow-skinny)"


class MLflowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: the local file store file:<run dir>/mlruns"
    )
    experiment: str | None = Field(None, description="MLflow experiment name; default: the config's name")
    progress_every: int = Field(
        10, ge=0, description="log the running training loss every this many steps (0: only the evaluations)"
    )


def metric_name(name: str) -> str:
    """A name MLflow accepts for a metric or parameter (``AnB+`` -> ``AnB_plus``)."""
    return re.sub(r"[^\w./\- ]", "_", name.replace("+", "_plus"))


class MLflowObserver(Observer[MLflowParams]):
    """Logs every network as an MLflow run: parameters, per-step metrics and its record."""

    description = "MLflow tracking: one run per network, params, metrics, the record (needs mlflow)"
    Params = MLflowParams
    requires = ("mlflow",)
    install_hint = INSTALL_HINT

    def __init__(self, params: MLflowParams | None = None) -> None:
        super().__init__(params)
        self.params: MLflowParams
        self.client: Any = None
        self.run: RunInfo | None = None
        self.experiment_id: str | None = None
        self.runs: dict[str, str] = {}  # job id -> open MLflow run id

    def tracking_uri(self, run_dir: Path) -> str:
        """Where the runs go: ``tracking_uri``, or the file store in the run directory."""
        if self.params.tracking_uri:
            return self.params.tracking_uri
        return (Path(run_dir).resolve() / "mlruns").as_uri()

    def run_started(self, run: RunInfo) -> None:
        uri = self.tracking_uri(run.run_dir)
        if uri.startswith("file:") or "://" not in uri and ":" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses it otherwise
        from mlflow.tracking import MlflowClient

        self.run = run
        self.client = MlflowClient(tracking_uri=uri)
        name = self.params.experiment or run.name
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)

    def _tags(self, kind: str, job_id: str | None = None) -> dict[str, str]:
        assert self.run is not None
        tags = {"transferbench.kind": kind, "transferbench.run_dir": str(self.run.run_dir),
                "transferbench.config_hash": self.run.config_hash}
        if job_id:
            tags["transferbench.job_id"] = job_id
        return tags

    def _open(self, job: Job) -> str:
        from mlflow.entities import Param

        assert self.run is not None
        mlrun = self.client.create_run(self.experiment_id, run_name=self.run.label(job),
                                       tags=self._tags("network", job.id))
        params = [Param(metric_name(k), str(v)[:6000]) for k, v in self.run.params(job).items() if v is not None]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(mlrun.info.run_id, params=params[i:i + 100])
        self.runs[job.id] = mlrun.info.run_id
        return mlrun.info.run_id

    def job_started(self, job: Job) -> None:
        if self.client is not None:
            self._open(job)

    def job_progress(self, job: Job, step: int, total: int, info: dict[str, float]) -> None:
        every = self.params.progress_every
        run_id = self.runs.get(job.id)
        if run_id is None or not every or (step % every and step != total):
            return
        loss = info.get("loss", math.nan)
        if math.isfinite(loss):
            self.client.log_metric(run_id, "train_loss_running", loss, step=step)

    def job_finished(self, job: Job, record: JobRecord) -> None:
        from mlflow.entities import Metric

        if self.client is None:
            return
        run_id = self.runs.pop(job.id, None) or self._open(job)
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(getattr(p, key)), now, p.step)
                   for p in record.history or [] for key in ("top1", "top5", "train_loss", "epoch")]
        last = record.steps or (record.history[-1].step if record.history else 0)
        for key, name in (("top1", "final_top1"), ("top5", "final_top5"), ("top1_best_k", "top1_best_k"),
                          ("train_time_s", "train_time_s")):
            if getattr(record, key) is not None:
                metrics.append(Metric(name, float(getattr(record, key)), now, last))
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if record.error:
            self.client.set_tag(run_id, "transferbench.error", record.error[:5000])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "record.json"
            path.write_text(record.to_json())
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED" if record.ok else "FAILED")

    def report_written(self, report: ReportInfo) -> None:
        from mlflow.entities import Metric

        if self.client is None:
            return
        mlrun = self.client.create_run(self.experiment_id, run_name="report", tags=self._tags("report"))
        run_id = mlrun.info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(f"{c['experiment']}/{c['treatment']}/{report.metric}"), _number(c["mean"]),
                          now, int(_number(c["n"]))) for c in report.cells if c.get("mean") is not None]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for path in report.files:
            if Path(path).is_file():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")

    def close(self) -> None:
        if self.client is not None:
            for run_id in self.runs.values():  # networks still training: the run stopped
                self.client.set_terminated(run_id, "KILLED")
        self.runs.clear()

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        return {"tracking_uri": (Path(workdir).resolve() / "mlruns").as_uri(), "progress_every": 1}



def _number(value: object) -> float:
    """A report cell's numeric value (``ReportInfo.cells`` hold plain scalars)."""
    if not isinstance(value, (int, float)):
        raise TypeError(f"expected a number in a report cell, got {value!r}")
    return float(value)


@hookimpl
def register_observers(register) -> None:
    register("mlflow", MLflowObserver)
