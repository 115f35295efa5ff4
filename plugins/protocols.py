"""Transfer protocols of the paper: frozen (AnB, BnB), fine-tuned (AnB+, BnB+), random weights."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from transferbench import LayerAction, TransferProtocol, hookimpl


class Frozen(TransferProtocol):
    """Copy layers 1..n from the source and freeze them; train the re-initialised rest."""

    description = "copy layers 1..n and freeze them (AnB, BnB)"

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return [LayerAction(copy=i <= n, train=i > n) for i in range(1, num_layers + 1)]


class FineTuneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    copied_lr_mult: float = Field(
        1.0, ge=0.0, description="learning-rate multiplier of copied layers (the paper used 1)"
    )


class FineTune(TransferProtocol):
    """Copy layers 1..n from the source; every layer keeps learning."""

    description = "copy layers 1..n and fine-tune everything (AnB+, BnB+)"
    Params = FineTuneParams

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        mult = self.params.copied_lr_mult
        return [
            LayerAction(copy=i <= n, train=True, lr_mult=mult if i <= n else 1.0)
            for i in range(1, num_layers + 1)
        ]


class RandomFrozen(TransferProtocol):
    """Layers 1..n keep their random initialisation and are frozen; the rest is trained."""

    description = "freeze layers 1..n at their random init (the random-weights experiment)"
    needs_source = False

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return [LayerAction(copy=False, train=i > n) for i in range(1, num_layers + 1)]


@hookimpl
def register_protocols(register) -> None:
    register("frozen", Frozen)
    register("finetune", FineTune)
    register("random_frozen", RandomFrozen)
