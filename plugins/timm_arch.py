"""Any timm model as a transferbench architecture, its layers read from the model itself.

``timm`` builds the network (``timm.create_model(model, pretrained=False, ...)``: weights are
never downloaded). Its transferable layers come from timm's own description of the model's
structure, ``model.group_matcher(coarse=...)`` (the grouping timm uses for layer-wise
learning-rate decay):

* layer 1, ``stem``: what the matcher calls the stem (ResNet: ``conv1`` + ``bn1``; ConvNeXt:
  ``stem``; ViT: ``patch_embed`` + ``cls_token`` + ``pos_embed``);
* one layer per stage (``granularity: stage``: ResNet ``layer1``..``layer4``, ConvNeXt
  ``stages.0``..``stages.3``) or per block (``granularity: block``: ``layer1.0``, ...);
  a ViT has no stages, so both give ``blocks.0``..``blocks.N-1``;
* layer L, ``head``: everything timm leaves unmatched, which always holds the classifier
  (with ConvNeXt's head norm, MobileNetV3's ``conv_head``, or Swin's final norm at stage
  granularity, where timm leaves them ungrouped).

Modules that timm's matcher attaches to the preceding group stay there: a ViT's final
``norm`` and EfficientNet's ``conv_head`` + ``bn2`` belong to the last block (a ViT's
layers are ``stem``, ``blocks.0``, ..., ``blocks.N-1+norm``, ``head``), so the head of a
ViT is its linear classifier alone and layers 1..L-1 are its whole ``forward_features``.

Every state-dict entry (parameters and BatchNorm running statistics alike) belongs to
exactly one layer. Frozen BatchNorm layers are put in eval mode by the engine, so they
keep their running statistics; LayerNorm has none, and freezing its affine weights is all
it needs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from transferbench import Architecture, ConfigError, Layer, hookimpl

Granularity = Literal["stage", "block"]

#: create_model arguments the plugin sets itself; a config may not override them.
_RESERVED_KWARGS = frozenset(
    {"pretrained", "num_classes", "in_chans", "pretrained_cfg", "pretrained_cfg_overlay",
     "checkpoint_path", "cache_dir"}
)


#: How to use pretrained timm weights: a local file as the source of the transferred networks.
_LOCAL_WEIGHTS = (
    "to transfer from pretrained weights, put the weights file on this machine (timm's "
    "model.safetensors, e.g. `hf download timm/resnet18.a1_in1k model.safetensors --local-dir weights`, "
    "or a .pth state dict) and name it as the source of the treatments: experiments[].source: "
    "{checkpoint: weights/model.safetensors} with treatments [XnB, XnB+] (what timm calls "
    "pretrained_cfg_overlay=dict(file=...); docs/your-data.md)"
)


class TimmParams(BaseModel):
    """Configuration of the ``timm`` architecture."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="a timm model name, e.g. resnet18, convnext_atto, vit_tiny_patch16_224")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="extra timm.create_model arguments (e.g. depths, dims, img_size, patch_size, depth)",
    )
    granularity: Granularity = Field(
        "stage", description="one transferable layer per stage ('stage') or per block ('block')"
    )
    pretrained: bool = Field(
        False, description="never true: nothing is downloaded, and networks are built from their "
        "initialisation; give pretrained weights as a local file, as the source of XnB treatments "
        "(experiments[].source: {checkpoint: model.safetensors}; docs/your-data.md)",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        import timm

        if ":" in value:
            raise ValueError(
                f"{value!r}: hub models are not supported (nothing is downloaded); "
                "use one of timm's built-in model names"
            )
        base = value.split(".", 1)[0]  # "resnet18.a1_in1k": the tag only picks weights
        if not timm.is_model(base):
            close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
            raise ValueError(f"timm has no model {value!r}{hint}")
        return value

    @field_validator("kwargs")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(value) & _RESERVED_KWARGS)
        if reserved:
            weights = set(reserved) - {"num_classes", "in_chans"}
            raise ValueError(
                f"{', '.join(reserved)} cannot be set: the engine sets the class count and input "
                "channels, and builds every network from its initialisation"
                + (f"; {_LOCAL_WEIGHTS}" if weights else "")
            )
        return value

    @field_validator("pretrained")
    @classmethod
    def _no_download(cls, value: bool) -> bool:
        if value:
            raise ValueError(f"transferbench never downloads weights; {_LOCAL_WEIGHTS}")
        return value


# --------------------------------------------------------------------------- layer partition


def _matcher_fn(matcher: Any) -> Callable[[str], bool] | None:
    """A predicate for the ``stem`` entry of a dict matcher (None when there is none)."""
    if isinstance(matcher, dict) and isinstance(matcher.get("stem"), str):
        pattern = re.compile(matcher["stem"])
        return lambda name: pattern.match(name) is not None
    return None


