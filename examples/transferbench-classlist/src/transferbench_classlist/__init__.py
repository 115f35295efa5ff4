"""transferbench-classlist: a task split from explicit class lists (a transferbench plugin)."""

from .plugin import ClassListParams, ClassListSplit

__all__ = ["ClassListParams", "ClassListSplit"]
__version__ = "0.1.0"
