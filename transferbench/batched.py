"""Same-shaped members of a cohort trained as one batched computation.

Members that train every layer with the same optimizer settings (the fine-tuned BnB+ and
AnB+ of every n; base networks too) have parameters of the same shapes: stacked along a new
first dimension (``torch.func.stack_module_state``), they run as one vmapped forward pass
(``torch.func.vmap`` over ``functional_call``; a convolution becomes one grouped
convolution), one backward pass and one optimizer step on the stacked tensors.

Each member keeps its own dropout stream: before each step its dropout masks are drawn
from its own RNG state exactly as ``torch.nn.functional.dropout`` draws them alone, and a
:class:`~torch.overrides.TorchFunctionMode` hands them to the network's dropout calls. So
every member computes what it computes alone, up to the rounding of the batched kernels
(float tolerance, tested; not bit for bit). A network whose training-mode forward pass draws
random numbers other than through ``dropout`` is not batched (found by a probe).

Whether batching pays depends on the machine (``performance.batched``): on this project's
2-core CPU it measured about even with one network after another; it pays where one small
network cannot fill the device (a GPU, many cores).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .context import TrainContext
from .devices import autocast

if TYPE_CHECKING:
    from .cohort import Member

__all__ = ["BatchedMembers", "dropout_mask"]


def dropout_mask(shape: Sequence[int], p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The scaled keep-mask ``dropout(x, p)`` multiplies an ``x`` of ``shape`` by, drawn from
    torch's RNG exactly as ``dropout`` draws it (so ``x * mask`` is its output)."""
    if p == 1:
        return torch.zeros(shape, dtype=dtype, device=device)
    if device.type in ("cuda", "xpu"):  # the fused kernel: draw its mask the way it draws it
        return torch.native_dropout(torch.ones(shape, dtype=dtype, device=device), p, True)[0]
    return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - p).div_(1 - p)


