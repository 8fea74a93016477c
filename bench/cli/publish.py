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

    engine = open_store(args.db, create=False)
    with Session(engine) as session:
        if args.all:
            runs = list(session.scalars(select(Run).where(Run.status == "complete").order_by(Run.created_at)))
        elif args.run_ids:
            runs = [get_run(session, run_id) for run_id in args.run_ids]
        else:
            raise BenchError("name one or more run ids, or pass --all")
        for run in runs:
            print(export_run(run, Path(args.out), replace=args.replace))
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
    import hashlib
    import json
    from pathlib import Path

    from bench.core.errors import ConfigError
    from bench.core.provenance import collect_provenance
    from bench.harness.replay import detection_power, verify
    from bench.publish.records import load_record_file

    if args.samples is not None and args.samples < 1:
        raise ConfigError(f"--samples {args.samples} must be at least 1 (default: enough to catch edits of 5% of a "
                          "record's samples with probability 0.95)")
    records = [(path, load_record_file(Path(path))) for path in args.records]  # every file checked before any run
    failed, report = 0, []
    for path, record in records:
        result = verify(record, path, samples=args.samples, seed=args.seed)
        n, checked = len(record.dataset.sample_indices), len(result.indices)
        identical = checked - len(result.mismatches)
        power = detection_power(n, checked)
        print(f"{path}: re-ran {checked} of {n} samples (subset seed {result.seed}; an edit of 5% of the samples "
              f"is caught with probability {power:.3f}): {identical}/{checked} identical per-sample outcomes"
              + ("" if result.strict else " (not a toy record: agreement reported, not required to be 1)"))
        for stated, rerun in result.mismatches:
            print(f"  sample {stated.index}: {', '.join(stated.differences(rerun))} differ; record says clean "
                  f"{stated.clean_correct}/{record.eval_draws}, adversarial {stated.adv_correct}/{record.eval_draws}; "
                  f"re-run gives clean {rerun.clean_correct}, adversarial {rerun.adv_correct}", file=sys.stderr)
        failed += not result.passed
        report.append({"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                       "run_id": record.run_id, "indices": result.indices, "identical": identical,
                       "checked": checked, "seed": result.seed, "strict": result.strict})
    if args.report:
        import torch

        provenance = collect_provenance(torch.device("cpu"))
        Path(args.report).write_text(json.dumps({"verifier": {"git_commit": provenance["git_commit"],
                                                              "device": provenance["device"]},
                                                 "records": report}, indent=1) + "\n", encoding="utf-8")
    return 1 if failed else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.publish.leaderboard import build_site

    summary = build_site(Path(args.records), Path(args.out), [Path(p) for p in args.verification])
    print(f"built {summary['out']}: {summary['records']} records, {summary['entries']} entries, "
          f"{summary['tables']} tables in {summary['seconds']:.2f} s; open {summary['out']}/index.html")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.publish.leaderboard import load_tracks, track_markdown

    tracks = {t.table_id: t for t in load_tracks(Path(args.records))}
    if args.track not in tracks:
        raise BenchError(f"no track {args.track!r} in {args.records}; tracks: {', '.join(sorted(tracks)) or 'none'}")
    print(track_markdown(tracks[args.track]))
    return 0


def add_parsers(sub: Any) -> None:
    export = sub.add_parser("export", help="write runs as JSON records under results/ (the leaderboard's source)")
    export.add_argument("run_ids", nargs="*", help="run ids (or unique prefixes)")
    export.add_argument("--all", action="store_true", help="export every complete run")
    export.add_argument("--out", default="results", help="records root (default results/)")
    export.add_argument("--db")
    export.add_argument("--replace", action="store_true",
                        help="overwrite a file that holds another run's record (default: refuse and name it)")
    export.set_defaults(func=_cmd_export)

    validate = sub.add_parser("validate", help="check record files against the schema")
    validate.add_argument("paths", nargs="+", help="record files or folders")
    validate.set_defaults(func=_cmd_validate)

    verify = sub.add_parser("verify", help="re-run a random subset of a record's samples and compare outcomes")
    verify.add_argument("records", nargs="+", help="record files")
    verify.add_argument("--samples", type=int, default=None,
                        help="samples to re-run per record (default: enough to catch edits of 5%% of the record's "
                             "samples with probability 0.95, e.g. 52 of 256)")
    verify.add_argument("--seed", type=int, help="seed of the subset (default: random, printed)")
    verify.add_argument("--report", help="write what was re-run and found as JSON (for `bench leaderboard build "
                                         "--verification`)")
    verify.set_defaults(func=_cmd_verify)

    leaderboard = sub.add_parser("leaderboard", help="the static leaderboard site")
    lb_sub = leaderboard.add_subparsers(dest="leaderboard_command", required=True)
    build = lb_sub.add_parser("build", help="validate the records and render the site")
    build.add_argument("--records", default="results", help="records root (default results/)")
    build.add_argument("--out", default="leaderboard/site", help="output folder (default leaderboard/site)")
    build.add_argument("--verification", action="append", default=[], metavar="REPORT",
                       help="a `bench verify --report` file; ranked rows whose record files it re-ran show a "
                            "'re-run by CI: k/n identical' badge (repeatable)")
    build.set_defaults(func=_cmd_leaderboard)
    table = lb_sub.add_parser("table", help="print a track's ranked table as Markdown (the README's copy)")
    table.add_argument("--records", default="results", help="records root (default results/)")
    table.add_argument("--track", default="toy__linf-0.25__toy", help="track id (default toy__linf-0.25__toy)")
    table.set_defaults(func=_cmd_table)
