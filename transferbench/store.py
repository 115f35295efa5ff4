"""The run directory: resolved config, plan, one record per job, checkpoints, a lock.

Every write is atomic (see :mod:`transferbench.files`), so a run killed at any moment leaves
whole files. Every file read back is validated: a damaged one is reported, and (by the
engine) moved aside under ``damaged/`` and recomputed. A run only ever creates a new
directory or continues its own. See docs/run-directory.md for the layout and guarantees.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from .errors import RunDirError
from .files import (
    atomic_copy,
    atomic_target,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temp,
    file_lock,
    quarantine,
    sha256_file,
)
from .hashing import content_hash
from .planfile import PlanFile
from .records import JobRecord, RecordError

__all__ = ["JobCache", "RunStore", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]

#: Names a run directory may hold besides what it writes itself (hidden files such as
#: .DS_Store or .nfs* are ignored too).
_RUN_FILES = {"plan.json", "config.yaml", "run.lock", "records", "checkpoints", "damaged", "superseded",
              "configs", "evaluations"}


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

    @property
    def evaluations_dir(self) -> Path:
        """One record per evaluation of the plan's evaluators (:mod:`transferbench.evaluation`)."""
        return self.root / "evaluations"

    def checkpoint_path(self, job_id: str) -> Path:
        return self.root / "checkpoints" / f"{job_id}.safetensors"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    def is_run_dir(self) -> bool:
        """Whether the folder is a run directory (a plan, or a run's lock, in it)."""
        return self.plan_path.exists() or (self.root / "run.lock").exists()

    # ------------------------------------------------------------------ claiming and locking
    def claim(self) -> None:
        """Make sure this run may write here: the folder is new, empty, or a run directory.

        Raises:
            RunDirError: the folder holds files of something else (it would be overwritten),
                or the path is not a folder.
        """
        root = self.root
        if root.exists() and not root.is_dir():
            raise RunDirError(f"the run directory {root} is a file, not a folder; choose another --out")
        if not root.exists() or self.is_run_dir():
            return
        foreign = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunDirError(
                f"{root} exists and is not a transferbench run directory (it holds {shown}); "
                "a run only creates a new folder or continues its own: choose another --out "
                "(or output.dir)"
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run directory; refuse if another run holds it.

        flock is released by the kernel when the process dies, so a killed run never
        leaves a stale lock. Temporary files of writers killed earlier are removed.
        """
        self.claim()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = file_lock(self.root / "run.lock", blocking=False)
            fd = lock.__enter__()
        except BlockingIOError:
            holder = (self.root / "run.lock").read_text(errors="replace").strip() or "another process"
            raise RunDirError(f"{self.root} is in use by {holder}; wait for it to finish, or use another --out"
                              ) from None
        except OSError as exc:
            raise RunDirError(f"cannot use {self.root} as the run directory: {exc.strerror or exc}") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
            # every folder a run writes into, cohorts' joint checkpoints included (large files)
            cohorts = sorted(p for p in (self.root / "cohorts").glob("*") if p.is_dir())
            for folder in (self.root, self.records_dir, self.root / "checkpoints", *cohorts):
                clean_stale_temp(folder)
            yield
        finally:
            lock.__exit__(None, None, None)

    # ------------------------------------------------------------------ plan/config
    def check_compatible(self, config_hash: str, plan: PlanFile | None) -> None:
        """Refuse to mix results of a different experiment into an existing run directory."""
        if plan is not None and plan.config_hash != config_hash:
            raise RunDirError(
                f"{self.root} holds a run of a different config (its data, architecture, training "
                "or seed differ); use another --out, or delete the directory to start over"
            )

    def read_plan(self) -> PlanFile | None:
        """The run's plan.json, validated; None when there is none.

        Raises:
            RunDirError: plan.json is damaged (not JSON, or a field of the wrong shape: named).
        """
        path = self.plan_path
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RunDirError(f"{path} is unreadable ({exc.strerror or exc})") from None
        return PlanFile.from_json(data, path)

    def write_start(self, config_yaml: str, plan: PlanFile) -> None:
        """Write the config (and keep every config ever run here under configs/) and the plan."""
        atomic_write_text(self.root / "config.yaml", config_yaml)
        key = content_hash(config_yaml)
        history = self.root / "configs" / f"{key}.yaml"
        if not history.is_file():
            atomic_write_text(history, config_yaml)
        atomic_write_json(self.plan_path, plan.to_json())

    # ------------------------------------------------------------------ records
    def read_record(self, job_id: str) -> JobRecord | None:
        """The job's record, or None when it has none.

        Raises:
            RecordError: the record file is damaged (see :meth:`quarantine`).
        """
        path = self.record_path(job_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RecordError(f"unreadable: {exc.strerror or exc}") from None
        record = JobRecord.from_json(data)
        if record.job_id != job_id:
            raise RecordError(f"holds the record of job {record.job_id}, not {job_id}")
        return record

    def has_result(self, job_id: str) -> bool:
        """Whether the job has a readable record of a network (or estimate) that finished well."""
        try:
            record = self.read_record(job_id)
        except RecordError:
            return False
        return record is not None and record.ok

    def write_record(self, record: JobRecord) -> None:
        atomic_write_text(self.record_path(record.job_id), record.to_json())

    def quarantine(self, path: Path) -> Path:
        """Move a damaged file of the run under ``damaged/``; return where it went."""
        return quarantine(path, self.root)

    def supersede(self, job_id: str) -> None:
        """Move a job's record (and checkpoint) under ``superseded/``: kept, no longer used."""
        for path in (self.record_path(job_id), self.checkpoint_path(job_id)):
            if path.exists():
                dest = self.root / "superseded" / path.relative_to(self.root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)

    # ------------------------------------------------------------------ checkpoints
    def has_checkpoint(self, job_id: str) -> bool:
        return self.checkpoint_path(job_id).is_file()

    def save_checkpoint(self, job_id: str, state: Mapping[str, torch.Tensor]) -> str:
        """Write a checkpoint atomically; return its SHA-256 (kept in the job's record)."""
        from safetensors.torch import save_file

        path = self.checkpoint_path(job_id)
        with atomic_target(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
            digest = sha256_file(tmp)
        return digest

    def checkpoint_problem(self, job_id: str, sha256: str | None) -> str | None:
        """Why the job's checkpoint cannot be used (missing, or not what its record says), or None."""
        path = self.checkpoint_path(job_id)
        if not path.is_file():
            return "missing"
        if sha256 is not None:
            return None if sha256_file(path) == sha256 else "damaged (its SHA-256 differs from its record's)"
        try:  # a record of transferbench 0.1 has no checksum: the file must at least load
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - any failure to read means damage
            return f"damaged ({type(exc).__name__}: {exc})"
        return None

    def load_checkpoint(self, job_id: str) -> dict[str, torch.Tensor]:
        """The job's weights (safetensors holds tensors only: loading runs no code, unlike pickle)."""
        from safetensors.torch import load_file

        return load_file(self.checkpoint_path(job_id))


class JobCache:
    """Trained networks shared across runs and experiments, by job id (a content hash).

    A run looks a job up here before training it and adds what it trains. Records and
    checkpoints are copied atomically in both directions, so runs that share the cache never
    see half a file; two runs training the same job at once both publish the same result.
    A network is reused only when the code that trained it (its fingerprint) is the code of
    the run, unless the run opts in; a damaged entry is moved aside under ``damaged/``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.expandvars(os.path.expanduser(str(root))))

    def _record(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def _checkpoint(self, job_id: str) -> Path:
        return self.root / f"{job_id}.safetensors"

    def fetch(self, job_id: str, store: RunStore, need_checkpoint: bool, fingerprint: str | None = None
              ) -> JobRecord | None:
        """Copy a finished job into ``store`` and return its record, or None if not cached
        (or trained by other code than ``fingerprint``, when one is given)."""
        path = self._record(job_id)
        if not path.is_file():
            return None
        try:
            record = JobRecord.from_json(path.read_bytes())
            if record.job_id != job_id:
                raise RecordError(f"holds the record of job {record.job_id}")
        except RecordError:
            quarantine(path, self.root)
            return None
        if not record.ok or (fingerprint is not None and record.fingerprint_id != fingerprint):
            return None
        if need_checkpoint:
            ckpt = self._checkpoint(job_id)
            if not ckpt.is_file():
                return None
            if record.checkpoint_sha256 is not None and sha256_file(ckpt) != record.checkpoint_sha256:
                quarantine(ckpt, self.root)
                quarantine(path, self.root)
                return None
            atomic_copy(ckpt, store.checkpoint_path(job_id))
        record = record.model_copy(update={"reused_from": str(self.root)})
        store.write_record(record)
        return record

    def publish(self, job_id: str, store: RunStore) -> None:
        """Add a finished job of ``store`` to the cache."""
        if store.has_checkpoint(job_id):
            atomic_copy(store.checkpoint_path(job_id), self._checkpoint(job_id))
        atomic_copy(store.record_path(job_id), self._record(job_id))
