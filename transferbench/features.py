"""The features of layer n: what layers 1..n of a network hand to layer n+1, as vectors.

This is the cut the frozen-prefix cache makes (:meth:`Architecture.split_at`), found for
any architecture: a forward pre-hook on the modules of layer n+1 catches the input of the
first of them to run and stops the forward pass there, so the layers above n cost nothing.
The network runs in eval mode (no dropout, BatchNorm on its running statistics) on the
evaluation transform of the inputs (centre crop, normalisation; no random augmentation).

Each example's output is then made a vector of at most ``max_features`` numbers
(:func:`pool_features`):

* an output of ``C x S1 x ...`` (convolution maps, channels first) is flattened when it
  has at most ``max_features`` numbers; otherwise each channel is average-pooled over a
  grid of ``g x g ...`` cells, with the largest ``g`` for which ``C * g^d`` fits;
* a vector (or channels alone, when even one cell per channel is too many) longer than
  ``max_features`` is average-pooled over runs of neighbouring entries.

Memory stays bounded by ``examples x max_features``: batches are pooled as they come.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TransferbenchError
from .interfaces import Architecture, Layer

__all__ = ["layer_features", "network_outputs", "pool_features", "prefix_cost"]


class _Reached(Exception):
    """Raised by the hook: layer n+1 was reached, the rest of the forward pass is not needed."""


def pool_features(x: torch.Tensor, max_features: int) -> torch.Tensor:
    """One row of at most ``max_features`` numbers per example (see the module's docstring)."""
    x = x.float()
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() > 2 and x[0].numel() > max_features:
        channels, spatial = x.shape[1], x.shape[2:]
        grid = max(1, int(math.floor((max_features / channels) ** (1 / len(spatial)))))
        size = tuple(min(grid, s) for s in spatial)
        if len(spatial) == 1:
            x = F.adaptive_avg_pool1d(x, size[0])
        elif len(spatial) == 2:
            x = F.adaptive_avg_pool2d(x, (size[0], size[1]))
        elif len(spatial) == 3:
            x = F.adaptive_avg_pool3d(x, (size[0], size[1], size[2]))
        else:  # more than 3 spatial dimensions: average them all away
            x = x.flatten(2).mean(dim=2)
    x = x.flatten(1)
    if x.shape[1] > max_features:
        x = F.adaptive_avg_pool1d(x[:, None, :], max_features)[:, 0, :]
    return x


def _first_modules(model: nn.Module, layer: Layer) -> list[nn.Module]:
    modules = dict(model.named_modules())
    found = [modules[m] for m in layer.modules if m in modules]
    if not found:
        raise TransferbenchError(f"layer {layer.name} names no module of the network ({layer.modules}), "
                                 "so its input cannot be caught")
    return found


@torch.no_grad()
def _caught(model: nn.Module, layers: Sequence[Layer], n: int, inputs: Iterable[torch.Tensor]
            ) -> Iterator[torch.Tensor]:
    """For each batch, the input of layer n+1 (the forward pass stops there)."""
    if not 1 <= n < len(layers):
        raise TransferbenchError(f"layer n={n} has no layer above it (the network has {len(layers)})")
    caught: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple) -> None:
        caught.append(args[0])
        raise _Reached

    handles = [m.register_forward_pre_hook(hook) for m in _first_modules(model, layers[n])]
    was_training = model.training
    model.eval()
    try:
        for x in inputs:
            try:
                model(x)
            except _Reached:
                pass
            if not caught:
                raise TransferbenchError(f"layer {layers[n].name} never ran in a forward pass")
            yield caught.pop()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def layer_features(model: nn.Module, layers: Sequence[Layer], n: int, inputs: Iterable[torch.Tensor],
                   max_features: int) -> torch.Tensor:
    """What layers 1..n of ``model`` compute on each batch of ``inputs``, pooled to rows.

    Args:
        model: the network (put in eval mode here, restored after).
        layers: its transferable layers 1..L.
        n: 1 <= n < L.
        inputs: network-ready batches (already transformed, on the model's device).
        max_features: the most numbers kept per example.

    Returns:
        ``(examples, D)`` float32 on the CPU.
    """
    rows = [pool_features(x, max_features).cpu() for x in _caught(model, layers, n, inputs)]
    return torch.cat(rows) if rows else torch.empty(0, 0)


@torch.no_grad()
def network_outputs(model: nn.Module, inputs: Iterable[torch.Tensor], num_classes: int) -> torch.Tensor:
    """The classifier outputs (logits) of the whole ``model`` on each batch of ``inputs``, in
    eval mode (restored after): ``(examples, num_classes)`` float32 on the CPU. Outputs past
    ``num_classes`` (a classifier wider than the network's classes) are dropped, as the
    trainer drops them."""
    was_training = model.training
    model.eval()
    try:
        rows = [model(x).float().flatten(1)[:, :num_classes].cpu() for x in inputs]
    finally:
        model.train(was_training)
    return torch.cat(rows) if rows else torch.empty(0, 0)


def prefix_cost(arch: Architecture, num_classes: int, shape: Sequence[int], n: int, max_features: int
                ) -> tuple[float, int]:
    """GFLOP of one example through layers 1..n (what computing its features costs) and the
    length of its feature vector, both found on the meta device (no memory, no data)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = arch.build(num_classes, tuple(shape))
        layers = list(arch.layers(model))
        with FlopCounterMode(display=False) as counter:
            out = next(_caught(model, layers, n, [torch.empty(1, *shape)]))
        dim = pool_features(out, max_features).shape[1]
    return counter.get_total_flops() / 1e9, int(dim)
