"""`bench run`, `bench resume`, `bench grid`, `bench results`: evaluations and the store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import db_url, executor_flags, progress_bar
from bench.core.errors import BenchError

EPILOG_RUN = """examples:
  bench run --defense dp_ddpm --attack pgd_eot                    # toy suite and its protocol, 64 images, PGD20-EoT10
  bench run --defense dp_ddim --attack pgd_eot --setting dw_fwd --defense-opt nfe=10
  bench run --defense diffpure --attack aa_rand_fixed --protocol paper   # the paper's budgets on the toy suite
  bench run --defense dp_ddpm --attack pgd_eot --norm l2 --eps 1.0 --n-samples 16 --db sqlite:///my.sqlite
"""


def _finish(engine: Any, run_id: str, executor: str = "local", db: str | None = None,
            address: str | None = None) -> int:
    """Resume a stored run to completion and print its summary."""
    from sqlalchemy.orm import Session

    from bench.harness.executors import execute
    from bench.harness.store import get_run

    try:
        execute(engine, run_id, executor, db_url=db_url(db), address=address, progress=progress_bar(f"run {run_id}"))
    except KeyboardInterrupt:
        print(f"\ninterrupted; stored samples are kept. Resume with: bench resume {run_id}", file=sys.stderr)
        return 130
    except BenchError as err:
        print(f"bench: error: {err}\nrun {run_id} is marked failed; see `bench results --all`.", file=sys.stderr)
        return 1
    with Session(engine) as session:
        print(_format_summary(get_run(session, run_id)))
    return 0


def _format_summary(run: Any) -> str:
    from bench.harness.request import Runtime
    from bench.harness.summary import RunSummary
    from bench.publish.records import entry_key

    summary = RunSummary.from_metrics(run.metrics)
    protocol = Runtime.from_dict(run.runtime).protocol if run.runtime else "paper"
    entry = run.defense if ":" in run.defense else entry_key(run.defense, run.defense_config, run.classifier,
                                                             run.dataset, protocol)
    lines = [
        f"run {run.id}: {entry} vs {run.attack} ({run.setting}, {run.norm} eps={run.eps:.4g}) "
        f"on {run.dataset} (protocol {protocol}), n={summary.n} samples x {summary.draws} noise draws, NFE {run.nfe}, "
        f"{run.wall_seconds:.1f}s",
        f"{'accuracy':<16}{'clean [95% CI]':<26}{'robust [95% CI]':<26}",
    ]
    for key, label in (("expected", "expected"), ("worst", f"worst-of-{summary.draws}"), ("majority", "majority vote")):
        lines.append(f"{label:<16}{str(getattr(summary.clean, key)):<26}{str(getattr(summary.robust, key)):<26}")
    if summary.attack_reported is not None:
        lines.append(f"{'attack says':<16}{'':<26}{summary.attack_reported}"
                     "  (the attack's own verdict; the rows above are the harness's evaluation)")
    if summary.rob_m:
        shown = [p for p in summary.rob_m if p.m in sorted({1, 2, 5, 10, summary.draws})]
        lines.append("resubmission risk Rob(M) (robust under M resubmissions): " + ", ".join(
            f"M={p.m} {p.value}" for p in shown))
    if summary.gradient_draws_per_sample is not None:
        lines.append(f"attack cost per sample: {summary.gradient_draws_per_sample:.0f} gradient draws, "
                     f"{summary.forward_draws_per_sample:.0f} forward-only draws")
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    """``bench run``: a thin layer over :func:`bench.api.run_request`, the call behind ``bench.evaluate``."""
    from sqlalchemy.orm import Session

    from bench.api import run_request
    from bench.core.config import parse_overrides, split_entry
    from bench.harness.request import RunRequest
    from bench.harness.store import get_run

    defense, entry_options = split_entry(args.defense)  # e.g. dp_ddpm[votes=10]
    request = RunRequest(
        defense=defense, attack=args.attack, setting=args.setting, norm=args.norm, eps=args.eps,
        step_size=args.step_size, dataset=args.dataset, classifier=args.classifier, n_samples=args.n_samples, start_index=args.start_index,
        seed=args.seed, eval_draws=args.draws, batch_size=args.batch_size,
        defense_options={**entry_options, **parse_overrides(args.defense_opt)}, attack_options=_attack_options(args),
        device=args.device, dtype=args.dtype, checkpoint=args.checkpoint, memory_budget=args.memory_budget,
        deterministic=not args.nondeterministic, protocol=args.protocol,
    )
    started: list[str] = []

    def announce(run_id: str) -> None:
        started.append(run_id)
        print(f"run {run_id} started (resume with `bench resume {run_id}` if interrupted)", file=sys.stderr)

    try:
        result = run_request(request, db=args.db, progress=progress_bar("run"), executor=args.executor,
                             address=args.address, on_start=announce)
    except KeyboardInterrupt:
        if not started:
            raise
        print(f"\ninterrupted; stored samples are kept. Resume with: bench resume {started[0]}", file=sys.stderr)
        return 130
    except BenchError as err:
        if not started:
            raise  # refused before anything was stored: one line, exit status 2
        print(f"bench: error: {err}\nrun {started[0]} is marked failed; see `bench results --all`.", file=sys.stderr)
        return 1
    with Session(result._engine) as session:
        print(_format_summary(get_run(session, result.run_id)))
    return 0


def _attack_options(args: argparse.Namespace) -> dict[str, Any]:
    from bench.core.config import parse_overrides

    options: dict[str, Any] = parse_overrides(args.attack_opt)
    for key in ("steps", "eot"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.random_start:
        options["random_start"] = True
    return options


def _cmd_resume(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from bench.harness.store import get_run, open_store

    engine = open_store(args.db, create=False)
    with Session(engine) as session:
        run_id = get_run(session, args.run_id).id  # an unknown id stops here, before anything is touched
    return _finish(engine, run_id, executor=args.executor, db=args.db, address=args.address)


def _cmd_grid(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.core.config import parse_overrides
    from bench.harness.grid import run_grid
    from bench.harness.runner import RunRequest
    from bench.harness.store import open_store

    split = lambda text: [part.strip() for part in text.split(",") if part.strip()]  # noqa: E731
    base = RunRequest(
        defense="none", attack="pgd_eot", norm=args.norm, eps=args.eps, dataset=args.dataset,
        classifier=args.classifier, n_samples=args.n_samples, seed=args.seed, eval_draws=args.draws,
        batch_size=args.batch_size, defense_options=parse_overrides(args.defense_opt),
        attack_options=parse_overrides(args.attack_opt), device=args.device, protocol=args.protocol,
    )
    from bench.harness.grid import grid_cells
    from bench.harness.runner import validate_request

    defenses, attacks, settings = split(args.defenses), split(args.attacks), split(args.settings)
    for cell in grid_cells(base, defenses, attacks, settings):  # every cell, before the first runs
        validate_request(cell.request)
    engine = open_store(args.db)
    cells = run_grid(engine, base, defenses, attacks, settings,
                     executor=args.executor, db_url=db_url(args.db), address=args.address,
                     progress=progress_bar("grid"))
    rows = []
    for cell in cells:
        metrics = cell.metrics or {}
        clean, robust = metrics.get("clean", {}).get("expected", {}), metrics.get("robust", {}).get("expected", {})
        rows.append({"defense": cell.request.defense, "attack": cell.request.attack, "setting": cell.request.setting,
                     "run_id": cell.run_id, "action": cell.action, "clean": clean.get("acc"),
                     "robust": robust.get("acc"), "robust_ci": f"[{robust.get('ci_low', 0):.3f}, {robust.get('ci_high', 0):.3f}]"})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


RESULT_COLUMNS = [
    "run_id", "status", "defense", "attack", "setting", "norm", "eps", "dataset", "n_samples", "draws", "nfe",
    "clean_acc", "clean_ci_low", "clean_ci_high", "robust_acc", "robust_ci_low", "robust_ci_high",
    "robust_worst", "robust_majority", "seed", "wall_seconds", "device", "git_commit", "created_at",
]


def _cmd_results(args: argparse.Namespace) -> int:
    import pandas as pd
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bench.harness.store import Run, open_store

    engine = open_store(args.db, create=False)
    with Session(engine) as session:
        query = select(Run).order_by(Run.created_at)
        if not args.all:
            query = query.where(Run.status == "complete")
        rows = []
        for run in session.scalars(query):
            robust = (run.metrics or {}).get("robust", {})
            rows.append({
                "run_id": run.id, "status": run.status, "defense": run.defense, "attack": run.attack,
                "setting": run.setting, "norm": run.norm, "eps": run.eps, "dataset": run.dataset,
                "n_samples": run.n_samples, "draws": run.eval_draws, "nfe": run.nfe,
                "clean_acc": run.clean_acc, "clean_ci_low": run.clean_ci_low, "clean_ci_high": run.clean_ci_high,
                "robust_acc": run.robust_acc, "robust_ci_low": run.robust_ci_low, "robust_ci_high": run.robust_ci_high,
                "robust_worst": robust.get("worst", {}).get("acc"), "robust_majority": robust.get("majority", {}).get("acc"),
                "seed": run.seed, "wall_seconds": round(run.wall_seconds, 2), "device": run.device,
                "git_commit": run.git_commit, "created_at": run.created_at.isoformat(timespec="seconds"),
            })
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if args.format == "json":
        print(json.dumps(json.loads(frame.to_json(orient="records")), indent=2))
    elif args.format == "csv":
        print(frame.to_csv(index=False), end="")
    elif frame.empty:
        print("no runs stored yet" + ("" if args.all else " (use --all to include unfinished runs)"))
    else:
        shown = frame[["run_id", "status", "defense", "attack", "setting", "norm", "eps", "dataset", "n_samples",
                       "clean_acc", "robust_acc", "robust_ci_low", "robust_ci_high", "wall_seconds"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench.harness.compare import compare, format_comparison, load_evaluation
    from bench.harness.store import open_store

    needs_store = not all(ref.endswith(".json") for ref in (args.a, args.b))
    engine = open_store(args.db, create=False) if needs_store else None
    a, b = load_evaluation(args.a, engine), load_evaluation(args.b, engine)
    result = compare(a, b, resamples=args.resamples, seed=args.seed)
    print(json.dumps(result, indent=2) if args.json else format_comparison(a, b, result))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from bench.core.config import parse_overrides
    from bench.core.errors import ConfigError
    from bench.harness.reproduce import (format_list, format_plan, format_results, format_study_plan, load_reproduction,
                                         plan, plan_studies, run, run_studies)
    from bench.harness.store import open_store
    from bench.protocols import protocol_for

    if args.list:
        print(format_list())
        return 0
    if not args.name:
        raise ConfigError("bench reproduce needs a NAME (see `bench reproduce --list`)")
    repro = load_reproduction(args.name)
    on_paper_data = args.dataset in (None, repro.dataset)
    ms, unit = (args.gpu_ms_per_call if args.gpu_ms_per_call is not None else repro.gpu_ms_per_call), "GPU"
    if not on_paper_data:
        ms, unit = protocol_for(args.dataset, None).cpu_ms_per_call or 0.0, "CPU"
    if repro.kind == "figure":
        studies = plan_studies(repro, n_samples=args.n_samples, dataset=args.dataset, eval_draws=args.draws, out_dir=args.out)
        print(format_study_plan(repro, studies, ms, unit))
        if args.dry_run:
            return 0
        for cell in run_studies(open_store(args.db), studies):
            print(f"\n{cell.entry}: study {cell.result.study_id}, plot {cell.result.plot_path}\n{cell.result.table}")
        return 0
    if not repro.cells:
        raise ConfigError(f"{repro.name} has no cell runnable here" + (f"; it needs {repro.needs}" if repro.needs else ""))
    norms = [n.strip() for n in args.norms.split(",")] if args.norms else None
    cells = plan(repro, n_samples=args.n_samples, defense_options=parse_overrides(args.defense_opt),
                 attack_options=parse_overrides(args.attack_opt), device=args.device, norms=norms,
                 eval_draws=args.draws, dataset=args.dataset,
                 entries=[e.strip() for e in args.entries.split(";")] if args.entries else None)
    if args.skip_recorded:
        cells = _without_recorded(cells, Path(args.skip_recorded))
        if not cells:
            print(f"every cell is already recorded under {args.skip_recorded}: nothing to run")
            return 0
    print(format_plan(repro, cells, ms, unit))
    if args.dry_run:
        return 0
    engine = open_store(args.db)
    run(engine, cells, executor=args.executor, db_url=db_url(args.db), address=args.address,
        progress=progress_bar(f"reproduce {repro.name}"))
    print(format_results(cells))
    return 0


def _without_recorded(cells: list[Any], folder: Path) -> list[Any]:
    """The cells no record under ``folder`` has run (as the site's paper page matches records to
    cells); prints the ones skipped and the record that ran each."""
    from bench.core.errors import ConfigError
    from bench.publish.paper import recorded_cells
    from bench.publish.records import validate_paths

    if not folder.is_dir():
        raise ConfigError(f"--skip-recorded {folder}: not a folder (e.g. results/toy)")
    records, problems = validate_paths([folder])
    if problems:
        raise ConfigError(f"--skip-recorded {folder}: {len(problems)} invalid record(s), first: {problems[0]}")
    done = recorded_cells(cells, records)
    for i in sorted(done):
        print(f"skipped, already recorded: {cells[i].entry} {cells[i].norm} {cells[i].setting} -> {done[i]}")
    return [cell for i, cell in enumerate(cells) if i not in done]


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="evaluate one defense against one attack and store the result",
                         epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--defense", required=True, help="defense name (see `bench ls defenses`), optionally with options in entry syntax, e.g. 'dp_ddpm[votes=10]'")
    run.add_argument("--attack", required=True, help="attack name (see `bench ls attacks`)")
    run.add_argument("--setting", default="white", help="white | dw_fwd | dw_both | dw_semi:K (default: white)")
    run.add_argument("--norm", default="linf", help="linf | l2 (default: linf)")
    run.add_argument("--eps", type=float, help="perturbation budget (default: the dataset's, e.g. 8/255 on CIFAR)")
    run.add_argument("--step-size", type=float, help="attack step size (default: the dataset's, scaled with --eps)")
    run.add_argument("--steps", type=int, help="attack iterations (pgd_eot default 20)")
    run.add_argument("--eot", type=int, help="EoT samples per step (pgd_eot default 10)")
    run.add_argument("--random-start", action="store_true", help="start PGD from a random point in the ball")
    run.add_argument("--dataset", default="toy", help="toy | cifar10 | cifar100 (default: toy)")
    run.add_argument("--protocol", help="budgets: toy (the toy suite's default, bench/protocols/toy.toml) | paper (each "
                     "plug-in's paper defaults); explicit options win over it")
    run.add_argument("--classifier", help="toy | robustbench:NAME | wrn-28-10:PATH (default: toy for toy, "
                     "robustbench:Standard for cifar10)")
    run.add_argument("--n-samples", type=int, default=64, help="number of test images, from --start-index (default 64)")
    run.add_argument("--start-index", type=int, default=0, help="first test index (default 0)")
    run.add_argument("--seed", type=int, default=0, help="run seed: determines every noise draw (default 0)")
    run.add_argument("--draws", type=int, default=10, help="final-evaluation noise draws K per input (default 10)")
    run.add_argument("--batch-size", type=int, default=64, help="images per batch (results do not depend on it)")
    run.add_argument("--defense-opt", action="append", metavar="KEY=VALUE", help="defense option, e.g. nfe=10")
    run.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="attack option, e.g. random_start=true")
    run.add_argument("--device", default="cpu", help="torch device (default cpu)")
    run.add_argument("--dtype", default="float32", help="float32 | float64 | bfloat16 (default float32)")
    run.add_argument("--checkpoint", default="auto", help="never | always | auto (default auto: when over budget)")
    run.add_argument("--nondeterministic", action="store_true",
                     help="allow non-deterministic CUDA kernels (default: deterministic algorithms, recorded "
                          "with the run; every run checks that a recomputed gradient is identical)")
    run.add_argument("--memory-budget", help="activation memory budget, e.g. 8GiB (default: 80%% of free GPU memory; on CPU the smaller of half the RAM and 4 GiB)")
    run.add_argument("--db", help="SQLAlchemy URL or SQLite file (default results/bench.sqlite; $BENCH_DB)")
    executor_flags(run)
    run.set_defaults(func=_cmd_run)

    resume = sub.add_parser("resume", help="finish an interrupted run")
    resume.add_argument("run_id")
    resume.add_argument("--db")
    executor_flags(resume)
    resume.set_defaults(func=_cmd_resume)

    grid = sub.add_parser("grid", help="run defenses x attacks x settings, skipping runs already complete")
    grid.add_argument("--defenses", required=True, help="comma-separated defense names")
    grid.add_argument("--attacks", default="pgd_eot", help="comma-separated attack names (default pgd_eot)")
    grid.add_argument("--settings", default="white", help="comma-separated settings (default white)")
    grid.add_argument("--norm", default="linf")
    grid.add_argument("--eps", type=float)
    grid.add_argument("--dataset", default="toy")
    grid.add_argument("--protocol", help="budgets: toy (the toy suite's default, bench/protocols/toy.toml) | paper (each "
                     "plug-in's paper defaults); explicit options win over it")
    grid.add_argument("--classifier")
    grid.add_argument("--n-samples", type=int, default=64)
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--draws", type=int, default=10)
    grid.add_argument("--batch-size", type=int, default=64)
    grid.add_argument("--defense-opt", action="append", metavar="KEY=VALUE", help="applied to every defense")
    grid.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="applied to every attack")
    grid.add_argument("--device", default="cpu")
    grid.add_argument("--db")
    executor_flags(grid)
    grid.set_defaults(func=_cmd_grid)

    reproduce = sub.add_parser("reproduce", help="run a paper's table from its protocol file (bench/protocols/NAME.toml)")
    reproduce.add_argument("name", nargs="?", help="e.g. addt-table2-cifar10, addt-table3-nfe (see --list)")
    reproduce.add_argument("--list", action="store_true", help="list the reproduction files: name, cells, title, "
                           "and what their rows that are not cells need")
    reproduce.add_argument("--dry-run", action="store_true", help="print the cells and the estimated GPU-hours (toy: "
                           "CPU-hours), run nothing")
    reproduce.add_argument("--dataset", help="re-run on another dataset at its protocol's budgets, e.g. toy (default: "
                           "the paper's)")
    reproduce.add_argument("--out", help="folder for a figure's study plots and exports (default results/studies)")
    reproduce.add_argument("--n-samples", type=int, help="images per cell (default: the paper's)")
    reproduce.add_argument("--draws", type=int, help="evaluation draws K per image (default: the protocol's)")
    reproduce.add_argument("--norms", help="comma-separated subset of the paper's norms (default: all it reports)")
    reproduce.add_argument("--entries", help="semicolon-separated subset of the table's rows, as --dry-run names "
                                             "them (entries hold commas), e.g. 'gdmp;coup' (default: all)")
    reproduce.add_argument("--skip-recorded", metavar="DIR", help="leave out the cells a record under DIR already "
                           "ran with the same request (e.g. results/toy; matched as the site's paper page matches)")
    reproduce.add_argument("--defense-opt", action="append", metavar="KEY=VALUE", help="applied to every cell")
    reproduce.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="applied to every cell")
    reproduce.add_argument("--gpu-ms-per-call", type=float, help="cost of one denoiser call per image for the estimate")
    reproduce.add_argument("--device", default="cpu")
    reproduce.add_argument("--db")
    executor_flags(reproduce)
    reproduce.set_defaults(func=_cmd_reproduce)

    results = sub.add_parser("results", help="list stored runs")
    results.add_argument("--format", choices=["table", "csv", "json"], default="table")
    results.add_argument("--all", action="store_true", help="include running, failed and interrupted runs")
    results.add_argument("--db")
    results.set_defaults(func=_cmd_results)

    compare = sub.add_parser("compare", help="paired difference of two runs or records on the same images")
    compare.add_argument("a", help="run id (prefix) in the store, or a record file")
    compare.add_argument("b", help="run id (prefix) in the store, or a record file")
    compare.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    compare.add_argument("--db")
    compare.set_defaults(func=_cmd_compare)
