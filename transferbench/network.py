"""A job's network: the input shape it sees, structure-only builds, and transfer.

Transfer is generic: a protocol gives one :class:`~transferbench.LayerAction` per layer, read
once into the job's :class:`~transferbench.reading.ProtocolReading`, and
:func:`apply_transfer` copies, freezes and sets learning-rate multipliers by the layers'
state-dict prefixes, for any architecture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .augment import output_shape
from .config import Augment
from .errors import ConfigError, TransferbenchError
from .interfaces import Architecture, DataSource, Layer
from .jobs import Job
from .reading import ProtocolReading

__all__ = [
    "Target",
    "apply_transfer",
    "build_meta",
    "build_target",
    "initial_state",
    "input_shape",
    "overlay",
    "set_frozen_norm_eval",
    "start_step",
    "under",
]


def input_shape(augment: Augment, source: DataSource) -> tuple[int, ...]:
    """The shape of one example as the network sees it: the source's, after any crop.

    Raises:
        ConfigError: augmentation asked for inputs that are not (channels, height, width).
    """
    shape = tuple(source.input_shape())
    if augment.active and len(shape) != 3:
        raise ConfigError([("train.augment", "crops and mirroring need (channels, height, width) "
                            f"inputs; this data source gives {shape}")])
    return output_shape(augment, shape)


def build_meta(arch: Architecture, num_classes: int, shape: Sequence[int]) -> nn.Module:
    """The network's structure on the meta device: no memory and no init, whatever its size."""
    with torch.device("meta"):
        return arch.build(num_classes, tuple(shape))


