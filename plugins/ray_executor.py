"""The ``ray`` executor: run a plan's jobs as tasks on a Ray cluster.

Every job is one Ray task that reserves ``num_gpus_per_job`` GPUs and ``num_cpus_per_job``
CPUs. A job's task receives the ``ObjectRef`` of each job it depends on (the source
network; an estimator's reference network too) as an argument, so Ray starts it only once
they are done and hands it their records; the weights themselves travel through the run
directory, which every node must see at the same path (see docs/ray.md).

Workers write records and checkpoints into the shared run directory themselves (atomic
renames, as in a local run), so a job that finished is kept even if the driver dies; the
task returns the record to the driver, which only reports it. The driver writes a record
only for a job whose task never got to (its worker died more than ``max_retries`` times).

Ray is optional: this module imports and registers ``ray`` without it, and only a config
that uses the executor is refused, with the command that installs it.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferbench import (
    ConfigError,
    DataError,
    Events,
    Executor,
    Job,
    JobRecord,
    JobRunner,
    TransferbenchError,
    cohort_units,
    hookimpl,
)

INSTALL_HINT = "pip install 'transferbench[ray]'"

#: Seconds between the driver's looks at finished tasks and progress messages.
POLL_S = 0.5
#: A worker sends at most one progress message per job this often (plus the last step).
PROGRESS_EVERY_S = 1.0

#: A worker's progress message: job id, step, total steps (0: the job just started), info.
Message = tuple[str, int, int, dict[str, float]]


class RayParams(BaseModel):
    """Where the cluster is and what each job reserves on it."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None,
        description="auto: the cluster this machine belongs to (started with `ray start`); "
        "ray://HOST:10001: a remote cluster through Ray Client; local: a new instance on this "
        "machine; null: RAY_ADDRESS, else a cluster running on this machine, else a new one",
    )
    num_gpus_per_job: float | None = Field(
        None,
        ge=0,
        description="GPUs each job reserves (fractions share a GPU); default: 1 when the "
        "cluster has GPUs and device is not cpu, else 0",
    )
    num_cpus_per_job: float = Field(1.0, ge=0, description="CPUs each job reserves")
    memory_per_job_gb: float | None = Field(
        None, gt=0, description="memory each job reserves when Ray schedules it (not a hard cap)"
    )
    max_retries: int = Field(
        2,
        ge=-1,
        description="restarts of a job whose worker or node dies (-1: no limit); a job that "
        "fails by itself (NaN loss, a bug) is recorded as failed, not retried",
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env for the workers, e.g. {env_vars: {PYTHONPATH: /code}}"
    )
    storage_wait_s: float = Field(
        120.0,
        ge=0,
        description="how long a job waits for its source's record and checkpoint to become "
        "visible on its node (network file systems cache directory listings)",
    )
    cancel_grace_s: float = Field(
        10.0, ge=0, description="on Ctrl-C, seconds running jobs get to stop before their workers are killed"
    )
    cohorts: bool = Field(
        False,
        description="train the transferred networks that share a training set in lockstep on one "
        "stream of batches, each cohort as one task (docs/performance.md); they share one data "
        "order, which enters their ids",
    )
    cohort_size: int | None = Field(
        None, ge=1, description="at most this many networks of a cohort in one task (GPU memory); a "
        "larger cohort runs as several tasks, with the same numbers",
    )
    num_gpus_per_cohort: float | None = Field(
        None, ge=0, description="GPUs a cohort's task reserves (default: num_gpus_per_job)"
    )


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"the ray executor needs Ray, which is not installed: {INSTALL_HINT}") from exc
    return ray


