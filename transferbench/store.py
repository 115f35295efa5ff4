"""The run directory: resolved config, plan, one record per job, checkpoints, a lock.

Every write is atomic (temporary file in the same directory, fsync, rename), so a run killed
at any moment leaves whole files. See docs/run-directory.md for the layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import RunDirError
from .records import JobRecord, RecordError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ paths
    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    def record_path(self, job_id: str) -> Path:
        return self.records_dir / f"{job_id}.json"

    def checkpoint_path(self, job_id: str) -> Path:
        return self.root / "checkpoints" / f"{job_id}.safetensors"

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run directory; refuse if another run holds it.

        flock is released by the kernel when the process dies, so a killed run never
        leaves a stale lock behind.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                raise RunDirError(
                    f"{self.root} is in use by {holder}; wait for it to finish or use another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ plan/config
    def check_compatible(self, config_hash: str) -> None:
        """Refuse to mix results of a different experiment into an existing run directory."""
        plan = self.read_plan()
        if plan is not None and plan.get("config_hash") != config_hash:
            raise RunDirError(
                f"{self.root} holds a run of a different config (its data, architecture, training "
                "or seed differ); use another --out, or delete the directory to start over"
            )

    def read_plan(self) -> dict[str, Any] | None:
        path = self.root / "plan.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_start(self, config_yaml: str, plan_json: Mapping[str, Any]) -> None:
        atomic_write_text(self.root / "config.yaml", config_yaml)
        atomic_write_json(self.root / "plan.json", plan_json)

    # ------------------------------------------------------------------ records
    def read_record(self, job_id: str) -> JobRecord | None:
        """The job's record, or None when it has none (or an unreadable one)."""
        path = self.record_path(job_id)
        if not path.is_file():
            return None
        try:
            return JobRecord.from_json(path.read_bytes())
        except RecordError:  # cannot happen with atomic writes, unless damaged or edited by hand
            return None

    def write_record(self, record: JobRecord) -> None:
        atomic_write_text(self.record_path(record.job_id), record.to_json())

    # ------------------------------------------------------------------ checkpoints
    def has_checkpoint(self, job_id: str) -> bool:
        return self.checkpoint_path(job_id).is_file()

    def save_checkpoint(self, job_id: str, state: Mapping[str, torch.Tensor]) -> None:
        path = self.checkpoint_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def load_checkpoint(self, job_id: str) -> dict[str, torch.Tensor]:
        # safetensors holds tensors only: loading can't execute code, unlike pickle
        return load_file(self.checkpoint_path(job_id))


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class JobCache:
    """Trained networks shared across runs and experiments, by job id (a content hash).

    A run looks a job up here before training it and adds what it trains. Records and
    checkpoints are copied atomically in both directions, so runs that share the cache never
    see half a file; two runs training the same job at once both publish the same result.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.expandvars(os.path.expanduser(str(root))))

    def _record(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def _checkpoint(self, job_id: str) -> Path:
        return self.root / f"{job_id}.safetensors"

    def fetch(self, job_id: str, store: RunStore, need_checkpoint: bool) -> JobRecord | None:
        """Copy a finished job into ``store`` and return its record, or None if not cached."""
        path = self._record(job_id)
        if not path.is_file():
            return None
        try:
            record = JobRecord.from_json(path.read_bytes())
        except RecordError:
            return None
        if not record.ok:
            return None
        if need_checkpoint:
            if not self._checkpoint(job_id).is_file():
                return None
            _atomic_copy(self._checkpoint(job_id), store.checkpoint_path(job_id))
        record = record.model_copy(update={"reused_from": str(self.root)})
        store.write_record(record)
        return record

    def publish(self, job_id: str, store: RunStore) -> None:
        """Add a finished job of ``store`` to the cache."""
        if store.has_checkpoint(job_id):
            _atomic_copy(store.checkpoint_path(job_id), self._checkpoint(job_id))
        _atomic_copy(store.record_path(job_id), self._record(job_id))
