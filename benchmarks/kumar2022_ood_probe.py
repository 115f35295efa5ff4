"""Run from the repository root after `transferbench run configs/followups/kumar2022.yaml`.

Diagnostic (not a measurement that feeds a verdict): the kumar2022 base networks of half A,
evaluated on half A's held-out images and on its OOD split at four settings, to tell a broken
OOD evaluation from a shift the networks do not generalise to."""
import torch

from transferbench.config import load_config
from transferbench.context import TrainContext
from transferbench.jobdata import input_transform
from transferbench.network import build_target
from transferbench.plan import build_plan
from transferbench.resolve import resolve
from transferbench.store import RunStore
from transferbench.taskdata import open_task
from transferbench.trainer import evaluate, ood_top1

torch.set_num_threads(1)
store = RunStore("runs/followups/kumar2022")
for rot, hue in ((0, 0), (30, 0), (0, 0.25), (30, 0.25)):
    config = load_config("configs/followups/kumar2022.yaml",
                         overrides=[f"data.ood={{rotation: {rot}, hue_shift: {hue}}}"])
    comps = resolve(config)
    plan = build_plan(config, comps)
    ctx = TrainContext(config, comps, torch.device("cpu"))
    out = []
    for job in [j for j in plan.jobs.values() if j.kind == "base"]:
        target = build_target(comps.architecture, job, ctx.input_shape, None)
        target.model.load_state_dict(store.load_checkpoint(job.id))
        model = target.model.eval()
        ev = open_task(comps.data, "eval", job.classes, config.loader, ctx.memory)
        top1, _ = evaluate(model, ev, input_transform(ctx), ctx.device, 250)
        out.append((round(top1, 3), round(ood_top1(job, ctx, model), 3)))
    print(f"rotation {rot}, hue_shift {hue}: (eval, ood) per base network of A: {out}", flush=True)
