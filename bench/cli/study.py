"""`bench study eot|nfe|settings|budget`: diagnostic studies."""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.core.config import parse_overrides
    from bench.harness.store import open_store
    from bench.harness.studies import StudyRequest, run_study

    request = StudyRequest(
        defense=args.defense, dataset=args.dataset, n_samples=args.n_samples, seed=args.seed,
        values=[v.strip() for v in args.values.split(",")] if args.values else [],
        defense_options=parse_overrides(args.defense_opt), attack_options=parse_overrides(args.attack_opt),
        eval_draws=args.draws, out_dir=Path(args.out), classifier=args.classifier,
    )
    result = run_study(open_store(args.db), args.name, request)
    print(result.table)
    print(f"study {result.study_id}: {len(result.run_ids)} runs stored; plot: {result.plot_path}")
    return 0


def add_parsers(sub: Any) -> None:
    study = sub.add_parser("study", help="run a diagnostic study: eot | nfe | settings | budget | gradsim | efficacy | "
                                         "trajectory | landscape | addt-settings (stored, with a plot)")
    study.add_argument("name", help="eot | nfe | settings | budget | gradsim | efficacy | trajectory | landscape | "
                                    "addt-settings")
    study.add_argument("--defense", help="defense (default dp_ddpm; nfe: dp_ddpm and dp_ddim)")
    study.add_argument("--values", help="comma-separated sweep (eot: 1,2,4,8,16; nfe: 2,5,10,20,50,100; "
                       "settings: white,dw_fwd,dw_both,dw_semi:8; budget: fractions 0.25,0.5,1 of each attack's iterations; "
                       "gradsim: k = 1,2,...,512; efficacy: semi-K = 1,...,128; landscape: grid size 9; "
                       "addt-settings: NFE 5,10,20)")
    study.add_argument("--dataset", default="toy", help="toy | cifar10 | cifar100 (default: toy)")
    study.add_argument("--n-samples", type=int, default=64, help="images per run (default 64)")
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--classifier", help="classifier spec (default: the dataset's; toy-at: adversarially trained)")
    study.add_argument("--draws", type=int, default=10, help="evaluation noise draws K (default 10)")
    study.add_argument("--defense-opt", action="append", metavar="KEY=VALUE")
    study.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="pgd_eot option (budget: ATTACK.KEY=VALUE, e.g. diffhammer.draws=5)")
    study.add_argument("--out", default="results/studies", help="folder for the plot (default results/studies)")
    study.add_argument("--db", help="SQLAlchemy URL or SQLite path (default results/bench.sqlite)")
    study.set_defaults(func=_cmd_study)
