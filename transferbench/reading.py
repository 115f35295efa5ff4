"""One reading of a transfer protocol: what it does to each layer of one job, read once.

A protocol (:class:`~transferbench.TransferProtocol`) answers "transfer at n" with one
:class:`~transferbench.LayerAction` per layer. :class:`ProtocolReading` is that answer read
into the facts the rest of the code asks for: which layers are copied from the source's
trained weights, drawn from their per-tensor statistics, reset to its initial weights, frozen
or trained; how many layers from the bottom are frozen; whether anything trains; whether
the network may train in a cohort.

The planner reads each job's protocol once and the reading travels on the
:class:`~transferbench.Job`, so the planner (cohort eligibility), the runner (initial
weights), the weights-file checks, the network build, the frozen-prefix cache, the cohorts'
shared prefixes and the cost model answer from the same facts: a rule changed here changes
for all of them. Nothing else calls ``protocol.actions``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TransferbenchError
from .interfaces import LayerAction, TransferProtocol

__all__ = ["ProtocolReading"]


@dataclass(frozen=True)
class ProtocolReading:
    """What a protocol does to the layers 1..L of one job (a base network: trains them all).

    Attributes:
        actions: the protocol's action for each layer 1..L.
        n: the job's n (layers transferred, or the layer treated; 0 for a base network).
        evaluate_only: the network is evaluated as built and trains nothing.
    """

    actions: tuple[LayerAction, ...]
    n: int = 0
    evaluate_only: bool = False

    @classmethod
    def of(cls, protocol: TransferProtocol | None, n: int, num_layers: int) -> ProtocolReading:
        """Read ``protocol`` at ``n`` for a network of ``num_layers`` layers (None: a base
        network, every layer trained from its initialisation).

        Raises:
            TransferbenchError: the protocol gave another number of actions than layers.
        """
        if protocol is None:
            return cls((LayerAction(copy=False, train=True),) * num_layers, n)
        actions = tuple(protocol.actions(n, num_layers))
        if len(actions) != num_layers:
            raise TransferbenchError(f"protocol gave {len(actions)} actions for {num_layers} layers")
        return cls(actions, n, type(protocol).evaluate_only)

    @property
    def num_layers(self) -> int:
        return len(self.actions)

    @property
    def copied(self) -> tuple[bool, ...]:
        """Per layer: loaded from the source's trained weights (as they are)."""
        return tuple(a.copy and not a.from_init and not a.meanvar for a in self.actions)

    @property
    def drawn(self) -> tuple[bool, ...]:
        """Per layer: drawn from the per-tensor mean and std of the source's trained weights
        (``meanvar``): it reads the source, but holds none of its weights."""
        return tuple(a.copy and a.meanvar and not a.from_init for a in self.actions)

    @property
    def reads_source(self) -> tuple[bool, ...]:
        """Per layer: needs the source's trained weights (copied or drawn from)."""
        return tuple(c or d for c, d in zip(self.copied, self.drawn))

    @property
    def reset(self) -> tuple[bool, ...]:
        """Per layer: loaded from the source's initial weights (as before it trained)."""
        return tuple(a.copy and a.from_init for a in self.actions)

    @property
    def trained(self) -> tuple[bool, ...]:
        """Per layer: learns (else frozen: no gradient, no weight decay)."""
        return tuple(a.train for a in self.actions)

    @property
    def lr_mult(self) -> tuple[float, ...]:
        """Per layer: the protocol's learning-rate multiplier."""
        return tuple(a.lr_mult for a in self.actions)

    @property
    def start(self) -> tuple[float, ...]:
        """Per layer: the fraction of the training steps it waits, frozen, before it learns."""
        return tuple(a.start if a.train else 0.0 for a in self.actions)

    @property
    def staged(self) -> bool:
        """Whether some layer starts to learn later than the others (LP-FT): the set of
        trained layers changes during training."""
        return any(s > 0 for s in self.start)

    @property
    def trains(self) -> bool:
        """Whether any layer learns."""
        return any(self.trained)

    @property
    def resets(self) -> bool:
        """Whether some layer is reset to the source's initial weights (they must be at hand)."""
        return any(self.reset)

    @property
    def frozen_prefix(self) -> int:
        """How many layers from the bottom (1..k) do not learn: no backward pass runs through
        them, and the frozen-prefix cache may compute them once. L when nothing learns."""
        return next((i for i, a in enumerate(self.actions) if a.train), self.num_layers)

    @property
    def source_prefix(self) -> int:
        """n when layers 1..n are frozen copies of the source's trained weights (what the
        cohort members of one source compute once per batch), else 0."""
        n = self.n
        return n if 0 < n <= self.frozen_prefix and all(self.copied[:n]) else 0

    @property
    def joins_cohort(self) -> bool:
        """Whether the network may share a cohort's data order. A network that is only
        evaluated has no steps to share, one reset to its source's initial weights needs
        them recomputed for it, and one whose trained layers change during training (staged)
        steps as no cohort member does: all three train alone."""
        return not self.evaluate_only and not self.resets and not self.staged
