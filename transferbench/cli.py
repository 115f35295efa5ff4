"""The ``transferbench`` command line.

Every command that takes a config accepts repeatable ``--set key.path=value`` overrides.
Input errors (bad config, unknown plugin, missing data, busy run directory) print a short
message and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, DataError, TransferbenchError

EXIT_OK, EXIT_FAILED_JOBS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _console() -> Console:
    return Console(highlight=False)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


# --------------------------------------------------------------------------- helpers


def _load(args: argparse.Namespace):
    """Config -> (config, components, plan): everything checked, nothing written."""
    from .api import prepare

    prepared = prepare(args.config, args.set or [])
    return prepared.config, prepared.components, prepared.plan


# --------------------------------------------------------------------------- commands


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import KINDS, get_registry

    registry = get_registry()
    console = _console()
    by_plugin: dict[str, list[str]] = {}
    for entry in registry:
        by_plugin.setdefault(entry.plugin, []).append(entry)
    table = Table(title="transferbench plugins", title_justify="left")
    table.add_column("plugin", style="bold", overflow="fold")
    table.add_column("from", overflow="fold")
    table.add_column("registers", overflow="fold")
    for plugin, origin in registry.plugins.items():
        entries = by_plugin.get(plugin, [])
        kinds = {}
        for e in entries:
            kinds.setdefault(e.kind.replace("_", " "), []).append(e.name)
        what = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in kinds.items()) or "(nothing)"
        table.add_row(plugin, origin, what)
    console.print(table)
    if args.verbose:
        detail = Table(title="registered names", title_justify="left")
        for col in ("kind", "name", "description"):
            detail.add_column(col, overflow="fold")
        for kind in KINDS:
            for name in registry.names(kind):
                e = registry.entries[kind][name]
                detail.add_row(kind.replace("_", " "), name, e.description)
        console.print(detail)
    for failure in registry.failures:
        console.print(
            f"[red]failed to load[/red] plugin {escape(failure.plugin)} ({escape(failure.origin)}): "
            f"{escape(failure.error)}"
        )
    return EXIT_OK


def cmd_layers(args: argparse.Namespace) -> int:
    """List the transferable layers an architecture exposes, with their parameter counts."""
    from .config import PluginRef, apply_override
    from .network import build_meta
    from .plugins import get_registry
    from .resolve import instantiate

    params: dict = {}
    for assignment in args.set or []:
        apply_override(params, assignment)
    problems: list[tuple[str, str]] = []
    ref = PluginRef.model_validate({**params, "name": args.architecture})
    arch = instantiate(get_registry(), "architecture", ref, "architecture", problems)
    if arch is None:
        raise ConfigError(problems)
    shape = tuple(arch.example_input_shape)
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError:
            problem = f"expected integers like 3,32,32, got {args.input_shape!r}"
            raise ConfigError([("--input-shape", problem)]) from None
    model = build_meta(arch, args.classes, shape)
    layers = list(arch.layers(model))
    params_by_name = dict(model.named_parameters())
    owners: dict[str, int] = {name: 0 for name in params_by_name}
    table = Table()
    columns = (("n", "right"), ("layer", "left"), ("modules", "left"), ("parameters", "right"), ("share", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    total = sum(p.numel() for p in params_by_name.values())
    for i, layer in enumerate(layers, 1):
        mine = [n for n in params_by_name if any(n == m or n.startswith(m + ".") for m in layer.modules)]
        for n in mine:
            owners[n] += 1
        count = sum(params_by_name[n].numel() for n in mine)
        table.add_row(str(i), escape(layer.name), escape(", ".join(layer.modules)), f"{count:,}",
                      f"{100 * count / total:.1f}%" if total else "-")
    console = _console()
    console.print(f"layers of {escape(args.architecture)} for input {shape} and {args.classes} classes")
    console.print(table)
    console.print(f"{len(layers)} layers, {total:,} parameters; transfer experiments use n in 1..{len(layers) - 1}")
    for what, names in (("belong to no layer (never copied, always trained)", [n for n, c in owners.items() if c == 0]),
                        ("belong to several layers", [n for n, c in owners.items() if c > 1])):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            console.print(f"[yellow]warning:[/yellow] {len(names)} parameter tensors {what}: {escape(shown)}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    config, components, plan = _load(args)
    estimates = sum(1 for j in plan.jobs.values() if j.kind == "estimate")
    _console().print(
        f"{args.config}: OK ({len(config.experiments)} experiment(s), {len(plan.jobs) - estimates} networks, "
        + (f"{estimates} estimator jobs, " if estimates else "") +
        f"{len(plan.layer_names)} layers: {', '.join(plan.layer_names)})"
    )
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    config, components, plan = _load(args)
    console = _console()
    table = Table(title=f"plan of {config.name}", title_justify="left")
    for col in ("job", "treatment", "n", "trains on", "copies from", "classes", "used by"):
        table.add_column(col)
    if args.estimate_only:
        plan = plan.without_transfers()
    for job in plan.jobs.values():
        cells = plan.cells_of(job.id)
        treatments = sorted({c.treatment for c in cells})
        if job.kind == "estimate":
            cells = [e for e in plan.estimates if e.job_id == job.id]  # type: ignore[misc]
            treatments = sorted({f"{e.estimator} on {e.source}n{e.target}" for e in cells})
        used = sorted({f"{c.experiment}/{c.split_seed}" for c in cells})
        table.add_row(
            job.id[:10],
            ", ".join(treatments),
            str(job.n),
            job.target,
            job.depends_on[:10] if job.depends_on else "-",
            str(job.num_classes),
            ", ".join(used),
        )
    if not args.quiet:
        console.print(table)
    bases = sum(1 for j in plan.jobs.values() if j.kind == "base")
    estimates = sum(1 for j in plan.jobs.values() if j.kind == "estimate")
    networks = len(plan.jobs) - estimates
    console.print(
        f"{networks} networks to train ({bases} base, {networks - bases} transferred) "
        f"for {len(plan.cells)} table cells; layers: {', '.join(plan.layer_names)}"
        + (f"; {estimates} estimator jobs" if estimates else "")
    )
    from .compute import describe, estimate_compute
    from .estimator_cost import describe_estimators, estimate_estimators

    console.print(describe(estimate_compute(config, components, plan, args.tflops)))
    if estimates:
        console.print(describe_estimators(estimate_estimators(config, components, plan, args.tflops)))
    if config.train.augment.active and config.performance.cache_frozen:
        console.print("frozen-feature cache: off, because train.augment makes training inputs random "
                      "(frozen layers see different inputs every epoch)")
    return EXIT_OK


def cmd_splits(args: argparse.Namespace) -> int:
    """Every class of every split of a config, as TSV (metadata only, no images)."""
    config, components, plan = _load(args)
    classes = list(components.data.classes())
    out = sys.stdout
    out.write("split\tindex\tid\tname\thalf\n")
    for exp in config.experiments:
        for seed in exp.split.seeds:
            halves = plan.halves[(exp.name, seed)]
            side = {i: "A" for i in halves.A} | {i: "B" for i in halves.B}
            label = f"{exp.name}/seed{seed}"
            for c in classes:
                if c.index in side:
                    out.write(f"{label}\t{c.index}\t{c.id}\t{c.name}\t{side[c.index]}\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .engine import run_plan

    config, components, plan = _load(args)
    if args.estimate_only:
        plan = plan.without_transfers()
    try:
        components.data.check()
    except DataError as exc:
        raise DataError(
            f"{exc}\nNothing was trained. Point the config at your copy without editing it, e.g. "
            f"--set data.<key>=<path> (data source {config.data.name!r}); docs/paper-experiment.md "
            "shows a local ILSVRC-2012 tree and a Hugging Face copy (data.name=hf, data.path=<hub id or folder>)."
        ) from None
    run_dir = Path(args.out) if args.out else config.run_dir()
    console = _console()
    summary = run_plan(config, components, plan, run_dir, console)
    _print_grid(run_dir, console)
    if summary.failed:
        _err_console().print(
            f"{summary.failed} of {summary.total} networks failed (see records/ in {run_dir}); "
            "rerun the same command to retry them"
        )
        return EXIT_FAILED_JOBS
    console.print(f"done: {summary.total} {'jobs' if plan.estimates else 'networks'}, results in {run_dir}")
    if plan.estimate_only:
        console.print("--estimate-only: only the base networks were trained; the estimator curves are a "
                      "proxy for retraining (`transferbench report RUN_DIR` says how well each tracked it)")
    return EXIT_OK


def _print_grid(run_dir: Path, console: Console) -> None:
    from .report import print_grid

    print_grid(run_dir, console)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import run_report

    if args.run_dir is None and not args.paper:
        raise ConfigError([("report", "give a RUN_DIR, or --paper for the paper's own results")])
    return run_report(
        Path(args.run_dir) if args.run_dir else None,
        paper=args.paper,
        compare=args.compare,
        plots=not args.no_plots,
        metric=args.metric,
        pool=args.pool,
        out=Path(args.plots_dir) if args.plots_dir else None,
        console=_console(),
    )


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferbench",
        description="How transferable are the features of each layer of a network?",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"transferbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def with_config(name: str, help: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("config", help="experiment config (YAML)")
        p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                       help="override a config value (repeatable), e.g. --set train.lr=0.02")
        p.set_defaults(fn=fn)
        return p

    p = sub.add_parser("plugins", help="list every plugin and what it registers")
    p.add_argument("-v", "--verbose", action="store_true", help="also describe every registered name")
    p.set_defaults(fn=cmd_plugins)

    p = sub.add_parser("layers", help="list the transferable layers of an architecture with parameter counts")
    p.add_argument("architecture", help="an architecture name (see `transferbench plugins`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="an architecture parameter (repeatable), e.g. --set model=resnet18")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="shape of one example, e.g. 3,32,32 (default: the architecture's example shape)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default: 10)")
    p.set_defaults(fn=cmd_layers)

    with_config("validate", "check a config and report every problem with its key path", cmd_validate)
    p = with_config("plan", "print the jobs a config expands into, without training", cmd_plan)
    p.add_argument("-q", "--quiet", action="store_true", help="only the summary lines")
    p.add_argument("--tflops", type=float, default=20.0,
                   help="effective training throughput assumed for the GPU-hour estimate (default 20)")
    p.add_argument("--estimate-only", action="store_true", help="the plan of `run --estimate-only`")
    with_config("splits", "print every class of every split as TSV (metadata only)", cmd_splits)
    p = with_config("run", "train every network of a config (resumes an interrupted run)", cmd_run)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: the config's output.dir)")
    p.add_argument("--estimate-only", action="store_true",
                   help="train only the base networks and run the config's estimators: a proxy of the "
                        "transfer curve in a fraction of the time (docs/estimators.md)")

    p = sub.add_parser("report", help="tables, metrics and plots of a run (or of the paper)")
    p.add_argument("run_dir", nargs="?", help="a run directory")
    p.add_argument("--paper", action="store_true", help="the paper's own published results")
    p.add_argument("--compare", choices=["paper"], help="put the paper's numbers beside the run's")
    p.add_argument("--metric", choices=["top1", "top1_best_k"], default=None,
                   help="final top-1 (default for runs) or the paper's mean of the best k "
                        "evaluations (default for --paper alone)")
    p.add_argument("--pool", action=argparse.BooleanOptionalAction, default=None,
                   help="pool AnA into BnB and BnA into AnB as the paper did "
                        "(default: when both halves have the same number of classes)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--plots-dir", help="where plots go (default: the run directory)")
    p.set_defaults(fn=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except TransferbenchError as exc:
        _err_console().print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    except BrokenPipeError:  # `transferbench splits ... | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        _err_console().print("interrupted: rerun the same command to resume where it stopped")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
