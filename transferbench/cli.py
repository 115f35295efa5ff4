"""The ``transferbench`` command line.

Every command that takes a config accepts repeatable ``--set key.path=value`` overrides.
Input errors (bad config, unknown plugin, missing data, busy run directory) print a short
message and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, TransferbenchError

if TYPE_CHECKING:  # the commands import what they need lazily
    from .cohort_cost import Rates
    from .components import Components
    from .config import Config
    from .plan import Plan
    from .power import PowerRow
    from .runreport import RunReport

EXIT_OK, EXIT_FAILED_JOBS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


#: The width of output that goes to a pipe or a file: wide enough that no table wraps an
#: identifier (``transferbench plugins | grep``); an explicit ``COLUMNS`` still wins.
PIPE_WIDTH = 10_000


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return console


def _err_console() -> Console:
    return _console(stderr=True)


class UsageError(Exception):
    """The command line itself is wrong (argparse's errors): exit code 2."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors reach :func:`main` (to print a JSON document when --json was
    asked for) instead of exiting on the spot."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


# --------------------------------------------------------------------------- helpers


def _load(args: argparse.Namespace):
    """Config -> (config, components, plan): everything checked, nothing written."""
    from .api import prepare

    prepared = prepare(args.config, args.set or [])
    return prepared.config, prepared.components, prepared.plan


# --------------------------------------------------------------------------- commands


def cmd_plugins(args: argparse.Namespace) -> int:
    """The plugins table; with -v or NAME every setting of each name and an example block."""
    from .catalog import find_entries, plugins_json, print_entry, print_plugins
    from .plugins import get_registry

    registry = get_registry()
    if args.json:
        return _print_json(plugins_json(registry, args.name))
    console = _console()
    if args.name:
        for entry in find_entries(registry, args.name):
            print_entry(console, entry)
        return EXIT_OK
    print_plugins(console, registry)
    if args.verbose:
        console.print()
        for entry in registry:
            print_entry(console, entry)
    for failure in registry.failures:
        console.print(
            f"[red]failed to load[/red] plugin {escape(failure.plugin)} ({escape(failure.origin)}): "
            f"{escape(failure.error)}"
        )
    return EXIT_OK


