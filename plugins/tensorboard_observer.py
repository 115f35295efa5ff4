"""The ``tensorboard`` run observer: every network's curves and the final grids as TensorBoard event files.

Written with torch's own ``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard``
package must be installed: ``pip install 'transferbench[tensorboard]'``). Layout under
``logdir`` (default ``<run dir>/tensorboard``), one TensorBoard run per folder::

    <experiment>/<treatment>[_n<n>]_seed<split seed>/    one per network:
        train/loss_running   the running training loss while it trains (x: step)
        eval/top1, eval/top5, eval/train_loss, eval/epoch   each periodic evaluation (x: step)
        final/top1, final/top5, final/top1_best_k, final/train_time_s   at the last step
        record (text)        the network's record as JSON
    grids/<experiment>/<treatment>/                  the final grid, one run per treatment:
        grid/<metric>, grid/<metric>_ci95_low, grid/<metric>_ci95_high   (x: n; base networks at n = 0)

so TensorBoard's ``grid/top1`` chart overlays every treatment against n, like the paper's
Figure 2. Watch a run with ``tensorboard --logdir <run dir>/tensorboard`` (docs/trackers.md).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Job, JobRecord, Observer, ReportInfo, RunInfo, hookimpl

INSTALL_HINT = "pip install 'transferbench[tensorboard]' (or: pip install tensorboard)"


class TensorBoardParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    logdir: str | None = Field(None, description="folder of the event files; default: <run dir>/tensorboard")
    progress_every: int = Field(
        10, ge=0, description="log the running training loss every this many steps (0: only the evaluations)"
    )
    flush_secs: int = Field(10, ge=1, description="write pending events to disk at least this often (seconds)")


def _safe(name: str) -> str:
    """A name usable as one folder of a TensorBoard run path."""
    return re.sub(r"[^\w.+=-]+", "_", name).strip("_") or "_"


class TensorBoardObserver(Observer[TensorBoardParams]):
    """Writes each network's training curves and the run's final grids for TensorBoard."""

    description = "TensorBoard event files: per-network curves and the final grids (needs tensorboard)"
    Params = TensorBoardParams
    requires = ("tensorboard",)
    install_hint = INSTALL_HINT

    def __init__(self, params: TensorBoardParams | None = None) -> None:
        super().__init__(params)
        self.params: TensorBoardParams
        self.run: RunInfo | None = None
        self.logdir: Path | None = None
        self.writers: dict[str, Any] = {}  # job id -> its open SummaryWriter

    def _writer(self, folder: Path) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(folder), flush_secs=self.params.flush_secs)

    def job_dir(self, job: Job | str) -> Path:
        """The TensorBoard run folder of one network."""
        assert self.run is not None and self.logdir is not None
        jid = job if isinstance(job, str) else job.id
        net = self.run.networks.get(jid, {})
        if not net.get("experiment"):
            return self.logdir / "networks" / _safe(jid[:12])
        n = f"_n{net['n']}" if net.get("n") else ""
        return self.logdir / _safe(str(net["experiment"])) / _safe(f"{net['treatment']}{n}_seed{net['split_seed']}")

    def run_started(self, run: RunInfo) -> None:
        self.run = run
        self.logdir = Path(self.params.logdir).expanduser() if self.params.logdir else run.run_dir / "tensorboard"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer(self.logdir).close()  # fail now, not mid-run, if the folder is unusable

    def job_started(self, job: Job) -> None:
        if self.run is not None:
            self.writers[job.id] = self._writer(self.job_dir(job))

    def job_progress(self, job: Job, step: int, total: int, info: dict[str, float]) -> None:
        every = self.params.progress_every
        writer = self.writers.get(job.id)
        if writer is None or not every or (step % every and step != total):
            return
        loss = info.get("loss", math.nan)
        if math.isfinite(loss):
            writer.add_scalar("train/loss_running", loss, step)

    def job_finished(self, job: Job, record: JobRecord) -> None:
        writer = self.writers.pop(job.id, None)
        if writer is None:
            if self.run is None:
                return
            writer = self._writer(self.job_dir(job))
        for point in record.history or []:
            writer.add_scalar("eval/top1", point.top1, point.step)
            writer.add_scalar("eval/top5", point.top5, point.step)
            writer.add_scalar("eval/train_loss", point.train_loss, point.step)
            writer.add_scalar("eval/epoch", point.epoch, point.step)
        last = record.steps or (record.history[-1].step if record.history else 0)
        for name in ("top1", "top5", "top1_best_k", "train_time_s"):
            value = getattr(record, name)
            if value is not None:
                writer.add_scalar(f"final/{name}", value, last)
        writer.add_text("record", "```\n" + json.dumps(record.model_dump(mode="json"), indent=2) + "\n```", last)
        writer.close()

    def report_written(self, report: ReportInfo) -> None:
        if self.logdir is None:
            return
        by_run: dict[Path, list[dict[str, Any]]] = {}
        for cell in report.cells:
            folder = self.logdir / "grids" / _safe(str(cell["experiment"])) / _safe(str(cell["treatment"]))
            by_run.setdefault(folder, []).append(cell)
        for folder, cells in by_run.items():
            writer = self._writer(folder)
            for cell in sorted(cells, key=lambda c: _number(c["n"])):
                for suffix, key in (("", "mean"), ("_ci95_low", "ci95_low"), ("_ci95_high", "ci95_high")):
                    if cell.get(key) is not None:
                        writer.add_scalar(f"grid/{report.metric}{suffix}", _number(cell[key]), int(_number(cell["n"])))
            writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        return {"logdir": str(Path(workdir) / "tensorboard"), "progress_every": 1}



def _number(value: object) -> float:
    """A report cell's numeric value (``ReportInfo.cells`` hold plain scalars)."""
    if not isinstance(value, (int, float)):
        raise TypeError(f"expected a number in a report cell, got {value!r}")
    return float(value)


@hookimpl
def register_observers(register) -> None:
    register("tensorboard", TensorBoardObserver)
