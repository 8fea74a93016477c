"""The ``bench`` command line: run, resume, results, ls, toy, perf."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from bench.allocator import tune_glibc_malloc
from bench.errors import BenchError

EPILOG_RUN = """examples:
  bench run --defense dp_ddpm --attack pgd_eot                    # toy suite, 64 images, PGD20-EoT10
  bench run --defense dp_ddim --attack pgd_eot --setting dw_fwd --defense-opt nfe=10
  bench run --defense dp_ddpm --attack pgd_eot --norm l2 --eps 1.0 --n-samples 16 --db sqlite:///my.sqlite
"""


def _load_plugins() -> None:
    import attacks  # noqa: F401  (registers attack plug-ins)
    import defenses  # noqa: F401  (registers defense plug-ins)


def _cmd_ls(args: argparse.Namespace) -> int:
    _load_plugins()
    from bench.attack import ATTACKS
    from bench.data import DATASETS
    from bench.defense import DEFENSES
    from bench.settings import SETTING_DESCRIPTIONS

    sections: dict[str, list[tuple[str, str]]] = {
        "defenses": [(n, c.description) for n, c in DEFENSES.items()],
        "attacks": [(n, c.description) for n, c in ATTACKS.items()],
        "settings": list(SETTING_DESCRIPTIONS.items()),
        "datasets": [(d, "") for d in DATASETS],
    }
    wanted = [args.what] if args.what else list(sections)
    for name in wanted:
        print(f"{name}:")
        width = max(len(n) for n, _ in sections[name])
        for entry, description in sections[name]:
            print(f"  {entry:<{width}}  {description}".rstrip())
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    _load_plugins()
    from bench.defense import DEFENSES

    card = DEFENSES.get(args.name).card()
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    for key in ("name", "description", "paper", "checkpoint", "license", "nfe", "network_calls"):
        print(f"{key + ':':<15}{card[key]}")
    print("noise streams: " + ", ".join(f"{n} ({s['tensors']} x {s['shape']} per sample, CIFAR shape)" for n, s in card["streams"].items()) if card["streams"] else "noise streams: none (deterministic)")
    print("defaults:       " + ", ".join(f"{k}={v}" for k, v in card["defaults"].items()) if card["defaults"] else "defaults:       (no options)")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from bench import hub

    if args.cache_dir:
        import os

        os.environ["BENCH_CACHE"] = args.cache_dir
    if not args.name:
        width = max(len(name) for name in hub.MODEL_FILES.names()) + 2
        for name, entry in hub.MODEL_FILES.items():
            print(f"{name:<{width}}{entry.description} [{entry.license}]\n{'':<{width}}-> {hub.local_path(entry)}")
        return 0
    print(hub.fetch(args.name))
    return 0


def _progress_bar(description: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, initial=done, desc=description, unit="img", file=sys.stderr,
                              dynamic_ncols=True, disable=None)
        else:
            bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar["bar"].close()

    return update


def _format_summary(run: Any) -> str:
    metrics = run.metrics
    draws = metrics["draws"]
    lines = [
        f"run {run.id}: {run.defense} vs {run.attack} ({run.setting}, {run.norm} eps={run.eps:.4g}) "
        f"on {run.dataset}, n={metrics['n']} samples x {draws} noise draws, NFE {run.nfe}, "
        f"{run.wall_seconds:.1f}s",
        f"{'accuracy':<16}{'clean [95% CI]':<26}{'robust [95% CI]':<26}",
    ]
    for key, label in (("expected", "expected"), ("worst", f"worst-of-{draws}"), ("majority", "majority vote")):
        cells = []
        for part in ("clean", "robust"):
            m = metrics[part][key]
            cells.append(f"{m['acc']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]")
        lines.append(f"{label:<16}{cells[0]:<26}{cells[1]:<26}")
    if "attack_reported" in metrics:
        m = metrics["attack_reported"]
        lines.append(f"{'attack says':<16}{'':<26}{m['acc']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"
                     "  (the attack's own verdict; the rows above are the harness's evaluation)")
    return "\n".join(lines)


def _db_url(db: str | None) -> str:
    from pathlib import Path

    from bench.store import default_url

    url = db or default_url()
    return url if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}"


def _finish(engine: Any, run_id: str, parts: Any = None, executor: str = "local", db: str | None = None,
            address: str | None = None) -> int:
    from sqlalchemy.orm import Session

    from bench.executors import execute
    from bench.store import get_run

    try:
        execute(engine, run_id, executor, db_url=_db_url(db), address=address,
                progress=_progress_bar(f"run {run_id}"), parts=parts)
    except KeyboardInterrupt:
        print(f"\ninterrupted; stored samples are kept. Resume with: bench resume {run_id}", file=sys.stderr)
        return 130
    except BenchError as err:
        print(f"bench: error: {err}\nrun {run_id} is marked failed; see `bench results --all`.", file=sys.stderr)
        return 1
    with Session(engine) as session:
        print(_format_summary(get_run(session, run_id)))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    _load_plugins()
    from bench.config import parse_overrides
    from bench.runner import RunRequest, start_run
    from bench.store import open_store

    request = RunRequest(
        defense=args.defense, attack=args.attack, setting=args.setting, norm=args.norm, eps=args.eps,
        step_size=args.step_size, dataset=args.dataset, classifier=args.classifier, n_samples=args.n_samples, start_index=args.start_index,
        seed=args.seed, eval_draws=args.draws, batch_size=args.batch_size,
        defense_options=parse_overrides(args.defense_opt), attack_options=_attack_options(args),
        device=args.device, dtype=args.dtype, checkpoint=args.checkpoint, memory_budget=args.memory_budget,
    )
    engine = open_store(args.db)
    run_id, parts = start_run(engine, request)
    print(f"run {run_id} started (resume with `bench resume {run_id}` if interrupted)", file=sys.stderr)
    return _finish(engine, run_id, parts if args.executor == "local" else None, executor=args.executor, db=args.db,
                   address=args.address)


def _attack_options(args: argparse.Namespace) -> dict[str, Any]:
    from bench.config import parse_overrides

    options: dict[str, Any] = parse_overrides(args.attack_opt)
    for key in ("steps", "eot"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.random_start:
        options["random_start"] = True
    return options


def _executor_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="local (default) or ray: shards of the run as Ray tasks (pip install -e '.[ray]')")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")


def _cmd_resume(args: argparse.Namespace) -> int:
    _load_plugins()
    from bench.store import open_store

    return _finish(open_store(args.db), args.run_id, executor=args.executor, db=args.db, address=args.address)


def _cmd_grid(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.config import parse_overrides
    from bench.grid import run_grid
    from bench.runner import RunRequest
    from bench.store import open_store

    _load_plugins()
    split = lambda text: [part.strip() for part in text.split(",") if part.strip()]  # noqa: E731
    base = RunRequest(
        defense="none", attack="pgd_eot", norm=args.norm, eps=args.eps, dataset=args.dataset,
        classifier=args.classifier, n_samples=args.n_samples, seed=args.seed, eval_draws=args.draws,
        batch_size=args.batch_size, defense_options=parse_overrides(args.defense_opt),
        attack_options=parse_overrides(args.attack_opt), device=args.device,
    )
    engine = open_store(args.db)
    cells = run_grid(engine, base, split(args.defenses), split(args.attacks), split(args.settings),
                     executor=args.executor, db_url=_db_url(args.db), address=args.address,
                     progress=_progress_bar("grid"))
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


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bench.records import export_run
    from bench.store import Run, get_run, open_store

    _load_plugins()
    engine = open_store(args.db)
    with Session(engine) as session:
        if args.all:
            runs = list(session.scalars(select(Run).where(Run.status == "complete").order_by(Run.created_at)))
        elif args.run_ids:
            runs = [get_run(session, run_id) for run_id in args.run_ids]
        else:
            raise BenchError("name one or more run ids, or pass --all")
        for run in runs:
            print(export_run(run, Path(args.out)))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.records import validate_paths

    records, errors = validate_paths([Path(p) for p in args.paths])
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(records)} valid record(s), {len(errors)} invalid", file=sys.stderr)
    return 1 if errors else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.leaderboard import build_site

    _load_plugins()
    summary = build_site(Path(args.records), Path(args.out))
    print(f"built {summary['out']}: {summary['records']} records, {summary['entries']} entries, "
          f"{summary['tables']} tables in {summary['seconds']:.2f} s; open {summary['out']}/index.html")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    import pandas as pd
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bench.store import Run, open_store

    engine = open_store(args.db)
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


def _cmd_toy_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.toy import ASSETS, TOY_MODELS, ToyTrainConfig, train_toy_suite

    config = ToyTrainConfig(seed=args.seed, unet_steps=args.unet_steps)
    only = tuple(args.only.split(",")) if args.only else TOY_MODELS
    manifest = train_toy_suite(config, Path(args.out) if args.out else ASSETS, progress=lambda m: print(m, file=sys.stderr), only=only)
    print(json.dumps({"metrics": manifest["metrics"], "files": manifest["files"]}, indent=2))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.config import parse_overrides
    from bench.store import open_store
    from bench.studies import StudyRequest, run_study

    _load_plugins()
    request = StudyRequest(
        defense=args.defense, dataset=args.dataset, n_samples=args.n_samples, seed=args.seed,
        values=[v.strip() for v in args.values.split(",")] if args.values else [],
        defense_options=parse_overrides(args.defense_opt), attack_options=parse_overrides(args.attack_opt),
        eval_draws=args.draws, out_dir=Path(args.out),
    )
    result = run_study(open_store(args.db), args.name, request)
    print(result.table)
    print(f"study {result.study_id}: {len(result.run_ids)} runs stored; plot: {result.plot_path}")
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from bench.perf import run_perf

    if args.leaderboard:
        from bench.perf import measure_leaderboard_build

        _load_plugins()
        print(measure_leaderboard_build(args.leaderboard))
        return 0
    if args.attack_cost:
        from bench.config import parse_overrides
        from bench.perf import measure_attack_cost

        _load_plugins()
        print(measure_attack_cost(args.attack_cost, args.n_samples, parse_overrides(args.defense_opt),
                                  parse_overrides(args.aa_opt), db=args.db or "sqlite://"))
        return 0

    print(run_perf(models=args.model, batch=args.batch, eot=args.eot, repeats=args.repeats))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark diffusion-based purification defenses.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("ls", help="list defenses, attacks, settings and datasets")
    ls.add_argument("what", nargs="?", choices=["defenses", "attacks", "settings", "datasets"])
    ls.set_defaults(func=_cmd_ls)

    show = sub.add_parser("show", help="a defense's card: paper, checkpoint, license, NFE, noise streams, defaults")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_cmd_show)

    fetch = sub.add_parser("fetch", help="download and verify a model file into the cache (no name: list them)")
    fetch.add_argument("name", nargs="?")
    fetch.add_argument("--cache-dir", help="cache folder (default $BENCH_CACHE or ~/.cache/dbp-bench/models)")
    fetch.set_defaults(func=_cmd_fetch)

    run = sub.add_parser("run", help="evaluate one defense against one attack and store the result",
                         epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--defense", required=True, help="defense name (see `bench ls defenses`)")
    run.add_argument("--attack", required=True, help="attack name (see `bench ls attacks`)")
    run.add_argument("--setting", default="white", help="white | dw_fwd | dw_both | dw_semi:K (default: white)")
    run.add_argument("--norm", default="linf", help="linf | l2 (default: linf)")
    run.add_argument("--eps", type=float, help="perturbation budget (default: the dataset's, e.g. 8/255 on CIFAR)")
    run.add_argument("--step-size", type=float, help="attack step size (default: the dataset's, scaled with --eps)")
    run.add_argument("--steps", type=int, help="attack iterations (pgd_eot default 20)")
    run.add_argument("--eot", type=int, help="EoT samples per step (pgd_eot default 10)")
    run.add_argument("--random-start", action="store_true", help="start PGD from a random point in the ball")
    run.add_argument("--dataset", default="toy", help="toy | cifar10 | cifar100 (default: toy)")
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
    run.add_argument("--memory-budget", help="activation memory budget, e.g. 8GiB (default: 80%% of free GPU memory, half the RAM on CPU)")
    run.add_argument("--db", help="SQLAlchemy URL or SQLite file (default results/bench.sqlite; $BENCH_DB)")
    _executor_flags(run)
    run.set_defaults(func=_cmd_run)

    resume = sub.add_parser("resume", help="finish an interrupted run")
    resume.add_argument("run_id")
    resume.add_argument("--db")
    _executor_flags(resume)
    resume.set_defaults(func=_cmd_resume)

    grid = sub.add_parser("grid", help="run defenses x attacks x settings, skipping runs already complete")
    grid.add_argument("--defenses", required=True, help="comma-separated defense names")
    grid.add_argument("--attacks", default="pgd_eot", help="comma-separated attack names (default pgd_eot)")
    grid.add_argument("--settings", default="white", help="comma-separated settings (default white)")
    grid.add_argument("--norm", default="linf")
    grid.add_argument("--eps", type=float)
    grid.add_argument("--dataset", default="toy")
    grid.add_argument("--classifier")
    grid.add_argument("--n-samples", type=int, default=64)
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--draws", type=int, default=10)
    grid.add_argument("--batch-size", type=int, default=64)
    grid.add_argument("--defense-opt", action="append", metavar="KEY=VALUE", help="applied to every defense")
    grid.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="applied to every attack")
    grid.add_argument("--device", default="cpu")
    grid.add_argument("--db")
    _executor_flags(grid)
    grid.set_defaults(func=_cmd_grid)

    results = sub.add_parser("results", help="list stored runs")
    results.add_argument("--format", choices=["table", "csv", "json"], default="table")
    results.add_argument("--all", action="store_true", help="include running, failed and interrupted runs")
    results.add_argument("--db")
    results.set_defaults(func=_cmd_results)

    export = sub.add_parser("export", help="write runs as JSON records under results/ (the leaderboard's source)")
    export.add_argument("run_ids", nargs="*", help="run ids (or unique prefixes)")
    export.add_argument("--all", action="store_true", help="export every complete run")
    export.add_argument("--out", default="results", help="records root (default results/)")
    export.add_argument("--db")
    export.set_defaults(func=_cmd_export)

    validate = sub.add_parser("validate", help="check record files against the schema")
    validate.add_argument("paths", nargs="+", help="record files or folders")
    validate.set_defaults(func=_cmd_validate)

    leaderboard = sub.add_parser("leaderboard", help="the static leaderboard site")
    lb_sub = leaderboard.add_subparsers(dest="leaderboard_command", required=True)
    build = lb_sub.add_parser("build", help="validate the records and render the site")
    build.add_argument("--records", default="results", help="records root (default results/)")
    build.add_argument("--out", default="leaderboard/site", help="output folder (default leaderboard/site)")
    build.set_defaults(func=_cmd_leaderboard)

    from bench.addt_cli import add_parser as add_addt_parser

    add_addt_parser(sub)

    toy = sub.add_parser("toy", help="the toy suite")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True)
    train = toy_sub.add_parser("train", help="train the toy DDPM and classifier and write their weights")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--unet-steps", type=int, default=6000)
    train.add_argument("--out", help="output folder (default: bench/toy_assets, the committed copy)")
    train.add_argument("--only", help="comma-separated subset of classifier,ddpm,vp,edm (default: all)")
    train.set_defaults(func=_cmd_toy_train)

    study = sub.add_parser("study", help="run a diagnostic study: eot | nfe | settings (stored, with a plot)")
    study.add_argument("name", help="eot | nfe | settings")
    study.add_argument("--defense", help="defense (default dp_ddpm; nfe: dp_ddpm and dp_ddim)")
    study.add_argument("--values", help="comma-separated sweep (eot: 1,2,4,8,16; nfe: 2,5,10,20,50,100; "
                       "settings: white,dw_fwd,dw_both,dw_semi:8)")
    study.add_argument("--dataset", default="toy", help="toy | cifar10 | cifar100 (default: toy)")
    study.add_argument("--n-samples", type=int, default=64, help="images per run (default 64)")
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--draws", type=int, default=10, help="evaluation noise draws K (default 10)")
    study.add_argument("--defense-opt", action="append", metavar="KEY=VALUE")
    study.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="pgd_eot option")
    study.add_argument("--out", default="results/studies", help="folder for the plot (default results/studies)")
    study.add_argument("--db", help="SQLAlchemy URL or SQLite path (default results/bench.sqlite)")
    study.set_defaults(func=_cmd_study)

    perf = sub.add_parser("perf", help="measure gradient cost, checkpoint memory and EoT batching")
    perf.add_argument("--model", action="append", choices=["toy", "cifar10-ddpm"],
                      help="UNet(s) to measure (default: both)")
    perf.add_argument("--batch", type=int, default=None, help="images per batch (default 16 toy, 1 cifar10-ddpm)")
    perf.add_argument("--eot", type=int, default=4, help="EoT samples for the batch-vs-loop comparison")
    perf.add_argument("--repeats", type=int, default=3, help="timing repeats (the fastest is reported)")
    perf.add_argument("--leaderboard", type=int, metavar="N", help="instead: time the site build on N synthetic records")
    perf.add_argument("--attack-cost", metavar="DEFENSE",
                      help="instead: time aa_rand_fixed and aa_rand against pgd_eot on this toy defense")
    perf.add_argument("--n-samples", type=int, default=16, help="images for --attack-cost (default 16)")
    perf.add_argument("--defense-opt", action="append", metavar="KEY=VALUE", help="defense option for --attack-cost")
    perf.add_argument("--aa-opt", action="append", metavar="KEY=VALUE",
                      help="AutoAttack option for --attack-cost (e.g. n_iter=100, eot=20)")
    perf.add_argument("--db", help="store the --attack-cost runs here (default: in memory)")
    perf.set_defaults(func=_cmd_perf)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tune_glibc_malloc()
    try:
        return int(args.func(args))
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