def _print_json(document: dict) -> int:
    from .jsonout import dump

    dump(document, sys.stdout)
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
        shape = _shape(args.input_shape)
    from .jsonout import layer_table

    try:
        model = build_meta(arch, args.classes, shape)
    except ConfigError as exc:  # the architecture's own check of the shape
        where = "--input-shape" if args.input_shape else "architecture"
        raise ConfigError([(p or where, m) for p, m in exc.problems]) from None
    except TransferbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - the architecture's own words, at the argument that caused them
        raise ConfigError([("--input-shape", f"{args.architecture} cannot be built for inputs of shape {shape} and "
                            f"{args.classes} classes ({type(exc).__name__}: {exc})")]) from None
    info = layer_table(args.architecture, model, list(arch.layers(model)), shape, args.classes)
    if args.json:
        return _print_json(info.to_json())
    table = Table()
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("n", "right"), ("layer", "left"), ("modules", "left"), ("parameters", "right"), ("share", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    for row in info.layers:
        share = "-" if row["share"] is None else f"{100 * row['share']:.1f}%"
        table.add_row(str(row["n"]), escape(row["name"]), escape(", ".join(row["modules"])),
                      f"{row['parameters']:,}", share)
    console = _console()
    console.print(f"layers of {escape(args.architecture)} for input {shape} and {args.classes} classes")
    console.print(table)
    n_layers = len(info.layers)
    console.print(f"{n_layers} layers, {info.parameters:,} parameters; transfer experiments use n in 1..{n_layers - 1}")
    for what, names in (("belong to no layer (never copied, always trained)", info.unowned),
                        ("belong to several layers", info.shared)):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            console.print(f"[yellow]warning:[/yellow] {len(names)} parameter tensors {what}: {escape(shown)}")
    return EXIT_OK


def _shape(text: str) -> tuple[int, ...]:
    """``--input-shape``: one or more positive integers, comma-separated.

    Raises:
        ConfigError: anything else.
    """
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise ConfigError([("--input-shape", f"expected integers like 3,32,32, got {text!r}")]) from None
    if any(d < 1 for d in shape):
        raise ConfigError([("--input-shape", f"every dimension must be at least 1, got {text!r}")])
    return shape


def cmd_validate(args: argparse.Namespace) -> int:
    from .preflight import environment_problems

    if args.json:
        from .api import prepare
        from .jsonout import validate_json

        try:
            prepared = prepare(args.config, args.set or [])
            problems = environment_problems(prepared.config, prepared.components,
                                            Path(args.out) if args.out else None)
            if problems:
                raise ConfigError(problems, source=args.config)
        except TransferbenchError as exc:
            _print_json(validate_json(args.config, exc=exc))
            return EXIT_USAGE
        return _print_json(validate_json(args.config, prepared))
    config, components, plan = _load(args)
    problems = environment_problems(config, components, Path(args.out) if args.out else None)
    if problems:
        raise ConfigError(problems, source=args.config)
    estimates = sum(1 for j in plan.jobs.values() if j.kind == "estimate")
    _print_notes(_console(), plan.notes)
    _console().print(
        f"{args.config}: OK ({len(config.experiments)} experiment(s), {len(plan.jobs) - estimates} networks, "
        + (f"{estimates} estimator jobs, " if estimates else "") +
        f"{len(plan.layer_names)} layers: {', '.join(plan.layer_names)})"
    )
    return EXIT_OK


def _plan_table(name: str, plan: Plan) -> Table:
    """One row per job: what it trains, on what, from what, for which cells."""
    table = Table(title=f"plan of {name}", title_justify="left")
    for col in ("job", "treatment", "n", "trains on", "copies from", "classes", "used by"):
        table.add_column(col)
    for job in plan.jobs.values():
        cells = plan.cells_of(job.id)
        treatments = sorted({c.treatment for c in cells})
        used = sorted({f"{c.experiment}/{c.split_seed}" for c in cells})
        if job.kind == "estimate":
            points = [e for e in plan.estimates if e.job_id == job.id]
            treatments = sorted({f"{e.estimator} on {e.source}n{e.target}" for e in points})
            used = sorted({f"{e.experiment}/{e.split_seed}" for e in points})
        table.add_row(job.id[:10], ", ".join(treatments), str(job.n), job.target,
                      job.depends_on[:10] if job.depends_on else "-", str(job.num_classes), ", ".join(used))
    return table


def _plan_rates(args: argparse.Namespace, config: Config, components: Components) -> tuple[Rates, list[str]]:
    """The rates ``plan`` costs at: a rates file (``--measured``), else the flags and the
    decode rate measured here; and the lines that say where they come from."""
    from .cohort_cost import Rates, decode_rate_note, rates_note, read_rates, with_read_gbps

    if args.measured:
        rates = read_rates(args.measured, config, components)
        return rates, [rates_note(rates, components, args.read_gbps)]
    decode, note = decode_rate_note(components, args.decode_rate)
    rates = with_read_gbps(Rates(args.tflops, decode, None), components, args.read_gbps)
    return rates, [note, rates_note(rates, components, args.read_gbps)]


def cmd_plan(args: argparse.Namespace) -> int:
    config, components, plan = _load(args)
    if args.estimate_only:
        plan = plan.without_transfers()
    if args.json:
        from .api import Prepared
        from .cohort_cost import cohort_cost_json, estimate_cohorts
        from .compute import estimate_compute
        from .jsonout import plan_json

        rates, _ = _plan_rates(args, config, components)
        estimate = estimate_compute(config, components, plan, rates.tflops)
        doc = plan_json(Prepared(config, components, plan), estimate)
        doc["cohorts"] = cohort_cost_json(estimate_cohorts(config, components, plan, rates))
        return _print_json(doc)
    console = _console()
    table = _plan_table(config.name, plan)
    if not args.quiet:
        console.print(table)
    _print_notes(console, plan.notes)
    bases = sum(1 for j in plan.jobs.values() if j.kind == "base")
    estimates = sum(1 for j in plan.jobs.values() if j.kind == "estimate")
    networks = len(plan.jobs) - estimates
    console.print(
        f"{networks} networks to train ({bases} base, {networks - bases} transferred) "
        f"for {len(plan.cells)} table cells; layers: {', '.join(plan.layer_names)}"
        + (f"; {estimates} estimator jobs" if estimates else "")
    )
    from .cohort_cost import describe_cohorts, estimate_cohorts
    from .compute import describe, estimate_compute
    from .estimator_cost import describe_estimators, estimate_estimators

    rates, notes = _plan_rates(args, config, components)
    console.print(describe(estimate_compute(config, components, plan, rates.tflops)))
    console.print(describe_cohorts(estimate_cohorts(config, components, plan, rates), notes))
    if estimates:
        console.print(describe_estimators(estimate_estimators(config, components, plan, rates.tflops)))
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
    run_dir = Path(args.out) if args.out else config.run_dir()
    console = _console()
    _print_notes(console, plan.notes)
    summary = run_plan(config, components, plan, run_dir, console)
    if summary.report is not None:
        from .report import print_report

        print_report(console, summary.report, full=False)
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


def cmd_recommend(args: argparse.Namespace) -> int:
    """The advice (transferbench/advise.py); with --validate, its regret table."""
    from .advise import advise, read_sweep_plan, recommend_json, table_rows, validate, verdict_lines
    from .api import Prepared

    config, components, plan = _load(args)
    sweep = read_sweep_plan(Prepared(config, components, plan))
    run_dir = Path(args.out) if args.out else config.run_dir()
    console = _console(stderr=args.json)  # with --json, standard output holds the document alone
    components.data.check()
    result = advise(Prepared(config, components, plan), sweep, run_dir, console)
    if args.json:
        tables = validate(Prepared(config, components, plan), sweep, result, run_dir, console) \
            if args.validate else None
        return _print_json(recommend_json(sweep, result, tables))
    for target in sweep.targets():
        units = [u for u in result.choice if u[0] == target]
        expected = result.expected(target)
        spent = sum(result.spent[u] for u in units) / sum(result.sweep_cost[u] for u in units)
        chosen = sorted({str(result.choice[u]) for u in units})
        console.print(f"[bold]{target}[/bold]: train {' / '.join(chosen)} (per unit: "
                      + ", ".join(f"seed {u[1]}: {result.choice[u]}" for u in units) + ")")
        if expected is None:
            console.print("  expected top-1: none (the full training of its choice failed in every unit)")
        else:
            low, high = expected.ci_low, expected.ci_high
            ci = (f"95% interval {100 * low:.1f} to {100 * high:.1f}" if low is not None and high is not None
                  else "too few units for an interval")
            console.print(f"  expected top-1 {100 * expected.value:.1f}% ({ci}, over {expected.units} units: the "
                          "advice's own networks at full length)")
        console.print(f"  compute: {sum(result.spent[u] for u in units) / 1e12:.3g} TFLOP spent, "
                      f"{sum(result.sweep_cost[u] for u in units) / 1e12:.3g} TFLOP for the full sweep it replaces "
                      f"({100 * spent:.1f}%; training FLOPs, source networks in neither)")
    if not args.validate:
        console.print(f"advice written to {run_dir / 'advice.json'}")
        return EXIT_OK
    tables = validate(Prepared(config, components, plan), sweep, result, run_dir, console)
    for target, rows in tables.items():
        table = Table(title=f"regret against the sweep's best regime: {target}", title_justify="left")
        for col in ("advice", "regret (points)", "95% interval", "units", "compute", "chose"):
            table.add_column(col)
        for row in table_rows(rows):
            table.add_row(*(escape(c) for c in row))
        console.print(table)
    for line in verdict_lines(tables["all"]):
        console.print(line)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Verify a run directory; exit 1 when a file is damaged."""
    from .check import check_run_dir

    report = check_run_dir(Path(args.run_dir))
    console = _console()
    console.print(f"{args.run_dir}: {report.networks} networks planned, {report.ok} with a usable record")
    for path, why in report.damaged:
        console.print(f"[red]damaged[/red] {escape(path)}: {escape(why)}")
    for why, count in sorted(report.redo.items(), key=lambda kv: -kv[1]):
        console.print(f"a rerun trains {count} networks: {escape(why)}")
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    if report.refused:
        console.print(f"[red]a rerun of its config.yaml is refused:[/red] {escape(report.refused)}")
    elif not report.damaged and not report.redo:
        console.print("intact: a rerun would train nothing")
    elif report.damaged:
        console.print("a rerun moves the damaged files under damaged/ (never deletes them) and recomputes them")
    return EXIT_FAILED_JOBS if report.damaged or report.refused else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Write one trained network of a run as a standalone safetensors file, its JSON beside it."""
    from .export import Selection, export_network

    selection = Selection(job=args.job, experiment=args.experiment, treatment=args.treatment, n=args.n,
                          seed=args.seed)
    done = export_network(Path(args.run_dir), Path(args.out), selection, init=args.init, force=args.force)
    console = _console()
    console.print(f"exported network {done.job_id[:12]} of {escape(args.run_dir)}:")
    for path in (done.weights, done.info, done.init):
        if path is not None:
            console.print(f"  wrote {escape(str(path))}", highlight=False)
    console.print(f"sha256 {done.sha256}; use it as a source: source: {{checkpoint: {escape(str(done.weights))}}}"
                  + (f", with init: {escape(str(done.init))}" if done.init else ""), highlight=False)
    return EXIT_OK


def _print_notes(console: Console, notes: Sequence[str]) -> None:
    """The plan's notes: what is fine but worth saying (a weights file's classifier left out)."""
    for note in notes:
        console.print(f"note: {escape(note)}", highlight=False)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import run_report

    if args.run_dir is None and not args.paper:
        raise ConfigError([("report", "give a RUN_DIR, or --paper for the paper's own results")])
    run_dir = Path(args.run_dir) if args.run_dir else None
    out = Path(args.plots_dir) if args.plots_dir else None
    if args.power and run_dir is None:
        raise ConfigError([("--power", "the power planner reads a run: give a RUN_DIR")])
    compare = args.compare or "paper" if args.power else args.compare
    margin = None if args.control_margin is None else args.control_margin / 100
    if args.json:
        from .jsonout import power_json, report_json
        from .report import build_reports, write_report_of

        reports = build_reports(run_dir, paper=args.paper, compare=compare, metric=args.metric, pool=args.pool,
                                control_margin=margin)
        files = [p for r in reports for p in write_report_of(r, run_dir, plots=not args.no_plots, out=out)]
        doc = report_json(reports, files)
        if args.power:
            doc["power"] = power_json(_power_rows(reports[0], run_dir))
        return _print_json(doc)
    console = _console()
    reports = run_report(run_dir, paper=args.paper, compare=compare, plots=not args.no_plots, metric=args.metric,
                         pool=args.pool, out=out, console=console, control_margin=margin)
    if args.power:
        from .power import print_power

        print_power(console, _power_rows(reports[0], run_dir))
    return EXIT_OK


def _power_rows(report: RunReport, run_dir: Path | None) -> list[PowerRow]:
    from .power import gpu_hours_per_network, plan_power

    return plan_power(report, gpu_hours_per_network(run_dir) if run_dir is not None else None)


# --------------------------------------------------------------------------- parser


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` greater than zero (argparse reports the rest)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low`` (argparse reports the rest)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON document instead of tables (shapes: docs/json-output.md)")


def _add_plugins_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list every plugin and what it registers; with NAME or -v, every setting")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="a registered name (hf, caffenet_scaled, ...): its settings and an example config block")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also every setting (type, default, description) of every registered name")
    _json_flag(p)
    p.set_defaults(fn=cmd_plugins)


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables, metrics and plots of a run (or of the paper)")
    p.add_argument("run_dir", nargs="?", help="a run directory")
    p.add_argument("--paper", action="store_true", help="the paper's own published results")
    p.add_argument("--compare", metavar="PAPER",
                   help="judge a paper's findings on the run: paper (Yosinski et al. 2014, its numbers beside the "
                        "run's), the name of any findings plugin (`transferbench plugins` lists them) or all")
    p.add_argument("--metric", choices=["top1", "top1_best_k", "ood_top1"], default=None,
                   help="final top-1 (default for runs), the paper's mean of the best k evaluations (default "
                        "for --paper alone), or the final top-1 on the data source's out-of-distribution "
                        "evaluation split (a source with one: synthetic's ood setting)")
    p.add_argument("--pool", action=argparse.BooleanOptionalAction, default=None,
                   help="pool AnA into BnB and BnA into AnB as the paper did "
                        "(default: when both halves have the same number of classes)")
    p.add_argument("--power", action="store_true",
                   help="the power planner: split seeds (and their cost) for a decisive verdict on each of the "
                        "findings compared with (--compare; default paper), with this run as the pilot")
    p.add_argument("--control-margin", type=_positive(float), metavar="POINTS",
                   help="how close (in points of top-1) BnB+ must be shown to be to baseB for the control to hold "
                        "(default: half the paper's fine-tuning boost, scaled to each experiment's headroom)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--plots-dir", help="where plots go (default: the run directory)")
    _json_flag(p)
    p.set_defaults(fn=cmd_report)


def cmd_estimators_score(args: argparse.Namespace) -> int:
    from .published import print_score_report, read_scores, read_table, score_against

    table = read_table(args.against)
    scores = read_scores(args.scores) if args.scores else None
    report = score_against(table, scores, args.truth, every_source=args.every_source)
    if args.json:
        from dataclasses import asdict

        _print_json({"format": "transferbench.estimators-score/1", **asdict(report)})
        return EXIT_OK
    print_score_report(_console(), report)
    return EXIT_OK


def _add_estimators_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimators", help="estimators outside a run: score a ranking against a published table")
    inner = p.add_subparsers(dest="estimators_command", metavar="COMMAND")
    inner.required = True
    q = inner.add_parser("score", help="agreement of estimator scores (or a table's own published scores) with a "
                         "published ground truth, beside the free baselines, per target data set")
    q.add_argument("scores", nargs="?", metavar="SCORES.csv",
                   help="target,source,NAME[,NAME...]: one column per estimator (default: the table's own "
                        "published scores)")
    q.add_argument("--against", required=True, metavar="TABLE",
                   help="a shipped table (agostinelli2022) or a CSV target,source,finetuned[,frozen,...]")
    q.add_argument("--truth", default="finetuned", help="the ground truth column: finetuned (default) or frozen")
    q.add_argument("--every-source", action="store_true",
                   help="keep every source, leaving out the baseline columns that lack some (default: keep "
                        "every baseline, on the sources that have them all)")
    _json_flag(q)
    q.set_defaults(fn=cmd_estimators_score)


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained network of a run as a safetensors file (+ JSON), "
                       "to be the source of another run")
    p.add_argument("run_dir", help="a run directory")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the .safetensors file to write; FILE.json (architecture, classes, origin) goes beside it")
    p.add_argument("--job", metavar="ID", help="the network's job id (or its first characters)")
    p.add_argument("--experiment", help="the experiment it belongs to")
    p.add_argument("--treatment", help="its treatment: baseA, baseB, AnB+, XnB, ...")
    p.add_argument("--n", type=_at_least(0), help="its n (0 for base networks)")
    p.add_argument("--seed", type=int, help="its split seed")
    p.add_argument("--init", action="store_true",
                   help="also write FILE.init.safetensors, the weights it started training from (recomputed "
                        "exactly), for protocols that reset layers to them (reinit)")
    p.add_argument("--force", action="store_true", help="replace files that exist")
    p.set_defaults(fn=cmd_export)


def _plan_options(p: argparse.ArgumentParser) -> None:
    """The options of ``plan``: output and the rates its cost is computed at."""
    _json_flag(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only the summary lines")
    p.add_argument("--tflops", type=_positive(float), default=20.0,
                   help="effective training throughput assumed for the GPU-hour estimate (default 20)")
    p.add_argument("--estimate-only", action="store_true", help="the plan of `run --estimate-only`")
    p.add_argument("--decode-rate", type=_positive(float), default=None, metavar="IMAGES_PER_S",
                   help="images/s the data pipeline of one training machine decodes and augments, for the "
                        "data-bound estimate (default: measured here on the data source's images)")
    p.add_argument("--read-gbps", type=_positive(float), default=2.0, metavar="GB_PER_S",
                   help="disk read speed of the uint8 store (loader.decode_cache), in GB/s (default 2, assumed)")
    p.add_argument("--measured", metavar="RATES_FILE",
                   help="a rates file written by benchmarks/gpu_check.py (measured TFLOP/s, decode and store "
                        "images/s) in place of --tflops, --decode-rate and --read-gbps")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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

    _add_plugins_parser(sub)

    p: argparse.ArgumentParser = sub.add_parser(
        "layers", help="list the transferable layers of an architecture with parameter counts")
    p.add_argument("architecture", help="an architecture name (see `transferbench plugins`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="an architecture parameter (repeatable), e.g. --set model=resnet18")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="shape of one example, e.g. 3,32,32 (default: the architecture's example shape)")
    p.add_argument("--classes", type=_positive(int), default=10, help="number of classes (default: 10)")
    _json_flag(p)
    p.set_defaults(fn=cmd_layers)

    p = with_config("validate", "check a config and report every problem with its key path", cmd_validate)
    p.add_argument("--out", metavar="RUN_DIR", help="the run directory to check (default: the config's output.dir)")
    _json_flag(p)
    p = with_config("plan", "print the jobs a config expands into, without training", cmd_plan)
    _plan_options(p)
    with_config("splits", "print every class of every split as TSV (metadata only)", cmd_splits)
    p = with_config("run", "train every network of a config (resumes an interrupted run)", cmd_run)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: the config's output.dir)")
    p.add_argument("--estimate-only", action="store_true",
                   help="train only the base networks and run the config's estimators: a proxy of the "
                        "transfer curve in a fraction of the time (docs/estimators.md)")

    _add_recommend_options(with_config(
        "recommend", "which regime to train (freeze 1..n, fine-tune, surgical k, LP-FT, scratch): fine-tune "
        "with the last hidden layer new unless short trainings show a challenger clearly better; --validate: its "
        "regret against the exhaustive sweep", cmd_recommend))
    p = sub.add_parser("check", help="verify a run directory (plan, records, checkpoints) and say what a rerun redoes")
    p.add_argument("run_dir", help="a run directory")
    p.set_defaults(fn=cmd_check)

    _add_report_parser(sub)
    _add_export_parser(sub)
    _add_estimators_parser(sub)
    return parser


def _add_recommend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: the config's output.dir)")
    p.add_argument("--validate", action="store_true",
                   help="also run the exhaustive sweep and print the regret table (advice, selectors, fixed "
                        "heuristics)")
    _json_flag(p)


def _command(argv: Sequence[str]) -> str:
    """The subcommand an argument list names (for an error document), or ``transferbench``."""
    commands = {"plugins", "layers", "validate", "plan", "splits", "run", "recommend", "check", "report", "export",
                "estimators"}
    return next((a for a in argv if a in commands), "transferbench")


def _json_error(argv: Sequence[str], exc: BaseException, code: int) -> None:
    """With --json on the command line: the error document on stdout (messages stay on stderr)."""
    if "--json" in argv:
        from .jsonout import error_json

        _print_json(error_json(_command(argv), exc, code))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:  # what argparse prints, and exit code 2 as argparse's
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc}", file=sys.stderr)
        _json_error(argv, exc, EXIT_USAGE)
        raise SystemExit(EXIT_USAGE) from None
    try:
        return args.fn(args)
    except TransferbenchError as exc:
        _json_error(argv, exc, EXIT_USAGE)
        _err_console().print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_USAGE
    except BrokenPipeError:  # `transferbench splits ... | head`
        sys.stderr.close()
        return EXIT_OK
    except OSError as exc:  # a path of the user's that the system refuses (disk full, permissions)
        where = f"{exc.filename}: " if exc.filename else ""
        message = where + (exc.strerror or str(exc))
        _json_error(argv, type(exc)(message), EXIT_USAGE)
        _err_console().print(f"[red]error:[/red] {escape(message)}")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        _json_error(argv, exc, EXIT_INTERRUPTED)
        _err_console().print("interrupted: rerun the same command to resume where it stopped")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: the document, then the traceback (exit code 1)
        _json_error(argv, exc, EXIT_FAILED_JOBS)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
