"""What channels-last and the cross-channel LRN buy a CPU training step, in one run.

    python benchmarks/cpu_layout.py          # about a minute on 2 cores

Times training steps (forward, backward, SGD) of the quickstart's network (caffenet_scaled
with 20 outputs, batch 64, 32x32 inputs, as a half of the quickstart trains it) three ways,
interleaved, best of N:

1. contiguous (NCHW) tensors with torch's ``nn.LocalResponseNorm``;
2. channels-last tensors with torch's ``nn.LocalResponseNorm``;
3. channels-last with ``CrossChannelLRN`` (what the quickstart runs).

Prints one line per way and a last line scripts can read:

    summary: channels_last_speedup=R lrn_speedup=R total_speedup=R
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn


def _model(torch_lrn: bool) -> nn.Module:
    from transferbench_plugins.caffenet import CaffeNetScaled, CaffeNetScaledParams, CrossChannelLRN

    torch.manual_seed(0)
    model = CaffeNetScaled(CaffeNetScaledParams()).build(20, (3, 32, 32))
    if torch_lrn:  # the same LRN, computed by torch's 3-D average pooling
        for module in list(model.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, CrossChannelLRN):
                    setattr(module, child_name, nn.LocalResponseNorm(child.size, child.alpha, child.beta, child.k))
    return model


def step_seconds(channels_last: bool, torch_lrn: bool, steps: int) -> float:
    """Seconds for ``steps`` training steps of one way."""
    model = _model(torch_lrn)
    x = torch.randn(64, 3, 32, 32)
    y = torch.randint(0, 20, (64,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def run(n: int) -> None:
        for _ in range(n):
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(3)  # warm-up: kernels chosen, memory allocated
    t0 = time.perf_counter()
    run(steps)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per way and repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (ways interleaved; best kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ways = {"contiguous + torch LRN": (False, True), "channels-last + torch LRN": (True, True),
            "channels-last + CrossChannelLRN": (True, False)}
    best = {name: float("inf") for name in ways}
    for _ in range(args.reps):
        for name, (cl, torch_lrn) in ways.items():
            best[name] = min(best[name], step_seconds(cl, torch_lrn, args.steps))
    for name, seconds in best.items():
        print(f"{name}: {1000 * seconds / args.steps:.1f} ms per step (batch 64, {args.threads} threads)")
    plain, cl, ours = best.values()
    print(f"summary: channels_last_speedup={plain / cl:.2f} lrn_speedup={cl / ours:.2f} "
          f"total_speedup={plain / ours:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
