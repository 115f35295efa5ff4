"""A cohort's members while they train, and the stepping interface that trains them.

A :class:`Member` is one network of a cohort (:mod:`transferbench.cohort`): its job, its
prepared network, data and optimizer, its own dropout stream (:class:`RngState`) and its
:class:`~transferbench.stepping.Course`. A :class:`Stepper` takes the optimizer steps of some
members and gives their evaluation logits. There are two: :class:`SoloSteppers`, one member
after another, each in its own dropout stream (what each does alone, bit for bit), and
:class:`~transferbench.batched.BatchedMembers`, same-shaped members as one computation. The
cohort holds a list of steppers and nothing else of how its members step: when a stepper
fails it may hand its members to another (:meth:`Stepper.fallback`), a swap in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from .executor import ProgressFn
from .jobs import Job
from .stepping import Course, TrainingSteps
from .trainer import JobSetup

__all__ = ["Inputs", "Member", "RngState", "SoloSteppers", "Stepper"]


class RngState:
    """A member's own stream of torch's global RNG (CPU, and its CUDA device's), which only
    dropout draws from while a network trains; swapped in while the member runs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)

    def state(self) -> dict[str, torch.Tensor | None]:
        return {"cpu": self.cpu, "cuda": self.cuda}

    def load(self, state: Mapping[str, torch.Tensor | None]) -> None:
        cpu, cuda = state["cpu"], state.get("cuda")
        if cpu is None:
            raise ValueError("a saved dropout stream without its CPU state")
        self.cpu = cpu
        if self.cuda is not None and cuda is not None:
            self.cuda = cuda


@dataclass(eq=False)
class Member:
    """One network of a cohort while it trains.

    Attributes:
        job: its job.
        setup: its network, data, optimizer and length (as :func:`prepare_job` made them).
        rng: its dropout stream.
        progress: its progress callback.
        net: what it runs on its input: the whole network (or the suffix above its cache),
            or the suffix above a shared prefix.
        feed: ``raw`` (the cohort's batches), ``cached`` (its own frozen-prefix features) or
            ``prefix`` (a shared prefix's output at its cut).
        generator: the data-order generator of a ``cached`` member (seeded as the cohort's).
        course: its running loss, evaluations, and why it failed.
        base_lrs: its parameter groups' learning rates before the schedule.
    """

    job: Job
    setup: JobSetup
    rng: RngState
    progress: ProgressFn | None
    net: nn.Module
    feed: str = "raw"
    generator: torch.Generator | None = None
    course: Course = field(default_factory=Course)
    base_lrs: list[float] = field(default_factory=list)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Its optimizer (a member always trains: networks that are only evaluated train alone)."""
        if self.setup.optimizer is None:
            raise TypeError(f"cohort member {self.job.id} has no optimizer: it only evaluates")
        return self.setup.optimizer

    @property
    def model(self) -> nn.Module:
        return self.setup.target.model

    @property
    def alive(self) -> bool:
        return self.course.error is None


#: What a step gives each member: its network input and its labels.
Inputs = Mapping[Member, tuple[torch.Tensor, torch.Tensor]]


class Stepper(Protocol):
    """Takes the optimizer steps of some members of a cohort.

    Attributes:
        members: the members it steps (those that failed may stay listed: they are skipped).
    """

    members: list[Member]

    def step(self, inputs: Inputs, steps: TrainingSteps, step: int) -> None:
        """Step ``step`` of every live member (``inputs``: each member's input and labels);
        a member whose loss is not finite fails (its course says why)."""

    def eval_logits(self, inputs: Mapping[Member, torch.Tensor]) -> dict[Member, torch.Tensor]:
        """The logits of its members in ``inputs`` on their evaluation inputs (the caller has
        set evaluation mode and no-grad)."""

    def sync(self) -> None:
        """Leave in every member's own network and optimizer what training made of them."""

    def reload(self) -> None:
        """Take up the members' own networks and optimizers again (after a resume)."""

    def fallback(self, exc: Exception) -> Stepper | None:
        """After ``exc`` broke a step: another stepper that takes this step and the next ones
        for the same members, as they were before it; None when the failure must stand."""


class SoloSteppers:
    """Members stepped one after another, each in its own dropout stream: each computes what
    it computes alone (:meth:`TrainingSteps.step`), bit for bit."""

    def __init__(self, members: list[Member]) -> None:
        self.members = list(members)

    def step(self, inputs: Inputs, steps: TrainingSteps, step: int) -> None:
        for m in self.members:
            if m.alive:
                x, y = inputs[m]
                with m.rng.active():
                    steps.step(m.net, m.optimizer, m.base_lrs, x, y, m.course, step)

    def eval_logits(self, inputs: Mapping[Member, torch.Tensor]) -> dict[Member, torch.Tensor]:
        return {m: m.net(inputs[m]) for m in self.members if m in inputs}

    def sync(self) -> None:
        """Nothing to do: the members' own networks are what trains."""

    def reload(self) -> None:
        """Nothing to do: the members' own networks are what trains."""

    def fallback(self, exc: Exception) -> Stepper | None:
        return None  # one by one is the way of last resort
