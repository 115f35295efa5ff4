"""Layer selectors from cheap signals of the source network on the target, without training:
Auto-RGN's relative gradient norms and an estimator's per-layer curve.

* :func:`relative_gradient_norms`: per layer l, ``||g_l|| / ||theta_l||``, the norm of the
  gradient of the target's loss with respect to the layer's parameters over the norm of the
  parameters (all of the layer's tensors taken as one vector). Lee et al. (ICLR 2023,
  "Surgical fine-tuning improves adaptation to distribution shifts") call it the relative
  gradient norm (RGN); their Auto-RGN scales each tensor's learning rate by it.
  :func:`source_rgn` computes it on the first :data:`RGN_BATCHES` batches of the target's
  training examples through the network a surgical regime starts from.
* :func:`layer_scores`: an estimator (:class:`~transferbench.estimator.Estimator`) of the
  source network's layer-n features on a fixed subset of the target's examples, for each n.

Both see the target's examples as its networks do: through the job's data transforms (a
corruption, a relabelling) and the run's input transform. Neither reads anything but the
source network's weights and the target's data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .context import TrainContext
from .estimator import Estimator, LayerFeatures
from .features import layer_features
from .interfaces import Layer, Split
from .jobdata import input_transform, transformed
from .jobs import Job
from .network import build_target
from .taskdata import open_task

__all__ = ["RGN_BATCHES", "Curves", "best_layer", "layer_scores", "relative_gradient_norms", "source_rgn"]

#: Batches of the target's training examples the relative gradient norms are summed over.
#: Fixed before the first run: Lee et al. compute them on each training batch as it comes;
#: a selector computes them once, and four batches (256 examples at the configs' batch size
#: of 64) average out one batch's noise at a cost of about a thousandth of one network's
#: training (a training is thousands of batches).
RGN_BATCHES = 4


def best_layer(signal: Mapping[int, float], ns: Iterable[int], *, ties: str = "shallower") -> int:
    """The layer of ``ns`` where ``signal`` (layer -> value) is highest; ``ties``:
    ``"shallower"`` or ``"deeper"`` wins among equal values.

    Raises:
        ValueError: ``ns`` is empty.
    """
    ns = list(ns)
    if not ns:
        raise ValueError("no layer to choose from")
    sign = -1 if ties == "shallower" else 1
    return max(ns, key=lambda n: (signal[n], sign * n))


def _owned(name: str, layer: Layer) -> bool:
    return any(name == m or name.startswith(m + ".") for m in layer.modules)


def relative_gradient_norms(model: nn.Module, layers: Sequence[Layer],
                            batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> list[float]:
    """Per layer 1..L of ``model``: ``||g_l|| / ||theta_l||`` (see the module's docstring).

    The gradient is that of the mean cross-entropy over all of ``batches`` (each batch's mean,
    averaged), with respect to every parameter whether or not it would train; the network's
    mode (train: BatchNorm on batch statistics, as fine-tuning sees it) is the caller's. A
    layer with no parameter, or whose parameters are all zero, gets 0.0.
    """
    params = dict(model.named_parameters())
    saved = {name: p.requires_grad for name, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        count = 0
        for x, y in batches:
            loss = F.cross_entropy(model(x).float().flatten(1)[:, :num_classes], y)
            loss.backward()
            count += 1
        if count == 0:
            raise ValueError("relative_gradient_norms needs at least one batch")
        out = []
        for layer in layers:
            mine = [p for name, p in params.items() if _owned(name, layer)]
            weight = math.sqrt(math.fsum(float(p.detach().double().pow(2).sum()) for p in mine))
            grad = math.sqrt(math.fsum(float(p.grad.double().pow(2).sum()) for p in mine if p.grad is not None))
            out.append(0.0 if weight == 0.0 else grad / count / weight)
        return out
    finally:
        for name, p in params.items():
            p.grad = None
            p.requires_grad_(saved[name])


def _examples(ctx: TrainContext, job: Job, split: Split, limit: int, seed: int
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """At most ``limit`` of the job's ``split`` examples (a seeded shuffle), through its data
    transforms and the run's input transform (evaluation mode: no random augmentation), on
    the run's device."""
    config = ctx.config
    task = transformed(open_task(ctx.components.data, split, job.classes, config.loader, ctx.memory),
                       job.transforms, split)
    transform = input_transform(ctx)
    count = 0
    for x, y in task.batches(config.train.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        x, y = x[: limit - count], y[: limit - count]
        count += len(y)
        yield transform(x.to(ctx.device), train=False), y.long().to(ctx.device)
        if count >= limit:
            return


def _network(ctx: TrainContext, job: Job, state: Mapping[str, torch.Tensor]) -> tuple[nn.Module, list[Layer]]:
    """The network ``job`` starts training from (its protocol applied to the source's
    weights), built from the job's seed without moving torch's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        target = build_target(ctx.components.architecture, job, ctx.input_shape, state)
    return target.model.to(ctx.device), target.layers


def source_rgn(ctx: TrainContext, job: Job, state: Mapping[str, torch.Tensor],
               batches: int = RGN_BATCHES) -> tuple[list[float], int]:
    """The relative gradient norms of layers 1..L of the network ``job`` (a surgical regime)
    starts from, on the first ``batches`` batches of its training examples (seeded by the
    job), in train mode; and the number of examples they took."""
    model, layers = _network(ctx, job, state)
    model.train()
    data = list(_examples(ctx, job, "train", batches * ctx.config.train.batch_size, job.seed))
    with torch.random.fork_rng(devices=[]):  # dropout draws: the job's own, and nobody's RNG moves
        torch.manual_seed(job.seed)
        rgn = relative_gradient_norms(model, layers, data, job.num_classes)
    return rgn, sum(len(y) for _, y in data)


@dataclass(frozen=True)
class Curves:
    """Estimators' scores of a source network's layers on a target (:func:`layer_scores`).

    Attributes:
        scores: estimator name -> n -> score.
        dims: n -> numbers per example of the layer-n features (after pooling).
        n_train: training examples the features were computed on.
        n_eval: held-out examples.
    """

    scores: dict[str, dict[int, float]]
    dims: dict[int, int]
    n_train: int
    n_eval: int


def layer_scores(ctx: TrainContext, job: Job, state: Mapping[str, torch.Tensor], ns: Sequence[int],
                 estimators: Mapping[str, Estimator]) -> Curves:
    """Each estimator's score of the source network's layer-n features, for every n of ``ns``,
    on a fixed subset of ``job``'s target examples (``estimation.max_train`` training and
    ``max_eval`` held-out ones, features pooled to ``max_features``, as estimator jobs do).

    ``job`` is a frozen regime at the deepest n (its layers 1..n are the source's).

    """
    settings = ctx.config.estimation
    model, layers = _network(ctx, job, state)
    model.eval()
    limits: tuple[tuple[Split, int], ...] = (("train", settings.max_train), ("eval", settings.max_eval))
    splits = {split: list(_examples(ctx, job, split, limit, job.seed)) for split, limit in limits}
    labels = {split: torch.cat([y for _, y in batches]).cpu() for split, batches in splits.items()}
    out: dict[str, dict[int, float]] = {name: {} for name in estimators}
    dims: dict[int, int] = {}
    for n in ns:
        feats = {split: layer_features(model, layers, n, (x for x, _ in batches), settings.max_features)
                 for split, batches in splits.items()}
        features = LayerFeatures(feats["train"], labels["train"], feats["eval"], labels["eval"], job.num_classes, n,
                                 seed=job.seed)
        dims[n] = features.dim
        for name, estimator in estimators.items():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(job.seed)
                out[name][n] = float(estimator.score(features))
    return Curves(out, dims, len(labels["train"]), len(labels["eval"]))
