"""The ``local`` executor (the default): jobs on this machine, one after another or in N processes."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Events, Executor, Job, JobRecord, JobRunner, cohort_units, hookimpl


class LocalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(1, ge=1, description="jobs trained at once, each in its own process")
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads of every job with workers > 1, in a worker or in this process "
        "(default: cores / workers; the config's threads wins)"
    )
    retries: int = Field(
        1, ge=0, description="times a job is tried again when its worker process dies (killed, out of memory)"
    )
    cohorts: bool = Field(
        False,
        description="train the transferred networks that share a training set in lockstep on one "
        "stream of batches (read and augmented once, shared frozen prefixes); they share one data "
        "order, which enters their ids (docs/performance.md)",
    )
    cohort_size: int | None = Field(
        None, ge=1, description="at most this many networks of a cohort train together in one process "
        "(memory); a larger cohort runs in chunks, with the same numbers",
    )


class LocalExecutor(Executor[LocalParams]):
    """Runs jobs on this machine: one after another, or several at once in worker processes."""

    description = "run jobs on this machine (workers: N trains N jobs at once)"
    Params = LocalParams

    def run(self, jobs: Sequence[Job], runner: JobRunner, events: Events | None = None) -> None:
        events = events or Events()
        units = cohort_units(jobs, self.params.cohort_size) if self.cohorts else [[job] for job in jobs]
        threads = self.threads(runner)
        if self.params.workers == 1 or len(units) <= 1:
            with _torch_threads(threads):  # the count a worker would use: the numbers do not depend on where
                for unit in units:
                    for job in unit:
                        events.job_started(job)
                    records = _run_unit(runner, unit, events.job_progress)
                    for job, record in zip(unit, records):
                        events.job_finished(job, record)
            return
        self._run_parallel(units, runner, events, threads or 1)

    def threads(self, runner: JobRunner) -> int | None:
        """The torch threads every job of the run computes with, in a worker or in this process
        (floating-point sums depend on it): the config's ``threads``, else ``threads_per_worker``,
        else cores / workers; None with one worker: this process's own count (torch's default,
        or the config's ``threads``, which the engine set). Never how many jobs are pending."""
        if runner.threads:
            return runner.threads
        if self.params.workers == 1:
            return self.params.threads_per_worker
        return self.params.threads_per_worker or max(1, (os.cpu_count() or 1) // self.params.workers)

    def _run_parallel(self, units: list[list[Job]], runner: JobRunner, events: Events, threads: int) -> None:
        workers = min(self.params.workers, len(units))
        # spawn, not fork: forking a process that already ran torch's thread pools can hang
        ctx = mp.get_context("spawn")
        progress_q = ctx.Queue()  # handed to the workers at start (no manager process to orphan)
        pending = dict(enumerate(units))
        attempts: dict[int, int] = {}
        while pending:
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                       initargs=(threads, progress_q, os.getpid()))
            try:
                self._drive(pool, pending, attempts, runner, events, progress_q, workers)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _drive(self, pool: ProcessPoolExecutor, pending: dict[int, list[Job]], attempts: dict[int, int],
               runner: JobRunner, events: Events, progress_q: Any, workers: int) -> None:
        """Run units (a job, or a cohort's members) in ``pool`` until all are done or a worker
        dies (then the pool is rebuilt)."""
        running: dict[Future, int] = {}
        while pending or running:
            waiting = {job.id for unit in pending.values() for job in unit}  # running ones included
            for i, unit in list(pending.items()):
                if len(running) >= workers:
                    break
                own = {job.id for job in unit}
                if i not in running.values() and all(
                        dep in own or dep not in waiting for job in unit for dep in job.dependencies):
                    if i not in attempts:
                        for job in unit:
                            events.job_started(job)
                    attempts[i] = attempts.get(i, 0) + 1
                    running[pool.submit(_run_unit, runner, unit)] = i
            done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_q, {job.id: job for i in running.values() for job in pending[i]}, events)
            for fut in done:
                i = running.pop(fut)
                try:
                    records = fut.result()
                except BrokenProcessPool:
                    records = self._worker_died(pending[i], attempts[i], runner, events)
                    if records is None:
                        continue  # retried in a new pool
                for job, record in zip(pending.pop(i), records):
                    events.job_finished(job, record)
            if done and any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                return  # the pool is broken: the caller starts a new one for what is left

    def _worker_died(self, unit: list[Job], attempt: int, runner: JobRunner, events: Events
                     ) -> list[JobRecord] | None:
        """A worker process died under ``unit`` (killed, out of memory): retry, or record it."""
        records = [r for job in unit if (r := runner.finished(job)) is not None]  # finished before it died?
        if len(records) == len(unit):
            return records
        what = unit[0].id if len(unit) == 1 else f"a cohort of {len(unit)} networks ({unit[0].id}, ...)"
        if attempt <= self.params.retries:
            events.message(f"a worker process died while training {what}; trying it again "
                           f"({attempt} of {self.params.retries} retries)")
            return None
        return [r if r is not None else runner.record_failure(
            job, f"its worker process died {attempt} times (killed, or out of memory?); the other networks "
            "went on: rerun to retry") for job, r in zip(unit, records)]


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` (None: left as it is) for a block."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(threads: int, progress_q: Any, parent: int) -> None:
    import torch

    global _PROGRESS
    _PROGRESS = progress_q
    _die_with(parent)
    torch.set_num_threads(threads)


_PROGRESS: Any = None


def _die_with(parent: int) -> None:
    """End this worker when the driver ends, even by SIGKILL (no orphan keeps training)."""
    if sys.platform.startswith("linux"):
        try:  # the kernel sends SIGKILL to this process when its parent dies
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the driver died before we could ask
        os._exit(1)

    def watch() -> None:  # everywhere else (and as a second line): poll the parent
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="transferbench-parent-watch").start()


def _run_unit(runner: JobRunner, unit: list[Job], report: Any = None) -> list[JobRecord]:
    """Train a unit: one job alone, or a cohort's members together; ``report(job, step, total,
    info)`` gets the progress (in a worker: every 5th step, through the queue)."""
    if report is None:
        def report(job: Job, step: int, total: int, info: dict[str, float]) -> None:
            if step == total or step % 5 == 0:
                _PROGRESS.put((job.id, step, total, info))

    if len(unit) == 1:
        job = unit[0]
        return [runner(job, lambda s, t, i: report(job, s, t, i))]
    return runner.run_cohort(unit, report)


def _drain(progress_q: Any, running: dict[str, Job], events: Events) -> None:
    while True:
        try:
            jid, step, total, info = progress_q.get_nowait()
        except queue.Empty:
            return
        if jid in running:
            events.job_progress(running[jid], step, total, info)


@hookimpl
def register_executors(register) -> None:
    register("local", LocalExecutor)
