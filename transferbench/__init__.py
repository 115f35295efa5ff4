"""transferbench: how transferable are the features of each layer of a network?

The public API for plugin authors is :mod:`transferbench.interfaces` plus the
``hookimpl`` marker re-exported here.
"""

from .hookspecs import hookimpl
from .interfaces import (
    Architecture,
    ClassInfo,
    DataSource,
    Halves,
    Layer,
    LayerAction,
    NoParams,
    Plugin,
    TaskSplit,
    TransferProtocol,
)

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "ClassInfo",
    "DataSource",
    "Halves",
    "Layer",
    "LayerAction",
    "NoParams",
    "Plugin",
    "TaskSplit",
    "TransferProtocol",
    "__version__",
    "hookimpl",
]
