"""The record of one job: what the trainer (or an estimator) writes and everything else reads.

One :class:`JobRecord` per job, stored as ``records/<job_id>.json`` in the run directory.
Its JSON form is the one transferbench 0.1 wrote, so older run directories still load; an
estimator job's record adds the estimator's fields and has no accuracies.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["HistoryPoint", "JobRecord", "RecordError", "utc_now"]


class RecordError(ValueError):
    """A record file is not a valid :class:`JobRecord` (damaged, or not a record at all)."""


def utc_now() -> str:
    """The current UTC time as ISO 8601, to the second (the records' time stamps)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: Fields left out of a record's JSON when empty (so a network's record reads as in 0.1).
_OPTIONAL = ("traceback", "reused_from", "fingerprint", "checkpoint_sha256", "source_sha256", "input_std", "estimator",
             "estimate",
             "estimate_s", "features_s", "feature_dim", "ood_top1", "ood_id")


class HistoryPoint(BaseModel):
    """One periodic evaluation during training."""

    model_config = ConfigDict(extra="ignore")

    step: int = Field(ge=0)
    epoch: float = Field(ge=0, allow_inf_nan=False)
    top1: float = Field(ge=0, le=1)
    top5: float = Field(ge=0, le=1)
    train_loss: float = Field(allow_inf_nan=False)
    lr_factor: float | None = Field(None, ge=0, allow_inf_nan=False)  # the schedule's factor at the last step


class JobRecord(BaseModel):
    """What one job produced: its accuracies and how it got them, or why it failed.

    Attributes:
        job_id: the job's content hash.
        status: ``ok`` or ``failed``.
        error: why it failed (None when ok).
        top1, top5: final held-out accuracies (fractions).
        top1_best_k: the paper's metric, the mean of the ``best_k`` best evaluations.
        best_k: k of ``top1_best_k`` (fewer when there were fewer evaluations).
        history: every periodic evaluation, in step order.
        train_time_s: wall time of the job.
        steps: optimizer steps taken.
        frozen_cache: whether the frozen-prefix cache was used.
        num_classes: classes of the target task.
        trainable_params: parameters that were trained (not frozen).
        device: where it trained.
        seed: torch seed of the job.
        started_at, finished_at: UTC time stamps.
        transferbench_version, torch_version: what trained it.
        traceback: the Python traceback of an unexpected failure.
        reused_from: the shared cache it was copied from, if it was.
        fingerprint: the code that trained it (:func:`transferbench.fingerprint.code_fingerprint`).
        checkpoint_sha256: SHA-256 of its checkpoint file, when one was kept.
        source_sha256: SHA-256 of the source checkpoint its copied layers came from.
        input_std: standard deviation of its first training batch as the network saw it
            (after scaling, augmentation and normalisation).
        estimator: the estimator's name (estimate jobs only).
        estimate: the estimator's score, higher = more transferable (estimate jobs only).
        estimate_s: seconds the estimator itself took, features aside.
        features_s: seconds spent computing the layer-n features this job used (0 when a
            job before it in the same process computed them).
        feature_dim: numbers per example of those features.
        ood_top1: final top-1 on the data source's out-of-distribution evaluation split (the
            same classes drawn differently), when the source has one
            (:meth:`~transferbench.interfaces.DataSource.has_ood`); None otherwise, and in a
            record written by a run whose source had none (the job id does not say whether
            it was measured: it names the network, and this is one more evaluation of it).
        ood_id: which OOD split ``ood_top1`` was measured on
            (:meth:`~transferbench.interfaces.DataSource.ood_id`); the report uses
            ``ood_top1`` only when this is the plan's.
    """

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1)
    status: Literal["ok", "failed"]
    error: str | None = None
    top1: float | None = Field(None, ge=0, le=1)
    top5: float | None = Field(None, ge=0, le=1)
    top1_best_k: float | None = Field(None, ge=0, le=1)
    best_k: int | None = Field(None, ge=1)
    history: list[HistoryPoint] | None = None
    train_time_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    steps: int | None = Field(None, ge=0)
    frozen_cache: bool | None = None
    num_classes: int | None = Field(None, ge=1)
    trainable_params: int | None = Field(None, ge=0)
    device: str | None = None
    seed: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    transferbench_version: str | None = None
    torch_version: str | None = None
    traceback: str | None = None
    reused_from: str | None = None
    fingerprint: dict[str, Any] | None = None
    checkpoint_sha256: str | None = None
    source_sha256: str | None = None
    input_std: float | None = Field(None, ge=0, allow_inf_nan=False)
    estimator: str | None = None
    estimate: float | None = Field(None, allow_inf_nan=False)
    estimate_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    features_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    feature_dim: int | None = Field(None, ge=1)
    ood_top1: float | None = Field(None, ge=0, le=1)
    ood_id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the network trained to the end."""
        return self.status == "ok"

    @property
    def fingerprint_id(self) -> str | None:
        """The id of the code that trained it (None for records of transferbench 0.1)."""
        return None if self.fingerprint is None else self.fingerprint.get("id")

    def value(self, metric: str) -> float | None:
        """An accuracy field by name (``top1``, ``top1_best_k``, ...), None unless ok."""
        return getattr(self, metric) if self.ok else None

    @classmethod
    def failed(cls, job_id: str, error: str, *, started_at: str | None = None, **fields: Any) -> JobRecord:
        """The record of a job that failed with ``error``."""
        import torch

        from ._version import __version__

        return cls(job_id=job_id, status="failed", error=error, started_at=started_at,
                   finished_at=utc_now(), transferbench_version=__version__,
                   torch_version=torch.__version__, **fields)

    def to_json(self) -> str:
        """The record as JSON text (every field, None as null; readable by transferbench 0.1)."""
        data = self.model_dump(mode="json")
        for optional in _OPTIONAL:
            if data[optional] is None:
                del data[optional]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> JobRecord:
        """Parse and validate a record.

        Raises:
            RecordError: the text is not JSON, or not a valid record.
        """
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RecordError(f"a record is a JSON object, this is a {type(data).__name__}")
        try:
            record = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise RecordError(f"{where}: {first['msg']}") from None
        if record.ok and record.top1 is None and record.estimate is None:
            raise RecordError("an ok record without top1 (or, for an estimator, estimate)")
        return record
