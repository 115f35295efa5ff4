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

:class:`BatchedMembers` is a :class:`~transferbench.members.Stepper`: a cohort steps it as it
steps members one by one. Its training steps follow the same
:class:`~transferbench.stepping.TrainingSteps` (lr, loss check, running loss). If its first
step fails it hands its members, as they were before that step, to
:class:`~transferbench.members.SoloSteppers` (:meth:`BatchedMembers.fallback`); if a batched
evaluation fails, its members are evaluated one by one from then on while training stays
batched.

Whether batching pays depends on the machine (``performance.batched``): on this project's
2-core CPU it measured about even with one network after another; it pays where one small
network cannot fill the device (a GPU, many cores).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .context import TrainContext
from .devices import autocast
from .members import Inputs, Member, SoloSteppers, Stepper
from .stepping import TrainingSteps

__all__ = ["BatchedMembers", "dropout_mask"]

log = logging.getLogger("transferbench")


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
        self.taken = 0  # batched optimizer steps taken
        self.synced = 0  # the members' own networks hold the values after this many steps
        self.batched_eval = True  # False once a batched evaluation failed: one by one from then on
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
        first = self.members[0].optimizer
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [self.params[self._name(p)] for p in g["params"]]} for g in first.param_groups]
        self.optimizer = type(first)(groups, **first.defaults)
        for n, stacked in self.params.items():
            per = [m.optimizer.state.get(m.model.get_parameter(n), {}) for m in self.members]
            if per[0]:
                self.optimizer.state[stacked] = {k: torch.stack([s[k] for s in per]) if torch.is_tensor(v) and v.dim()
                                                 else v for k, v in per[0].items()}

    def _name(self, p: torch.Tensor) -> str:
        for n, q in self.base.named_parameters():
            if q is p:
                return n
        raise KeyError("a parameter of the optimizer is not in the network")

    def reload(self) -> None:
        """Stack again from the members' own networks and optimizers (after a resume; the
        members that failed before it stay out)."""
        self.members = [m for m in self.members if m.alive]
        self.synced = self.taken
        if self.members:
            self.base = self.members[0].model
            self._stack()

    def sync(self) -> None:
        """Write the stacked values back into each member's network and optimizer."""
        self.synced = self.taken
        with torch.no_grad():
            for k, m in enumerate(self.members):
                for n in self.names:
                    m.model.get_parameter(n).copy_(self.params[n][k])
                for (n, b) in m.model.named_buffers():
                    b.copy_(self.buffers[n][k])
                for n, stacked in self.params.items():
                    state = self.optimizer.state.get(stacked)
                    if state:
                        m.optimizer.state[m.model.get_parameter(n)] = {
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
        if self.taken or self._before is None:
            return False
        for m, state in zip(self.members, self._before):
            m.rng.load(state)
        return True

    def train_step(self, x: torch.Tensor, y: torch.Tensor, steps: TrainingSteps, step: int) -> None:
        """One optimizer step of every member; a member whose loss is not finite fails."""
        if not self.taken:
            self._before = [dict(m.rng.state()) for m in self.members]
        steps.set_lr(self.optimizer, self.members[0].base_lrs, step)  # one optimizer: the same groups for all
        masks = self._masks(x.shape[0])
        with steps.amp:
            out = self._forward(x, masks)
            losses = [steps.loss_fn(out[k], y) for k in range(len(self.members))]
        values = torch.stack([v.detach().float() for v in losses]).tolist()
        total = None
        for m, loss, value in zip(self.members, losses, values):
            if m.course.add_loss(value, step):
                total = loss if total is None else total + loss
        self.optimizer.zero_grad(set_to_none=True)
        if total is not None:
            total.backward()
            self.optimizer.step()
        self.taken += 1

    # ------------------------------------------------------------------ the Stepper interface
    def step(self, inputs: Inputs, steps: TrainingSteps, step: int) -> None:
        """Step ``step`` of every member as one computation (they all read the cohort's batch);
        the members that failed leave the stack."""
        if not self.members:
            return
        x, y = inputs[self.members[0]]
        self.train_step(x, y, steps, step)
        self.drop_failed()

    def fallback(self, exc: Exception) -> Stepper | None:
        """The members one by one, as they were before the first batched step broke; None
        once batched steps were taken (the failure stands)."""
        if not self.abandon():
            return None
        log.warning("batched training failed (%s: %s); its members train one by one", type(exc).__name__, exc)
        return SoloSteppers(self.members)

    def eval_logits(self, inputs: Mapping[Member, torch.Tensor]) -> dict[Member, torch.Tensor]:
        """The members' evaluation logits, batched; after a batched evaluation failed, each
        member's own network (synced) evaluates, and training stays batched."""
        mine = [m for m in self.members if m in inputs]
        if not mine:
            return {}
        if self.batched_eval:
            try:
                return self.logits(inputs[mine[0]])
            except Exception as exc:  # noqa: BLE001 - batching is a speed-up: without it, the same evaluation
                log.warning("batched evaluation failed (%s: %s); its members are evaluated one by one",
                            type(exc).__name__, exc)
                self.batched_eval = False
        if self.synced != self.taken:
            self.sync()
        return {m: m.net(inputs[m]) for m in mine}

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
    opt = m.optimizer
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
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(ctx.device) if cuda else None
    x = torch.zeros(2, *ctx.input_shape, device=ctx.device)
    try:
        with torch.no_grad(), autocast(ctx.config.performance.amp, ctx.device), mode:
            model(x)
    except Exception:  # noqa: BLE001 - a network the probe cannot run is trained one by one
        return None
    finally:
        drew = not torch.equal(torch.get_rng_state(), cpu_state)
        if cuda_state is not None:
            drew = drew or not torch.equal(torch.cuda.get_rng_state(ctx.device), cuda_state)
            torch.cuda.set_rng_state(cuda_state, ctx.device)
        torch.set_rng_state(cpu_state)
    return None if drew else mode.calls
