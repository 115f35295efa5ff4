"""Content hashes: the identity of jobs, data caches and configs (a leaf module)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["content_hash"]


def content_hash(spec: Any) -> str:
    """A short stable hash of JSON-serialisable data (keys sorted, so order never matters)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