def _covering_prefixes(groups: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """For each group of state-dict keys, the fewest dotted prefixes that cover exactly it.

    For every key the shortest ancestor (``layer1`` before ``layer1.0`` before the key
    itself) that owns no key of another group is taken. A parameter that sits directly on
    a module shared with other layers (a ViT's ``cls_token`` on the model itself) is named
    by its own key.
    """
    owners: dict[str, set[int]] = {}
    for gid, keys in enumerate(groups):
        for key in keys:
            parts = key.split(".")
            for depth in range(1, len(parts) + 1):
                owners.setdefault(".".join(parts[:depth]), set()).add(gid)
    out: list[tuple[str, ...]] = []
    for gid, keys in enumerate(groups):
        prefixes: dict[str, None] = {}  # an ordered set
        for key in keys:
            parts = key.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                if owners[prefix] == {gid}:
                    prefixes[prefix] = None
                    break
        out.append(tuple(prefixes))
    return out


def timm_layers(model: nn.Module, granularity: Granularity = "stage") -> list[Layer]:
    """The transferable layers of a timm model, from timm's ``group_matcher``.

    Raises:
        ConfigError: the model has no ``group_matcher``, or its classifier is not in a
            group of its own at the top.
    """
    from timm.models import group_parameters

    name = type(model).__name__
    if not hasattr(model, "group_matcher"):
        raise ConfigError(
            f"timm model {name} has no group_matcher(), so its stages are unknown; "
            "write an Architecture plugin that names its layers (see docs/writing-plugins.md)"
        )
    timm_model: Any = model  # timm's models define group_matcher(), which nn.Module does not know
    matcher = timm_model.group_matcher(coarse=granularity == "stage")
    state_keys = list(model.state_dict().keys())
    # timm groups what `named_parameters()` yields by name alone; handing it every
    # state-dict key puts buffers (BatchNorm statistics) in the group of their module.
    # a duck-typed stand-in for the model: timm's group_parameters calls only named_parameters()
    groups = group_parameters(_StateKeys(state_keys), matcher)  # type: ignore[arg-type]
    ordered = [groups[lid] for lid in sorted(groups)]
    if len(ordered) < 2:
        raise ConfigError(f"timm model {name}: group_matcher() found a single group; nothing to transfer")

    classifier = _classifier_keys(model, state_keys)
    if not classifier or not set(classifier) <= set(ordered[-1]):
        raise ConfigError(
            f"timm model {name}: the classifier is not in the last group of group_matcher(), "
            "so 'layer L = classifier' cannot hold for it"
        )
    is_stem = _matcher_fn(matcher)
    layers: list[Layer] = []
    for i, (keys, prefixes) in enumerate(zip(ordered, _covering_prefixes(ordered))):
        if i == len(ordered) - 1:
            label = "head"
        elif i == 0 and is_stem is not None and all(is_stem(k) for k in keys):
            label = "stem"
        else:
            label = "+".join(prefixes)
        layers.append(Layer(label, prefixes))
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):  # only a pathological model could get here
        raise ConfigError(f"timm model {name}: layer names are not unique: {names}")
    return layers


class _StateKeys:
    """Presents state-dict keys to timm's ``group_parameters``, which only reads names."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = keys

    def named_parameters(self) -> Iterator[tuple[str, None]]:
        return ((k, None) for k in self.keys)


def _classifier_keys(model: nn.Module, state_keys: Sequence[str]) -> list[str]:
    """State-dict keys of the module ``model.get_classifier()`` returns."""
    timm_model: Any = model  # timm's models define get_classifier(), which nn.Module does not know
    clf = timm_model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(clf, nn.Module):
        return []
    for mod_name, module in model.named_modules():
        if module is clf and mod_name:
            return [k for k in state_keys if k.startswith(mod_name + ".")]
    return []


# --------------------------------------------------------------------------- plugin


class TimmArchitecture(Architecture[TimmParams]):
    """Any timm model by name; layers stem, stages (or blocks), head."""

    description = "any timm model (no weights downloaded); layers: stem, stages or blocks, head"
    Params = TimmParams
    example_input_shape = (3, 32, 32)

    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        import timm

        p: TimmParams = self.params
        if len(input_shape) != 3:
            raise ConfigError(
                [("model", f"timm models take images (channels, height, width); the data gives {tuple(input_shape)}")]
            )
        try:
            model = timm.create_model(
                p.model, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **p.kwargs
            )
        except TypeError as exc:  # an unknown kwarg: report it at its key
            raise ConfigError([("kwargs", f"timm.create_model({p.model!r}) refused them: {exc}")]) from None
        _check_image_size(model, p.model, tuple(input_shape[1:]))
        return model

    def layers(self, model: nn.Module) -> Sequence[Layer]:
        return timm_layers(model, self.params.granularity)

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        # A ResNet-10-T about 80k parameters strong: quick on a CPU at 32x32.
        return {"model": "resnet10t", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}


def _check_image_size(model: nn.Module, name: str, size: tuple[int, ...]) -> None:
    """A patch-embedding model built for another image size fails late and obscurely; say
    which key fixes it instead."""
    embed = getattr(model, "patch_embed", None)
    expected = getattr(embed, "img_size", None)
    if expected is None or getattr(embed, "dynamic_img_size", False):
        return
    if not getattr(embed, "strict_img_size", True):
        return
    if tuple(expected) != tuple(size):
        raise ConfigError(
            [("kwargs.img_size", f"timm model {name!r} is built for {tuple(expected)} images but the "
              f"data gives {size}; set architecture.kwargs.img_size: {size[0] if size[0] == size[-1] else list(size)}")]
        )


@hookimpl
def register_architectures(register) -> None:
    """Register the ``timm`` architecture."""
    register("timm", TimmArchitecture)
