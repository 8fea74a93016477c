"""`bench new defense`: scaffold a one-file defense plug-in."""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_new_defense(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.scaffold import write_defense

    path = write_defense(args.name, args.family, Path(args.out) if args.out else None)
    print(f"wrote {path}: defense '{args.name}' on the {args.family} family (edit its reverse step, description and paper).\n"
          f"Check it: bench show {args.name}; python -m pytest tests/test_defenses.py -k {args.name}; "
          f"bench run --defense {args.name} --attack pgd_eot --n-samples 8")
    return 0


def add_parsers(sub: Any) -> None:
    from bench.scaffold import FAMILIES

    new = sub.add_parser("new", help="scaffold a plug-in: bench new defense NAME --family ddpm|vp|edm")
    kinds = new.add_subparsers(dest="new_kind", required=True)
    defense = kinds.add_parser("defense", help="a one-file defense on an existing network family")
    defense.add_argument("name", help="registry name and module name, e.g. my_sampler")
    defense.add_argument("--family", required=True, choices=FAMILIES, help="the network and purification it builds on")
    defense.add_argument("--out", help="file to write (default defenses/NAME.py)")
    defense.set_defaults(func=_cmd_new_defense)