class RayExecutor(Executor[RayParams]):
    """Runs every job as a Ray task: on all GPUs of one machine or of a cluster."""

    description = "run jobs as tasks on a Ray cluster (shared run directory required)"
    Params = RayParams
    # refused when the config is resolved (validate, plan, run), not at import
    requires = ("ray",)
    install_hint = INSTALL_HINT
    runs_here = False  # workers on other nodes have their own devices

    # ------------------------------------------------------------------ driver
    def run(self, jobs: Sequence[Job], runner: JobRunner, events: Events | None = None) -> None:
        events = events or Events()
        jobs = list(jobs)
        if not jobs:
            return
        ray = _import_ray()
        connected_here = not ray.is_initialized()
        if connected_here:
            kwargs: dict[str, Any] = {"address": self.params.address}
            if self.params.runtime_env is not None:
                kwargs["runtime_env"] = self.params.runtime_env
            _check_reachable(self.params.address)
            try:
                ray.init(**kwargs)
            except Exception as exc:
                where = self.params.address or "the default address (RAY_ADDRESS or a new local instance)"
                raise TransferbenchError(
                    f"ray: could not start or join a Ray cluster at {where}: {type(exc).__name__}: "
                    f"{_first_line(exc)} (is `ray start --head` running there, with the same Ray version?)"
                ) from exc
        try:
            self._run(ray, jobs, runner, events)
        finally:
            if connected_here:
                ray.shutdown()  # disconnects from a cluster; stops an instance started here

    def task_options(self, cluster_gpus: float, device: str) -> dict[str, Any]:
        """The resources and retry policy of every job's task."""
        p = self.params
        gpus = p.num_gpus_per_job
        if gpus is None:
            gpus = 1.0 if cluster_gpus > 0 and device != "cpu" else 0.0
        options: dict[str, Any] = {
            "num_cpus": p.num_cpus_per_job,
            "num_gpus": gpus,
            "max_retries": p.max_retries,
            # a job's own errors are caught and recorded by the runner; anything else that
            # escapes (a plugin that can't be imported on the worker) would fail again
            "retry_exceptions": False,
        }
        if p.memory_per_job_gb is not None:
            options["memory"] = int(p.memory_per_job_gb * 1024**3)
        return options

    def _run(self, ray: Any, jobs: list[Job], runner: JobRunner, events: Events) -> None:
        device = runner.device
        threads = runner.threads or max(1, math.floor(self.params.num_cpus_per_job))
        cluster = ray.cluster_resources()
        options = self.task_options(cluster.get("GPU", 0.0), device)
        events.message(
            f"ray: {len(jobs)} jobs on a cluster of {cluster.get('CPU', 0):g} CPUs and "
            f"{cluster.get('GPU', 0):g} GPUs; each job reserves {options['num_gpus']:g} GPU(s), "
            f"{options['num_cpus']:g} CPU(s)"
        )
        self._warn_if_unschedulable(ray, options, device, events)

        task = ray.remote(_run_job)
        cohort_task = ray.remote(_run_cohort)
        # progress is best effort: if the sink's node dies, Ray restarts it empty
        sink = ray.remote(num_cpus=0, max_restarts=-1)(ProgressSink).remote()
        runner_ref = ray.put(runner)  # shipped once, not once per job
        by_id = {job.id: job for job in jobs}  # the plan never holds two identical jobs
        units = cohort_units(jobs, self.params.cohort_size) if self.cohorts else [[job] for job in jobs]
        refs: dict[str, Any] = {}
        unit_of: dict[Any, list[Job]] = {}
        pending: list[Any] = []
        state = _DriverState(events, by_id)
        try:
            for unit in units:  # dependency order: sources before their dependents
                ref = self._submit(unit, task, cohort_task, options, runner_ref, sink, threads, refs, by_id)
                refs.update({job.id: ref for job in unit})
                unit_of[ref] = unit
                pending.append(ref)
            drain = sink.drain.remote()
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                if ready and pending:
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    ready += more
                # progress first: a job's last messages, then its end
                drain = self._poll_progress(ray, sink, drain, state)
                for ref in ready:
                    self._report(ray, ref, unit_of[ref], runner, state)
        except BaseException:
            # Ctrl-C (or a bug in the driver): stop the cluster's work, keep what finished;
            # every finished job has its record on disk, so a rerun resumes from there
            self._cancel(ray, pending)
            raise

    def _submit(self, unit: list[Job], task: Any, cohort_task: Any, options: dict[str, Any], runner_ref: Any,
                sink: Any, threads: int, refs: dict[str, Any], by_id: dict[str, Job]) -> Any:
        """Start one unit's task: a job alone, or a cohort's members on the cohort's GPU(s)."""
        own = {job.id for job in unit}
        # a source trained in an earlier run is not waited for: its files are on disk
        deps = sorted({d for job in unit for d in job.dependencies if d in refs and d not in own})
        dep_refs = list(dict.fromkeys(refs[d] for d in deps))  # a cohort's members share one ref
        args = ([by_id[d] for d in deps], sink, threads, self.params.storage_wait_s)
        if len(unit) == 1:
            job = unit[0]
            name = f"transferbench {job.kind} {job.id[:10]}"
            # top-level refs: Ray starts the task once they are done
            return task.options(**options, name=name).remote(runner_ref, job, *args, *dep_refs)
        gpus = self.params.num_gpus_per_cohort
        opts = {**options, **({"num_gpus": gpus} if gpus is not None else {})}
        name = f"transferbench cohort of {len(unit)} {unit[0].id[:10]}"
        return cohort_task.options(**opts, name=name).remote(runner_ref, unit, *args, *dep_refs)

    def _report(self, ray: Any, ref: Any, unit: list[Job], runner: JobRunner, state: _DriverState) -> None:
        """Hand a finished task's records (or why it was lost) to the events."""
        try:
            value = ray.get(ref)
            records = value if isinstance(value, list) else [value]
        except ray.exceptions.RayError as exc:
            records = [self._lost(job, exc, runner, state) for job in unit]
        for job, record in zip(unit, records):
            state.finished(job, record)

    @staticmethod
    def _poll_progress(ray: Any, sink: Any, drain: Any, state: _DriverState) -> Any:
        """Hand the workers' messages to the events once the sink answered; never block."""
        answered, _ = ray.wait([drain], timeout=0)
        if not answered:
            return drain
        try:
            state.progress(ray.get(drain))
        except ray.exceptions.RayError:
            pass  # the sink was lost and is restarting: a few progress updates are missed
        return sink.drain.remote()

    def _lost(self, job: Job, exc: Exception, runner: JobRunner, state: _DriverState) -> JobRecord:
        """The record of a job whose task failed in Ray: its worker died too often, or the
        task could not even start (a plugin not installed on the worker's node, say)."""
        cause = getattr(exc, "cause", None)
        if isinstance(cause, DataError):
            raise cause  # the data is broken, not this job: the run stops and says why
        record = runner.finished(job)  # it may have written its record just before dying
        if record is not None:
            return record
        lost = next((d for d in job.dependencies if d in state.lost), None)
        if lost is not None:
            reason = f"source network {lost} failed: {state.lost[lost]}"
        else:
            cause = getattr(exc, "cause", None) or exc
            reason = f"ray: {type(cause).__name__}: {_first_line(cause)}"
            if isinstance(cause, ImportError):
                reason += " (are transferbench and the config's plugins installed on every node?)"
        state.lost[job.id] = reason
        return runner.record_failure(job, reason)

    def _cancel(self, ray: Any, refs: list[Any]) -> None:
        """Cancel unfinished tasks: interrupt them, then kill the workers that don't stop."""
        if not refs:
            return
        for ref in refs:
            ray.cancel(ref)  # KeyboardInterrupt in a running job; a waiting one never starts
        _, left = ray.wait(refs, num_returns=len(refs), timeout=self.params.cancel_grace_s)
        for ref in left:
            ray.cancel(ref, force=True)
        if left:
            ray.wait(left, num_returns=len(left), timeout=self.params.cancel_grace_s)

    @staticmethod
    def _warn_if_unschedulable(ray: Any, options: dict[str, Any], device: str, events: Events) -> None:
        if options["num_gpus"] > 0 and device.startswith("cuda:"):
            events.message(f"warning: device {device}: Ray gives each job its own GPU as cuda:0; use device: cuda")
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        fits = any(
            r.get("CPU", 0) >= options["num_cpus"] and r.get("GPU", 0) >= options["num_gpus"]
            and r.get("memory", 0) >= options.get("memory", 0)
            for r in nodes
        )
        if not fits:
            events.message(
                f"warning: no node of the Ray cluster has {options['num_gpus']:g} GPU(s) and "
                f"{options['num_cpus']:g} CPU(s) for one job: jobs wait until a node that has them joins"
            )


