"""`bench export`, `bench validate`, `bench verify`, `bench leaderboard build`: records and the site."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.core.errors import BenchError


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bench.harness.store import Run, get_run, open_store
    from bench.publish.records import export_run

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

    from bench.publish.literature import LITERATURE_DIR, is_literature, validate_literature
    from bench.publish.records import validate_paths

    records, errors, reported = [], [], []
    for path in map(Path, args.paths):
        if not is_literature(path):  # measured records (a folder's literature subfolder is skipped here)
            found, problems = validate_paths([path])
            records += found
            errors += problems
        if is_literature(path) or path.is_dir():
            found, problems = validate_literature(path if is_literature(path) else path / LITERATURE_DIR)
            reported += found
            errors += problems
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(records)} valid record(s), {len(reported)} valid literature record(s), {len(errors)} invalid",
          file=sys.stderr)
    return 1 if errors else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.harness.replay import verify
    from bench.publish.records import load_record_file

    failed = 0
    for path in args.records:
        record = load_record_file(Path(path))
        result = verify(record, path, samples=args.samples, seed=args.seed)
        gpu = record.cost.device.startswith("cuda")
        print(f"{path}: re-ran samples {result.indices} (subset seed {result.seed}): "
              f"{len(result.indices) - len(result.mismatches)}/{len(result.indices)} identical per-sample outcomes"
              + (" (GPU record: agreement rate reported, not required to be 1)" if gpu else ""))
        for stated, rerun in result.mismatches:
            print(f"  sample {stated.index}: record says clean {stated.clean_correct}/{record.eval_draws}, "
                  f"adversarial {stated.adv_correct}/{record.eval_draws}; re-run gives clean "
                  f"{rerun.clean_correct}, adversarial {rerun.adv_correct}", file=sys.stderr)
        failed += bool(result.mismatches) and not gpu
    return 1 if failed else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.publish.leaderboard import build_site

    summary = build_site(Path(args.records), Path(args.out))
    print(f"built {summary['out']}: {summary['records']} records, {summary['entries']} entries, "
          f"{summary['tables']} tables in {summary['seconds']:.2f} s; open {summary['out']}/index.html")
    return 0


def add_parsers(sub: Any) -> None:
    export = sub.add_parser("export", help="write runs as JSON records under results/ (the leaderboard's source)")
    export.add_argument("run_ids", nargs="*", help="run ids (or unique prefixes)")
    export.add_argument("--all", action="store_true", help="export every complete run")
    export.add_argument("--out", default="results", help="records root (default results/)")
    export.add_argument("--db")
    export.set_defaults(func=_cmd_export)

    validate = sub.add_parser("validate", help="check record files against the schema")
    validate.add_argument("paths", nargs="+", help="record files or folders")
    validate.set_defaults(func=_cmd_validate)

    verify = sub.add_parser("verify", help="re-run a random subset of a record's samples and compare outcomes")
    verify.add_argument("records", nargs="+", help="record files")
    verify.add_argument("--samples", type=int, default=4, help="samples to re-run per record (default 4)")
    verify.add_argument("--seed", type=int, help="seed of the subset (default: random, printed)")
    verify.set_defaults(func=_cmd_verify)

    leaderboard = sub.add_parser("leaderboard", help="the static leaderboard site")
    lb_sub = leaderboard.add_subparsers(dest="leaderboard_command", required=True)
    build = lb_sub.add_parser("build", help="validate the records and render the site")
    build.add_argument("--records", default="results", help="records root (default results/)")
    build.add_argument("--out", default="leaderboard/site", help="output folder (default leaderboard/site)")
    build.set_defaults(func=_cmd_leaderboard)
