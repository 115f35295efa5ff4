"""The ``local`` executor (the default): jobs on this machine, one after another or in N processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferbench import Events, Executor, Job, JobRecord, JobRunner, hookimpl


class LocalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(1, ge=1, description="jobs trained at once, each in its own process")
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads in each worker (default: cores / workers)"
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
        manager = ctx.Manager()
        progress_q = manager.Queue()
        pending = {job.id: job for job in jobs}
        running: dict[Future, Job] = {}
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(threads,)) as pool:
                while pending or running:
                    busy = {j.id for j in running.values()}
                    for jid, job in list(pending.items()):
                        if len(running) >= workers:
                            break
                        if all(dep not in pending and dep not in busy for dep in job.dependencies):
                            del pending[jid]
                            events.job_started(job)
                            running[pool.submit(_run_one, runner, job, progress_q)] = job
                    done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(progress_q, {j.id: j for j in running.values()}, events)
                    for fut in done:
                        job = running.pop(fut)
                        events.job_finished(job, fut.result())
        finally:
            manager.shutdown()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_one(runner: JobRunner, job: Job, progress_q: Any) -> JobRecord:
    def progress(step: int, total: int, info: dict[str, float]) -> None:
        if step == total or step % 5 == 0:
            progress_q.put((job.id, step, total, info))

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