class _DriverState:
    """What the driver knows about running jobs; turns worker messages into events."""

    def __init__(self, events: Events, jobs: dict[str, Job]) -> None:
        self.events, self.jobs = events, jobs
        self.started: set[str] = set()
        self.done: set[str] = set()
        self.lost: dict[str, str] = {}  # job id -> why Ray could not run it

    def progress(self, messages: list[Message]) -> None:
        for job_id, step, total, info in messages:
            job = self.jobs[job_id]
            if job_id in self.done:
                continue  # a late message from a job already reported finished
            if any(d in self.jobs and d not in self.done for d in job.dependencies):
                # its source's result reached the driver after this message: report the
                # source's end first (this job's start is reported with a later message)
                continue
            self._start(job)
            if total:
                self.events.job_progress(job, step, total, info)

    def finished(self, job: Job, record: JobRecord) -> None:
        self._start(job)
        self.done.add(job.id)
        self.events.job_finished(job, record)

    def _start(self, job: Job) -> None:
        if job.id not in self.started:  # a retried job starts twice; report it once
            self.started.add(job.id)
            self.events.job_started(job)


def _check_reachable(address: str | None) -> None:
    """Fail at once on a HOST:PORT nobody listens at (Ray itself retries for minutes)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # let Ray judge an address of another form
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise TransferbenchError(
            f"ray: nothing answers at {address} ({exc}); is `ray start --head` running there, "
            "and is the port right (6379 for ray start, 10001 for ray://)?"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# ---------------------------------------------------------------------- worker side


class ProgressSink:
    """A Ray actor that buffers the workers' progress messages until the driver drains them."""

    def __init__(self) -> None:
        self._messages: list[Message] = []

    def put(self, message: Message) -> None:
        self._messages.append(message)

    def drain(self) -> list[Message]:
        messages, self._messages = self._messages, []
        return messages


