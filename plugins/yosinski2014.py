"""The findings of Yosinski et al. (2014) as a findings plugin: ``report --compare yosinski2014``
(``--compare paper`` names it too). The six findings and the paper's published networks they
are read against live in the core (:class:`transferbench.Yosinski2014`), because the report's
control margin for the validity checks comes from the same networks."""

from __future__ import annotations

from transferbench import Yosinski2014, hookimpl


@hookimpl
def register_findings(register) -> None:
    register("yosinski2014", Yosinski2014)
