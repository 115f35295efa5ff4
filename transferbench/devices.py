"""Where jobs run: the ``device`` setting, resolved and checked before any work."""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["autocast", "device_problem", "resolve_device", "use_deterministic"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, then Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def device_problem(name: str, *, here: bool = True) -> str | None:
    """Why ``device`` cannot work, or None. With ``here``, also whether this machine has it
    (an executor that runs jobs elsewhere, on a cluster, checks only the spelling)."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        return f"{name!r} is not a device ({exc}); use auto, cpu, cuda, cuda:N or mps"
    if not here:
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"{name!r} asks for CUDA, which this machine does not have (torch sees no GPU); use auto or cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"{name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            return f"{name!r} asks for Apple's MPS, which this machine does not have; use auto or cpu"
    elif device.type != "cpu":
        return f"{name!r}: transferbench trains on cpu, cuda or mps"
    return None


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA when ``performance.amp`` asks for it, else nothing."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def use_deterministic(on: bool) -> None:
    """``performance.deterministic``: reproducible kernels in this process, or torch's defaults.

    On: ``torch.use_deterministic_algorithms(True)`` (an operation without a deterministic
    kernel raises instead of running), cuDNN's deterministic algorithms with its autotuner
    off (the autotuner may pick another algorithm run after run), and cuBLAS's fixed
    workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS starts: set before the first
    CUDA matrix product, as the runner does when it builds a process's training context).
    On the CPU torch's kernels are already deterministic for a fixed thread count.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False if on else torch.backends.cudnn.benchmark