def _run_job(
    runner: JobRunner,
    job: Job,
    source_jobs: list[Job],
    sink: Any,
    threads: int,
    storage_wait_s: float,
    *source_values: JobRecord | list[JobRecord],
) -> JobRecord:
    """Body of one job's Ray task, on a worker.

    ``source_values`` are the results of the tasks of the ``source_jobs`` (the job's
    dependencies that ran in the same run: a record, or a cohort's records): Ray resolved
    their ObjectRefs, so they have finished.
    """
    import torch

    torch.set_num_threads(threads)
    done = runner.finished(job)
    if done is not None:
        # a retry after the worker died once the record was written, or Ray re-running the
        # task to rebuild a lost result: never train the same network twice
        return done
    sink.put.remote((job.id, 0, 0, {}))  # started
    problem = _sources_visible(runner, source_jobs, source_values, storage_wait_s)
    if problem is not None:
        return runner.record_failure(job, problem)
    return runner(job, _progress_to(sink, job))


def _run_cohort(
    runner: JobRunner,
    jobs: list[Job],
    source_jobs: list[Job],
    sink: Any,
    threads: int,
    storage_wait_s: float,
    *source_values: JobRecord | list[JobRecord],
) -> list[JobRecord]:
    """Body of a cohort's Ray task: its members trained in lockstep on one worker."""
    import torch

    torch.set_num_threads(threads)
    for job in jobs:
        if runner.finished(job) is None:
            sink.put.remote((job.id, 0, 0, {}))  # started
    problem = _sources_visible(runner, source_jobs, source_values, storage_wait_s)
    if problem is not None:
        return [runner.finished(job) or runner.record_failure(job, problem) for job in jobs]
    senders = {job.id: _progress_to(sink, job) for job in jobs}
    return runner.run_cohort(jobs, lambda job, s, t, i: senders[job.id](s, t, i))


def _sources_visible(runner: JobRunner, source_jobs: list[Job], source_values: tuple, timeout_s: float
                     ) -> str | None:
    """Why the finished sources cannot be read on this node, or None when they can."""
    records = {}
    for value in source_values:
        for record in value if isinstance(value, list) else [value]:
            records[record.job_id] = record
    for source_job in source_jobs:
        source_record = records.get(source_job.id)
        if source_record is not None and source_record.ok and \
                not _wait_until_finished(runner, source_job, timeout_s):
            return (f"source network {source_job.id} finished, but its record or checkpoint is not "
                    f"visible on this node after {timeout_s:g} s: the run directory must be on "
                    "storage every node shares, at the same path (docs/ray.md)")
    return None


def _wait_until_finished(runner: JobRunner, job: Job, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while runner.finished(job) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
    return True


def _progress_to(sink: Any, job: Job) -> Callable[[int, int, dict[str, float]], None]:
    last = 0.0

    def progress(step: int, total: int, info: dict[str, float]) -> None:
        nonlocal last
        if step != total and step % 5:
            return  # the display shows every 5th step (as the local executors send them)
        now = time.monotonic()
        if step == total or now - last >= PROGRESS_EVERY_S:
            last = now
            sink.put.remote((job.id, step, total, dict(info)))

    return progress


@hookimpl
def register_executors(register) -> None:
    register("ray", RayExecutor)
