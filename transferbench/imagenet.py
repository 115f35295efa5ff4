"""The 1,000 ILSVRC-2012 classes: WordNet ids, names and the paper's man-made / natural groups.

Part of the public API (``from transferbench import imagenet``): data sources use it to label
ImageNet classes and the splits use it to map a source's classes onto the paper's indices.

Class index ``i`` is the ``i``-th WordNet id in sorted order, the usual ILSVRC-2012 / timm
order. Ids and names come from the tables timm ships inside its package, so nothing is
downloaded. timm is imported on first use only, because importing it costs over a second.

Public API:

* :func:`imagenet_classes` -- the 1,000 classes as :class:`~transferbench.ClassInfo`.
* :data:`IMAGENET_WNIDS` -- the 1,000 WordNet ids in index order (a tuple, loaded lazily).
* :func:`wnid_to_index` -- WordNet id -> ImageNet index.
* :func:`is_imagenet` -- whether every class of a source is an ImageNet-1k class.
* :func:`classes_for_wnids` -- label a source's own class list (e.g. folder names) by wnid.
* :data:`MAN_MADE`, :data:`NATURAL`, :data:`NATURAL_RANGES`, :func:`superclass_of`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from .errors import DataError
from .interfaces import ClassInfo

__all__ = [
    "IMAGENET_WNIDS",
    "MAN_MADE",
    "NATURAL",
    "NATURAL_RANGES",
    "NUM_IMAGENET_CLASSES",
    "classes_for_wnids",
    "imagenet_classes",
    "is_imagenet",
    "superclass_of",
    "wnid_to_index",
]

NUM_IMAGENET_CLASSES = 1000

MAN_MADE: Final = "man-made"
NATURAL: Final = "natural"

#: Inclusive ranges of ImageNet indices that the paper's dissimilar split calls natural
#: (PAPER.md): animals, vegetables/fruit/mushroom/hay, geological formations except 971
#: (bubble), ballplayer/groom/scuba diver, plants and fungi. Every other index is man-made
#: (551 classes against 449 natural).
NATURAL_RANGES: tuple[tuple[int, int], ...] = (
    (0, 397),
    (936, 958),
    (970, 970),
    (972, 980),
    (981, 983),
    (984, 998),
)

if TYPE_CHECKING:
    IMAGENET_WNIDS: tuple[str, ...]


def superclass_of(index: int) -> str:
    """The paper's group of ImageNet class ``index``: :data:`NATURAL` or :data:`MAN_MADE`.

    Raises:
        IndexError: ``index`` is not in 0..999.
    """
    if not 0 <= index < NUM_IMAGENET_CLASSES:
        raise IndexError(f"ImageNet class index {index} is outside 0..{NUM_IMAGENET_CLASSES - 1}")
    natural = any(lo <= index <= hi for lo, hi in NATURAL_RANGES)
    return NATURAL if natural else MAN_MADE


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ClassInfo, ...]:
    """The 1,000 ILSVRC-2012 classes in index order.

    Each :class:`~transferbench.ClassInfo` has ``index`` (position in sorted-wnid order),
    ``id`` (the WordNet id, e.g. ``n01440764``), ``name`` (timm's lemma string, e.g.
    ``"tench, Tinca tinca"``; not unique: two classes are called ``"crane"``) and
    ``superclass`` (:data:`MAN_MADE` or :data:`NATURAL`, from :data:`NATURAL_RANGES`).
    """
    # Imported here: timm pulls in torchvision and friends, which most callers never need.
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    wnids = list(info.label_names())
    # The paper's indices are positions in sorted-wnid order; check timm still agrees
    # rather than silently shifting every class.
    if len(wnids) != NUM_IMAGENET_CLASSES or wnids != sorted(wnids):
        raise RuntimeError("timm's ImageNet-1k synset list is not the 1,000 sorted wnids")
    return tuple(
        ClassInfo(
            index=i,
            id=wnid,
            name=info.index_to_description(i),
            superclass=superclass_of(i),
        )
        for i, wnid in enumerate(wnids)
    )


@lru_cache(maxsize=1)
def wnid_to_index() -> Mapping[str, int]:
    """A read-only mapping from ImageNet-1k WordNet id to ImageNet class index."""
    return MappingProxyType({c.id: c.index for c in imagenet_classes()})


def is_imagenet(classes: Iterable[ClassInfo]) -> bool:
    """Whether ``classes`` is non-empty and every class id is an ImageNet-1k WordNet id.

    The source may hold any subset of ImageNet, in any order.
    """
    known = wnid_to_index()
    ids = [c.id for c in classes]
    return bool(ids) and all(i in known for i in ids)


def classes_for_wnids(wnids: Sequence[str]) -> list[ClassInfo]:
    """Label a source's own class list, given as WordNet ids in the source's label order.

    ``index`` is the position in ``wnids`` (the source's label), not the ImageNet index;
    ``name`` and ``superclass`` come from :func:`imagenet_classes`.

    Raises:
        DataError: some ids are not ImageNet-1k WordNet ids (check :func:`is_imagenet`
            first to fall back to plain names).
    """
    known = wnid_to_index()
    unknown = [w for w in wnids if w not in known]
    if unknown:
        shown = ", ".join(repr(w) for w in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise DataError(f"not ImageNet-1k WordNet ids: {shown}{more}")
    table = imagenet_classes()
    return [
        ClassInfo(index=i, id=w, name=table[known[w]].name, superclass=table[known[w]].superclass)
        for i, w in enumerate(wnids)
    ]


def __getattr__(name: str) -> object:
    # IMAGENET_WNIDS is computed on first access so importing this module stays cheap.
    if name == "IMAGENET_WNIDS":
        return tuple(c.id for c in imagenet_classes())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
