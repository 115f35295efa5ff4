"""The ``scratch`` protocol: a network of the target half trained from its random
initialisation, as a treatment. Its base network is one such network; a ``scratch``
treatment is another, with its own seed and data order (and ``replica: 1, 2, ...`` more),
so that two networks trained from scratch on one task can be compared, as Neyshabur, Sedghi
& Zhang (2020) compare two of them with an evaluator (``loss_barrier``). It copies nothing,
so n does not change what it trains; n only names the cell it fills (and enters its seed)."""

from __future__ import annotations

from transferbench import LayerAction, NoParams, TransferProtocol, hookimpl


class Scratch(TransferProtocol[NoParams]):
    """Copy nothing and train every layer from its random initialisation (n only names the cell)."""

    description = "copy nothing, train every layer from scratch (another network like the base network)"
    needs_source = False

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return [LayerAction(copy=False, train=True) for _ in range(num_layers)]


@hookimpl
def register_protocols(register) -> None:
    register("scratch", Scratch)