class _Dropouts(TorchFunctionMode):
    """Intercepts ``F.dropout``: records its calls (a probe), or applies given masks."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], float, torch.dtype]] = []
        self.masks: list[torch.Tensor] | None = None  # None: record; a list: apply, in call order

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.dropout:
            return func(*args, **kwargs)
        names = ("input", "p", "training", "inplace")
        bound = {**dict(zip(names, args)), **kwargs}
        x, p, training = bound["input"], bound.get("p", 0.5), bound.get("training", True)
        if not training or p == 0:
            return x
        if self.masks is None:
            self.calls.append((tuple(x.shape[1:]), float(p), x.dtype))
            return x
        return x * self.masks.pop(0)


class BatchedMembers:
    """Members trained as one computation (see the module's docstring).

    Attributes:
        members: the members still trained here (a failed one is dropped).
    """

    def __init__(self, members: list[Member], ctx: TrainContext, calls: list[tuple]) -> None:
        self.members, self.ctx, self.calls = list(members), ctx, calls
        self.base = members[0].model  # its structure (and train/eval mode) runs every member
        self.names = [n for n, _ in self.base.named_parameters()]
        self.mode = _Dropouts()
        self.steps = 0  # batched optimizer steps taken
        self._before: list[dict] | None = None
        self._stack()

    # ------------------------------------------------------------------ building
    @classmethod
    def of(cls, members: list[Member], ctx: TrainContext) -> BatchedMembers | None:
        """The members that can be batched together, or None (too few, or batching is off)."""
        setting = ctx.config.performance.batched
        if setting == "off" or (setting == "auto" and ctx.device.type != "cuda") or ctx.config.performance.compile:
            return None
        same = [m for m in members if _signature(m) == _signature(members[0])] if members else []
        if len(same) < 2 or not all(p.requires_grad for p in same[0].model.parameters()):
            return None
        calls = _probe(same[0], ctx)
        return None if calls is None else cls(same, ctx, calls)

    def _stack(self, states: list[dict] | None = None) -> None:
        """Stack the members' parameters, buffers and optimizer states."""
        models = [m.model for m in self.members]
        self.params = {n: torch.stack([m.get_parameter(n).detach() for m in models]).requires_grad_()
                       for n in self.names}
        self.buffers = {n: torch.stack([b.detach() for b in bs]) for n, bs in
                        zip([n for n, _ in self.base.named_buffers()],
                            zip(*[[b for _, b in m.named_buffers()] for m in models]))}
        first = self.members[0].setup.optimizer
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [self.params[self._name(p)] for p in g["params"]]} for g in first.param_groups]
        self.optimizer = type(first)(groups, **first.defaults)
        for n, stacked in self.params.items():
            per = [m.setup.optimizer.state.get(m.model.get_parameter(n), {}) for m in self.members]
            if per[0]:
                self.optimizer.state[stacked] = {k: torch.stack([s[k] for s in per]) if torch.is_tensor(v) and v.dim()
                                                 else v for k, v in per[0].items()}

    def _name(self, p: torch.Tensor) -> str:
        for n, q in self.base.named_parameters():
            if q is p:
                return n
        raise KeyError("a parameter of the optimizer is not in the network")

    def reload(self) -> None:
        """Stack again from the members' own networks and optimizers (after a resume)."""
        self._stack()

    def sync(self) -> None:
        """Write the stacked values back into each member's network and optimizer."""
        with torch.no_grad():
            for k, m in enumerate(self.members):
                for n in self.names:
                    m.model.get_parameter(n).copy_(self.params[n][k])
                for (n, b) in m.model.named_buffers():
                    b.copy_(self.buffers[n][k])
                for n, stacked in self.params.items():
                    state = self.optimizer.state.get(stacked)
                    if state:
                        m.setup.optimizer.state[m.model.get_parameter(n)] = {
                            key: v[k].clone() if torch.is_tensor(v) and v.dim() else v for key, v in state.items()}

    def drop_failed(self) -> None:
        """Take members that failed out of the stack (their slices would only cost time)."""
        if all(m.alive for m in self.members):
            return
        self.sync()
        self.members = [m for m in self.members if m.alive]
        if self.members:
            self.base = self.members[0].model
            self._stack()

    # ------------------------------------------------------------------ computing
    def _masks(self, batch: int) -> list[torch.Tensor]:
        """Every member's dropout masks for this step, each from its own stream, stacked."""
        device = self.ctx.device
        per_member = []
        for m in self.members:
            with m.rng.active():
                per_member.append([dropout_mask((batch, *shape), p, dtype, device) for shape, p, dtype in self.calls])
        return [torch.stack(masks) for masks in zip(*per_member)] if self.calls else []

    def _forward(self, x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
        mode = self.mode

        def one(params: dict, buffers: dict, masks: list, x: torch.Tensor) -> torch.Tensor:
            mode.masks = list(masks)
            return torch.func.functional_call(self.base, (params, buffers), (x,))

        with mode:
            return torch.func.vmap(one, in_dims=(0, 0, 0, None), randomness="error")(
                self.params, self.buffers, masks, x)

    def abandon(self) -> bool:
        """After a failure of the first batched step: leave the members as they were before it
        (networks, dropout streams), to train one by one. False when steps were already taken."""
        if self.steps or self._before is None:
            return False
        for m, state in zip(self.members, self._before):
            m.rng.load(state)
        return True

    def train_step(self, x: torch.Tensor, y: torch.Tensor, factor: float, loss_fn: nn.Module,
                   amp: contextlib.AbstractContextManager, step: int) -> None:
        """One optimizer step of every member; a member whose loss is not finite fails."""
        if not self.steps:
            self._before = [dict(m.rng.state()) for m in self.members]
        for group, lr in zip(self.optimizer.param_groups, self.members[0].base_lrs):
            group["lr"] = lr * factor
        masks = self._masks(x.shape[0])
        with amp:
            out = self._forward(x, masks)
            losses = [loss_fn(out[k], y) for k in range(len(self.members))]
        values = torch.stack([v.detach().float() for v in losses]).tolist()
        total = None
        for m, loss, value in zip(self.members, losses, values):
            if not math.isfinite(value):
                m.error = f"loss became {value} at step {step + 1}"
                continue
            total = loss if total is None else total + loss
            m.running = value if step == 0 else 0.9 * m.running + 0.1 * value
        self.optimizer.zero_grad(set_to_none=True)
        if total is not None:
            total.backward()
            self.optimizer.step()
        self.steps += 1

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> dict[Member, torch.Tensor]:
        """Every member's logits for an evaluation batch (the caller set eval mode)."""
        if not self.members:
            return {}
        was = self.base.training
        self.base.eval()
        out = self._forward(x, [])
        self.base.train(was)
        return {m: out[k] for k, m in enumerate(self.members)}


def _signature(m: Member) -> tuple:
    """What members batched together must share: shapes, trainable parameters, optimizer."""
    opt = m.setup.optimizer
    names = {id(p): n for n, p in m.model.named_parameters()}
    return (
        tuple((n, tuple(p.shape), p.requires_grad) for n, p in m.model.named_parameters()),
        tuple((n, tuple(b.shape)) for n, b in m.model.named_buffers()),
        type(opt), tuple(sorted(opt.defaults.items(), key=str)),
        tuple((tuple(names[id(p)] for p in g["params"]), tuple(sorted(((k, v) for k, v in g.items() if k != "params"),
                                                                       key=str))) for g in opt.param_groups),
        m.setup.target.frozen == [], m.feed,
    )


def _probe(m: Member, ctx: TrainContext) -> list[tuple] | None:
    """The dropout calls of one training-mode forward pass (shape, p, dtype), on a copy of the
    network; None when the pass draws random numbers in another way (then no batching)."""
    model = copy.deepcopy(m.model)
    model.train()
    mode = _Dropouts()
    cuda = ctx.device.type == "cuda"
    state = torch.get_rng_state(), torch.cuda.get_rng_state(ctx.device) if cuda else None
    x = torch.zeros(2, *ctx.input_shape, device=ctx.device)
    try:
        with torch.no_grad(), autocast(ctx.config.performance.amp, ctx.device), mode:
            model(x)
    except Exception:  # noqa: BLE001 - a network the probe cannot run is trained one by one
        return None
    finally:
        after = torch.get_rng_state(), torch.cuda.get_rng_state(ctx.device) if cuda else None
        drew = any(a is not None and not torch.equal(a, b) for a, b in zip(state, after))
        torch.set_rng_state(state[0])
        if cuda:
            torch.cuda.set_rng_state(state[1], ctx.device)
    return None if drew else mode.calls
