"""Transfer protocols: the paper's frozen (AnB, BnB), fine-tuned (AnB+, BnB+) and random
weights; LP-FT, a linear probe then fine-tuning (Kumar et al., ICLR 2022); and protocols where
n names one layer: surgical fine-tuning of layer n (Lee et al., ICLR 2023), with the source's
classifier (``surgical``) or a new one (``surgical_head``), and re-initialising layer n
(Zhang, Bengio and Singer, "Are all layers created equal?", JMLR 2022), trained or evaluated
as they are; and Mean Var Init (Raghu, Zhang, Kleinberg and Bengio, "Transfusion", NeurIPS
2019): layers 1..n drawn from the source's per-tensor weight statistics, then all trained."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from transferbench import LayerAction, NoParams, TransferProtocol, hookimpl


class Frozen(TransferProtocol[NoParams]):
    """Copy layers 1..n from the source and freeze them; train the re-initialised rest."""

    description = "copy layers 1..n and freeze them (AnB, BnB)"

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return [LayerAction(copy=i <= n, train=i > n) for i in range(1, num_layers + 1)]


class FineTuneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    copied_lr_mult: float = Field(
        1.0, ge=0.0, description="learning-rate multiplier of copied layers (the paper used 1)"
    )


class FineTune(TransferProtocol[FineTuneParams]):
    """Copy layers 1..n from the source; every layer keeps learning."""

    description = "copy layers 1..n and fine-tune everything (AnB+, BnB+)"
    Params = FineTuneParams

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        mult = self.params.copied_lr_mult
        return [
            LayerAction(copy=i <= n, train=True, lr_mult=mult if i <= n else 1.0)
            for i in range(1, num_layers + 1)
        ]


class RandomFrozen(TransferProtocol[NoParams]):
    """Layers 1..n keep their random initialisation and are frozen; the rest is trained."""

    description = "freeze layers 1..n at their random init (the random-weights experiment)"
    needs_source = False

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return [LayerAction(copy=False, train=i > n) for i in range(1, num_layers + 1)]


class Surgical(TransferProtocol[NoParams]):
    """Surgical fine-tuning as Lee et al. (ICLR 2023) define it: the source network whole, its
    classifier included, with only layer n learning. The target must be the source's own task
    (its classes, in its label order): a shifted version of the data it was trained on."""

    description = "the source network whole, classifier kept; fine-tune only layer n (Lee et al.'s surgical)"
    n_meaning = "layer"
    keeps_classifier = True
    revision = 1  # 0.3's surgical trained a new classifier beside layer n: that is surgical_head now

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return [LayerAction(copy=True, train=i == n) for i in range(1, num_layers + 1)]


class SurgicalHead(TransferProtocol[NoParams]):
    """Copy every layer but the classifier; fine-tune only layer n and train a new classifier
    (surgical fine-tuning for a target whose classes are not the source's)."""

    description = "copy layers 1..L-1, fine-tune only layer n, train a new classifier (surgical, new classes)"
    n_meaning = "layer"

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        copied = [LayerAction(copy=True, train=i == n) for i in range(1, num_layers)]
        return [*copied, LayerAction(copy=False, train=True)]


class LpFtParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    probe_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="fraction of the training steps spent in the linear probe (the copied "
        "layers held frozen while the layers above them train); the rest fine-tunes every layer, on the "
        "config's one learning-rate schedule")


class LpFt(TransferProtocol[LpFtParams]):
    """LP-FT (Kumar et al., ICLR 2022): copy layers 1..n, first train only the layers above
    them (at n = L-1, a linear probe on the frozen copied network), then fine-tune everything."""

    description = "copy layers 1..n; train the rest with them frozen (linear probe), then fine-tune all (LP-FT)"
    Params = LpFtParams

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        probe = self.params.probe_fraction
        return [LayerAction(copy=i <= n, train=True, start=probe if i <= n else 0.0)
                for i in range(1, num_layers + 1)]


Reset = Literal["initial", "random"]
_RESET = ("'initial': the source's own initial weights, as before it trained (Zhang et al.'s "
          "re-initialisation); 'random': a fresh draw from the architecture's initialisation "
          "(their re-randomisation)")


class ReinitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reset: Reset = Field("initial", description="what layer n is reset to: " + _RESET)
    train_copied: bool = Field(
        False, description="also fine-tune the copied layers (default: they stay frozen, and only "
        "layer n and the new classifier learn)")


class Reinit(TransferProtocol[ReinitParams]):
    """Copy every layer but the classifier, reset layer n, and train layer n and a new classifier."""

    description = "copy layers 1..L-1 but reset layer n; retrain layer n and a new classifier"
    Params = ReinitParams
    n_meaning = "layer"

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        initial = self.params.reset == "initial"
        rest = LayerAction(copy=True, train=self.params.train_copied)
        reset = LayerAction(copy=initial, train=True, from_init=initial)
        return [reset if i == n else rest for i in range(1, num_layers)] + [LayerAction(copy=False, train=True)]


class ReinitEvalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reset: Reset = Field("initial", description="what layer n is reset to: " + _RESET)


class ReinitEval(TransferProtocol[ReinitEvalParams]):
    """The source network itself with layer n reset, evaluated without any training."""

    description = "evaluate the source with layer n reset, no training (re-initialisation robustness)"
    Params = ReinitEvalParams
    n_meaning = "layer"
    evaluate_only = True

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        initial = self.params.reset == "initial"
        reset = LayerAction(copy=initial, train=False, from_init=initial)
        kept = LayerAction(copy=True, train=False)
        return [reset if i == n else kept for i in range(1, num_layers)] + [kept]


class RerandomizeEval(TransferProtocol[NoParams]):
    """The source network itself with layer n re-drawn from the architecture's initialisation
    (a fresh draw, not its own initial weights), evaluated without any training: Zhang et al.'s
    re-randomisation, beside ``reinit_eval`` (their re-initialisation) under its own name, so
    a report tells the two apart by protocol."""

    description = "evaluate the source with layer n freshly re-drawn, no training (re-randomisation robustness)"
    n_meaning = "layer"
    evaluate_only = True

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return ReinitEval(ReinitEvalParams(reset="random")).actions(n, num_layers)


class MeanVar(TransferProtocol[NoParams]):
    """Raghu et al. (2019)'s Mean Var Init: each parameter tensor of layers 1..n drawn i.i.d.
    from a normal with the mean and std of the same tensor in the source's trained weights;
    the layers above n keep the architecture's own initialisation; every layer is trained.
    It keeps the scale of the source's weights and none of their features."""

    description = "draw layers 1..n from the source's per-tensor weight mean and std, train all (Mean Var Init)"

    def actions(self, n: int, num_layers: int) -> list[LayerAction]:
        return [LayerAction(copy=i <= n, train=True, meanvar=i <= n) for i in range(1, num_layers + 1)]


@hookimpl
def register_protocols(register) -> None:
    register("frozen", Frozen)
    register("finetune", FineTune)
    register("random_frozen", RandomFrozen)
    register("surgical", Surgical)
    register("surgical_head", SurgicalHead)
    register("lp_ft", LpFt)
    register("reinit", Reinit)
    register("reinit_eval", ReinitEval)
    register("rerandomize_eval", RerandomizeEval)
    register("meanvar", MeanVar)
