"""The ``local`` executor (the default): jobs on this machine, one after another or in N processes."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Events, Executor, Job, JobRecord, JobRunner, hookimpl


class LocalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(1, ge=1, description="jobs trained at once, each in its own process")
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads in each worker (default: cores / workers)"
    )
    retries: int = Field(
        1, ge=0, description="times a job is tried again when its worker process dies (killed, out of memory)"
    )


class LocalExecutor(Executor):
    """Runs jobs on this machine: one after another, or several at once in worker processes."""

    description = "run jobs on this machine (workers: N trains N jobs at once)"
    Params = LocalParams

    def run(self, jobs: Sequence[Job], runner: JobRunner, events: Events | None = None) -> None:
        events = events or Events()
        if self.params.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                events.job_started(job)
                record = runner(job, lambda s, t, i, _j=job: events.job_progress(_j, s, t, i))
                events.job_finished(job, record)
            return
        self._run_parallel(list(jobs), runner, events)

    def _run_parallel(self, jobs: list[Job], runner: JobRunner, events: Events) -> None:
        workers = min(self.params.workers, len(jobs))
        threads = self.params.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        # spawn, not fork: forking a process that already ran torch's thread pools can hang
        ctx = mp.get_context("spawn")
        progress_q = ctx.Queue()  # handed to the workers at start (no manager process to orphan)
        pending = {job.id: job for job in jobs}
        attempts: dict[str, int] = {}
        while pending:
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                       initargs=(threads, progress_q, os.getpid()))
            try:
                self._drive(pool, pending, attempts, runner, events, progress_q, workers)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _drive(self, pool: ProcessPoolExecutor, pending: dict[str, Job], attempts: dict[str, int],
               runner: JobRunner, events: Events, progress_q: Any, workers: int) -> None:
        """Run jobs in ``pool`` until all are done or a worker dies (then the pool is rebuilt)."""
        running: dict[Future, Job] = {}
        while pending or running:
            busy = {j.id for j in running.values()}
            for jid, job in list(pending.items()):
                if len(running) >= workers:
                    break
                if jid not in busy and all(dep not in pending and dep not in busy for dep in job.dependencies):
                    if jid not in attempts:
                        events.job_started(job)
                    attempts[jid] = attempts.get(jid, 0) + 1
                    running[pool.submit(_run_one, runner, job)] = job
                    busy.add(jid)
            done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_q, {j.id: j for j in running.values()}, events)
            for fut in done:
                job = running.pop(fut)
                try:
                    record = fut.result()
                except BrokenProcessPool:
                    record = self._worker_died(job, attempts[job.id], runner, events)
                    if record is None:
                        continue  # retried in a new pool
                del pending[job.id]
                events.job_finished(job, record)
            if done and any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                return  # the pool is broken: the caller starts a new one for what is left

    def _worker_died(self, job: Job, attempt: int, runner: JobRunner, events: Events) -> JobRecord | None:
        """A worker process died under ``job`` (killed, out of memory): retry, or record it."""
        record = runner.finished(job)  # it may have finished just before its worker died
        if record is not None:
            return record
        if attempt <= self.params.retries:
            events.message(f"a worker process died while training {job.id}; trying it again "
                           f"({attempt} of {self.params.retries} retries)")
            return None
        return runner.record_failure(job, f"its worker process died {attempt} times (killed, or out of "
                                          "memory?); the other networks went on: rerun to retry")


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


def _run_one(runner: JobRunner, job: Job) -> JobRecord:
    def progress(step: int, total: int, info: dict[str, float]) -> None:
        if step == total or step % 5 == 0:
            _PROGRESS.put((job.id, step, total, info))

    return runner(job, progress)


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