def under(name: str, prefixes: Sequence[str]) -> bool:
    """Whether a parameter or module ``name`` lies under one of the state-dict ``prefixes``."""
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def apply_transfer(
    model: nn.Module,
    layers: Sequence[Layer],
    reading: ProtocolReading,
    source_state: Mapping[str, torch.Tensor] | None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Copy and freeze layers as the protocol says (``reading``: the protocol read at n).

    Parameters of layers that are not copied keep the fresh initialisation the model was
    built with: that is what "re-initialised" means. A layer the reading says is ``reset``
    is copied from ``init_state``, the source network's initial weights; one it says is
    ``drawn`` gets fresh weights from the per-tensor mean and std of the source's
    (:func:`_draw_layer`).

    Returns:
        The protocol's per-parameter learning-rate multipliers and the state-dict prefixes
        of the frozen layers.
    """
    if reading.num_layers != len(layers):
        raise TransferbenchError(f"protocol gave {reading.num_layers} actions for {len(layers)} layers")
    state = model.state_dict()
    lr_mult: dict[str, float] = {}
    frozen_prefixes: list[str] = []
    params = {name for name, _ in model.named_parameters()}
    for layer, copied, reset, drawn, trained, mult in zip(layers, reading.copied, reading.reset, reading.drawn,
                                                          reading.trained, reading.lr_mult):
        if copied or reset:
            _copy_layer(state, layer, init_state if reset else source_state, reset)
        elif drawn:
            _draw_layer(state, layer, source_state, params)
        if not trained:
            frozen_prefixes.extend(layer.modules)
        for name, _ in model.named_parameters():
            if under(name, layer.modules):
                lr_mult[name] = mult
    for name, p in model.named_parameters():
        if under(name, frozen_prefixes):
            p.requires_grad_(False)
    return lr_mult, frozen_prefixes


def _matching(state: dict[str, torch.Tensor], layer: Layer, source: Mapping[str, torch.Tensor], keys: list[str],
              verb: str) -> list[tuple[str, torch.Tensor]]:
    """``(key, source tensor)`` for each of ``layer``'s ``keys``, each checked to be in ``source``
    with the target's shape (what copying and drawing a layer both need)."""
    if not keys:
        raise TransferbenchError(f"layer {layer.name} names modules with no parameters: {layer.modules}")
    out = []
    for k in keys:
        if k not in source:
            raise TransferbenchError(f"source checkpoint lacks {k!r} (layer {layer.name})")
        if source[k].shape != state[k].shape:
            raise TransferbenchError(
                f"cannot {verb} {k!r}: source shape {tuple(source[k].shape)} != target {tuple(state[k].shape)}"
            )
        out.append((k, source[k]))
    return out


def _copy_layer(state: dict[str, torch.Tensor], layer: Layer, source: Mapping[str, torch.Tensor] | None,
                init: bool = False) -> None:
    if source is None:
        what = "the source's initial weights" if init else "a source"
        raise TransferbenchError(f"layer {layer.name} is to be copied but the job has no {what}")
    for k, tensor in _matching(state, layer, source, [k for k in state if under(k, layer.modules)], "copy"):
        state[k].copy_(tensor)


def _draw_layer(state: dict[str, torch.Tensor], layer: Layer, source: Mapping[str, torch.Tensor] | None,
                params: set[str]) -> None:
    """Raghu et al.'s Mean Var Init: each parameter tensor of ``layer`` drawn i.i.d. from a
    normal with the mean and (population) standard deviation of the same tensor in ``source``.

    The draw uses torch's global generator, which the trainer seeded with the job's seed right
    before the build: the same job draws the same weights, and its id (the protocol's name is in
    it) tells it from a network that copied the weights. Buffers keep the fresh initialisation:
    a drawn running variance could be negative, and they are statistics, not weights.
    """
    if source is None:
        raise TransferbenchError(f"layer {layer.name} is to be drawn from a source's weights but the job has none")
    keys = [k for k in state if under(k, layer.modules) and k in params]
    for k, tensor in _matching(state, layer, source, keys, "draw"):
        ref = tensor.detach().to(torch.float64)
        mean, std = ref.mean().item(), ref.std(correction=0).item()
        noise = torch.randn(state[k].shape, dtype=torch.float64)
        state[k].copy_((noise * std + mean).to(state[k].dtype))


def set_frozen_norm_eval(model: nn.Module, frozen_prefixes: Sequence[str]) -> None:
    """Frozen normalisation layers use their running statistics (eval mode).

    Dropout in frozen layers stays active, as in the paper (Caffe's frozen fc6/fc7 kept
    dropout); only BatchNorm-style running statistics are pinned.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and under(name, frozen_prefixes):
            module.eval()


def start_step(start: float, total: int) -> int:
    """The step at which a layer whose action has ``start`` (a fraction of ``total``) begins to learn."""
    return round(start * total)


@dataclass
class Target:
    """A job's network after transfer, ready to train.

    Attributes:
        model: the whole network.
        layers: its transferable layers, 1..L.
        reading: what the job's protocol does to each layer (copied, reset, frozen, trained).
        lr_mult: the protocol's learning-rate multiplier of each parameter.
        frozen: state-dict prefixes of the frozen layers.
        held: state-dict prefixes of the layers that will learn but wait, frozen, at the
            current step (a staged protocol: LP-FT's probe); see :meth:`stage`.
    """

    model: nn.Module
    layers: list[Layer]
    reading: ProtocolReading
    lr_mult: dict[str, float]
    frozen: list[str]
    held: list[str] = field(default_factory=list)

    def train_mode(self) -> None:
        """Training mode, with frozen (and held) layers' normalisation statistics pinned."""
        self.model.train()
        set_frozen_norm_eval(self.model, self.frozen + self.held)

    def stage(self, done: int, total: int) -> bool:
        """Before step ``done`` of ``total``: hold (no gradient, so no update, momentum or
        weight decay: the optimizer skips a parameter without one) every layer whose action
        starts later, and release those whose start has come. Returns whether the set of
        held layers changed (then call :meth:`train_mode`)."""
        held = [m for layer, trained, start in zip(self.layers, self.reading.trained, self.reading.start)
                if trained and done < start_step(start, total) for m in layer.modules]
        if held == self.held:
            return False
        self.held = held
        for name, p in self.model.named_parameters():
            if not under(name, self.frozen):
                p.requires_grad_(not under(name, held))
        return True


def build_target(
    arch: Architecture,
    job: Job,
    shape: Sequence[int],
    source_state: Mapping[str, torch.Tensor] | None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> Target:
    """Build ``job``'s fresh network (from torch's current RNG state) and apply its protocol
    as the job's reading says (a base network trains every layer from its initialisation).

    ``init_state`` holds the source's initial weights, for layers the reading resets.
    """
    model = arch.build(job.num_classes, tuple(shape))
    layers = list(arch.layers(model))
    reading = job.read_protocol(len(layers))
    lr_mult, frozen = apply_transfer(model, layers, reading, source_state, init_state)
    return Target(model, layers, reading, lr_mult, frozen)


def initial_state(arch: Architecture, num_classes: int, shape: Sequence[int], seed: int) -> dict[str, torch.Tensor]:
    """The initial weights of the network a job of torch seed ``seed`` builds, recomputed.

    Training seeds torch with the job's seed right before ``arch.build`` (which initialises
    deterministically from it, a contract every architecture passes), so rebuilding gives
    exactly the weights the network started from; torch's global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = arch.build(num_classes, tuple(shape))
    return {k: v.detach() for k, v in model.state_dict().items()}


def overlay(arch: Architecture, num_classes: int, shape: Sequence[int],
            tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole state dict for ``num_classes``: ``tensors`` where they fit (name and shape), a
    throwaway initialisation elsewhere (a weights file's head for another class count).
    torch's global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        state = arch.build(num_classes, tuple(shape)).state_dict()
    return {k: tensors[k] if k in tensors and tuple(tensors[k].shape) == tuple(v.shape) else v
            for k, v in state.items()}
